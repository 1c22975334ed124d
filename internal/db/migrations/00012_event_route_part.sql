-- Routing partitions (issue 7): each event records the partition of its
-- patient (ingest.Event.RoutePart), NULL for a barrier (a merge or a bed
-- swap, about two patients). On PostgreSQL several routing workers, on one
-- node or many, each hold some partitions (an advisory lock per partition)
-- and claim only their events, so one patient's events stay in order.
-- Events stored before this migration have NULL: routed as barriers, one
-- at a time, in order. Portable SQL.

-- +goose Up
ALTER TABLE events ADD COLUMN route_part INTEGER;
CREATE INDEX events_pending_part ON events (route_part, received_at, id) WHERE state = 'pending';

-- +goose Down
DROP INDEX events_pending_part;
ALTER TABLE events DROP COLUMN route_part;
