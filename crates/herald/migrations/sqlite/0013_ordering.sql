-- Ordering per key (docs/architecture.md, "Ordering"). A webhook's `ordering` (none, key, fifo)
-- gives each of its deliveries an `ordering_key` at fan-out (NULL: unordered), from the event's
-- own key, and ordered deliveries a `seq` in publish order; a claim takes an ordered delivery only
-- when no other pending delivery of its webhook and key comes before it (or is in flight).
ALTER TABLE webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
ALTER TABLE events ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN seq INTEGER;
-- The pending deliveries of each key, in publish order: the claims' "is it its key's head?" is one
-- seek here. Unordered deliveries are not in it, so they cost it nothing.
CREATE INDEX deliveries_pending_by_key ON deliveries(webhook_id, ordering_key, seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
-- The last `seq` given out. Only the writer thread writes, so a row it bumps in its transaction
-- is a monotonic sequence (an explicit counter, since VACUUM may renumber rowids).
CREATE TABLE ordering_seq (last INTEGER NOT NULL);
INSERT INTO ordering_seq (last) VALUES (0);
