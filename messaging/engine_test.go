package messaging_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// t0 is when every fixture's alert opens; shifts cover it by hours either
// side, so only the explicit clock decides what is due.
var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

const (
	stepDelay = 60 * time.Second
	policyID  = "nursing"
)

// fakeWaker records every device id it is asked to wake.
type fakeWaker struct {
	mu    sync.Mutex
	woken []string
}

func (w *fakeWaker) WakeDevices(deviceIDs []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.woken = append(w.woken, deviceIDs...)
}

// take returns the ids woken since the last take and forgets them.
func (w *fakeWaker) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.woken
	w.woken = nil
	return out
}

type device struct {
	id   string
	priv []byte
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	d      *db.DB
	keys   *atrest.Keyring
	router *routing.Router
	engine *messaging.Engine
	waker  *fakeWaker
	bus    *memBus // what gateways built on the fixture subscribe to
	now    time.Time
	devs   map[string]device // by user: rn, charge, sup
}

type seedOpts struct {
	noRNShift  bool // nobody holds RN on 4W
	engineOpts []messaging.Option
}

// teeWaker wakes through both the recording fake and the in-process bus
// (which gateways subscribe to).
type teeWaker struct {
	a *fakeWaker
	b *memBus
}

func (w teeWaker) WakeDevices(ids []string) { w.a.WakeDevices(ids); w.b.WakeDevices(ids) }

// newFixture seeds unit 4W, users rn/charge/sup with one device each, RN and
// CHARGE_RN shifts, the policy RN → CHARGE_RN → sup and a critical-potassium
// rule. It verifies the audit chain when the test ends.
func newFixture(t *testing.T, d *db.DB, opts seedOpts) *fixture {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i + 1)
	}
	keys, err := atrest.Parse("k1:" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: context.Background(), d: d, keys: keys, router: routing.NewRouter(keys),
		waker: &fakeWaker{}, bus: &memBus{}, now: t0, devs: map[string]device{}}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	f.engine = messaging.NewEngine(d, keys, teeWaker{f.waker, f.bus}, log, func() time.Time { return f.now }, opts.engineOpts...)

	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err = d.InTx(f.ctx, func(tx *sql.Tx) error {
		if err := oncall.PutUnit(f.ctx, tx, by, oncall.Unit{ID: "4W", Name: "4 West", TimeZone: "UTC"}); err != nil {
			return err
		}
		for _, u := range []string{"rn", "charge", "sup"} {
			if err := oncall.PutUser(f.ctx, tx, by, oncall.User{ID: u, Name: "User " + u}); err != nil {
				return err
			}
			priv, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
			if err != nil {
				return err
			}
			dev, err := messaging.RegisterDevice(f.ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"},
				messaging.Device{UserID: u, Name: u + " phone", Suite: messaging.SuiteX25519, PublicKey: pub}, t0.Add(-2*time.Hour))
			if err != nil {
				return err
			}
			f.devs[u] = device{id: dev.ID, priv: priv}
		}
		shifts := []oncall.Shift{{UnitID: "4W", Role: "CHARGE_RN", UserID: "charge"}}
		if !opts.noRNShift {
			shifts = append(shifts, oncall.Shift{UnitID: "4W", Role: "RN", UserID: "rn"})
		}
		for _, s := range shifts {
			s.Start, s.End = t0.Add(-time.Hour), t0.Add(12*time.Hour)
			if _, err := oncall.AddShift(f.ctx, tx, by, s); err != nil {
				return err
			}
		}
		delay := int(stepDelay / time.Second)
		if err := oncall.PutPolicy(f.ctx, tx, by, oncall.Policy{ID: policyID, Name: "Nursing", Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: delay},
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: delay},
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
		}}); err != nil {
			return err
		}
		return routing.PutRule(f.ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"}, routing.Rule{
			ID: "critical-potassium", Name: "Critical potassium", Enabled: true, Priority: routing.PriorityHigh,
			Match:      routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH", "LL"}},
			TargetRole: "RN", PolicyID: policyID, LockText: "{priority} alert on {unit}",
			Body: "Room {room} bed {bed}: critical {test} {value} {units} ({flag})"}, t0.Add(-2*time.Hour))
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	t.Cleanup(func() {
		if n, err := audit.Verify(context.Background(), d); err != nil {
			t.Errorf("audit.Verify after %d records: %v", n, err)
		}
	})
	return f
}

