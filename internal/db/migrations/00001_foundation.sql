-- Portable SQL: it runs unchanged on PostgreSQL and SQLite. Times are
-- BIGINT unix microseconds (UTC); ids are text made by internal/ids.

-- +goose Up

-- audit: the hash-chained log and its head (one row, the chain's tip).
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE audit_log (
    seq            BIGINT PRIMARY KEY,
    at             BIGINT NOT NULL,
    actor_type     TEXT   NOT NULL,
    actor_id       TEXT   NOT NULL,
    actor_role     TEXT   NOT NULL,
    action         TEXT   NOT NULL,
    object_type    TEXT   NOT NULL,
    object_id      TEXT   NOT NULL,
    outcome        TEXT   NOT NULL,
    correlation_id TEXT   NOT NULL,
    detail         TEXT   NOT NULL,
    prev_hash      TEXT   NOT NULL,
    hash           TEXT   NOT NULL
);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id);

-- ingest: every accepted inbound message, sealed, with its dedup key.
CREATE TABLE events (
    id           TEXT   PRIMARY KEY,
    source       TEXT   NOT NULL,
    source_id    TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    payload      BYTEA  NOT NULL,
    raw          BYTEA,
    ack_code     TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    processed_at BIGINT,
    UNIQUE (source, source_id)
);
CREATE INDEX events_pending ON events (state, received_at);

-- ingest: rejected messages, kept sealed for inspection.
CREATE TABLE rejected_messages (
    id          TEXT   PRIMARY KEY,
    source      TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    error_code  INTEGER NOT NULL,
    error_text  TEXT   NOT NULL,
    raw         BYTEA  NOT NULL
);

-- routing: where each patient is now, by opaque patient id.
CREATE TABLE patient_context (
    patient_id TEXT   PRIMARY KEY,
    unit       TEXT   NOT NULL,
    room       TEXT   NOT NULL,
    bed        TEXT   NOT NULL,
    facility   TEXT   NOT NULL,
    admitted   INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE rules (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    version    INTEGER NOT NULL,
    enabled    INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE alerts (
    id          TEXT    PRIMARY KEY,
    rule_id     TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    patient_id  TEXT    NOT NULL,
    dedup_key   TEXT    NOT NULL,
    priority    TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    target_role TEXT    NOT NULL,
    policy_id   TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    step        INTEGER NOT NULL,
    lock_text   TEXT    NOT NULL,
    body        BYTEA   NOT NULL,
    updates     INTEGER NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    accepted_by TEXT,
    accepted_at BIGINT
);
CREATE UNIQUE INDEX alerts_open_dedup ON alerts (dedup_key) WHERE state = 'open';
CREATE INDEX alerts_state ON alerts (state, created_at);

-- oncall
CREATE TABLE units (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    time_zone TEXT NOT NULL
);
CREATE TABLE users (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE shifts (
    id        TEXT   PRIMARY KEY,
    unit_id   TEXT   NOT NULL,
    role      TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at   BIGINT NOT NULL
);
CREATE INDEX shifts_lookup ON shifts (unit_id, role, ends_at);
CREATE TABLE escalation_policies (
    id    TEXT PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE,
    steps TEXT NOT NULL
);

-- messaging
CREATE TABLE devices (
    id           TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    suite        TEXT   NOT NULL,
    public_key   BYTEA  NOT NULL,
    state        TEXT   NOT NULL,
    next_seq     BIGINT NOT NULL,
    acked_seq    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE messages (
    id           TEXT    PRIMARY KEY,
    device_id    TEXT    NOT NULL,
    seq          BIGINT  NOT NULL,
    alert_id     TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    step         INTEGER NOT NULL,
    priority     TEXT    NOT NULL,
    lock_text    TEXT    NOT NULL,
    sealed       BYTEA   NOT NULL,
    created_at   BIGINT  NOT NULL,
    delivered_at BIGINT,
    read_at      BIGINT,
    response     TEXT,
    responded_at BIGINT,
    UNIQUE (device_id, seq)
);
CREATE INDEX messages_alert ON messages (alert_id);

CREATE TABLE escalation_timers (
    id       TEXT    PRIMARY KEY,
    alert_id TEXT    NOT NULL,
    step     INTEGER NOT NULL,
    due_at   BIGINT  NOT NULL,
    state    TEXT    NOT NULL,
    fired_at BIGINT
);
CREATE INDEX escalation_timers_due ON escalation_timers (state, due_at);
CREATE INDEX escalation_timers_alert ON escalation_timers (alert_id);

-- auth
CREATE TABLE api_tokens (
    hash       TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE escalation_timers;
DROP TABLE messages;
DROP TABLE devices;
DROP TABLE escalation_policies;
DROP TABLE shifts;
DROP TABLE users;
DROP TABLE units;
DROP TABLE alerts;
DROP TABLE rules;
DROP TABLE patient_context;
DROP TABLE rejected_messages;
DROP TABLE events;
DROP TABLE audit_log;
DROP TABLE audit_head;
