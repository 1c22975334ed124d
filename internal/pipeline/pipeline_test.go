package pipeline_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/pipeline"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// Every dedup lookup a batch answers from its prefetched alerts is
// checked against the database.
func TestMain(m *testing.M) {
	routing.VerifyPrefetch(true)
	os.Exit(m.Run())
}

type recorder struct {
	mu     sync.Mutex
	woken  []string
	events []bus.AlertEvent
}

func (r *recorder) WakeDevices(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.woken = append(r.woken, ids...)
}

func (r *recorder) PublishAlert(_ context.Context, ev bus.AlertEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

type fixture struct {
	t      testing.TB
	d      *db.DB
	store  *ingest.Store
	worker *pipeline.Worker
	rec    *recorder
	// newWorker wires another worker on the same database: another node.
	newWorker func() *pipeline.Worker
	pseudo    pipeline.Pseudonymizer
	logs      *lockedBuffer // the worker's log
	now       time.Time
	n         int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// 23:00 in New York: the quiet hours of the low-priority rule.
var night = time.Date(2026, 3, 3, 4, 0, 0, 0, time.UTC)

func newFixture(t testing.TB, d *db.DB) *fixture {
	t.Helper()
	keys, err := atrest.Parse("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, d: d, store: ingest.NewStore(keys, d.SkipLocked()), rec: &recorder{}, pseudo: keys,
		logs: &lockedBuffer{}, now: night}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	clock := func() time.Time { return f.now }
	engine := messaging.NewEngine(d, keys, f.rec, log, clock)
	f.newWorker = func() *pipeline.Worker {
		return pipeline.New(d, f.store, routing.NewRouter(keys), engine, keys, f.rec, f.rec, log, clock)
	}
	f.worker = f.newWorker()
	ctx := context.Background()
	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		for _, u := range []oncall.Unit{{ID: "4W", Name: "4W", TimeZone: "America/New_York"}, {ID: "ICU", Name: "ICU", TimeZone: "America/New_York"}} {
			if err := oncall.PutUnit(ctx, tx, by, u); err != nil {
				return err
			}
		}
		for _, s := range []oncall.Shift{{UnitID: "4W", Role: "RN", UserID: "rn1"}, {UnitID: "ICU", Role: "RN", UserID: "icurn"}} {
			if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: s.UserID, Name: s.UserID}); err != nil {
				return err
			}
			s.Start, s.End = night.Add(-24*time.Hour), night.Add(48*time.Hour)
			if _, err := oncall.AddShift(ctx, tx, by, s); err != nil {
				return err
			}
		}
		if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: "sup", Name: "sup"}); err != nil {
			return err
		}
		for _, u := range []string{"rn1", "icurn", "sup"} {
			_, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
			if err != nil {
				return err
			}
			if _, err := messaging.RegisterDevice(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"},
				messaging.Device{UserID: u, Name: u, Suite: messaging.SuiteX25519, PublicKey: pub}, night.Add(-time.Hour)); err != nil {
				return err
			}
		}
		if err := oncall.PutPolicy(ctx, tx, by, oncall.Policy{ID: "nursing", Name: "Nursing", Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}}}}); err != nil {
			return err
		}
		c, err := routing.NewCompiler()
		if err != nil {
			return err
		}
		rules := []routing.Rule{
			{ID: "k-crit", Name: "Critical potassium", Enabled: true, Priority: routing.PriorityHigh,
				Match:  routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH"}},
				Target: routing.Target{Role: "RN"}, PolicyID: "nursing", LockText: "{priority} alert on {unit}", Body: "K {value}",
				AutoResolve: &routing.AutoResolve{OnNormal: true}},
			{ID: "hr-low-prio", Name: "Heart rate (low priority)", Enabled: true, Priority: routing.PriorityLow,
				Match:  routing.Match{Codes: []routing.Code{{System: "LN", Code: "8867-4"}}, Above: ptr(110)},
				Target: routing.Target{Role: "RN"}, PolicyID: "nursing", LockText: "{priority} alert on {unit}", Body: "HR {value}",
				QuietHours: &routing.QuietHours{From: "22:00", To: "07:00"}},
		}
		_, err = routing.ApplyRules(ctx, tx, c, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"}, rules, false, night)
		return err
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	return f
}

