-- FHIR R4 interface (issue 4). Portable SQL: it runs unchanged on
-- PostgreSQL and SQLite. Times are BIGINT unix microseconds (UTC).

-- +goose Up

-- SMART-style scopes of a token, space-separated ("system/Observation.write
-- system/*.read"); empty for tokens issued without scopes.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';

-- Every resource created through the FHIR interface: its server id, who
-- sent it and its dedup key (the events row of the same source and
-- source_id, if it routed anything), and a keyed hash of its first business
-- identifier (system|value) for conditional creates and ITI-85 queries, so
-- no identifier is kept in clear.
CREATE TABLE fhir_resources (
    id              TEXT   PRIMARY KEY,
    resource_type   TEXT   NOT NULL,
    source          TEXT   NOT NULL,
    source_id       TEXT   NOT NULL,
    identifier_hash TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (source, source_id)
);
CREATE INDEX fhir_resources_identifier ON fhir_resources (resource_type, identifier_hash);
CREATE INDEX fhir_resources_event ON fhir_resources (event_id);

-- The newest reading seen per patient (pseudonym) and code ("LN|8867-4"):
-- an older reading arriving late never fires.
CREATE TABLE fhir_latest_reading (
    patient_id   TEXT   NOT NULL,
    code         TEXT   NOT NULL,
    effective_at BIGINT NOT NULL,
    PRIMARY KEY (patient_id, code)
);

-- FHIR servers Clarion subscribes to (Clarion is the rest-hook endpoint
-- /fhir/subscription-notification/<id>). The bearer token Clarion presents
-- to the source is sealed at rest.
CREATE TABLE fhir_subscriptions (
    id                TEXT   PRIMARY KEY,
    source_base_url   TEXT   NOT NULL,
    remote_id         TEXT   NOT NULL,
    token_sealed      BYTEA,
    last_event_number BIGINT NOT NULL,
    status            TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- +goose Down
DROP TABLE fhir_subscriptions;
DROP TABLE fhir_latest_reading;
DROP INDEX fhir_resources_event;
DROP INDEX fhir_resources_identifier;
DROP TABLE fhir_resources;
ALTER TABLE api_tokens DROP COLUMN scopes;
