package audit_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func appendN(t testing.TB, d *db.DB, n int) {
	t.Helper()
	appendAt(t, d, n, time.Time{})
}

// appendAt appends n records, one transaction each, at the given time
// (zero: now).
func appendAt(t testing.TB, d *db.DB, n int, at time.Time) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			err := audit.Append(ctx, tx, audit.Entry{At: at, ActorType: audit.ActorSystem, ActorID: "test",
				Action: "test.step", ObjectType: "thing", ObjectID: fmt.Sprint(i), CorrelationID: "c1",
				Detail: map[string]any{"i": i}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	chainAll(t, d)
}

// chainAll links every pending record into the chain.
func chainAll(t testing.TB, d *db.DB) {
	t.Helper()
	if err := audit.ChainAll(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

// guarded returns a test database with the PostgreSQL guard triggers on.
func guarded(t *testing.T, d *db.DB) *db.DB {
	t.Helper()
	if err := audit.InstallGuards(context.Background(), d.DB, d.Dialect == db.Postgres); err != nil {
		t.Fatal(err)
	}
	return d
}

// tamper runs statements as an attacker holding the database owner's
// rights: on PostgreSQL the guard refuses them, so the attacker first
// disables the triggers (as an owner or superuser can), then re-enables them.
func tamper(t *testing.T, d *db.DB, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	if d.Dialect == db.Postgres {
		stmts = append([]string{`ALTER TABLE audit_log DISABLE TRIGGER USER`,
			`ALTER TABLE audit_checkpoints DISABLE TRIGGER USER`}, stmts...)
		defer func() {
			for _, s := range []string{`ALTER TABLE audit_log ENABLE TRIGGER USER`, `ALTER TABLE audit_checkpoints ENABLE TRIGGER USER`} {
				if _, err := d.ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
		}()
	}
	for _, s := range stmts {
		if _, err := d.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func resetChain(t *testing.T, d *db.DB) {
	t.Helper()
	tamper(t, d, `DELETE FROM audit_log`, `DELETE FROM audit_checkpoints`, `UPDATE audit_head SET seq = 0, hash = ''`)
}

func wantProblem(t *testing.T, err error, seq int64, checkpoint bool) {
	t.Helper()
	var p *audit.Problem
	if !errors.As(err, &p) || p.Seq != seq || p.Checkpoint != checkpoint {
		t.Fatalf("got %v, want a problem at %d (checkpoint %v)", err, seq, checkpoint)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		guarded(t, d)
		cases := []struct {
			name    string
			tamper  string
			wantSeq int64
		}{
			{"intact", ``, 0},
			{"edited", `UPDATE audit_log SET action = 'test.other' WHERE seq = 3`, 3},
			{"edited detail", `UPDATE audit_log SET detail = '{"i":99}' WHERE seq = 4`, 4},
			{"edited source address", `UPDATE audit_log SET source_addr = '10.0.0.9' WHERE seq = 2`, 2},
			{"downgraded hash version", `UPDATE audit_log SET hash_version = 1 WHERE seq = 3`, 3},
			{"deleted", `DELETE FROM audit_log WHERE seq = 2`, 2},
			{"deleted first", `DELETE FROM audit_log WHERE seq = 1`, 1},
			{"reordered", `UPDATE audit_log SET seq = 1000 WHERE seq = 2;
				UPDATE audit_log SET seq = 2 WHERE seq = 3;
				UPDATE audit_log SET seq = 3 WHERE seq = 1000`, 2},
			{"truncated", `DELETE FROM audit_log WHERE seq = 5`, 5},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				resetChain(t, d)
				appendN(t, d, 5)
				if c.tamper != "" {
					tamper(t, d, strings.Split(c.tamper, ";")...)
				}
				n, err := audit.Verify(context.Background(), d)
				if c.wantSeq == 0 {
					if err != nil || n != 5 {
						t.Fatalf("intact chain: n=%d err=%v", n, err)
					}
					return
				}
				wantProblem(t, err, c.wantSeq, false)
			})
		}
	})
}

// checkpointed builds 12 records with checkpoints at 5 and 9:
// 1-5 records, 6 checkpointed(5), 7-9 records, 10 checkpointed(9), 11-12.
func checkpointed(t *testing.T, d *db.DB, s *audit.Signer) {
	t.Helper()
	ctx := context.Background()
	cp := func() {
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, ok, err := audit.WriteCheckpoint(ctx, tx, s, t0)
			if err == nil && !ok {
				err = errors.New("no checkpoint written")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	appendN(t, d, 5)
	cp()
	appendN(t, d, 3)
	cp()
	appendN(t, d, 2)
}

// rewrite edits record `from` and recomputes every hash after it, as an
// attacker who knows the (public) hash function would, head included.
func rewrite(t *testing.T, d *db.DB, from int64) {
	t.Helper()
	ctx := context.Background()
	recs, err := audit.Query(ctx, d, audit.Filter{Limit: audit.MaxPage})
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	prev := ""
	for _, r := range recs.Records {
		if r.Seq >= from {
			if r.Seq == from {
				r.Action = "test.forged"
			}
			r.PrevHash = prev
			r.Hash = audit.RecomputeHash(&r)
			stmts = append(stmts, fmt.Sprintf(`UPDATE audit_log SET action = '%s', prev_hash = '%s', hash = '%s' WHERE seq = %d`,
				r.Action, r.PrevHash, r.Hash, r.Seq))
		}
		prev = r.Hash
	}
	stmts = append(stmts, fmt.Sprintf(`UPDATE audit_head SET hash = '%s'`, prev))
	tamper(t, d, stmts...)
}

func TestCheckpointsDetectRewrites(t *testing.T) {
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	forger := audit.NewSigner(otherPriv)
	keys := []ed25519.PublicKey{signer.Public()}
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		guarded(t, d)
		ctx := context.Background()
		cases := []struct {
			name       string
			tamper     func(t *testing.T)
			wantSeq    int64
			checkpoint bool
		}{
			{"intact", func(*testing.T) {}, 0, false},
			{"fully recomputed chain", func(t *testing.T) { rewrite(t, d, 1) }, 5, true},
			{"recomputed after the first checkpoint", func(t *testing.T) { rewrite(t, d, 7) }, 9, true},
			{"recomputed chain and re-signed checkpoints", func(t *testing.T) {
				rewrite(t, d, 2)
				var stmts []string
				recs, _ := audit.Query(ctx, d, audit.Filter{Limit: audit.MaxPage})
				for _, r := range recs.Records {
					if r.Seq == 5 || r.Seq == 9 {
						c := forger.Sign(r.Seq, r.Hash, t0)
						stmts = append(stmts, fmt.Sprintf(`UPDATE audit_checkpoints SET hash = '%s', key_id = '%s', signature = '%s' WHERE seq = %d`,
							c.Hash, c.KeyID, c.Signature, c.Seq))
					}
				}
				tamper(t, d, stmts...)
			}, 5, true},
			{"checkpoint row deleted", func(t *testing.T) {
				tamper(t, d, `DELETE FROM audit_checkpoints WHERE seq = 9`)
			}, 9, true},
			{"truncated behind a consistent head", func(t *testing.T) {
				var h8 string
				_ = d.QueryRow(`SELECT hash FROM audit_log WHERE seq = 8`).Scan(&h8)
				tamper(t, d, `DELETE FROM audit_log WHERE seq >= 9`, `UPDATE audit_head SET seq = 8, hash = '`+h8+`'`)
			}, 9, false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				resetChain(t, d)
				checkpointed(t, d, signer)
				c.tamper(t)
				res, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: keys, RequireSignatures: true})
				if c.wantSeq == 0 {
					if err != nil || res.Records != 12 || res.Checkpoints != 2 || res.LastCheckpoint != 9 || res.Unanchored() != 3 {
						t.Fatalf("intact: %+v %v", res, err)
					}
					return
				}
				wantProblem(t, err, c.wantSeq, c.checkpoint)
			})
		}
		t.Run("signatures need a trusted key", func(t *testing.T) {
			resetChain(t, d)
			checkpointed(t, d, signer)
			if _, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{RequireSignatures: true}); !errors.Is(err, audit.ErrNoTrustedKey) {
				t.Fatalf("got %v, want ErrNoTrustedKey", err)
			}
			_, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: []ed25519.PublicKey{forger.Public()}})
			wantProblem(t, err, 5, true)
		})
	})
}