func ptr(v float64) *float64 { return &v }

// send stores an event and routes it through the worker.
func (f *fixture) send(ev *ingest.Event) {
	f.t.Helper()
	f.n++
	ev.Source, ev.SourceID = "TEST", string(rune('a'+f.n))
	ctx := context.Background()
	err := f.d.InTx(ctx, func(tx *sql.Tx) error {
		return f.store.Insert(ctx, tx, "evt_"+ev.SourceID, ev, nil, "AA", f.now)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if more, err := f.worker.ProcessOne(ctx); err != nil || !more {
		f.t.Fatalf("ProcessOne: %v %v", more, err)
	}
}

func (f *fixture) count(q string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.d.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func obs(code string, v float64, flags ...string) ingest.Observation {
	return ingest.Observation{Code: code, System: "LN", Value: "x", Numeric: &v, Units: "u", Flags: flags}
}

// The worker pages a retargeted alert again in the new unit, publishes a
// closed alert, and pages a held alert when its quiet hours end.
func TestWorkerRoutingLifecycle(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		patient := ingest.Patient{ID: "MRN1"}
		f.send(&ingest.Event{Kind: ingest.KindAdmit, Patient: patient, Location: ingest.Location{Unit: "4W", Bed: "1"}})
		f.send(&ingest.Event{Kind: ingest.KindResult, Patient: patient, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
		if n := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'rn1'`); n != 1 {
			t.Fatalf("rn1 got %d messages, want 1", n)
		}
		f.send(&ingest.Event{Kind: ingest.KindTransfer, Patient: patient, Location: ingest.Location{Unit: "ICU", Bed: "2"}})
		if n := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'icurn'`); n != 1 {
			t.Fatalf("after the transfer icurn got %d messages, want 1 (the alert paged again in ICU)", n)
		}
		if n := f.count(`SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'`); n != 1 {
			t.Fatalf("%d pending timers after the retarget, want 1 (the old one cancelled)", n)
		}
		f.send(&ingest.Event{Kind: ingest.KindResult, Patient: patient, Observations: []ingest.Observation{obs("2823-3", 4.2)}})
		if n := f.count(`SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'`); n != 0 {
			t.Fatalf("%d pending timers after auto-resolve, want 0", n)
		}
		f.rec.mu.Lock()
		var closed int
		for _, e := range f.rec.events {
			if e.Type == "closed" {
				closed++
			}
		}
		f.rec.mu.Unlock()
		if closed != 1 {
			t.Fatalf("%d closed lifecycle events, want 1", closed)
		}

		// Quiet hours: held at 23:00, paged at 07:00 by the worker.
		f.send(&ingest.Event{Kind: ingest.KindResult, Patient: patient, Observations: []ingest.Observation{obs("8867-4", 130)}})
		if n := f.count(`SELECT COUNT(*) FROM alerts WHERE state = 'held'`); n != 1 {
			t.Fatalf("%d held alerts, want 1", n)
		}
		before := f.count(`SELECT COUNT(*) FROM messages`)
		if n, err := f.worker.ReleaseHeld(context.Background()); err != nil || n != 0 {
			t.Fatalf("ReleaseHeld at night: %d %v", n, err)
		}
		f.now = time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC) // 07:00 in New York
		if n, err := f.worker.ReleaseHeld(context.Background()); err != nil || n != 1 {
			t.Fatalf("ReleaseHeld at 07:00: %d %v", n, err)
		}
		if got := f.count(`SELECT COUNT(*) FROM messages`); got != before+1 {
			t.Fatalf("%d messages after the release, want %d", got, before+1)
		}
		dbtest.ChainAudit(t, d)
		if n, err := audit.Verify(context.Background(), d); err != nil || n == 0 {
			t.Fatalf("audit.Verify after %d: %v", n, err)
		}
	})
}

// store keeps an event as intake does, without routing it.
func (f *fixture) store1(ev *ingest.Event) string {
	f.t.Helper()
	f.n++
	ev.Source, ev.SourceID = "TEST", fmt.Sprint(f.n)
	ctx := context.Background()
	id := fmt.Sprintf("evt_%06d", f.n)
	if err := f.d.InTx(ctx, func(tx *sql.Tx) error { return f.store.Insert(ctx, tx, id, ev, nil, "AA", f.now) }); err != nil {
		f.t.Fatal(err)
	}
	f.now = f.now.Add(time.Millisecond) // arrival order is received_at order
	return id
}

// A burst is routed in one transaction, in arrival order: a result routes
// to the unit an admission earlier in the same batch set.
func TestBatchRoutesInArrivalOrder(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		p, q := ingest.Patient{ID: "MRN1"}, ingest.Patient{ID: "MRN2"}
		var ids []string
		for _, ev := range []*ingest.Event{
			{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "ICU", Bed: "1"}},
			{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}},
			{Kind: ingest.KindAdmit, Patient: q, Location: ingest.Location{Unit: "4W", Bed: "2"}},
			{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 6.8, "HH")}},
			{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 6.9, "HH")}},
		} {
			ids = append(ids, f.store1(ev))
		}
		n, err := f.worker.ProcessBatch(context.Background(), 32)
		if err != nil || n != 5 {
			t.Fatalf("ProcessBatch: %d %v", n, err)
		}
		if got := f.count(`SELECT COUNT(*) FROM events WHERE state = 'processed'`); got != 5 {
			t.Fatalf("%d events processed, want 5", got)
		}
		// p's alert went to ICU's RN, q's to 4W's; q's second result updated its open alert.
		if a, b := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'icurn'`),
			f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'rn1'`); a != 1 || b != 1 {
			t.Fatalf("icurn %d, rn1 %d messages; want 1 and 1", a, b)
		}
		if n, err := f.worker.ProcessBatch(context.Background(), 32); err != nil || n != 0 {
			t.Fatalf("second ProcessBatch: %d %v", n, err)
		}
		dbtest.ChainAudit(t, d)
		page, err := audit.Query(context.Background(), d, audit.Filter{Action: "event.routed"})
		if err != nil || len(page.Records) != 5 {
			t.Fatalf("event.routed records: %d %v", len(page.Records), err)
		}
		for i, r := range page.Records {
			if r.ObjectID != ids[i] {
				t.Fatalf("record %d routes %s, want %s", i, r.ObjectID, ids[i])
			}
		}
	})
}

