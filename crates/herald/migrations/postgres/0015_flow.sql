-- Flow control per webhook (docs/architecture.md, "Flow control"): a rate limit and its GCRA
-- state, a pause a receiver asked for (429/503 with Retry-After), and the circuit breaker's
-- count of failures in a row and next probe (set while the circuit is open). Times in ms.
ALTER TABLE webhooks ADD COLUMN rate_limit TEXT;
ALTER TABLE webhooks ADD COLUMN rate_tat BIGINT;
ALTER TABLE webhooks ADD COLUMN paused_until BIGINT;
ALTER TABLE webhooks ADD COLUMN failures_in_a_row INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN probe_at BIGINT;