// openAlert admits patient mrn to 4W bed 12, routes a critical potassium
// for them and starts the escalation, all in one transaction at f.now; it
// then wakes the devices Start returned, as the pipeline does.
func (f *fixture) openAlert(mrn string) *routing.Alert {
	f.t.Helper()
	a, err := f.openAlertErr(mrn)
	if err != nil {
		f.t.Fatalf("open alert: %v", err)
	}
	return a
}

// openAlertErr is openAlert for goroutines other than the test's.
func (f *fixture) openAlertErr(mrn string) (*routing.Alert, error) {
	patient := ingest.Patient{ID: mrn, Authority: "HOSP"}
	k := 6.9
	admit := &ingest.Event{Kind: ingest.KindAdmit, Source: "ADT^HOSP", SourceID: "A-" + mrn, Trigger: "ADT^A01",
		OccurredAt: f.now, Patient: patient, Location: ingest.Location{Unit: "4W", Room: "412", Bed: "12"}}
	result := &ingest.Event{Kind: ingest.KindResult, Source: "LAB^HOSP", SourceID: "R-" + mrn, Trigger: "ORU^R01",
		OccurredAt: f.now, Patient: patient, Observations: []ingest.Observation{{Code: "2823-3", System: "LN",
			Display: "Potassium", ValueType: "NM", Value: "6.9", Numeric: &k, Units: "mmol/L", Flags: []string{"HH"}}}}
	var alert *routing.Alert
	var wake []string
	err := f.d.InTx(f.ctx, func(tx *sql.Tx) error {
		if _, err := f.router.Route(f.ctx, tx, ids.New("evt"), admit, f.keys, f.now); err != nil {
			return err
		}
		out, err := f.router.Route(f.ctx, tx, ids.New("evt"), result, f.keys, f.now)
		if err != nil {
			return err
		}
		if len(out.Opened) != 1 {
			return fmt.Errorf("result opened %d alerts, want 1", len(out.Opened))
		}
		alert = out.Opened[0]
		wake, err = f.engine.Start(f.ctx, tx, alert, f.now)
		return err
	})
	if err != nil {
		return nil, err
	}
	teeWaker{f.waker, f.bus}.WakeDevices(wake)
	return alert, nil
}

