package routing_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// t0 is 10:00 in New York on a Monday: day shift, no quiet hours.
var t0 = time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC)

// hospital is a small seeded hospital: units 4W and ICU (New York time),
// RN and CHARGE_RN held in 4W, RN held in ICU, RT required in 4W but held
// by nobody, sched1 the scheduler of 4W, the policy "nursing" (RN, then
// CHARGE_RN, then the failsafe user sup), and patient P1 admitted to 4W
// room 412 bed B. Patients are pseudonymized as pt_<MRN>.
type hospital struct {
	t      *testing.T
	d      *db.DB
	router *routing.Router
	ctx    context.Context
	now    time.Time
	seq    int
}

func newHospital(t *testing.T, d *db.DB, opts routing.Options) *hospital {
	t.Helper()
	opts.Dialect = d.Dialect
	h := &hospital{t: t, d: d, router: routing.NewRouterWithOptions(testKeys(t), opts), ctx: context.Background(), now: t0}
	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err := d.InTx(h.ctx, func(tx *sql.Tx) error {
		for _, u := range []oncall.Unit{{ID: "4W", Name: "4 West", TimeZone: "America/New_York"},
			{ID: "ICU", Name: "ICU", TimeZone: "America/New_York"}} {
			if err := oncall.PutUnit(h.ctx, tx, by, u); err != nil {
				return err
			}
		}
		for _, u := range []string{"rn1", "charge1", "icurn", "sup", "sched1", "rt-lead"} {
			if err := oncall.PutUser(h.ctx, tx, by, oncall.User{ID: u, Name: "User " + u}); err != nil {
				return err
			}
		}
		for _, ur := range []oncall.UnitRole{{UnitID: "4W", Role: "RN", Required: true}, {UnitID: "4W", Role: "CHARGE_RN", Required: true},
			{UnitID: "4W", Role: "RT", Required: true}, {UnitID: "ICU", Role: "RN", Required: true}} {
			if err := oncall.PutUnitRole(h.ctx, tx, by, ur, t0); err != nil {
				return err
			}
		}
		for _, s := range []oncall.Shift{{UnitID: "4W", Role: "RN", UserID: "rn1"}, {UnitID: "4W", Role: "CHARGE_RN", UserID: "charge1"},
			{UnitID: "ICU", Role: "RN", UserID: "icurn"}} {
			s.Start, s.End = t0.Add(-24*time.Hour), t0.Add(72*time.Hour)
			if _, err := oncall.AddShift(h.ctx, tx, by, s); err != nil {
				return err
			}
		}
		if err := oncall.AssignScheduler(h.ctx, tx, by, "sched1", "4W", t0); err != nil {
			return err
		}
		if err := oncall.PutTeam(h.ctx, tx, by, oncall.Team{ID: "rrt", Name: "Rapid response", Members: []string{"rt-lead"}}, t0); err != nil {
			return err
		}
		if err := oncall.PutTeam(h.ctx, tx, by, oncall.Team{ID: "empty", Name: "Nobody yet", Members: []string{}}, t0); err != nil {
			return err
		}
		return oncall.PutPolicy(h.ctx, tx, by, oncall.Policy{ID: "nursing", Name: "Nursing", Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: 60},
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
		}})
	})
	if err != nil {
		t.Fatalf("seed hospital: %v", err)
	}
	h.route(adt(ingest.KindAdmit, "P1", ingest.Location{Unit: "4W", Room: "412", Bed: "B"}, ingest.Visit{Class: "I"}))
	return h
}

// put saves rules (every problem fails the test).
func (h *hospital) put(rules ...routing.Rule) {
	h.t.Helper()
	c := compiler(h.t)
	err := h.d.InTx(h.ctx, func(tx *sql.Tx) error {
		_, err := routing.ApplyRules(h.ctx, tx, c, audit.Entry{ActorType: audit.ActorUser, ActorID: "admin1"}, rules, false, h.now)
		return err
	})
	if err != nil {
		h.t.Fatalf("put rules: %v", err)
	}
}

