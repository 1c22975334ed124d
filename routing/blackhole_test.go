package routing_test

import (
	"slices"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// TestNoBlackHole: an alert whose target nobody holds goes straight to the
// failsafe, the unit's scheduler is told (a coverage notice for a required
// role) and routing.no_holder is audited; an alert whose target is held
// goes to it. Whatever the target, the first rung paged resolves to
// somebody.
func TestNoBlackHole(t *testing.T) {
	cases := []struct {
		name         string
		target       routing.Target
		patient      string // MRN; P1 is admitted to 4W, PX has no ADT at all
		wantFailsafe bool
		wantFirst    []string // users of the first rung of the effective policy
		// wantNotice: the unit's coverage was checked and its scheduler
		// sched1 holds gap notices (4W's required RT has no holder at all).
		wantNotice bool
	}{
		{"role held in the patient's unit", routing.Target{Role: "RN"}, "P1", false, []string{"rn1"}, false},
		{"role nobody holds (required): failsafe and a coverage notice", routing.Target{Role: "RT"}, "P1", true, []string{"sup"}, true},
		{"role unknown in the unit: failsafe", routing.Target{Role: "PHARMACIST"}, "P1", true, []string{"sup"}, true},
		{"patient with no known unit: failsafe", routing.Target{Role: "RN"}, "PX", true, []string{"sup"}, false},
		{"team with members", routing.Target{Team: "rrt"}, "P1", false, []string{"rt-lead"}, false},
		{"team with no members: failsafe", routing.Target{Team: "empty"}, "P1", true, []string{"sup"}, true},
		{"named user", routing.Target{User: "charge1"}, "P1", false, []string{"charge1"}, false},
		{"policy target paged as it is", routing.Target{Policy: "nursing"}, "P1", false, []string{"rn1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				h := newHospital(t, d, routing.Options{})
				r := kCrit()
				r.Target = c.target
				h.put(r)
				ev := labK(7.0, "HH")
				ev.Patient.ID = c.patient
				out := h.route(ev)
				if len(out.Opened) != 1 {
					t.Fatalf("outcome %+v, want one alert", out)
				}
				a := out.Opened[0]
				if a.Failsafe != c.wantFailsafe {
					t.Fatalf("failsafe = %v, want %v", a.Failsafe, c.wantFailsafe)
				}
				pol, err := oncall.PolicyFor(h.ctx, d, a.PolicyID, a.Priority)
				if err != nil {
					t.Fatal(err)
				}
				eff := routing.EffectivePolicy(pol, a)
				first, err := oncall.ResolveStep(h.ctx, d, eff.Steps[eff.StepAt(0)], a.Unit, h.now)
				if err != nil || !slices.Equal(first, c.wantFirst) {
					t.Fatalf("first rung pages %v (%v), want %v", first, err, c.wantFirst)
				}
				noHolder := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'routing.no_holder' AND object_id = $1`, a.ID)
				if (noHolder == 1) != c.wantFailsafe {
					t.Errorf("%d routing.no_holder records, want failsafe %v", noHolder, c.wantFailsafe)
				}
				notices, err := oncall.ListNotices(h.ctx, d, oncall.NoticeFilter{RecipientID: "sched1", UnitID: "4W", OpenOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				gotNotice := slices.ContainsFunc(notices, func(n oncall.Notice) bool { return n.Kind == oncall.NoticeGap && n.Role == "RT" })
				if c.wantNotice {
					if d := h.auditDetail("routing.no_holder", a.ID); d["coverage_notices"] == float64(0) ||
						!slices.Equal(d["schedulers"].([]any), []any{"sched1"}) {
						t.Errorf("no_holder detail %v, want the notices made and sched1 named", d)
					}
				}
				if gotNotice != c.wantNotice {
					t.Errorf("gap notice for RT to sched1: %v, want %v (notices %+v)", gotNotice, c.wantNotice, notices)
				}
				if c.wantFailsafe {
					if d := h.auditDetail("routing.no_holder", a.ID); d["paged"] != "failsafe" {
						t.Errorf("no_holder detail %v", d)
					}
				}
				assertNoBlackHole(t, d, h.now)
			})
		})
	}
}

// Every way routing may decide not to page now leaves a trace: a
// suppression is audited on the rule, a held alert has its release, a
// closed one its reason, a retargeted one is returned to be paged again.
func TestNoSilentOutcome(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		quiet := hrHigh()
		quiet.Priority, quiet.QuietHours = routing.PriorityLow, &routing.QuietHours{From: "00:00", To: "23:59"}
		limited := kCrit()
		limited.RateLimit, limited.AutoResolve = &routing.RateLimit{Max: 1, PerSeconds: 3600}, &routing.AutoResolve{OnNormal: true}
		h.put(quiet, limited, spo2Low(&routing.Sustain{Readings: 2}))
		outs := []routing.Outcome{
			h.route(reading("8867-4", 150, "/min", 0)), // held
			h.route(labK(7.0, "HH")),                   // opened
			h.route(labK(4.0)),                         // auto-resolved
			h.route(labK(7.0, "HH")),                   // rate limited
			h.route(reading("59408-5", 80, "%", 0)),    // sustain pending
			h.route(reading("59408-5", 97, "%", time.Second)),
			h.at(time.Minute).route(adt(ingest.KindTransfer, "P1", ingest.Location{Unit: "ICU"}, ingest.Visit{})),
		}
		var opened, held, closed, suppressed int
		for _, o := range outs {
			opened, held, closed, suppressed = opened+len(o.Opened), held+len(o.Held), closed+len(o.Closed), suppressed+o.Suppressed
		}
		if opened != 1 || held != 1 || closed != 1 || suppressed != 3 {
			t.Fatalf("opened %d held %d closed %d suppressed %d, want 1 1 1 3", opened, held, closed, suppressed)
		}
		if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'alert.suppressed'`); n != 2 {
			t.Errorf("%d alert.suppressed records, want 2 (rate limit, recovered spike)", n)
		}
		if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'rule.sustain_started'`); n != 1 {
			t.Errorf("%d sustain runs audited, want 1", n)
		}
		if a := h.alert(outs[0].Held[0]); a.Unit != "ICU" || a.State != routing.StateHeld {
			t.Errorf("held alert after transfer: unit %s state %s, want ICU held", a.Unit, a.State)
		}
		assertNoBlackHole(t, d, h.now)
	})
}

func TestEffectivePolicy(t *testing.T) {
	nursing := oncall.Policy{ID: "nursing", Name: "N", Repeat: 1, ByPriority: map[string]string{"PH": "x"}, Steps: []oncall.Step{
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: 120},
		{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
	}}
	failsafeOnly := oncall.Policy{ID: "f", Name: "F", Steps: []oncall.Step{{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}}}}
	type step struct {
		target string
		delay  int
	}
	show := func(p oncall.Policy) []step {
		var out []step
		for _, s := range p.Steps {
			t := s.Targets[0]
			out = append(out, step{t.Kind + ":" + t.Role + t.TeamID + t.UserID, s.DelaySeconds})
		}
		return out
	}
	cases := []struct {
		name       string
		policy     oncall.Policy
		alert      routing.Alert
		want       []step
		wantRepeat int
	}{
		{"legacy alert: as written", nursing, routing.Alert{DelayPct: 100},
			[]step{{"role:RN", 60}, {"role:CHARGE_RN", 120}, {"user:sup", 0}}, 1},
		{"role target replaces the first step", nursing, routing.Alert{TargetKind: "role", TargetID: "RT", DelayPct: 100},
			[]step{{"role:RT", 60}, {"role:CHARGE_RN", 120}, {"user:sup", 0}}, 1},
		{"team target", nursing, routing.Alert{TargetKind: "team", TargetID: "rrt", DelayPct: 100},
			[]step{{"team:rrt", 60}, {"role:CHARGE_RN", 120}, {"user:sup", 0}}, 1},
		{"policy target: as written", nursing, routing.Alert{TargetKind: "policy", TargetID: "nursing", DelayPct: 100},
			[]step{{"role:RN", 60}, {"role:CHARGE_RN", 120}, {"user:sup", 0}}, 1},
		{"PH twice as fast", nursing, routing.Alert{TargetKind: "role", TargetID: "RN", DelayPct: 50},
			[]step{{"role:RN", 30}, {"role:CHARGE_RN", 60}, {"user:sup", 0}}, 1},
		{"failsafe: the last step only", nursing, routing.Alert{TargetKind: "role", TargetID: "RT", DelayPct: 50, Failsafe: true},
			[]step{{"user:sup", 0}}, 0},
		{"user target before a failsafe-only policy", failsafeOnly, routing.Alert{TargetKind: "user", TargetID: "u1", DelayPct: 100},
			[]step{{"user:u1", routing.DefaultPrimaryDelaySeconds}, {"user:sup", 0}}, 0},
		{"scaled delays never reach zero", nursing, routing.Alert{DelayPct: 1},
			[]step{{"role:RN", 1}, {"role:CHARGE_RN", 1}, {"user:sup", 0}}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := routing.EffectivePolicy(c.policy, &c.alert)
			if !slices.Equal(show(got), c.want) || got.Repeat != c.wantRepeat || got.ByPriority != nil {
				t.Fatalf("EffectivePolicy = %v repeat %d, want %v repeat %d", show(got), got.Repeat, c.want, c.wantRepeat)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("effective policy is not valid: %v", err)
			}
		})
	}
	if nursing.Steps[0].Targets[0].Role != "RN" || nursing.Steps[0].DelaySeconds != 60 {
		t.Fatal("EffectivePolicy changed the policy it was given")
	}
}

// With the in-memory roster index (Options.Holders) the failsafe decision
// is the same as reading the rosters in the transaction.
func TestNoHolderWithIndex(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		idx := oncall.NewIndex(d, func() time.Time { return h.now }, oncall.IndexOptions{})
		if err := idx.Reload(h.ctx); err != nil {
			t.Fatal(err)
		}
		h.router = routing.NewRouterWithOptions(testKeys(t), routing.Options{Holders: idx, Dialect: d.Dialect})
		held, nobody := kCrit(), kCrit()
		nobody.ID, nobody.Name, nobody.Target = "k-rt", "K to RT", routing.Target{Role: "RT"}
		h.put(held, nobody)
		out := h.route(labK(7.0, "HH"))
		if len(out.Opened) != 2 || out.Opened[0].Failsafe || !out.Opened[1].Failsafe {
			t.Fatalf("opened %+v, want k-crit to RN and k-rt to the failsafe", out.Opened)
		}
		assertNoBlackHole(t, d, h.now)
	})
}