// messages returns every message stored for a user's device.
func (f *fixture) messages(user string) []messaging.Envelope {
	f.t.Helper()
	envs, err := messaging.MessagesAfter(f.ctx, f.d, f.devs[user].id, 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	return envs
}

// open decrypts a message with a user's private key, as its device would.
func (f *fixture) open(user string, env messaging.Envelope) (messaging.Plain, error) {
	var p messaging.Plain
	pt, err := messaging.Open(messaging.SuiteX25519, f.devs[user].priv,
		messaging.MessageInfo(env.MessageID, f.devs[user].id), env.Sealed)
	if err != nil {
		return p, err
	}
	return p, json.Unmarshal(pt, &p)
}

// onlyMessage asserts the user's device holds exactly one message and
// returns it, with its decrypted step.
func (f *fixture) onlyMessage(user, alertID string, step int) messaging.Envelope {
	f.t.Helper()
	envs := f.messages(user)
	if len(envs) != 1 {
		f.t.Fatalf("%s holds %d messages, want 1", user, len(envs))
	}
	env := envs[0]
	p, err := f.open(user, env)
	if err != nil {
		f.t.Fatalf("%s cannot open its message: %v", user, err)
	}
	if p.AlertID != alertID || p.Step != step || p.MessageID != env.MessageID || p.DeviceID != f.devs[user].id {
		f.t.Fatalf("%s message = %+v, want alert %s step %d", user, p, alertID, step)
	}
	return env
}

func (f *fixture) noMessages(users ...string) {
	f.t.Helper()
	for _, u := range users {
		if envs := f.messages(u); len(envs) != 0 {
			f.t.Fatalf("%s holds %d messages, want none", u, len(envs))
		}
	}
}

func (f *fixture) alert(id string) *routing.Alert {
	f.t.Helper()
	a, err := routing.GetAlert(f.ctx, f.d, f.keys, id, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

// timers returns the alert's escalation timers as "step:state" strings,
// ordered by step.
func (f *fixture) timers(alertID string) []string {
	f.t.Helper()
	rows, err := f.d.QueryContext(f.ctx, `SELECT step, state FROM escalation_timers WHERE alert_id = $1 ORDER BY step, due_at`, alertID)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var step int
		var state string
		if err := rows.Scan(&step, &state); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s", step, state))
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// auditRecords returns the details of the audit records with action about
// object, in order, with their outcome under "_outcome".
func (f *fixture) auditRecords(action, objectID string) []map[string]any {
	f.t.Helper()
	dbtest.ChainAudit(f.t, f.d)
	rows, err := f.d.QueryContext(f.ctx, `SELECT outcome, detail FROM audit_log WHERE action = $1 AND object_id = $2 ORDER BY seq`,
		action, objectID)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		var outcome, detail string
		if err := rows.Scan(&outcome, &detail); err != nil {
			f.t.Fatal(err)
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(detail), &m); err != nil {
			f.t.Fatal(err)
		}
		m["_outcome"] = outcome
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) fireDue(want int) {
	f.t.Helper()
	n, err := f.engine.FireDue(f.ctx, f.now)
	if err != nil {
		f.t.Fatalf("FireDue at %v: %v", f.now.Sub(t0), err)
	}
	if n != want {
		f.t.Fatalf("FireDue at t0+%v fired %d timers, want %d", f.now.Sub(t0), n, want)
	}
}

func (f *fixture) wantWoken(users ...string) {
	f.t.Helper()
	var want []string
	for _, u := range users {
		want = append(want, f.devs[u].id)
	}
	if got := f.waker.take(); !slices.Equal(got, want) {
		f.t.Fatalf("woken %v, want %v (%v)", got, want, users)
	}
}

func (f *fixture) wantAlert(id, state string, step int) *routing.Alert {
	f.t.Helper()
	a := f.alert(id)
	if a.State != state || a.Step != step {
		f.t.Fatalf("alert is %s at step %d, want %s at step %d", a.State, a.Step, state, step)
	}
	return a
}

func (f *fixture) wantTimers(alertID string, want ...string) {
	f.t.Helper()
	if got := f.timers(alertID); !slices.Equal(got, want) {
		f.t.Fatalf("timers %v, want %v", got, want)
	}
}

func TestStartPagesFirstStep(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")

		env := f.onlyMessage("rn", a.ID, 0)
		f.noMessages("charge", "sup")
		f.wantWoken("rn")
		f.wantAlert(a.ID, routing.StateOpen, 0)
		f.wantTimers(a.ID, "0:pending")

		p, err := f.open("rn", env)
		if err != nil {
			t.Fatal(err)
		}
		if p.Priority != routing.PriorityHigh || p.Unit != "4W" || !strings.Contains(p.Body, "6.9") ||
			!strings.Contains(p.Body, "bed 12") || !p.SentAt.Equal(t0) {
			t.Fatalf("decrypted body = %+v", p)
		}
		if strings.Contains(env.LockText, "6.9") || env.LockText != "PH alert on 4W" {
			t.Fatalf("lock text %q", env.LockText)
		}
		// The stored ciphertext is what the envelope carries.
		var stored []byte
		if err := d.QueryRowContext(f.ctx, `SELECT sealed FROM messages WHERE id = $1`, env.MessageID).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if _, err := messaging.Open(messaging.SuiteX25519, f.devs["rn"].priv,
			messaging.MessageInfo(env.MessageID, f.devs["rn"].id), stored); err != nil {
			t.Fatalf("RN cannot open messages.sealed: %v", err)
		}
		if _, err := messaging.Open(messaging.SuiteX25519, f.devs["charge"].priv,
			messaging.MessageInfo(env.MessageID, f.devs["rn"].id), stored); err == nil {
			t.Fatal("the charge RN's key opened the RN's message")
		}
		if _, err := messaging.Open(messaging.SuiteX25519, f.devs["charge"].priv,
			messaging.MessageInfo(env.MessageID, f.devs["charge"].id), stored); err == nil {
			t.Fatal("the charge RN's key opened the RN's message under its own device id")
		}
		if got := f.auditRecords("message.sent", env.MessageID); len(got) != 1 {
			t.Fatalf("message.sent records: %v", got)
		}
		if got := f.auditRecords("alert.escalated", a.ID); len(got) != 0 {
			t.Fatalf("paging step 0 on open audited an escalation: %v", got)
		}
	})
}

func TestFireDueEscalates(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		f.waker.take()

		f.now = t0.Add(stepDelay - time.Second)
		f.fireDue(0)
		f.noMessages("charge", "sup")
		f.wantWoken()

		f.now = t0.Add(stepDelay)
		f.fireDue(1)
		f.onlyMessage("charge", a.ID, 1)
		f.wantWoken("charge")
		f.wantAlert(a.ID, routing.StateOpen, 1)
		f.wantTimers(a.ID, "0:fired", "1:pending")

		f.fireDue(0) // the same instant again: nothing left to fire
		f.onlyMessage("charge", a.ID, 1)
		f.wantWoken()

		f.now = t0.Add(2*stepDelay - time.Second)
		f.fireDue(0)
		f.noMessages("sup")

		f.now = t0.Add(2 * stepDelay)
		f.fireDue(1)
		f.onlyMessage("sup", a.ID, 2)
		f.wantWoken("sup")
		f.wantAlert(a.ID, routing.StateOpen, 2)
		f.wantTimers(a.ID, "0:fired", "1:fired") // no timer after the failsafe

		f.now = t0.Add(time.Hour)
		f.fireDue(0)
		f.onlyMessage("rn", a.ID, 0)
		f.onlyMessage("charge", a.ID, 1)
		f.onlyMessage("sup", a.ID, 2)

		esc := f.auditRecords("alert.escalated", a.ID)
		if len(esc) != 2 || esc[0]["to_step"] != 1.0 || esc[0]["reason"] != "no_accept" || esc[0]["failsafe"] != false ||
			esc[1]["to_step"] != 2.0 || esc[1]["failsafe"] != true {
			t.Fatalf("alert.escalated records: %v", esc)
		}
	})
}

