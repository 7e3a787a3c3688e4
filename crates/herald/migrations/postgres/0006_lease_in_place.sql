-- Nothing looks deliveries up by `lease` any more (a claim gets its rows from its own UPDATE …
-- RETURNING). Without that index, leasing a delivery changes no indexed column, so PostgreSQL
-- can update the row in place (a HOT update: no new entry in any of the table's six other
-- indexes, which the claims' index scans would otherwise walk past until vacuum), given room on
-- its page: the lower fill factor leaves some on new pages.
DROP INDEX deliveries_leased;
ALTER TABLE deliveries SET (fillfactor = 85);
