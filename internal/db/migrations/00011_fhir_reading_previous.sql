-- The stale-reading check in one statement (issue 4): the upsert of a
-- reading key sets previous_at to the time it replaces, and returns it, so
-- the check needs no separate locking read. NULL on a key just inserted.
-- Portable SQL.

-- +goose Up
ALTER TABLE fhir_latest_reading ADD COLUMN previous_at BIGINT;

-- +goose Down
ALTER TABLE fhir_latest_reading DROP COLUMN previous_at;
