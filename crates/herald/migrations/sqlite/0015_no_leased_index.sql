-- Nothing looks deliveries up by `lease` alone any more: a claim reads back what it leased by
-- the ids it picked, and the start-up release finds leases among the pending deliveries (only a
-- pending delivery is ever leased). Without the index a lease, a hand-over's insert and a result
-- each write one page fewer to the log (docs/BENCHMARKS.md, "What an event writes").
DROP INDEX IF EXISTS deliveries_leased;
