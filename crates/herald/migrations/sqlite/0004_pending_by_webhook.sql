-- Pending deliveries per webhook, in due order: lets a claim look webhook by webhook when one
-- endpoint's backlog crowds the global due order, and lists the webhooks with pending work.
CREATE INDEX deliveries_pending_by_webhook ON deliveries(webhook_id, next_attempt_at) WHERE status = 'pending';