// route routes ev at h.now as the next event, in a session that read the
// patient's active alerts first, as the pipeline's batches do: each dedup
// lookup it answers from them is checked against the database
// (export_test.go).
func (h *hospital) route(ev *ingest.Event) routing.Outcome {
	h.t.Helper()
	h.seq++
	id := fmt.Sprintf("evt_%03d", h.seq)
	var out routing.Outcome
	err := h.d.InTx(h.ctx, func(tx *sql.Tx) error {
		sess := h.router.Session(tx)
		p := h.d.PipeIn(tx)
		sess.QueueActive(p, []string{routing.PatientID(keyPseudo{}, ev.Patient)})
		if err := p.Flush(h.ctx); err != nil {
			return err
		}
		var err error
		out, err = sess.Route(h.ctx, id, ev, keyPseudo{}, h.now)
		return err
	})
	if err != nil {
		h.t.Fatalf("route %s (%s): %v", id, ev.Kind, err)
	}
	return out
}

// at moves the clock to t0+d.
func (h *hospital) at(d time.Duration) *hospital {
	h.now = t0.Add(d)
	return h
}

func (h *hospital) alert(id string) *routing.Alert {
	h.t.Helper()
	a, err := routing.GetAlert(h.ctx, h.d, testKeys(h.t), id, "")
	if err != nil {
		h.t.Fatalf("alert %s: %v", id, err)
	}
	return a
}

func (h *hospital) count(query string, args ...any) int {
	h.t.Helper()
	return countRows(h.t, h.d, query, args...)
}

// auditDetail returns the detail of the last record with action on object.
func (h *hospital) auditDetail(action, objectID string) map[string]any {
	h.t.Helper()
	dbtest.ChainAudit(h.t, h.d)
	var s string
	err := h.d.QueryRowContext(h.ctx, `SELECT detail FROM audit_log WHERE action = $1 AND object_id = $2 ORDER BY seq DESC LIMIT 1`,
		action, objectID).Scan(&s)
	if err != nil {
		h.t.Fatalf("no %s record for %s: %v", action, objectID, err)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		h.t.Fatal(err)
	}
	return d
}

// labK is a potassium result for P1.
func labK(v float64, flags ...string) *ingest.Event {
	o := vital("2823-3", v, "mmol/L", flags...)
	o.Display = "Potassium"
	return &ingest.Event{Kind: ingest.KindResult, Source: "LAB", SourceID: fmt.Sprint(v), Trigger: "ORU^R01",
		Patient: ingest.Patient{ID: "P1"}, Observations: []ingest.Observation{o}}
}

// reading is one RPM vital for P1 taken at t0+at.
func reading(code string, v float64, units string, at time.Duration) *ingest.Event {
	o := vital(code, v, units)
	o.ObservedAt = t0.Add(at)
	return &ingest.Event{Kind: ingest.KindResult, Source: "RPM", SourceID: fmt.Sprint(code, at), Trigger: "ORU^R01",
		Patient: ingest.Patient{ID: "P1"}, Observations: []ingest.Observation{o}}
}

// assertNoBlackHole checks every alert reaches somebody or says why not:
// an open alert's first rung of its effective policy resolves to at least
// one user now (the target, or the failsafe when nobody holds it), a held
// alert has its release time, a closed one its reason and audit record.
func assertNoBlackHole(t *testing.T, d *db.DB, now time.Time) {
	t.Helper()
	ctx := context.Background()
	alerts, err := routing.ListAlerts(ctx, d, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		switch a.State {
		case routing.StateOpen:
			pol, err := oncall.PolicyFor(ctx, d, a.PolicyID, a.Priority)
			if err != nil {
				t.Errorf("open alert %s: policy: %v", a.ID, err)
				continue
			}
			eff := routing.EffectivePolicy(pol, &a)
			users, err := oncall.ResolveStep(ctx, d, eff.Steps[eff.StepAt(0)], a.Unit, now)
			if err != nil || len(users) == 0 {
				t.Errorf("BLACK HOLE: open alert %s (rule %s, unit %q, failsafe %v) pages nobody first (%v)",
					a.ID, a.RuleID, a.Unit, a.Failsafe, err)
			}
		case routing.StateHeld:
			if a.ReleaseAt == nil {
				t.Errorf("BLACK HOLE: held alert %s has no release time", a.ID)
			}
		case routing.StateClosed:
			if a.CloseReason == "" || countRows(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'alert.closed' AND object_id = $1`, a.ID) != 1 {
				t.Errorf("closed alert %s: reason %q and no single alert.closed record", a.ID, a.CloseReason)
			}
		}
	}
	if n, err := audit.Verify(ctx, d); err != nil {
		t.Fatalf("audit.Verify after %d: %v", n, err)
	}
}