func TestAcceptCancelsTimers(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		env := f.onlyMessage("rn", a.ID, 0)
		f.waker.take()

		f.now = t0.Add(10 * time.Second)
		state, err := f.engine.Respond(f.ctx, f.devs["rn"].id, env.MessageID, messaging.ResponseAccept)
		if err != nil || state != routing.StateAccepted {
			t.Fatalf("accept = %q, %v", state, err)
		}
		if got := f.wantAlert(a.ID, routing.StateAccepted, 0); got.AcceptedBy != "rn" {
			t.Fatalf("accepted by %q", got.AcceptedBy)
		}
		f.wantTimers(a.ID, "0:cancelled")
		f.wantWoken()

		f.now = t0.Add(stepDelay)
		f.fireDue(0)
		f.now = t0.Add(time.Hour)
		f.fireDue(0)
		f.noMessages("charge", "sup")
		f.wantWoken()

		// A second accept, then a decline, change nothing and do not fail.
		for _, resp := range []string{messaging.ResponseAccept, messaging.ResponseDecline} {
			state, err = f.engine.Respond(f.ctx, f.devs["rn"].id, env.MessageID, resp)
			if err != nil || state != routing.StateAccepted {
				t.Fatalf("%s after accept = %q, %v", resp, state, err)
			}
		}
		f.wantAlert(a.ID, routing.StateAccepted, 0)
		f.noMessages("charge", "sup")
		f.wantWoken()

		acc := f.auditRecords("alert.accepted", a.ID)
		if len(acc) != 2 || acc[0]["_outcome"] != "success" || acc[1]["_outcome"] != "no_effect" {
			t.Fatalf("alert.accepted records: %v", acc)
		}
		if dec := f.auditRecords("alert.declined", a.ID); len(dec) != 1 || dec[0]["_outcome"] != "no_effect" {
			t.Fatalf("alert.declined records: %v", dec)
		}
	})
}

