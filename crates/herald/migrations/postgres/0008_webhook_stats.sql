-- Endpoint health figures: one row per webhook and minute, added to as attempt results are
-- recorded (see src/store/stats.rs for the columns' meaning); pruned after 7 days.
CREATE TABLE webhook_stats (
    webhook_id     TEXT NOT NULL,
    minute         BIGINT NOT NULL,   -- the minute's start, ms since the epoch
    attempts       BIGINT NOT NULL,
    successes      BIGINT NOT NULL,
    status_4xx     BIGINT NOT NULL,
    status_5xx     BIGINT NOT NULL,
    status_other   BIGINT NOT NULL,
    timeouts       BIGINT NOT NULL,
    connection     BIGINT NOT NULL,
    blocked        BIGINT NOT NULL,
    -- attempts per latency bucket: ≤10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 ms, slower
    l0 BIGINT NOT NULL, l1 BIGINT NOT NULL, l2 BIGINT NOT NULL, l3 BIGINT NOT NULL,
    l4 BIGINT NOT NULL, l5 BIGINT NOT NULL, l6 BIGINT NOT NULL, l7 BIGINT NOT NULL,
    l8 BIGINT NOT NULL, l9 BIGINT NOT NULL, l10 BIGINT NOT NULL, l11 BIGINT NOT NULL,
    last_error     TEXT,
    last_error_at  BIGINT,
    PRIMARY KEY (webhook_id, minute)
);
CREATE INDEX webhook_stats_by_minute ON webhook_stats(minute);
