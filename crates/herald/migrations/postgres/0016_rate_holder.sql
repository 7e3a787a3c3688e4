-- The node holding a rate-limited webhook's allowance, and until when (docs/architecture.md,
-- "Flow control"): the other nodes leave the webhook to it meanwhile. Time in ms. SQLite has one
-- claimer and no such columns.
ALTER TABLE webhooks ADD COLUMN rate_node TEXT;
ALTER TABLE webhooks ADD COLUMN rate_node_until BIGINT;