func TestDeclineEscalatesAtOnce(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		env := f.onlyMessage("rn", a.ID, 0)
		f.waker.take()

		f.now = t0.Add(5 * time.Second)
		if _, err := f.engine.Respond(f.ctx, f.devs["rn"].id, env.MessageID, messaging.ResponseDecline); err != nil {
			t.Fatal(err)
		}
		f.onlyMessage("charge", a.ID, 1)
		f.wantWoken("charge")
		f.wantAlert(a.ID, routing.StateOpen, 1)
		f.wantTimers(a.ID, "0:cancelled", "1:pending")
		esc := f.auditRecords("alert.escalated", a.ID)
		if len(esc) != 1 || esc[0]["reason"] != "declined" || esc[0]["from_step"] != 0.0 || esc[0]["to_step"] != 1.0 {
			t.Fatalf("alert.escalated records: %v", esc)
		}

		// The cancelled step-0 timer never fires; the step-1 timer runs from
		// the decline.
		f.now = t0.Add(stepDelay)
		f.fireDue(0)
		f.noMessages("sup")
		f.now = t0.Add(5*time.Second + stepDelay)
		f.fireDue(1)
		f.onlyMessage("sup", a.ID, 2)
		f.onlyMessage("charge", a.ID, 1)
	})
}

// TestUnreachableStepIsSkipped: the RN holds the role but has no device
// that can receive, so step 0 reaches nobody and the engine moves on at once.
func TestUnreachableStepIsSkipped(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		if _, err := d.ExecContext(f.ctx, `UPDATE devices SET state = 'wipe_pending' WHERE user_id = 'rn'`); err != nil {
			t.Fatal(err)
		}
		a := f.openAlert("MRN1")

		f.noMessages("rn", "sup")
		f.onlyMessage("charge", a.ID, 1)
		f.wantWoken("charge")
		f.wantAlert(a.ID, routing.StateOpen, 1)
		f.wantTimers(a.ID, "1:pending")

		un := f.auditRecords("escalation.step_unreachable", a.ID)
		if len(un) != 1 || un[0]["step"] != 0.0 || un[0]["users"] != 1.0 {
			t.Fatalf("escalation.step_unreachable records: %v", un)
		}
		if esc := f.auditRecords("alert.escalated", a.ID); len(esc) != 1 || esc[0]["to_step"] != 1.0 {
			t.Fatalf("alert.escalated records: %v", esc)
		}

		f.now = t0.Add(stepDelay)
		f.fireDue(1)
		f.onlyMessage("sup", a.ID, 2)
		f.noMessages("rn")
	})
}

// TestNobodyHoldsTheTargetGoesToFailsafe: when nobody holds the rule's
// target role, the alert goes straight to the policy's failsafe (routing
// flags it; the engine pages the last step only).
func TestNobodyHoldsTheTargetGoesToFailsafe(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{noRNShift: true})
		a := f.openAlert("MRN1")
		f.noMessages("rn", "charge")
		f.onlyMessage("sup", a.ID, 0)
		f.wantWoken("sup")
		f.wantTimers(a.ID) // the failsafe is the last step: no timer
	})
}

