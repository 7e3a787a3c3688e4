-- Endpoint health figures: one row per webhook and minute, added to as attempt results are
-- recorded (see src/store/stats.rs for the columns' meaning); pruned after 7 days.
CREATE TABLE webhook_stats (
    webhook_id     TEXT NOT NULL,
    minute         INTEGER NOT NULL,   -- the minute's start, ms since the epoch
    attempts       INTEGER NOT NULL,
    successes      INTEGER NOT NULL,
    status_4xx     INTEGER NOT NULL,
    status_5xx     INTEGER NOT NULL,
    status_other   INTEGER NOT NULL,
    timeouts       INTEGER NOT NULL,
    connection     INTEGER NOT NULL,
    blocked        INTEGER NOT NULL,
    -- attempts per latency bucket: ≤10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 ms, slower
    l0 INTEGER NOT NULL, l1 INTEGER NOT NULL, l2 INTEGER NOT NULL, l3 INTEGER NOT NULL,
    l4 INTEGER NOT NULL, l5 INTEGER NOT NULL, l6 INTEGER NOT NULL, l7 INTEGER NOT NULL,
    l8 INTEGER NOT NULL, l9 INTEGER NOT NULL, l10 INTEGER NOT NULL, l11 INTEGER NOT NULL,
    last_error     TEXT,
    last_error_at  INTEGER,
    PRIMARY KEY (webhook_id, minute)
);
CREATE INDEX webhook_stats_by_minute ON webhook_stats(minute);
