-- Audit records wait here, written in the transaction of the change they
-- record, until audit.Chain links them into audit_log (numbered, hashed,
-- linked to the previous record) and deletes them: appending takes no lock
-- other transactions wait for. The id orders them (audit.nextPendingKey).
-- Portable SQL.

-- +goose Up
CREATE TABLE audit_pending (
    id             TEXT    PRIMARY KEY,
    at             BIGINT  NOT NULL,
    actor_type     TEXT    NOT NULL,
    actor_id       TEXT    NOT NULL,
    actor_role     TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    object_type    TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    source_addr    TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    hash_version   INTEGER NOT NULL
);

-- +goose Down
DROP TABLE audit_pending;
