package hl7

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// Many connections at once: every message stored once, acknowledged AA, and
// the audit chain intact through the batched appends.
func TestIntakeConcurrentConnections(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newIntakeEnv(t, d, nil)
		const conns, per = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, conns*per)
		for c := range conns {
			wg.Go(func() {
				cl := e.dial(t, nil)
				for i := range per {
					id := fmt.Sprintf("C%d-%d", c, i)
					if err := WriteFrame(cl.nc, adt(id)); err != nil {
						errs <- err
						return
					}
					reply, err := cl.reply()
					if err != nil {
						errs <- err
						return
					}
					m, err := Parse(reply)
					if err != nil || m.Get("MSA-1") != "AA" || m.Get("MSA-2") != id {
						errs <- fmt.Errorf("%s: %q", id, reply)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := e.count(t, "events"); n != conns*per {
			t.Errorf("events = %d", n)
		}
		if n := e.verifyAudit(t); n != conns*per {
			t.Errorf("audit records = %d", n)
		}
	})
}

// A batch that repeats an earlier message, and repeats one of its own,
// is stored whole: on PostgreSQL the one-round-trip attempt is aborted by
// its claim guard and nothing of it is kept; the careful redo answers the
// copies with their first copies' ids.
func TestBatchWithDuplicatesAfterOptimisticAttempt(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		in, _ := newTestIntake(t, d, clk)
		result := func(ctrl string) *item {
			return &item{at: clk.Now(), source: "LAB^HOSP", controlID: ctrl, outcome: Accepted,
				ev: &ingest.Event{Kind: ingest.KindResult, Source: "LAB^HOSP", SourceID: ctrl, Trigger: "ORU^R01"}}
		}
		first := result("OLD")
		if err := in.commitBatch(ctx, []*item{first}); err != nil {
			t.Fatal(err)
		}
		batch := []*item{result("NEW"), result("OLD"), result("NEW")}
		if d.Dialect == db.Postgres {
			if err := in.storeBatch(ctx, batch, true); !ingest.IsClaimLost(err) {
				t.Fatalf("optimistic attempt: err = %v, want the claim guard's abort", err)
			}
			if n := countRows(t, d, "events"); n != 1 {
				t.Fatalf("events after the aborted attempt = %d, want 1", n)
			}
		}
		if err := in.commitBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if batch[0].dup || batch[0].eventID == "" || batch[0].eventID == first.eventID {
			t.Errorf("NEW: dup %v, id %q", batch[0].dup, batch[0].eventID)
		}
		if !batch[1].dup || batch[1].eventID != first.eventID {
			t.Errorf("OLD again: dup %v, id %q, want %q", batch[1].dup, batch[1].eventID, first.eventID)
		}
		if !batch[2].dup || batch[2].eventID != batch[0].eventID {
			t.Errorf("NEW again: dup %v, id %q, want %q", batch[2].dup, batch[2].eventID, batch[0].eventID)
		}
		if err := in.storeBatch(ctx, []*item{result("NEWER")}, d.Dialect == db.Postgres); err != nil {
			t.Fatalf("a batch without duplicates: %v", err)
		}
		if n := countRows(t, d, "events"); n != 3 {
			t.Errorf("events = %d, want 3 (OLD, NEW, NEWER)", n)
		}
		actions := dbtest.Strings(t, d, `SELECT action FROM audit_pending ORDER BY id`)
		want := []string{"ingest.accepted", "ingest.accepted", "ingest.duplicate", "ingest.duplicate", "ingest.accepted"}
		if fmt.Sprint(actions) != fmt.Sprint(want) {
			t.Errorf("audit actions = %v, want %v", actions, want)
		}
	})
}

func countRows(t *testing.T, d *db.DB, table string) int {
	t.Helper()
	var n int
	if err := d.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
