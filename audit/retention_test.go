package audit_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestGuardRefusesChangesOnPostgres(t *testing.T) {
	d := guarded(t, dbtest.Postgres(t))
	ctx := context.Background()
	appendN(t, d, 3)
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	if err := d.InTx(ctx, func(tx *sql.Tx) error { _, _, err := audit.WriteCheckpoint(ctx, tx, signer, t0); return err }); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`UPDATE audit_log SET outcome = 'edited' WHERE seq = 2`,
		`DELETE FROM audit_log WHERE seq = 3`,
		`TRUNCATE audit_log`,
		`UPDATE audit_checkpoints SET hash = 'x'`,
		`DELETE FROM audit_checkpoints`,
	} {
		t.Run(stmt, func(t *testing.T) {
			_, err := d.ExecContext(ctx, stmt)
			var coder interface{ SQLState() string }
			if !errors.As(err, &coder) || coder.SQLState() != "42501" {
				t.Fatalf("got %v, want insufficient_privilege from the guard", err)
			}
		})
	}
	// The purge flag only lasts for its own transaction.
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SET LOCAL `+audit.PurgeSetting+` = 'on'`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE audit_log SET outcome = 'edited' WHERE seq = 2`)
		return err
	})
	if err == nil {
		t.Fatal("UPDATE allowed with the purge flag on")
	}
	if _, err := d.ExecContext(ctx, `DELETE FROM audit_log WHERE seq = 1`); err == nil {
		t.Fatal("the purge flag outlived its transaction")
	}
	if n, err := audit.Verify(ctx, d); err != nil || n != 4 {
		t.Fatalf("after refused changes: n=%d err=%v", n, err)
	}
	// A guard an owner disabled is put back at the next start.
	if _, err := d.ExecContext(ctx, `ALTER TABLE audit_log DISABLE TRIGGER USER`); err != nil {
		t.Fatal(err)
	}
	guarded(t, d)
	if _, err := d.ExecContext(ctx, `DELETE FROM audit_log WHERE seq = 1`); err == nil {
		t.Fatal("the guard was not re-enabled")
	}
}

func TestPurgeKeepsTheRestVerifiable(t *testing.T) {
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	keys := []ed25519.PublicKey{signer.Public()}
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		guarded(t, d)
		ctx := context.Background()
		pg := d.Dialect == db.Postgres
		old, recent := t0.AddDate(-7, 0, 0), t0.AddDate(-1, 0, 0)
		cp := func(at time.Time) {
			t.Helper()
			if err := d.InTx(ctx, func(tx *sql.Tx) error { _, _, err := audit.WriteCheckpoint(ctx, tx, signer, at); return err }); err != nil {
				t.Fatal(err)
			}
		}
		purge := func() (audit.PurgeResult, error) {
			return audit.Purge(ctx, d, audit.PurgeOptions{Horizon: t0.Add(-audit.DefaultRetention), Postgres: pg,
				Keys: keys, Now: t0, By: audit.Entry{ActorType: audit.ActorSystem, ActorID: "retention"}})
		}
		// Nothing before the first checkpoint can go.
		appendAt(t, d, 4, old) // 1-4
		if _, err := purge(); !errors.Is(err, audit.ErrNothingToPurge) {
			t.Fatalf("purge without a checkpoint: %v", err)
		}
		cp(old)                   // 5: checkpoint of 4
		appendAt(t, d, 2, old)    // 6-7
		cp(recent)                // 8: checkpoint of 7, written within the horizon
		appendAt(t, d, 3, recent) // 9-11
		// Records 1-7 are past the horizon and 7 is signed: 1-7 go, the
		// checkpoint of 4 with them; the chain restarts from checkpoint 7.
		res, err := purge()
		if err != nil {
			t.Fatal(err)
		}
		if res.ThroughSeq != 7 || res.Deleted != 7 || res.Checkpoints != 1 {
			t.Fatalf("purge: %+v", res)
		}
		v, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: keys, RequireSignatures: true})
		if err != nil || v.AnchorSeq != 7 || v.FirstSeq != 8 || v.Records != 5 {
			t.Fatalf("after purge: %+v %v", v, err)
		}
		recs, _ := audit.Query(ctx, d, audit.Filter{Action: audit.ActionPurged})
		if len(recs.Records) != 1 || recs.Records[0].ActorID != "retention" {
			t.Fatalf("purge record: %+v", recs.Records)
		}
		if _, err := purge(); !errors.Is(err, audit.ErrNothingToPurge) {
			t.Fatalf("second purge: %v", err)
		}
		// Removing the purge's own record leaves the gap unexplained.
		tamper(t, d, `DELETE FROM audit_log WHERE action = '`+audit.ActionPurged+`'`, `UPDATE audit_head SET seq = seq - 1`)
		var h string
		_ = d.QueryRow(`SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&h)
		tamper(t, d, `UPDATE audit_head SET hash = '`+h+`'`)
		_, err = audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: keys})
		wantProblem(t, err, 1, false)
	})
}

func TestPurgeRefusesABrokenChain(t *testing.T) {
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		guarded(t, d)
		ctx := context.Background()
		appendAt(t, d, 3, t0.AddDate(-7, 0, 0))
		if err := d.InTx(ctx, func(tx *sql.Tx) error { _, _, err := audit.WriteCheckpoint(ctx, tx, signer, t0); return err }); err != nil {
			t.Fatal(err)
		}
		tamper(t, d, `UPDATE audit_log SET action = 'x' WHERE seq = 2`)
		_, err := audit.Purge(ctx, d, audit.PurgeOptions{Horizon: t0, Postgres: d.Dialect == db.Postgres, Now: t0})
		wantProblem(t, err, 2, false)
	})
}