func TestReceipts(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		env := f.onlyMessage("rn", a.ID, 0)
		rn, charge := f.devs["rn"].id, f.devs["charge"].id
		if env.Seq != 1 {
			t.Fatalf("first message seq = %d", env.Seq)
		}

		f.now = t0.Add(2 * time.Second)
		for range 2 { // a repeated receipt is recorded once
			if err := f.engine.Delivered(f.ctx, rn, env.Seq); err != nil {
				t.Fatal(err)
			}
		}
		var delivered sql.NullInt64
		if err := d.QueryRowContext(f.ctx, `SELECT delivered_at FROM messages WHERE id = $1`, env.MessageID).Scan(&delivered); err != nil {
			t.Fatal(err)
		}
		if !delivered.Valid || delivered.Int64 != f.now.UnixMicro() {
			t.Fatalf("delivered_at = %v, want %d", delivered, f.now.UnixMicro())
		}
		dev, err := messaging.GetDevice(f.ctx, d, rn)
		if err != nil {
			t.Fatal(err)
		}
		if dev.AckedSeq != env.Seq || dev.LastSeenAt == nil || !dev.LastSeenAt.Equal(f.now) {
			t.Fatalf("device after receipt: acked %d, last seen %v", dev.AckedSeq, dev.LastSeenAt)
		}
		if got := f.auditRecords("message.delivered", env.MessageID); len(got) != 1 || got[0]["alert_id"] != a.ID {
			t.Fatalf("message.delivered records: %v", got)
		}

		f.now = t0.Add(3 * time.Second)
		for range 2 {
			if err := f.engine.Read(f.ctx, rn, env.MessageID); err != nil {
				t.Fatal(err)
			}
		}
		if got := f.auditRecords("message.read", env.MessageID); len(got) != 1 || got[0]["alert_id"] != a.ID {
			t.Fatalf("message.read records: %v", got)
		}

		// Another device may not read or answer the RN's message.
		if err := f.engine.Read(f.ctx, charge, env.MessageID); !errors.Is(err, messaging.ErrNotYours) {
			t.Fatalf("Read from another device: %v", err)
		}
		for _, resp := range []string{messaging.ResponseAccept, messaging.ResponseDecline} {
			if _, err := f.engine.Respond(f.ctx, charge, env.MessageID, resp); !errors.Is(err, messaging.ErrNotYours) {
				t.Fatalf("%s from another device: %v", resp, err)
			}
		}
		if _, err := f.engine.Respond(f.ctx, rn, "msg_unknown", messaging.ResponseAccept); !errors.Is(err, messaging.ErrNotYours) {
			t.Fatalf("accept of an unknown message: %v", err)
		}
		var invalid *messaging.InvalidError
		if _, err := f.engine.Respond(f.ctx, rn, env.MessageID, "maybe"); !errors.As(err, &invalid) {
			t.Fatalf("unknown response: %v", err)
		}
		f.wantAlert(a.ID, routing.StateOpen, 0)
		f.wantTimers(a.ID, "0:pending")
		f.noMessages("charge", "sup")
	})
}

