package ingest_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// claimEnv stores events one millisecond apart, so arrival order is
// received_at order.
type claimEnv struct {
	t     *testing.T
	d     *db.DB
	store *ingest.Store
	at    time.Time
	n     int
	piped bool  // claim with LockAndClaim, not LockParts then ClaimBatch
	held  []int // the partitions the last claim was granted
}

func newClaimEnv(t *testing.T, d *db.DB) *claimEnv {
	keys, err := atrest.Parse("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return &claimEnv{t: t, d: d, store: ingest.NewStore(keys, d.SkipLocked()),
		at: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
}

func (e *claimEnv) put(ev ingest.Event) string {
	e.t.Helper()
	e.n++
	ev.Source, ev.SourceID = "TEST", fmt.Sprint(e.n)
	id := fmt.Sprintf("evt_%02d", e.n)
	ctx := context.Background()
	if err := e.d.InTx(ctx, func(tx *sql.Tx) error { return e.store.Insert(ctx, tx, id, &ev, nil, "AA", e.at) }); err != nil {
		e.t.Fatal(err)
	}
	e.at = e.at.Add(time.Millisecond)
	return id
}

// claim locks parts and claims up to 10 of their events in tx.
func (e *claimEnv) claim(tx *sql.Tx, parts []int) []string {
	e.t.Helper()
	ctx := context.Background()
	var evs []ingest.Stored
	if e.piped {
		var err error
		if e.held, evs, err = e.store.LockAndClaim(ctx, e.d.PipeIn(tx), tx, parts, 10); err != nil {
			e.t.Fatal(err)
		}
	} else {
		var err error
		if e.held, err = e.store.LockParts(ctx, tx, parts); err != nil {
			e.t.Fatal(err)
		}
		if evs, err = e.store.ClaimBatch(ctx, tx, e.held, 10); err != nil {
			e.t.Fatal(err)
		}
	}
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	return ids
}

// claimAndRoute claims as claim does and marks the events processed.
func (e *claimEnv) claimAndRoute(parts []int) []string {
	e.t.Helper()
	var ids []string
	err := e.d.InTx(context.Background(), func(tx *sql.Tx) error {
		ids = e.claim(tx, parts)
		return e.store.SetStates(context.Background(), tx, ids, ingest.StateProcessed, e.at)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// twoPatients returns two patients whose events fall in different routing
// partitions, and those partitions.
func twoPatients(t *testing.T) (a, b ingest.Patient, pa, pb int) {
	a = ingest.Patient{ID: "MRN-A"}
	pa = (&ingest.Event{Kind: ingest.KindResult, Patient: a}).RoutePart()
	for i := range 100 {
		b = ingest.Patient{ID: fmt.Sprint("MRN-B", i)}
		if pb = (&ingest.Event{Kind: ingest.KindResult, Patient: b}).RoutePart(); pb != pa {
			return a, b, pa, pb
		}
	}
	t.Fatal("no second partition")
	return
}

func TestRoutePart(t *testing.T) {
	p := ingest.Patient{ID: "123", Authority: "GHH"}
	result := (&ingest.Event{Kind: ingest.KindResult, Patient: p}).RoutePart()
	if result < 0 || result >= ingest.RouteParts {
		t.Fatalf("partition %d out of range", result)
	}
	// Every event of one patient is in one partition, whatever its kind.
	for _, k := range []ingest.Kind{ingest.KindAdmit, ingest.KindTransfer, ingest.KindAlarm, ingest.KindDischarge} {
		if got := (&ingest.Event{Kind: k, Patient: p}).RoutePart(); got != result {
			t.Fatalf("%s in partition %d, the patient's results in %d", k, got, result)
		}
	}
	// Events about two patients are barriers.
	for _, k := range []ingest.Kind{ingest.KindMerge, ingest.KindSwap} {
		if got := (&ingest.Event{Kind: k, Patient: p}).RoutePart(); got != -1 {
			t.Fatalf("%s in partition %d, want -1 (a barrier)", k, got)
		}
	}
	// The 16 partitions are all used by a few hundred patients.
	seen := map[int]bool{}
	for i := range 400 {
		seen[(&ingest.Event{Kind: ingest.KindResult, Patient: ingest.Patient{ID: fmt.Sprint(i)}}).RoutePart()] = true
	}
	if len(seen) != ingest.RouteParts {
		t.Fatalf("400 patients fill %d partitions of %d", len(seen), ingest.RouteParts)
	}
}

// Claims by partition: a lane gets only its partitions' events, oldest
// first; a merge (barrier) waits for every earlier event and holds back
// every later one; a partition another transaction holds is not granted.
// SQLite has one routing worker: it claims the oldest events. The same
// with the lock and the claim sent together (LockAndClaim).
func TestClaimByPartition(t *testing.T) {
	for _, piped := range []bool{false, true} {
		t.Run(fmt.Sprint("piped=", piped), func(t *testing.T) { claimByPartition(t, piped) })
	}
}

func claimByPartition(t *testing.T, piped bool) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newClaimEnv(t, d)
		e.piped = piped
		a, b, pa, pb := twoPatients(t)
		a1 := e.put(ingest.Event{Kind: ingest.KindResult, Patient: a})
		b1 := e.put(ingest.Event{Kind: ingest.KindResult, Patient: b})
		a2 := e.put(ingest.Event{Kind: ingest.KindResult, Patient: a})
		merge := e.put(ingest.Event{Kind: ingest.KindMerge, Patient: a, PriorPatient: &b})
		a3 := e.put(ingest.Event{Kind: ingest.KindResult, Patient: a})
		b2 := e.put(ingest.Event{Kind: ingest.KindResult, Patient: b})

		if d.Dialect != db.Postgres {
			if got := e.claimAndRoute([]int{pa}); !slices.Equal(got, []string{a1, b1, a2, merge, a3, b2}) {
				t.Fatalf("SQLite claimed %v, want every event in order", got)
			}
			return
		}
		ctx := context.Background()
		peek := func(parts []int) []string { // claims and rolls back
			var ids []string
			tx, err := d.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			ids = e.claim(tx, parts)
			return ids
		}
		if got := peek([]int{pa}); !slices.Equal(got, []string{a1, a2}) {
			t.Fatalf("partition of a claimed %v, want %v (nothing past the merge)", got, []string{a1, a2})
		}
		if got := peek([]int{pb}); !slices.Equal(got, []string{b1}) {
			t.Fatalf("partition of b claimed %v, want %v", got, []string{b1})
		}

		// While one transaction holds a's partition, another is refused it
		// and gets b's events only.
		tx1, err := d.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.claim(tx1, []int{pa}); !slices.Equal(got, []string{a1, a2}) {
			t.Fatalf("tx1 claimed %v", got)
		}
		if got := e.claimAndRoute([]int{pa, pb}); !slices.Equal(got, []string{b1}) || !slices.Equal(e.held, []int{pb}) {
			t.Fatalf("beside tx1, claimed %v granted %v, want only %v of partition %d", got, e.held, []string{b1}, pb)
		}
		// The merge is not the oldest pending event while tx1 routes a1, a2.
		if got := e.claimAndRoute(ingest.AllParts()); len(got) != 0 {
			t.Fatalf("claimed %v while tx1 holds a's partition and the merge waits", got)
		}
		if err := e.store.SetStates(ctx, tx1, []string{a1, a2}, ingest.StateProcessed, e.at); err != nil {
			t.Fatal(err)
		}
		if err := tx1.Commit(); err != nil {
			t.Fatal(err)
		}

		// Now the merge is the oldest: claimed alone, by any lane; while it
		// is routed nothing after it is claimed.
		tx2, err := d.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.claim(tx2, []int{pb}); !slices.Equal(got, []string{merge}) {
			t.Fatalf("claimed %v, want the merge alone", got)
		}
		if got := e.claimAndRoute(ingest.AllParts()); len(got) != 0 {
			t.Fatalf("claimed %v while the merge is routed", got)
		}
		if err := e.store.SetStates(ctx, tx2, []string{merge}, ingest.StateProcessed, e.at); err != nil {
			t.Fatal(err)
		}
		if err := tx2.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := e.claimAndRoute(ingest.AllParts()); !slices.Equal(got, []string{a3, b2}) {
			t.Fatalf("after the merge claimed %v, want %v", got, []string{a3, b2})
		}
	})
}

// Events stored before partitions existed (route_part NULL) are routed as
// barriers: one at a time, in order.
func TestClaimUnpartitionedInOrder(t *testing.T) {
	d := dbtest.Postgres(t)
	e := newClaimEnv(t, d)
	a, b, _, _ := twoPatients(t)
	first := e.put(ingest.Event{Kind: ingest.KindResult, Patient: a})
	second := e.put(ingest.Event{Kind: ingest.KindResult, Patient: b})
	if _, err := d.ExecContext(context.Background(), `UPDATE events SET route_part = NULL`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{first, second} {
		if got := e.claimAndRoute(ingest.AllParts()); !slices.Equal(got, []string{want}) {
			t.Fatalf("claimed %v, want %s alone", got, want)
		}
	}
}

// Barriers claimed by several transactions at once, each claimer spinning
// as an idle lane does: every barrier is claimed exactly once. A claim
// whose snapshot predates another's commit must not take the barrier that
// commit just marked processed (PostgreSQL rechecks a locked row's
// conditions on its newest version: the state must be among them).
func TestBarrierClaimedOnce(t *testing.T) {
	d := dbtest.Postgres(t)
	e := newClaimEnv(t, d)
	a, b, _, _ := twoPatients(t)
	const barriers = 60
	for range barriers {
		e.put(ingest.Event{Kind: ingest.KindMerge, Patient: a, PriorPatient: &b})
	}
	ctx := context.Background()
	claims := make(chan string, 4*barriers)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				var ids []string
				err := d.InTx(ctx, func(tx *sql.Tx) error {
					evs, err := e.store.ClaimBatch(ctx, tx, nil, 10)
					if err != nil {
						return err
					}
					ids = ids[:0]
					for _, ev := range evs {
						ids = append(ids, ev.ID)
					}
					return e.store.SetStates(ctx, tx, ids, ingest.StateProcessed, e.at)
				})
				if err != nil {
					t.Error(err)
					return
				}
				for _, id := range ids {
					claims <- id
				}
				var pending int
				if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE state = 'pending'`).Scan(&pending); err != nil {
					t.Error(err)
					return
				}
				if pending == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	close(claims)
	seen := map[string]int{}
	for id := range claims {
		if seen[id]++; seen[id] > 1 {
			t.Errorf("barrier %s claimed %d times", id, seen[id])
		}
	}
	if len(seen) != barriers {
		t.Fatalf("%d barriers claimed, want %d", len(seen), barriers)
	}
}
