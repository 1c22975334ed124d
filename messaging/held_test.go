package messaging_test

import (
	"database/sql"
	"testing"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/routing"
)

// Under HoldPages the messages of two alerts wait for Flush (nothing is
// stored, no device row locked, before it); Flush stores them with their
// timers and audit records, each device's in the order it was paged.
func TestHeldPagesWaitForFlush(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		k := 6.9
		var alerts []*routing.Alert
		err := d.InTx(f.ctx, func(tx *sql.Tx) error {
			ctx, held := f.engine.HoldPages(f.ctx)
			for _, mrn := range []string{"MRN1", "MRN2"} {
				p := ingest.Patient{ID: mrn, Authority: "HOSP"}
				admit := &ingest.Event{Kind: ingest.KindAdmit, Source: "ADT", SourceID: "A-" + mrn, Patient: p,
					Location: ingest.Location{Unit: "4W", Room: "412", Bed: mrn}}
				result := &ingest.Event{Kind: ingest.KindResult, Source: "LAB", SourceID: "R-" + mrn, Patient: p,
					Observations: []ingest.Observation{{Code: "2823-3", System: "LN", Value: "6.9", Numeric: &k, Flags: []string{"HH"}}}}
				if _, err := f.router.Route(ctx, tx, ids.New("evt"), admit, f.keys, f.now); err != nil {
					return err
				}
				out, err := f.router.Route(ctx, tx, ids.New("evt"), result, f.keys, f.now)
				if err != nil || len(out.Opened) != 1 {
					t.Fatalf("route %s: %v, %d opened", mrn, err, len(out.Opened))
				}
				if _, err := f.engine.Start(ctx, tx, out.Opened[0], f.now); err != nil {
					return err
				}
				alerts = append(alerts, out.Opened[0])
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM messages`).Scan(&n); err != nil || n != 0 || !held.Held() {
				t.Fatalf("before Flush: %d messages stored (%v), held %v; want none stored, held", n, err, held.Held())
			}
			return held.Flush(ctx, tx)
		})
		if err != nil {
			t.Fatal(err)
		}
		envs := f.messages("rn")
		if len(envs) != 2 {
			t.Fatalf("rn holds %d messages, want 2", len(envs))
		}
		for i, env := range envs {
			p, err := f.open("rn", env)
			if err != nil || p.AlertID != alerts[i].ID || env.Seq != int64(i+1) {
				t.Fatalf("message %d: seq %d alert %s (%v), want seq %d alert %s", i, env.Seq, p.AlertID, err, i+1, alerts[i].ID)
			}
			if got := f.auditRecords("message.sent", env.MessageID); len(got) != 1 || got[0]["seq"] != float64(i+1) {
				t.Fatalf("message.sent records of %s: %v", env.MessageID, got)
			}
			f.wantTimers(alerts[i].ID, "0:pending")
		}
	})
}

// A user's devices are read once per transaction: a user whose devices
// are known, or queued, is not queued again, and PrefetchDevices sends
// nothing when it knows every user already.
func TestHeldPagesReadDevicesOnce(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		err := d.InTx(f.ctx, func(tx *sql.Tx) error {
			_, held := f.engine.HoldPages(f.ctx)
			p := d.PipeIn(tx)
			if !held.QueueDevices(p, []string{"rn"}) || held.QueueDevices(p, []string{"rn"}) {
				t.Error("rn's devices queued twice, or not at all")
			}
			if err := p.Flush(f.ctx); err != nil {
				return err
			}
			if devs, ok := held.KnownDevices("rn"); !ok || len(devs) != 1 || devs[0].ID != f.devs["rn"].id {
				t.Errorf("rn's devices %v (%v), want %s", devs, ok, f.devs["rn"].id)
			}
			if held.QueueDevices(p, []string{"rn"}) || p.Queued() {
				t.Error("rn's devices read again")
			}
			if err := held.PrefetchDevices(f.ctx, p, []string{"rn", "sup"}); err != nil {
				return err
			}
			if _, ok := held.KnownDevices("sup"); !ok {
				t.Error("sup's devices not read")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
