-- Patient context in depth: the visit (PV1-2 class, PV1-7 attending id,
-- PV1-19 visit number) and the location before the last transfer, so that
-- a cancelled transfer (ADT^A12) can put the patient back.
-- Portable SQL (PostgreSQL and SQLite): one column per ALTER TABLE.

-- +goose Up
ALTER TABLE patient_context ADD COLUMN visit_class TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN attending TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN visit_number TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN prev_unit TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN prev_room TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN prev_bed TEXT NOT NULL DEFAULT '';
ALTER TABLE patient_context ADD COLUMN prev_facility TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_patient ON alerts (patient_id);

-- +goose Down
DROP INDEX alerts_patient;
ALTER TABLE patient_context DROP COLUMN prev_facility;
ALTER TABLE patient_context DROP COLUMN prev_bed;
ALTER TABLE patient_context DROP COLUMN prev_room;
ALTER TABLE patient_context DROP COLUMN prev_unit;
ALTER TABLE patient_context DROP COLUMN visit_number;
ALTER TABLE patient_context DROP COLUMN attending;
ALTER TABLE patient_context DROP COLUMN visit_class;