// The alerts a batch opens wait on its pipe (routing WriteBehind) and
// still count for every later read: a held alert, which pages nobody and
// so flushes no message, is found by its patient's next firing in the
// same batch, which folds into it instead of holding a second.
func TestBatchReadsAlertsItQueued(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		p, q := ingest.Patient{ID: "MRN1"}, ingest.Patient{ID: "MRN2"}
		f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "4W", Bed: "1"}})
		f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: q, Location: ingest.Location{Unit: "ICU", Bed: "2"}})
		if n, err := f.worker.ProcessBatch(context.Background(), 32); err != nil || n != 2 {
			t.Fatalf("admissions: %d %v", n, err)
		}
		hr := func(v float64) []ingest.Observation { return []ingest.Observation{obs("8867-4", v)} }
		f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: hr(130)})
		f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: q, Observations: hr(125)})
		f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: hr(140)})
		if n, err := f.worker.ProcessBatch(context.Background(), 32); err != nil || n != 3 {
			t.Fatalf("results: %d %v", n, err)
		}
		if got := f.count(`SELECT COUNT(*) FROM alerts WHERE state = 'held'`); got != 2 {
			t.Fatalf("%d held alerts, want one for each patient", got)
		}
		if got := f.count(`SELECT COUNT(*) FROM alerts WHERE state = 'held' AND updates = 1`); got != 1 {
			t.Fatalf("%d held alerts with one update, want 1 (p's second firing)", got)
		}
		if got := f.count(`SELECT COUNT(*) FROM messages`); got != 0 {
			t.Fatalf("%d messages for held alerts", got)
		}
	})
}

