package audit

import (
	"context"
	"database/sql"
	"fmt"
)

// PurgeSetting is the PostgreSQL session setting the guard trigger checks:
// only a transaction that sets it (SET LOCAL, so it ends with the
// transaction) may DELETE audit rows. Purge sets it; nothing else does.
const PurgeSetting = "clarion.audit_purge"

// guardSQL installs, on PostgreSQL, statement-level triggers that refuse
// UPDATE and TRUNCATE of audit_log and audit_checkpoints always, and DELETE
// unless PurgeSetting is on; and UPDATE and TRUNCATE of audit_pending,
// whose rows only Chain deletes (as it links them). The advisory lock keeps nodes starting
// together from racing on CREATE OR REPLACE FUNCTION.
var guardSQL = []string{
	`SELECT pg_advisory_xact_lock(7283514)`,
	`CREATE OR REPLACE FUNCTION clarion_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' AND coalesce(current_setting('` + PurgeSetting + `', true), '') = 'on' THEN
		RETURN NULL;
	END IF;
	RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
		USING ERRCODE = 'insufficient_privilege';
END
$$`,
	`DROP TRIGGER IF EXISTS audit_log_guard ON audit_log`,
	`CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
		FOR EACH STATEMENT EXECUTE FUNCTION clarion_audit_guard()`,
	`DROP TRIGGER IF EXISTS audit_pending_guard ON audit_pending`,
	`CREATE TRIGGER audit_pending_guard BEFORE UPDATE OR TRUNCATE ON audit_pending
		FOR EACH STATEMENT EXECUTE FUNCTION clarion_audit_guard()`,
	`DROP TRIGGER IF EXISTS audit_checkpoints_guard ON audit_checkpoints`,
	`CREATE TRIGGER audit_checkpoints_guard BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoints
		FOR EACH STATEMENT EXECUTE FUNCTION clarion_audit_guard()`,
}

// InstallGuards installs the append-only triggers on PostgreSQL, in one
// transaction; on SQLite (postgres false) it does nothing: an embedded
// database file is only as safe as its file permissions. Run it after the
// migrations, on every start: it does nothing when both triggers are in
// place and enabled, and (re)installs them otherwise, which needs the
// rights of the tables' owner.
//
// The triggers stop the application role, and anything that gets hold of
// its connection, from changing history. The table owner can still disable
// them (ALTER TABLE … DISABLE TRIGGER): run the application as a role that
// owns nothing and holds only SELECT and INSERT on the audit tables (plus
// DELETE where purges should run) — or no DELETE at all, which revokes
// even the purge.
func InstallGuards(ctx context.Context, d TxBeginner, postgres bool) error {
	if !postgres {
		return nil
	}
	// Already there (installed by the owner, say, when the application
	// runs as a role that may not create triggers): nothing to do.
	var n int
	if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		WHERE pg_table_is_visible(c.oid) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
		AND (c.relname, t.tgname) IN (('audit_log', 'audit_log_guard'), ('audit_checkpoints', 'audit_checkpoints_guard'),
			('audit_pending', 'audit_pending_guard'))`).
		Scan(&n); err != nil {
		return fmt.Errorf("audit guard: %w", err)
	}
	if n == 3 {
		return nil
	}
	return inTx(ctx, d, func(tx *sql.Tx) error {
		for _, stmt := range guardSQL {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("audit guard: %w", err)
			}
		}
		return nil
	})
}