// TestConcurrentFireDue fires 50 due timers from four goroutines at once:
// on PostgreSQL they are separate transactions claiming rows with SKIP
// LOCKED; on SQLite they serialize on the single connection.
func TestConcurrentFireDue(t *testing.T) {
	const alerts, workers = 50, 4
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		for i := range alerts {
			f.openAlert(fmt.Sprintf("MRN%03d", i))
		}
		if n := len(f.messages("rn")); n != alerts {
			t.Fatalf("RN holds %d messages, want %d", n, alerts)
		}
		f.waker.take()

		now := t0.Add(stepDelay)
		var wg sync.WaitGroup
		fired := make([]int, workers)
		errs := make([]error, workers)
		start := make(chan struct{})
		for w := range workers {
			wg.Go(func() {
				<-start
				fired[w], errs[w] = f.engine.FireDue(f.ctx, now)
			})
		}
		close(start)
		wg.Wait()
		total := 0
		for w := range workers {
			if errs[w] != nil {
				t.Fatalf("worker %d: %v", w, errs[w])
			}
			total += fired[w]
		}
		if total != alerts {
			t.Fatalf("fired %d timers in all (%v), want %d", total, fired, alerts)
		}
		t.Logf("timers fired per worker: %v", fired)

		count := func(query string) int {
			t.Helper()
			var n int
			if err := d.QueryRowContext(f.ctx, query).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count(`SELECT COUNT(*) FROM messages WHERE step = 1`); n != alerts {
			t.Fatalf("%d messages at step 1, want %d", n, alerts)
		}
		if n := count(`SELECT COUNT(DISTINCT alert_id) FROM messages WHERE step = 1`); n != alerts {
			t.Fatalf("%d alerts paged at step 1, want %d", n, alerts)
		}
		if n := count(`SELECT COUNT(*) FROM escalation_timers WHERE step = 0 AND state = 'fired'`); n != alerts {
			t.Fatalf("%d step-0 timers fired, want %d", n, alerts)
		}
		if n := count(`SELECT COUNT(*) FROM escalation_timers WHERE step = 0`); n != alerts {
			t.Fatalf("%d step-0 timers, want %d", n, alerts)
		}
		if n := count(`SELECT COUNT(*) FROM escalation_timers WHERE step = 1 AND state = 'pending'`); n != alerts {
			t.Fatalf("%d step-1 timers pending, want %d", n, alerts)
		}
		dbtest.ChainAudit(t, f.d)
		if n := count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.escalated'`); n != alerts {
			t.Fatalf("%d alert.escalated records, want %d", n, alerts)
		}
		// The charge RN's device got 50 messages with sequence numbers 1..50.
		envs := f.messages("charge")
		if len(envs) != alerts {
			t.Fatalf("charge device holds %d messages, want %d", len(envs), alerts)
		}
		for i, env := range envs {
			if env.Seq != int64(i+1) {
				t.Fatalf("charge message %d has seq %d", i, env.Seq)
			}
		}
		if woken := f.waker.take(); len(woken) != alerts {
			t.Fatalf("woke %d devices, want %d", len(woken), alerts)
		}
		f.now = now
		f.fireDue(0)
	})
}

// putPolicy replaces the fixture's policies (audited like any edit).
func (f *fixture) putPolicy(ps ...oncall.Policy) {
	f.t.Helper()
	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err := f.d.InTx(f.ctx, func(tx *sql.Tx) error {
		for _, p := range ps {
			if err := oncall.PutPolicy(f.ctx, tx, by, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("put policy: %v", err)
	}
}

// addUser adds a user with one device, and gives them role on 4W over
// [start, end).
func (f *fixture) addUser(user, role string, start, end time.Time) {
	f.t.Helper()
	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err := f.d.InTx(f.ctx, func(tx *sql.Tx) error {
		if err := oncall.PutUser(f.ctx, tx, by, oncall.User{ID: user, Name: "User " + user}); err != nil {
			return err
		}
		priv, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
		if err != nil {
			return err
		}
		dev, err := messaging.RegisterDevice(f.ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"},
			messaging.Device{UserID: user, Name: user + " phone", Suite: messaging.SuiteX25519, PublicKey: pub}, t0.Add(-2*time.Hour))
		if err != nil {
			return err
		}
		f.devs[user] = device{id: dev.ID, priv: priv}
		_, err = oncall.AddShift(f.ctx, tx, by, oncall.Shift{UnitID: "4W", Role: role, UserID: user, Start: start, End: end})
		return err
	})
	if err != nil {
		f.t.Fatalf("add user: %v", err)
	}
}

func nursing(repeat int, handoff bool) oncall.Policy {
	delay := int(stepDelay / time.Second)
	return oncall.Policy{ID: policyID, Name: "Nursing", Repeat: repeat, Handoff: handoff, Steps: []oncall.Step{
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: delay},
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: delay},
		{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
	}}
}

// TestPolicyRepeat: with repeat 1 the alert pages RN, charge, RN, charge,
// then the failsafe; the rung is what alerts, messages and timers record.
func TestPolicyRepeat(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		f.putPolicy(nursing(1, false))
		a := f.openAlert("MRN1")
		f.waker.take()
		wantWoken := []string{"charge", "rn", "charge", "sup"}
		for i, user := range wantWoken {
			f.now = t0.Add(time.Duration(i+1) * stepDelay)
			f.fireDue(1)
			f.wantWoken(user)
			f.wantAlert(a.ID, routing.StateOpen, i+1)
		}
		f.wantTimers(a.ID, "0:fired", "1:fired", "2:fired", "3:fired") // none after the failsafe
		if n := len(f.messages("rn")); n != 2 {
			t.Fatalf("RN paged %d times, want 2", n)
		}
		if n := len(f.messages("charge")); n != 2 {
			t.Fatalf("charge RN paged %d times, want 2", n)
		}
		f.onlyMessage("sup", a.ID, 4)
		esc := f.auditRecords("alert.escalated", a.ID)
		if len(esc) != 4 || esc[1]["policy_step"] != 0.0 || esc[1]["to_step"] != 2.0 || esc[3]["failsafe"] != true ||
			esc[3]["policy_step"] != 2.0 {
			t.Fatalf("alert.escalated records: %v", esc)
		}
	})
}

