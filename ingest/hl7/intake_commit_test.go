package hl7

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// The committer groups waiting messages; a failed batch is retried one by
// one so only the bad message fails.
func TestCommitterGroupsAndIsolatesFailures(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]string
	c := &committer{max: 4, commit: func(_ context.Context, batch []*item) error {
		if len(batches) == 0 {
			<-release // hold the first batch so the others queue up
		}
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for _, it := range batch {
			ids = append(ids, it.controlID)
		}
		batches = append(batches, ids)
		for _, it := range batch {
			if it.controlID == "BAD" {
				return errors.New("poisoned")
			}
		}
		for _, it := range batch {
			it.eventID = "evt-" + it.controlID
		}
		return nil
	}}
	items := []*item{{controlID: "FIRST"}}
	for i := range 9 {
		items = append(items, &item{controlID: fmt.Sprint("M", i)})
	}
	items[5].controlID = "BAD"
	var wg sync.WaitGroup
	wg.Go(func() { c.submit(context.Background(), items[0]) })
	for !c.isBusy() {
		time.Sleep(time.Millisecond)
	}
	for _, it := range items[1:] {
		wg.Go(func() { c.submit(context.Background(), it) })
	}
	for c.queued() < 9 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	for _, it := range items {
		switch {
		case it.controlID == "BAD" && it.err == nil:
			t.Error("poisoned message reported committed")
		case it.controlID != "BAD" && (it.err != nil || it.eventID != "evt-"+it.controlID):
			t.Errorf("%s: err %v, id %q", it.controlID, it.err, it.eventID)
		}
	}
	if len(batches[0]) != 1 || len(batches[1]) != 4 {
		t.Errorf("batches = %v, want the leader alone, then 4 grouped", batches)
	}
	for _, b := range batches {
		if len(b) > 4 {
			t.Errorf("batch over max: %v", b)
		}
	}
	if c.isBusy() || c.queued() != 0 {
		t.Error("committer not idle at the end")
	}
}

func (c *committer) isBusy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busy
}

func (c *committer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

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

// AppendBatch writes the records Append would: same chain, verifiable,
// and mixable with Append.
func TestAppendBatchChain(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		entry := func(i int) audit.Entry {
			return audit.Entry{At: at.Add(time.Duration(i) * time.Second), ActorType: audit.ActorSystem, ActorID: "t",
				Action: "test", ObjectType: "x", ObjectID: fmt.Sprint(i), Detail: map[string]any{"i": i}}
		}
		var got []audit.Record
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			r, err := audit.Append(ctx, tx, entry(0))
			got = append(got, r)
			if err != nil {
				return err
			}
			var batch []audit.Entry
			for i := 1; i <= 450; i++ { // more than one multi-row INSERT
				batch = append(batch, entry(i))
			}
			rs, err := audit.AppendBatch(ctx, tx, batch)
			got = append(got, rs...)
			if err != nil {
				return err
			}
			if _, err := audit.AppendBatch(ctx, tx, nil); err != nil {
				return err
			}
			r, err = audit.Append(ctx, tx, entry(451))
			got = append(got, r)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := audit.Verify(ctx, d)
		if err != nil || n != 452 {
			t.Fatalf("verify: %d records, %v", n, err)
		}
		if !slices.IsSortedFunc(got, func(a, b audit.Record) int { return int(a.Seq - b.Seq) }) || got[451].Seq != 452 {
			t.Error("sequence numbers out of order")
		}
		// The same entries appended one by one hash alike.
		other := dbtest.SQLite(t)
		err = other.InTx(ctx, func(tx *sql.Tx) error {
			for i := range 452 {
				r, err := audit.Append(ctx, tx, entry(i))
				if err != nil {
					return err
				}
				if r.Hash != got[i].Hash {
					return fmt.Errorf("record %d hash differs: %+v vs %+v", i+1, r, got[i])
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
}
