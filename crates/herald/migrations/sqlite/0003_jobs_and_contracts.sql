-- Jobs, the three registration models, signing modes, payload formats, secret rotation and
-- endpoint health.

ALTER TABLE webhooks ADD COLUMN kind TEXT NOT NULL DEFAULT 'subscription';
ALTER TABLE webhooks ADD COLUMN job_id TEXT;
ALTER TABLE webhooks ADD COLUMN signing TEXT NOT NULL DEFAULT '{"mode":"standard"}';
ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'envelope';
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_until INTEGER;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
CREATE UNIQUE INDEX webhooks_one_callback ON webhooks(account_id) WHERE kind = 'callback' AND deleted_at IS NULL;
CREATE INDEX webhooks_by_job ON webhooks(job_id) WHERE job_id IS NOT NULL;

ALTER TABLE accounts ADD COLUMN signing_secret TEXT;
ALTER TABLE events ADD COLUMN job_id TEXT;

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    progress      REAL NOT NULL,
    input         TEXT,
    result        TEXT,
    error         TEXT,
    webhook_url   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER
);
CREATE INDEX jobs_by_account ON jobs(account_id, id);
