package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func actions(t *testing.T, d *db.DB) []string {
	t.Helper()
	page, err := audit.Query(context.Background(), d, audit.Filter{Limit: audit.MaxPage})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range page.Records {
		out = append(out, r.Action)
	}
	return out
}

// A record waits in audit_pending until Chain links it; a rolled-back
// transaction leaves nothing; one transaction's records keep their order
// across batch boundaries.
func TestChainLinksCommittedRecordsInOrder(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		entry := func(action string) audit.Entry {
			return audit.Entry{ActorType: audit.ActorSystem, ActorID: "t", Action: action}
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if err := audit.Append(ctx, tx, entry("a.1")); err != nil {
				return err
			}
			var batch []audit.Entry
			for i := 2; i <= 450; i++ { // more than one multi-row INSERT
				batch = append(batch, entry(fmt.Sprintf("a.%d", i)))
			}
			if err := audit.AppendBatch(ctx, tx, batch); err != nil {
				return err
			}
			return audit.Append(ctx, tx, entry("a.451"))
		})
		if err != nil {
			t.Fatal(err)
		}
		rollback := errors.New("rolled back")
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			if err := audit.Append(ctx, tx, entry("never")); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if n, _ := audit.Pending(ctx, d); n != 451 {
			t.Fatalf("pending = %d, want 451", n)
		}
		if got := actions(t, d); len(got) != 0 {
			t.Fatalf("chained before Chain ran: %v", got)
		}
		// Small batches: the chain grows across several Chain calls.
		for {
			n, err := audit.Chain(ctx, d, 100)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
		got := actions(t, d)
		if len(got) != 451 {
			t.Fatalf("chained %d records, want 451", len(got))
		}
		for i, a := range got {
			if a != fmt.Sprintf("a.%d", i+1) {
				t.Fatalf("record %d is %s", i+1, a)
			}
		}
		res, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{})
		if err != nil || res.Records != 451 || res.Pending != 0 {
			t.Fatalf("res=%+v err=%v", res, err)
		}
	})
}

// On PostgreSQL a transaction still open when Chain runs is not skipped:
// its records are linked after it commits, after records committed before.
func TestChainWaitsForLateCommits(t *testing.T) {
	d := dbtest.Postgres(t)
	ctx := context.Background()
	late, err := d.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback()
	if err := audit.Append(ctx, late, audit.Entry{ActorType: audit.ActorSystem, ActorID: "t", Action: "late"}); err != nil {
		t.Fatal(err)
	}
	appendN(t, d, 2) // appended after "late", committed before it; chained by the helper
	if n, _ := audit.Pending(ctx, d); n != 0 {
		t.Fatalf("an uncommitted record counts as pending: %d", n)
	}
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	chainAll(t, d)
	got := actions(t, d)
	if want := []string{"test.step", "test.step", "late"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chain order %v, want %v", got, want)
	}
	if n, err := audit.Verify(ctx, d); err != nil || n != 3 {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

// The guard refuses edits of pending records on PostgreSQL.
func TestPendingRecordsCannotBeEdited(t *testing.T) {
	d := guarded(t, dbtest.Postgres(t))
	ctx := context.Background()
	if err := d.InTx(ctx, func(tx *sql.Tx) error {
		return audit.Append(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "t", Action: "x"})
	}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{`UPDATE audit_pending SET action = 'y'`, `TRUNCATE audit_pending`} {
		if _, err := d.ExecContext(ctx, stmt); err == nil {
			t.Errorf("%s: allowed", stmt)
		}
	}
	chainAll(t, d)
	if got := actions(t, d); len(got) != 1 || got[0] != "x" {
		t.Fatalf("got %v", got)
	}
}