// A batch reads the devices of whoever held a role in its units last
// time with its rosters (a guess); someone who has joined a roster since
// is read after, and paged all the same.
func TestBatchPagesANewHolder(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		ctx := context.Background()
		critical := func(mrn string) {
			t.Helper()
			p := ingest.Patient{ID: mrn}
			f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "4W", Bed: mrn}})
			f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
			if n, err := f.worker.ProcessBatch(ctx, 32); err != nil || n != 2 {
				t.Fatalf("ProcessBatch: %d %v", n, err)
			}
		}
		critical("MRN1")
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, err := oncall.AddShift(ctx, tx, oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"},
				oncall.Shift{UnitID: "4W", Role: "RN", UserID: "sup", Start: night.Add(-time.Hour), End: night.Add(time.Hour)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		critical("MRN2")
		if a, b := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'rn1'`),
			f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'sup'`); a != 2 || b != 1 {
			t.Fatalf("rn1 %d, sup %d messages; want 2 and 1 (sup on 4W's roster for the second alert)", a, b)
		}
	})
}

// A batch reads its patients' active alerts once (routing.QueueActive):
// a result in a later batch still folds into the open alert an earlier
// batch opened, a patient's second result in one batch into the alert its
// first opened, and after a transfer that moved it; each answer given
// from memory is checked against the database (TestMain).
func TestBatchDedupAcrossBatches(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		p, q := ingest.Patient{ID: "MRN1"}, ingest.Patient{ID: "MRN2"}
		batch := func(want int, evs ...*ingest.Event) {
			t.Helper()
			for _, ev := range evs {
				f.store1(ev)
			}
			if n, err := f.worker.ProcessBatch(context.Background(), 32); err != nil || n != want {
				t.Fatalf("ProcessBatch: %d %v, want %d", n, err, want)
			}
		}
		batch(3,
			&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "ICU", Bed: "1"}},
			&ingest.Event{Kind: ingest.KindAdmit, Patient: q, Location: ingest.Location{Unit: "4W", Bed: "2"}},
			&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
		batch(3,
			&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 6.8, "HH")}},
			&ingest.Event{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 6.7, "HH")}},
			&ingest.Event{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 6.9, "HH")}})
		if got := f.count(`SELECT COUNT(*) FROM alerts WHERE state = 'open'`); got != 2 {
			t.Fatalf("%d open alerts, want one for each patient", got)
		}
		if got := f.count(`SELECT SUM(updates) FROM alerts`); got != 2 {
			t.Fatalf("%d updates, want 2 (p's second result, q's second)", got)
		}
		// A transfer moves q's alert (an ADT write): q's next result in the
		// batch reads its alerts from the database again.
		batch(3,
			&ingest.Event{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 7.1, "HH")}},
			&ingest.Event{Kind: ingest.KindTransfer, Patient: q, Location: ingest.Location{Unit: "ICU", Bed: "3"}},
			&ingest.Event{Kind: ingest.KindResult, Patient: q, Observations: []ingest.Observation{obs("2823-3", 7.3, "HH")}})
		batch(1, &ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7.2, "HH")}})
		if got := f.count(`SELECT COUNT(*) FROM alerts`); got != 2 {
			t.Fatalf("%d alerts in all, want 2", got)
		}
		if got := f.count(`SELECT SUM(updates) FROM alerts`); got != 5 {
			t.Fatalf("%d updates, want 5", got)
		}
		if got := f.count(`SELECT COUNT(*) FROM alerts WHERE unit = 'ICU'`); got != 2 {
			t.Fatalf("%d alerts on ICU, want both (q's moved)", got)
		}
	})
}

