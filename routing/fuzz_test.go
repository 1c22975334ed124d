package routing_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/routing"
)

// FuzzCompileRule drives the rule compiler from YAML to a running CEL
// program: whatever ParseRules accepts must compile, evaluate without
// panicking (within the cost limit) and survive an export and re-import.
func FuzzCompileRule(f *testing.F) {
	files, _ := filepath.Glob("testdata/rules/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"rules:\n  - {id: a, name: A, enabled: true, priority: PH, match: {codes: [{code: x}]}, target: {role: RN}, policy_id: p, lock_text: '{unit}'}\n",
		"rules:\n  - {id: a, name: A, enabled: true, priority: PM, when: 'obs.numeric > 1', target: {user: u}, policy_id: p, lock_text: x}\n",
		"rules:\n  - {id: a, name: A, enabled: true, priority: PL, match: {events: [adt.admit]}, when: 'patient.unit == \"4W\"', target: {team: t}, policy_id: p, lock_text: x}\n",
		"rules:\n  - {id: a, name: A, enabled: true, priority: PH, match: {events: [alarm], alarm_priority: [PH]}, target: {policy: p}, lock_text: x}\n",
		"rules: [{when: 'event.observations.map(o, o.code).size() > 0'}]\n",
		"rules:\n  - id: a\n    when: '[1,2,3].all(x, [1,2,3].all(y, x != y || true))'\n",
	} {
		f.Add([]byte(s))
	}
	c, err := routing.NewCompiler()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	events := []*ingest.Event{
		resultEvent(vital("x", 7, "mmol/L", "HH"), ingest.Observation{Code: "2823-3", System: "LN", Value: "text"}),
		{Kind: ingest.KindAdmit, Patient: ingest.Patient{ID: "P"}, Location: ingest.Location{Unit: "4W"}},
		alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "start"),
		alarmEvent("MDC_EVT_VENT_DISCONN", "PH", "SP", "end"),
	}
	pv := routing.PatientView{Location: ingest.Location{Unit: "4W", Room: "1", Bed: "A"}, Class: "I", Known: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := routing.ParseRules(data, c)
		if err != nil {
			return
		}
		var list []*routing.CompiledRule
		for _, r := range rules {
			cr, err := c.Compile(r, 1)
			if err != nil {
				t.Fatalf("ParseRules accepted rule %q that does not compile: %v", r.ID, err)
			}
			list = append(list, cr)
		}
		rs := routing.NewRuleset(list)
		for _, ev := range events {
			rs.Evaluate(ev, pv, now)
			rs.AlarmEndHits(ev)
		}
		out, err := routing.MarshalRules(rules)
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		if _, err := routing.ParseRules(out, c); err != nil {
			t.Fatalf("an exported rule set does not parse again: %v\n%s", err, out)
		}
	})
}
