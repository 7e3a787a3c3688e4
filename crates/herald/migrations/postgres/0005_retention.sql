-- Retention: finished jobs by when they finished, and events holding an idempotency key by age
-- (so expired keys can be freed). Old events need no index of their own: their ids begin with
-- their creation time, so the primary key finds them.
CREATE INDEX jobs_finished ON jobs(completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX events_idempotency_by_age ON events(created_at) WHERE idempotency_key IS NOT NULL;
