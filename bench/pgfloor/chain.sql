-- One audit.Chain transaction: link up to 1,000 pending records.
BEGIN;
UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash;
WITH moved AS (DELETE FROM audit_pending WHERE id IN (SELECT id FROM audit_pending ORDER BY id LIMIT 1000) RETURNING *)
INSERT INTO audit_log (seq, at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
  correlation_id, detail, prev_hash, hash, source_addr, device_id, hash_version)
  SELECT nextval('floor_seq'), at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
  correlation_id, detail, md5(id), md5(id || 'h'), source_addr, device_id, hash_version FROM moved;
UPDATE audit_head SET seq = (SELECT last_value FROM floor_seq), hash = 'x' WHERE id = 1;
COMMIT;