// Each batch reads the rules' generation with its other reads
// (routing.QueueRules): a rule disabled, then enabled again, between
// batches takes effect at the next one.
func TestBatchSeesRuleChanges(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		ctx := context.Background()
		kCrit := routing.Rule{ID: "k-crit", Name: "Critical potassium", Priority: routing.PriorityHigh,
			Match:  routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH"}},
			Target: routing.Target{Role: "RN"}, PolicyID: "nursing", LockText: "{priority} alert on {unit}", Body: "K {value}"}
		setEnabled := func(on bool) {
			t.Helper()
			r := kCrit
			r.Enabled = on
			if err := d.InTx(ctx, func(tx *sql.Tx) error {
				return routing.PutRule(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"}, r, f.now)
			}); err != nil {
				t.Fatal(err)
			}
		}
		route := func(patient string) {
			t.Helper()
			p := ingest.Patient{ID: patient}
			f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "ICU", Bed: patient}})
			f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
			if n, err := f.worker.ProcessBatch(ctx, 32); err != nil || n != 2 {
				t.Fatalf("ProcessBatch: %d %v", n, err)
			}
		}
		route("MRN1")
		setEnabled(false)
		route("MRN2")
		if got := f.count(`SELECT COUNT(*) FROM alerts`); got != 1 {
			t.Fatalf("%d alerts with the rule disabled, want only the first", got)
		}
		setEnabled(true)
		route("MRN3")
		if got := f.count(`SELECT COUNT(*) FROM alerts`); got != 2 {
			t.Fatalf("%d alerts once the rule is enabled again, want 2", got)
		}
	})
}

