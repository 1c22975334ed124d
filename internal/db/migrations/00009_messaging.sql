-- Messaging, second part: expiry, keyed digests and escrow copies of message
-- bodies, retention tombstones, device-side deletion, legal holds and
-- multi-accept policies. Portable SQL, as 00001.

-- +goose Up

-- expires_at: after it the gateway no longer sends the message, devices are
-- told to delete it and the retention job empties it (unless held). NULL for
-- messages made before this migration: they never expire.
ALTER TABLE messages ADD COLUMN expires_at BIGINT;
-- HMAC-SHA256 of the exact plaintext sealed to the device, under a key
-- derived from at-rest key digest_key_id (internal/atrest Digest).
ALTER TABLE messages ADD COLUMN body_digest TEXT;
ALTER TABLE messages ADD COLUMN digest_key_id TEXT;
-- The same plaintext sealed (HPKE) to the offline escrow key escrow_key_id.
ALTER TABLE messages ADD COLUMN escrow_sealed BYTEA;
ALTER TABLE messages ADD COLUMN escrow_key_id TEXT;
-- When the device confirmed it deleted the expired message.
ALTER TABLE messages ADD COLUMN device_deleted_at BIGINT;
-- When the retention job emptied sealed and escrow_sealed: the row stays as
-- a tombstone so audit records that name the message still resolve.
ALTER TABLE messages ADD COLUMN purged_at BIGINT;
CREATE INDEX messages_expiry ON messages (purged_at, expires_at);
CREATE INDEX messages_user ON messages (user_id);

-- A legal hold keeps every message of an alert, or of a user, on devices and
-- in storage past its expiry until released. Exactly one of alert_id and
-- user_id is set (the other is '').
CREATE TABLE legal_holds (
    id          TEXT   PRIMARY KEY,
    alert_id    TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    placed_by   TEXT   NOT NULL,
    placed_at   BIGINT NOT NULL,
    released_by TEXT,
    released_at BIGINT
);
CREATE INDEX legal_holds_alert ON legal_holds (alert_id, released_at);
CREATE INDEX legal_holds_user ON legal_holds (user_id, released_at);

-- Multi-accept: how many different users must accept an alert before it is
-- accepted. The policy's value until oncall.Policy carries it itself
-- (see docs/messaging.md); the alert's is fixed when its escalation starts.
ALTER TABLE escalation_policies ADD COLUMN accepts_required INTEGER NOT NULL DEFAULT 1;
CREATE TABLE alert_acceptance (
    alert_id TEXT    PRIMARY KEY,
    required INTEGER NOT NULL
);

-- +goose Down
DROP TABLE alert_acceptance;
ALTER TABLE escalation_policies DROP COLUMN accepts_required;
DROP INDEX legal_holds_user;
DROP INDEX legal_holds_alert;
DROP TABLE legal_holds;
DROP INDEX messages_user;
DROP INDEX messages_expiry;
ALTER TABLE messages DROP COLUMN purged_at;
ALTER TABLE messages DROP COLUMN device_deleted_at;
ALTER TABLE messages DROP COLUMN escrow_key_id;
ALTER TABLE messages DROP COLUMN escrow_sealed;
ALTER TABLE messages DROP COLUMN digest_key_id;
ALTER TABLE messages DROP COLUMN body_digest;
ALTER TABLE messages DROP COLUMN expires_at;
