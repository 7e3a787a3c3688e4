-- Background tasks (`tasks` runner, src/tasks.rs): re-queuing deliveries in bulk (a webhook's
-- recovery, the operator's bulk retry), in batches, by one runner at a time under a lease.
-- Each batch moves `cursor_id` (the last delivery id it handled) and `done` in the same
-- transaction as its re-queues, so a task taken up again after a crash resumes where it stopped
-- and never re-queues a delivery twice.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    account_id   TEXT REFERENCES accounts(id),   -- NULL: the operator's, over accounts
    kind         TEXT NOT NULL,                  -- recover | retry
    params       TEXT NOT NULL,                  -- JSON: which deliveries it takes
    state        TEXT NOT NULL,                  -- queued | running | succeeded | failed
    counted      INTEGER NOT NULL,               -- deliveries matching when it was made
    done         INTEGER NOT NULL DEFAULT 0,     -- deliveries re-queued so far
    cursor_id    TEXT,                           -- the next batch starts after this delivery id
    lease_node   TEXT,
    lease_token  TEXT,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    error        TEXT
);
CREATE INDEX tasks_runnable ON tasks(id) WHERE state IN ('queued', 'running');
CREATE INDEX tasks_by_account ON tasks(account_id, id);
