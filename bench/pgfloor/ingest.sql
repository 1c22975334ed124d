-- One intake transaction of @N@ messages, as ingest/hl7.Intake.commitBatch
-- sends it when no message is a duplicate: one pipeline of BEGIN, the
-- dedup claim, its guard, the events, the audit records and COMMIT.
\set b random(1, 2000000000)
\startpipeline
BEGIN;
INSERT INTO ingest_dedup (source, source_id, event_id, ack_code, received_at)
  SELECT 'LAB^HOSP', :b || '-' || g, 'evt_' || :b || '-' || g, 'AA', (extract(epoch from clock_timestamp()) * 1e6)::bigint
  FROM generate_series(1, @N@) g
  ON CONFLICT (source, source_id) DO UPDATE SET event_id = excluded.event_id WHERE ingest_dedup.received_at < excluded.received_at - 86400000000
  RETURNING event_id;
SELECT 1 / (COUNT(*) / @N@) FROM ingest_dedup WHERE source = 'LAB^HOSP' AND source_id LIKE :b || '-%';
INSERT INTO events (id, source, source_id, kind, received_at, payload, raw, ack_code, state)
  SELECT 'evt_' || :b || '-' || g, 'LAB^HOSP', :b || '-' || g, 'result', (extract(epoch from clock_timestamp()) * 1e6)::bigint,
  '\x@PAYLOAD@'::bytea, '\x@RAW@'::bytea, 'AA', 'pending' FROM generate_series(1, @N@) g;
INSERT INTO audit_pending (id, at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
  correlation_id, detail, source_addr, device_id, hash_version)
  SELECT lpad(to_hex((extract(epoch from clock_timestamp()) * 1e9)::bigint), 16, '0') || md5(:b || '-' || g), 1, 'integration', 'LAB^HOSP',
  'integration', 'ingest.accepted', 'event', 'evt_' || :b || '-' || g, 'success', 'evt_' || :b || '-' || g,
  '{"control_id":"B1","kind":"result","sender":"LAB^HOSP","trigger":"ORU^R01"}', '127.0.0.1', '', 2 FROM generate_series(1, @N@) g;
COMMIT;
\endpipeline
