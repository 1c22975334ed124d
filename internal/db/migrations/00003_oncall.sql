-- On-call rosters: rotations (computed, never expanded into rows), overrides,
-- swaps, temporary schedules, teams, required roles, scheduler scopes,
-- coverage notices and iCalendar feed tokens. Portable SQL, as 00001.

-- +goose Up

-- Policy options beside the steps: repeat, handoff, by_priority (JSON).
ALTER TABLE escalation_policies ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

-- A role a unit uses; required = coverage is expected around the clock.
CREATE TABLE unit_roles (
    unit_id  TEXT    NOT NULL,
    role     TEXT    NOT NULL,
    required INTEGER NOT NULL,
    PRIMARY KEY (unit_id, role)
);

CREATE TABLE teams (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE team_members (
    team_id  TEXT    NOT NULL,
    user_id  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

-- definition is the rotation as JSON (kind, participants, length or pattern).
CREATE TABLE rotations (
    id         TEXT   PRIMARY KEY,
    unit_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    definition TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rotations_unit_role ON rotations (unit_id, role);

-- kind: add | remove | replace (replaces_user_id gives way to user_id).
CREATE TABLE roster_overrides (
    id               TEXT   PRIMARY KEY,
    unit_id          TEXT   NOT NULL,
    role             TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    user_id          TEXT   NOT NULL,
    replaces_user_id TEXT   NOT NULL,
    starts_at        BIGINT NOT NULL,
    ends_at          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX roster_overrides_lookup ON roster_overrides (unit_id, role, ends_at);

-- user_a's turns in [a_starts_at, a_ends_at) go to user_b, and user_b's
-- turns in [b_starts_at, b_ends_at) go to user_a (b period may be empty).
CREATE TABLE roster_swaps (
    id          TEXT   PRIMARY KEY,
    unit_id     TEXT   NOT NULL,
    role        TEXT   NOT NULL,
    user_a      TEXT   NOT NULL,
    user_b      TEXT   NOT NULL,
    a_starts_at BIGINT NOT NULL,
    a_ends_at   BIGINT NOT NULL,
    b_starts_at BIGINT NOT NULL,
    b_ends_at   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX roster_swaps_lookup ON roster_swaps (unit_id, role);

-- Replaces the unit-role's rotations over [starts_at, ends_at) with the
-- shifts in definition (JSON).
CREATE TABLE temporary_schedules (
    id         TEXT   PRIMARY KEY,
    unit_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    definition TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX temporary_schedules_lookup ON temporary_schedules (unit_id, role, ends_at);

-- An edit applied although it opened a coverage gap: the flag.
CREATE TABLE roster_gap_confirmations (
    id           TEXT   PRIMARY KEY,
    unit_id      TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    object_type  TEXT   NOT NULL,
    object_id    TEXT   NOT NULL,
    gaps         TEXT   NOT NULL,
    confirmed_by TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX roster_gap_confirmations_unit ON roster_gap_confirmations (unit_id, created_at);

CREATE TABLE scheduler_units (
    user_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    PRIMARY KEY (user_id, unit_id)
);

-- Notices for people: kind gap | double_booking (to a unit's schedulers),
-- on_call (to the incoming holder). dedup_key makes repeats harmless.
CREATE TABLE coverage_notices (
    id           TEXT   PRIMARY KEY,
    dedup_key    TEXT   NOT NULL UNIQUE,
    kind         TEXT   NOT NULL,
    recipient_id TEXT   NOT NULL,
    unit_id      TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    subject_id   TEXT   NOT NULL,
    starts_at    BIGINT NOT NULL,
    ends_at      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT
);
CREATE INDEX coverage_notices_recipient ON coverage_notices (recipient_id, created_at);
CREATE INDEX coverage_notices_unit ON coverage_notices (unit_id, kind, resolved_at);

-- Secret iCalendar feed URLs; only the SHA-256 of the token is kept.
CREATE TABLE ical_tokens (
    id         TEXT   PRIMARY KEY,
    hash       TEXT   NOT NULL UNIQUE,
    kind       TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    unit_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- +goose Down
DROP TABLE ical_tokens;
DROP TABLE coverage_notices;
DROP TABLE scheduler_units;
DROP TABLE roster_gap_confirmations;
DROP TABLE temporary_schedules;
DROP TABLE roster_swaps;
DROP TABLE roster_overrides;
DROP TABLE rotations;
DROP TABLE team_members;
DROP TABLE teams;
DROP TABLE unit_roles;
ALTER TABLE escalation_policies DROP COLUMN options;
