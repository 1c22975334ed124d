-- One routing transaction of up to @N@ events that concern no rule, as
-- internal/pipeline.Worker.ProcessBatch sends it.
BEGIN;
SELECT id, received_at, payload FROM events WHERE state = 'pending' ORDER BY received_at, id LIMIT @N@ FOR UPDATE SKIP LOCKED;
SELECT generation FROM rule_generation WHERE id = 1;
INSERT INTO audit_pending (id, at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
  correlation_id, detail, source_addr, device_id, hash_version)
  SELECT lpad(to_hex((extract(epoch from clock_timestamp()) * 1e9)::bigint), 16, '0') || md5(random()::text), 1, 'system', 'pipeline', '',
  'event.routed', 'event', 'evt_x', 'success', 'evt_x', '{"alerts_opened":0,"kind":"result","patient_id":"pt_x"}', '', '', 2
  FROM generate_series(1, @N@) g;
UPDATE events SET state = 'processed', processed_at = 1 WHERE id IN
  (SELECT id FROM events WHERE state = 'pending' ORDER BY received_at, id LIMIT @N@ FOR UPDATE SKIP LOCKED);
COMMIT;
