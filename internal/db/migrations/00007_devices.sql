-- Device lifecycle: one-time enrolment codes, key rotation and remote wipe.

-- +goose Up
CREATE TABLE enrolment_codes (
    hash       TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    issued_by  TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    device_id  TEXT
);
ALTER TABLE devices ADD COLUMN key_rotated_at BIGINT;
ALTER TABLE devices ADD COLUMN wipe_requested_at BIGINT;
ALTER TABLE devices ADD COLUMN wipe_reason TEXT;
ALTER TABLE devices ADD COLUMN wiped_at BIGINT;

-- +goose Down
ALTER TABLE devices DROP COLUMN wiped_at;
ALTER TABLE devices DROP COLUMN wipe_reason;
ALTER TABLE devices DROP COLUMN wipe_requested_at;
ALTER TABLE devices DROP COLUMN key_rotated_at;
DROP TABLE enrolment_codes;