func TestVersionOneRecordsStillVerify(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		// Two records as migration 00001's code wrote them: no source
		// address, device id or hash version (the column default, 1).
		prev := ""
		for seq := int64(1); seq <= 2; seq++ {
			r := audit.Record{Seq: seq, At: t0, ActorType: "system", ActorID: "old", Action: "old.step",
				ObjectType: "thing", ObjectID: "x", Outcome: "success", Detail: []byte("{}"), PrevHash: prev, HashVersion: 1}
			r.Hash = audit.RecomputeHash(&r)
			if _, err := d.ExecContext(ctx, `INSERT INTO audit_log (seq, at, actor_type, actor_id, actor_role, action,
				object_type, object_id, outcome, correlation_id, detail, prev_hash, hash)
				VALUES ($1, $2, 'system', 'old', '', 'old.step', 'thing', 'x', 'success', '', '{}', $3, $4)`,
				seq, t0.UnixMicro(), prev, r.Hash); err != nil {
				t.Fatal(err)
			}
			prev = r.Hash
		}
		if _, err := d.ExecContext(ctx, `UPDATE audit_head SET seq = 2, hash = $1`, prev); err != nil {
			t.Fatal(err)
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			err := audit.Append(ctx, tx, audit.Entry{ActorType: audit.ActorUser, ActorID: "u1", Action: "new.step",
				SourceAddr: "10.1.2.3", DeviceID: "dev_1"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		chainAll(t, d)
		if n, err := audit.Verify(ctx, d); err != nil || n != 3 {
			t.Fatalf("mixed v1/v2 chain: n=%d err=%v", n, err)
		}
		recs, _ := audit.Query(ctx, d, audit.Filter{})
		if v := []int{recs.Records[0].HashVersion, recs.Records[2].HashVersion}; v[0] != 1 || v[1] != 2 || recs.Records[2].DeviceID != "dev_1" {
			t.Fatalf("versions %v, record %+v", v, recs.Records[2])
		}
		// A v1 record given a device id afterwards: its hash does not cover it.
		if _, err := d.ExecContext(ctx, `UPDATE audit_log SET device_id = 'dev_x' WHERE seq = 1`); err != nil {
			t.Fatal(err)
		}
		_, err = audit.Verify(ctx, d)
		wantProblem(t, err, 1, false)
	})
}

func TestConcurrentAppendsStayLinear(t *testing.T) {
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Go(func() { appendN(t, d, 10) })
		}
		// Two "nodes" checkpointing while the appenders run.
		for range 2 {
			wg.Go(func() {
				c := &audit.Checkpointer{DB: d, Signer: signer, Every: 7}
				for range 20 {
					if _, err := c.Tick(ctx, time.Now()); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		res, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: []ed25519.PublicKey{signer.Public()}})
		if err != nil || res.Records != 80+int64(res.Checkpoints) {
			t.Fatalf("res=%+v err=%v", res, err)
		}
	})
}

