-- The id range of one zone's static records in two index seeks: a start-up
-- load pages through the records by id, and `MIN(id)`/`MAX(id)` for a zone
-- over records_zone_owner (zone_id, owner) visited every index entry of the
-- zone first. InnoDB appends the primary key to every secondary index, so
-- (zone_id) is ordered by id within a zone.
CREATE INDEX records_zone_id ON records (zone_id);