// An event that cannot be read fails its batch; the worker then routes the
// events one by one, so the others are routed and the bad one is set aside
// after its attempts.
func TestBadEventFailsAlone(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		p := ingest.Patient{ID: "MRN1"}
		f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: "4W", Bed: "1"}})
		bad := f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
		f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 6.9, "HH")}})
		ctx := context.Background()
		if _, err := d.ExecContext(ctx, `UPDATE events SET payload = $1 WHERE id = $2`, []byte("not sealed"), bad); err != nil {
			t.Fatal(err)
		}
		if n, err := f.worker.ProcessBatch(ctx, 32); err == nil || n != 0 {
			t.Fatalf("ProcessBatch with a bad event: %d %v", n, err)
		}
		if got := f.count(`SELECT COUNT(*) FROM events WHERE state = 'pending'`); got != 3 {
			t.Fatalf("%d pending after the failed batch, want 3 (nothing kept)", got)
		}
		run, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { f.worker.Run(run, 5*time.Millisecond); close(done) }()
		defer func() { stop(); <-done }()
		deadline := time.Now().Add(20 * time.Second)
		for f.count(`SELECT COUNT(*) FROM events WHERE state = 'pending'`) > 0 {
			if time.Now().After(deadline) {
				t.Fatal("events still pending")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := f.count(`SELECT COUNT(*) FROM events WHERE state = 'failed' AND id = $1`, bad); got != 1 {
			t.Fatal("the bad event is not marked failed")
		}
		if got := f.count(`SELECT COUNT(*) FROM events WHERE state = 'processed'`); got != 2 {
			t.Fatalf("%d events processed, want 2", got)
		}
		if got := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'rn1'`); got != 1 {
			t.Fatalf("rn1 got %d messages, want 1 (the good result)", got)
		}
	})
}

// Several lanes, of two nodes, route a stream of many patients at once
// (PostgreSQL):
// each patient's admission, critical result, transfer and normal result
// are applied in their order (out of order, the alert would stay open, or
// the patient end in the wrong unit), every event exactly once, with a
// merge in the middle of the stream routed as a barrier. Half the
// patients start in 4W and move to ICU, half the reverse, and all alerts
// page the same two devices: lanes contend for them in either order, and
// when PostgreSQL rolls a batch back on a deadlock the lane routes it
// again.
func TestLanesKeepEachPatientInOrder(t *testing.T) {
	units := func(i int) (from, to string) {
		if i%2 == 0 {
			return "4W", "ICU"
		}
		return "ICU", "4W"
	}
	d := dbtest.Postgres(t)
	f := newFixture(t, d)
	f.worker.SetLanes(4)
	const patients = 30
	var events []*ingest.Event
	for i := range patients {
		p := ingest.Patient{ID: fmt.Sprint("MRN", i)}
		from, to := units(i)
		events = append(events,
			&ingest.Event{Kind: ingest.KindAdmit, Patient: p, Location: ingest.Location{Unit: from, Bed: fmt.Sprint(i)}},
			&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}},
			&ingest.Event{Kind: ingest.KindTransfer, Patient: p, Location: ingest.Location{Unit: to, Bed: fmt.Sprint(i)}},
			&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 4.2)}})
	}
	// Interleave the patients' streams, as a hospital's feed would.
	var stream []*ingest.Event
	for step := range 4 {
		for i := range patients {
			stream = append(stream, events[i*4+step])
		}
		if step == 1 {
			q, r := ingest.Patient{ID: "MRN-Q"}, ingest.Patient{ID: "MRN-R"}
			stream = append(stream, &ingest.Event{Kind: ingest.KindAdmit, Patient: q, Location: ingest.Location{Unit: "4W", Bed: "90"}},
				&ingest.Event{Kind: ingest.KindMerge, Patient: r, PriorPatient: &q, Location: ingest.Location{Unit: "4W", Bed: "90"}})
		}
	}
	for _, ev := range stream {
		f.store1(ev)
	}
	// A second node routes the same partitions at the same time.
	other := f.newWorker()
	other.SetLanes(2)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		wg.Go(func() { f.worker.Run(ctx, 5*time.Millisecond) })
		wg.Go(func() { other.Run(ctx, 5*time.Millisecond) })
		wg.Wait()
		close(done)
	}()
	f.worker.Kick()
	other.Kick()
	deadline := time.Now().Add(60 * time.Second)
	for f.count(`SELECT COUNT(*) FROM events WHERE state = 'pending'`) > 0 {
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("%d events still pending", f.count(`SELECT COUNT(*) FROM events WHERE state = 'pending'`))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if got := f.count(`SELECT COUNT(*) FROM events WHERE state = 'processed'`); got != len(stream) {
		t.Fatalf("%d events processed, want %d", got, len(stream))
	}
	if got := f.count(`SELECT COUNT(*) FROM alerts`); got != patients {
		t.Fatalf("%d alerts, want one per patient (%d)", got, patients)
	}
	if got := f.count(`SELECT COUNT(*) FROM alerts WHERE state = 'open'`); got != 0 {
		t.Fatalf("%d alerts still open: a normal result was routed before its critical one", got)
	}
	if a, b := f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'rn1'`),
		f.count(`SELECT COUNT(*) FROM messages WHERE user_id = 'icurn'`); a != patients || b != patients {
		t.Fatalf("rn1 %d, icurn %d messages; want %d each (paged in one unit, again in the other after the transfer)",
			a, b, patients)
	}
	if got := f.count(`SELECT COUNT(*) FROM escalation_timers WHERE state = 'pending'`); got != 0 {
		t.Fatalf("%d pending timers, want 0 (every alert resolved)", got)
	}
	for i := range patients {
		c, ok, err := routing.GetContext(context.Background(), d, routing.PatientID(f.pseudo, ingest.Patient{ID: fmt.Sprint("MRN", i)}))
		if _, to := units(i); err != nil || !ok || c.Location.Unit != to {
			t.Fatalf("patient %d: context %+v %v %v, want %s", i, c.Location, ok, err, to)
		}
	}
	dbtest.ChainAudit(t, d)
	page, err := audit.Query(context.Background(), d, audit.Filter{Action: "event.routed", Limit: 1000})
	if err != nil || len(page.Records) != len(stream) {
		t.Fatalf("event.routed records: %d %v, want %d (each event once)", len(page.Records), err, len(stream))
	}
	t.Logf("batches rolled back by a deadlock and routed again: %d", strings.Count(f.logs.String(), "deadlock"))
}