// TestPolicyByPriority: the rule's policy names another for PH alerts,
// which goes straight to the supervisor.
func TestPolicyByPriority(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		urgent := oncall.Policy{ID: "urgent", Name: "Urgent", Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}, {Kind: oncall.TargetRole, Role: "CHARGE_RN"}}}}}
		p := nursing(0, false)
		p.ByPriority = map[string]string{routing.PriorityHigh: "urgent"}
		f.putPolicy(urgent, p)
		a := f.openAlert("MRN1")
		f.onlyMessage("sup", a.ID, 0)
		f.onlyMessage("charge", a.ID, 0)
		f.noMessages("rn")
		f.wantTimers(a.ID) // a one-step policy: no timer
	})
}

// TestHandOffAtShiftChange: an RN alert still unanswered when the night RN
// takes over is paged to them, with a full step delay; the day RN keeps
// their message. With handoff off, nothing moves.
func TestHandOffAtShiftChange(t *testing.T) {
	for _, handoff := range []bool{true, false} {
		t.Run(fmt.Sprintf("handoff=%v", handoff), func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				f := newFixture(t, d, seedOpts{})
				f.putPolicy(nursing(0, handoff))
				change := t0.Add(12 * time.Hour) // the fixture's RN shift ends here
				f.addUser("night", "RN", change, change.Add(12*time.Hour))
				f.now = change.Add(-20 * time.Second)
				a := f.openAlert("MRN1")
				f.onlyMessage("rn", a.ID, 0)
				f.waker.take()

				f.now = change.Add(-time.Second)
				if n, err := f.engine.HandOff(f.ctx, f.now); err != nil || n != 0 {
					t.Fatalf("HandOff before the change = %d, %v", n, err)
				}
				f.now = change
				n, err := f.engine.HandOff(f.ctx, f.now)
				if err != nil {
					t.Fatal(err)
				}
				if !handoff {
					if n != 0 {
						t.Fatalf("handed off %d alerts with handoff off", n)
					}
					f.noMessages("night")
					return
				}
				if n != 1 {
					t.Fatalf("handed off %d alerts, want 1", n)
				}
				f.onlyMessage("night", a.ID, 0)
				f.onlyMessage("rn", a.ID, 0)
				f.wantWoken("night")
				ho := f.auditRecords("alert.handed_off", a.ID)
				if len(ho) != 1 || fmt.Sprint(ho[0]["to_users"]) != "[night]" || fmt.Sprint(ho[0]["from_users"]) != "[rn]" {
					t.Fatalf("alert.handed_off records: %v", ho)
				}
				if n, _ := f.engine.HandOff(f.ctx, f.now); n != 0 {
					t.Fatalf("a second HandOff moved %d alerts", n)
				}
				// The step-0 timer now runs from the handoff.
				f.now = change.Add(stepDelay - time.Second)
				f.fireDue(0)
				f.now = change.Add(stepDelay)
				f.fireDue(1)
				f.wantAlert(a.ID, routing.StateOpen, 2) // the charge RN's shift ended too: step 1 is skipped
				f.onlyMessage("sup", a.ID, 2)
			})
		})
	}
}
