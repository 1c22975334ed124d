-- Routing rules and alarm-fatigue controls (docs/rules.md). Portable SQL,
-- as 00001: one column per ALTER TABLE, BIGINT unix-microsecond times.

-- +goose Up

-- Every saved version of every rule, deletions included (deleted = 1, with
-- the last definition), so that GET /v1/rules/:id/versions shows what a
-- rule said when an alert was opened.
CREATE TABLE rule_versions (
    rule_id    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    enabled    INTEGER NOT NULL,
    deleted    INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    saved_at   BIGINT  NOT NULL,
    actor_type TEXT    NOT NULL,
    actor_id   TEXT    NOT NULL,
    PRIMARY KEY (rule_id, version)
);
INSERT INTO rule_versions (rule_id, version, name, enabled, deleted, definition, saved_at, actor_type, actor_id)
    SELECT id, version, name, enabled, 0, definition, updated_at, 'system', 'migration' FROM rules;

-- One row: bumped in the transaction of every rule change, so that each
-- node's router recompiles its rule set only when a rule changed.
CREATE TABLE rule_generation (
    id         INTEGER PRIMARY KEY,
    generation BIGINT  NOT NULL
);
INSERT INTO rule_generation (id, generation) VALUES (1, 0);

-- Who the alert targets (role, team, user or policy) and how fast it
-- escalates (delay_pct: 50 halves every step delay). failsafe = 1: nobody
-- held the target when it opened, so only the policy's failsafe is paged.
ALTER TABLE alerts ADD COLUMN target_kind TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN target_id TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN delay_pct INTEGER NOT NULL DEFAULT 100;
ALTER TABLE alerts ADD COLUMN failsafe INTEGER NOT NULL DEFAULT 0;
-- Grouping: alerts of rules sharing a group name fold into one alert per
-- patient within the group's window (their parts are in alert_parts).
ALTER TABLE alerts ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
-- Quiet hours: a held alert (state 'held') is paged at release_at.
ALTER TABLE alerts ADD COLUMN release_at BIGINT;
-- Closed by routing (auto-resolve, transfer, discharge): when and why.
ALTER TABLE alerts ADD COLUMN closed_at BIGINT;
ALTER TABLE alerts ADD COLUMN close_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_rule_patient ON alerts (rule_id, patient_id, created_at);
CREATE INDEX alerts_dedup_key ON alerts (dedup_key, state);
CREATE INDEX alerts_release ON alerts (state, release_at);

-- The parts of a grouped alert: one per dedup key folded into it, each
-- body sealed at rest (aad: alert id | part key).
CREATE TABLE alert_parts (
    alert_id   TEXT    NOT NULL,
    part_key   TEXT    NOT NULL,
    rule_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    body       BYTEA   NOT NULL,
    hits       INTEGER NOT NULL,
    resolved   INTEGER NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (alert_id, part_key)
);
CREATE INDEX alert_parts_key ON alert_parts (part_key);

-- Sustained conditions: the current run of out-of-range readings per
-- patient, rule and code, until it lasts long enough to open an alert or a
-- normal reading ends it.
CREATE TABLE rule_sustain (
    rule_id    TEXT    NOT NULL,
    patient_id TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    first_at   BIGINT  NOT NULL,
    last_at    BIGINT  NOT NULL,
    readings   INTEGER NOT NULL,
    PRIMARY KEY (rule_id, patient_id, code)
);
CREATE INDEX rule_sustain_patient ON rule_sustain (patient_id);

-- The last numeric value per patient and code, for a template's {trend};
-- sealed at rest (aad: patient id | code), as values tied to a patient are.
CREATE TABLE patient_last_values (
    patient_id  TEXT   NOT NULL,
    code        TEXT   NOT NULL,
    value       BYTEA  NOT NULL,
    observed_at BIGINT NOT NULL,
    PRIMARY KEY (patient_id, code)
);

-- +goose Down
DROP TABLE patient_last_values;
DROP INDEX rule_sustain_patient;
DROP TABLE rule_sustain;
DROP INDEX alert_parts_key;
DROP TABLE alert_parts;
DROP INDEX alerts_release;
DROP INDEX alerts_dedup_key;
DROP INDEX alerts_rule_patient;
ALTER TABLE alerts DROP COLUMN close_reason;
ALTER TABLE alerts DROP COLUMN closed_at;
ALTER TABLE alerts DROP COLUMN release_at;
ALTER TABLE alerts DROP COLUMN group_name;
ALTER TABLE alerts DROP COLUMN failsafe;
ALTER TABLE alerts DROP COLUMN delay_pct;
ALTER TABLE alerts DROP COLUMN target_id;
ALTER TABLE alerts DROP COLUMN target_kind;
DROP TABLE rule_generation;
DROP TABLE rule_versions;
