-- HL7 ingest in depth: a dedup table with a time window, raw-message
-- retention, sender identity on rejected messages, watchdog supervision.
-- Portable SQL (PostgreSQL and SQLite). SQLite cannot drop a constraint, so
-- events and rejected_messages are rebuilt (rows kept) on both databases.

-- +goose Up

-- ingest_dedup: one row per (sender, MSH-10) accepted within the window.
-- A resend inside the window gets the answer recorded here; an older row is
-- overwritten by the next message reusing the control id.
CREATE TABLE ingest_dedup (
    source      TEXT   NOT NULL,
    source_id   TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    ack_code    TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, source_id)
);
CREATE INDEX ingest_dedup_received ON ingest_dedup (received_at);
INSERT INTO ingest_dedup (source, source_id, event_id, ack_code, received_at)
    SELECT source, source_id, id, ack_code, received_at FROM events;

-- events without UNIQUE (source, source_id): a control id may be reused
-- once the dedup window has passed.
CREATE TABLE events_v2 (
    id           TEXT   PRIMARY KEY,
    source       TEXT   NOT NULL,
    source_id    TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    payload      BYTEA  NOT NULL,
    raw          BYTEA,
    ack_code     TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    processed_at BIGINT
);
INSERT INTO events_v2 (id, source, source_id, kind, received_at, payload, raw, ack_code, state, processed_at)
    SELECT id, source, source_id, kind, received_at, payload, raw, ack_code, state, processed_at FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_pending ON events (state, received_at);
CREATE INDEX events_source ON events (source, source_id);
CREATE INDEX events_received ON events (received_at);

-- rejected_messages: raw becomes nullable (purged after the retention),
-- and the control id, answer and sender identity are kept for analysts.
CREATE TABLE rejected_messages_v2 (
    id          TEXT    PRIMARY KEY,
    source      TEXT    NOT NULL,
    control_id  TEXT    NOT NULL,
    identity    TEXT    NOT NULL,
    ack_code    TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,
    error_code  INTEGER NOT NULL,
    error_text  TEXT    NOT NULL,
    raw         BYTEA
);
INSERT INTO rejected_messages_v2 (id, source, control_id, identity, ack_code, received_at, error_code, error_text, raw)
    SELECT id, source, '', '', '', received_at, error_code, error_text, raw FROM rejected_messages;
DROP TABLE rejected_messages;
ALTER TABLE rejected_messages_v2 RENAME TO rejected_messages;
CREATE INDEX rejected_messages_received ON rejected_messages (received_at);

-- ingest_watchdogs: when each supervised alarm reporter (MSH-3) last sent
-- a watchdog, and the open communication-loss alarm, if any.
CREATE TABLE ingest_watchdogs (
    reporter       TEXT   PRIMARY KEY,
    last_seen_at   BIGINT NOT NULL,
    alarmed_at     BIGINT,
    alarm_event_id TEXT
);

-- +goose Down
-- events and rejected_messages keep their new shape: restoring the unique
-- key could fail once a control id has been reused after the window.
DROP TABLE ingest_watchdogs;
DROP TABLE ingest_dedup;
