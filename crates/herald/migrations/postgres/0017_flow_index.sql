-- The webhooks under flow control, which a claim reads the gates of when its listing of the
-- webhooks with pending work was cut at its limit (store/postgres/claim.rs; the condition is
-- store/flow.rs's UNDER_FLOW_CONTROL). SQLite has had the same index since its 0014.
CREATE INDEX webhooks_flow ON webhooks(id)
    WHERE paused_until IS NOT NULL OR rate_limit IS NOT NULL OR probe_at IS NOT NULL;
