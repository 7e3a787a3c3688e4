-- `herald listen --forward-to`: a listener webhook (kind 'listener') is held by the node whose
-- stream it lives on, until a lease that node renews while the stream lives. Only that node
-- claims its deliveries; retention removes listener webhooks whose lease has lapsed (their node
-- died, or the CLI never came back).
ALTER TABLE webhooks ADD COLUMN listener_node TEXT;
ALTER TABLE webhooks ADD COLUMN listener_until INTEGER;
CREATE INDEX webhooks_listener_lease ON webhooks(listener_until) WHERE kind = 'listener' AND deleted_at IS NULL;