// AppendBatch (audit/batch.go) and Append write one chain: the verifier
// accepts both, whatever hash version each writes.
func TestBatchAndSingleAppendsShareOneChain(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		appendN(t, d, 2)
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			err := audit.AppendBatch(ctx, tx, []audit.Entry{
				{ActorType: audit.ActorSystem, ActorID: "b", Action: "batch.one"},
				{ActorType: audit.ActorSystem, ActorID: "b", Action: "batch.two"},
			})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, d, 1)
		if n, err := audit.Verify(ctx, d); err != nil || n != 5 {
			t.Fatalf("n=%d err=%v", n, err)
		}
	})
}

// Under Defer, Append holds records; Write adds them, then the extra
// ones, in that order, within the caller's transaction.
func TestDeferredAppendsWrittenTogether(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			dctx, held := audit.Defer(ctx)
			for _, a := range []string{"held.one", "held.two"} {
				if err := audit.Append(dctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "d", Action: a}); err != nil {
					return err
				}
			}
			if n, err := audit.Pending(ctx, tx); err != nil || n != 0 {
				t.Errorf("before Write: %d pending (%v), want 0", n, err)
			}
			return held.Write(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "d", Action: "extra"})
		})
		if err != nil {
			t.Fatal(err)
		}
		dbtest.ChainAudit(t, d)
		got := dbtest.Strings(t, d, `SELECT action FROM audit_log WHERE actor_id = 'd' ORDER BY seq`)
		if want := []string{"held.one", "held.two", "extra"}; !slices.Equal(got, want) {
			t.Fatalf("chain = %v, want %v", got, want)
		}
	})
}
