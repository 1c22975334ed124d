package routing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

// benchRules returns n enabled rules, each on its own LOINC-like code with
// its own thresholds (and, for every third rule, abnormal flags too).
func benchRules(n int) []routing.Rule {
	rules := make([]routing.Rule, n)
	for i := range rules {
		r := routing.Rule{
			ID: fmt.Sprintf("r%04d", i), Name: fmt.Sprintf("Rule %04d", i), Enabled: true,
			Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: fmt.Sprintf("%d-%d", 10000+i, i%10)}},
				Above: f64(float64(100 + i)), Below: f64(float64(i % 50)), Units: "mmol/L"},
			Priority: routing.PriorityMedium, TargetRole: "nurse", PolicyID: "pol-1",
			LockText: "{priority} {rule} on {unit}", Body: "{test} {value} {units} ({flag}) {unit} {room}/{bed}",
		}
		if i%3 == 0 {
			r.Match.Flags = []string{"HH", "LL"}
		}
		rules[i] = r
	}
	return rules
}

// benchResult is one result with three observations: one fires rule 7 (over
// its threshold), one matches rule 250's code without firing, one matches no
// rule at all.
func benchResult() *ingest.Event {
	return &ingest.Event{Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: "b1", Trigger: "ORU^R01",
		Patient: ingest.Patient{ID: "MRN1"}, Location: ingest.Location{Unit: "ED", Room: "3", Bed: "A"},
		Observations: []ingest.Observation{
			{Code: "10007-7", System: "LN", Display: "Analyte 7", Value: "500", Numeric: f64(500), Units: "mmol/L"},
			{Code: "10250-0", System: "LN", Display: "Analyte 250", Value: "120", Numeric: f64(120), Units: "mmol/L"},
			{Code: "99999-9", System: "LN", Display: "Other", Value: "1", Numeric: f64(1), Units: "mmol/L", Flags: []string{"HH"}},
		}}
}

func BenchmarkFires500Rules(b *testing.B) {
	rules := benchRules(500)
	ev := benchResult()
	fired := 0
	b.ReportAllocs()
	for b.Loop() {
		fired = 0
		for i := range rules {
			if rules[i].Fires(ev) != nil {
				fired++
			}
		}
	}
	if fired != 1 {
		b.Fatalf("%d rules fired, want 1", fired)
	}
}

// BenchmarkRouteResult routes one firing result against 20 stored rules on
// SQLite; each iteration's transaction is rolled back, so every iteration
// opens a fresh alert against the same database state.
func BenchmarkRouteResult(b *testing.B) {
	d := dbtest.SQLite(b)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	putRules(b, d, now, benchRules(20)...)
	router := routing.NewRouter(testKeys(b))
	ev := benchResult()
	b.ReportAllocs()
	for b.Loop() {
		tx, err := d.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		out, err := router.Route(ctx, tx, "evt_bench", ev, fixedPseudo{ev.Patient.Key(), "pat_bench"}, now)
		if err != nil {
			b.Fatal(err)
		}
		if len(out.Opened) != 1 {
			b.Fatalf("opened %d alerts, want 1", len(out.Opened))
		}
		if err := tx.Rollback(); err != nil {
			b.Fatal(err)
		}
	}
}

// bench500 is 500 rules as a hospital might have them: 400 shorthand rules
// (codes, thresholds, flags), 90 with a CEL condition on their codes, 5 CEL
// rules on any result (no code: evaluated on every observation) and 5 ADT
// rules.
func bench500(tb testing.TB) *routing.Ruleset {
	tb.Helper()
	rules := benchRules(490)
	for i := range rules {
		rules[i].TargetRole, rules[i].PolicyID = "", "pol-1"
		rules[i].Target = routing.Target{Role: "nurse"}
		if i%5 == 0 && len(rules[i].Match.Flags) == 0 {
			rules[i].When = fmt.Sprintf(`has(obs.numeric) && obs.numeric > %d.0 && patient.unit != "NICU"`, 90+i)
			rules[i].Match.Above, rules[i].Match.Below = nil, nil
		}
	}
	for i := range 5 {
		rules = append(rules, routing.Rule{ID: fmt.Sprintf("any%d", i), Name: fmt.Sprintf("Any result %d", i), Enabled: true,
			When:     fmt.Sprintf(`obs.system == "LN" && "C%d" in obs.flags && patient.class == "I"`, i),
			Priority: routing.PriorityLow, Target: routing.Target{Role: "nurse"}, PolicyID: "pol-1", LockText: "{priority}"})
		rules = append(rules, routing.Rule{ID: fmt.Sprintf("adt%d", i), Name: fmt.Sprintf("ADT %d", i), Enabled: true,
			Match:    routing.Match{Events: []string{"adt.admit"}, Locations: []string{fmt.Sprintf("U%d", i)}},
			Priority: routing.PriorityLow, Target: routing.Target{Role: "charge"}, PolicyID: "pol-1", LockText: "{priority}"})
	}
	return ruleset(tb, rules...)
}

// BenchmarkEvaluate500Rules evaluates one result with three observations
// (one fires a rule, one carries the code of another without firing it,
// one matches no rule's code) against 500 compiled rules, CEL included.
func BenchmarkEvaluate500Rules(b *testing.B) {
	rs := bench500(b)
	if n := len(rs.Rules()); n != 500 {
		b.Fatalf("%d rules, want 500", n)
	}
	ev := benchResult()
	pv := routing.PatientView{Location: ingest.Location{Unit: "4W", Room: "1", Bed: "A"}, Class: "I", Known: true}
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	var fired int
	b.ReportAllocs()
	for b.Loop() {
		hits, _ := rs.Evaluate(ev, pv, now)
		fired = 0
		for _, h := range hits {
			if !h.Normal {
				fired++
			}
		}
	}
	if fired != 1 {
		b.Fatalf("%d rules fired, want 1", fired)
	}
}
