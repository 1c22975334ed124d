-- Audit trail, issue 8: record fields for the source address and the device,
-- a hash version (rows written before this migration keep version 1 and
-- still verify), signed checkpoints of the chain head, and the positions of
-- the outboxes that stream the log to a SIEM.
--
-- Portable SQL. The PostgreSQL trigger that refuses UPDATE and DELETE is
-- not here: the migration set runs unchanged on SQLite, which has no
-- PL/pgSQL, so audit.InstallGuards installs it (idempotently) at start.

-- +goose Up
ALTER TABLE audit_log ADD COLUMN source_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN device_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN hash_version INTEGER NOT NULL DEFAULT 1;

-- A random id for this chain, set on first use: stream message ids carry
-- it, so deployments sharing one NATS never collide.
ALTER TABLE audit_head ADD COLUMN chain_id TEXT NOT NULL DEFAULT '';

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor_id);
CREATE INDEX audit_log_action ON audit_log (action);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id);

-- A checkpoint signs (seq, hash, at) of the chain head with Ed25519.
CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      TEXT   NOT NULL,
    at        BIGINT NOT NULL,
    key_id    TEXT   NOT NULL,
    signature TEXT   NOT NULL
);

-- How far each outbox (the JetStream publisher, a JSON-lines file) has got.
CREATE TABLE audit_stream_positions (
    name TEXT   PRIMARY KEY,
    seq  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE audit_stream_positions;
DROP TABLE audit_checkpoints;
DROP INDEX audit_log_object;
DROP INDEX audit_log_action;
DROP INDEX audit_log_actor;
DROP INDEX audit_log_at;
ALTER TABLE audit_head DROP COLUMN chain_id;
ALTER TABLE audit_log DROP COLUMN hash_version;
ALTER TABLE audit_log DROP COLUMN device_id;
ALTER TABLE audit_log DROP COLUMN source_addr;
