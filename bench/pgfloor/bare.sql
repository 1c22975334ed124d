-- The least a durably acknowledged message can cost: one transaction that
-- writes one ~2.7 KB row (the sealed event and raw message) into a table
-- with no index, then commits (one WAL flush). No Clarion schema at all.
INSERT INTO floor_bare (payload) VALUES ('\x@PAYLOAD@@RAW@'::bytea);
