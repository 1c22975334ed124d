package routing_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/routing"
)

func f64(v float64) *float64 { return &v }

// validRule is a rule that passes Validate; cases mutate a copy of it.
func validRule() routing.Rule {
	return routing.Rule{
		ID: "k-crit", Name: "Critical potassium", Enabled: true,
		Match:    routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH", "LL"}},
		Priority: routing.PriorityHigh, TargetRole: "charge-nurse", PolicyID: "pol-1",
		LockText: "{priority} {rule} on {unit}",
		Body:     "{test} {value} {units} ({flag}) {unit} {room}/{bed}",
	}
}

func TestRuleValidate(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(r *routing.Rule)
		wantField string // "" means valid
	}{
		{"valid rule", func(r *routing.Rule) {}, ""},
		{"valid rule without body", func(r *routing.Rule) { r.Body = "" }, ""},
		{"valid lock text with every allowed placeholder", func(r *routing.Rule) { r.LockText = "{priority}/{unit}/{rule}" }, ""},
		{"missing id", func(r *routing.Rule) { r.ID = "" }, "id"},
		{"missing codes", func(r *routing.Rule) { r.Match.Codes = nil }, "match.codes"},
		{"empty code entry", func(r *routing.Rule) {
			r.Match.Codes = []routing.Code{{System: "LN", Code: "2823-3"}, {System: "LN"}}
		}, "match.codes[1].code"},
		{"unknown priority", func(r *routing.Rule) { r.Priority = "URGENT" }, "priority"},
		{"empty priority", func(r *routing.Rule) { r.Priority = "" }, "priority"},
		{"missing target", func(r *routing.Rule) { r.TargetRole = "" }, "target"},
		{"two targets", func(r *routing.Rule) { r.TargetRole, r.Target = "", routing.Target{Role: "RN", User: "u1"} }, "target"},
		{"target_role conflicting with target", func(r *routing.Rule) { r.Target.Team = "rrt" }, "target_role"},
		{"missing policy", func(r *routing.Rule) { r.PolicyID = "" }, "policy_id"},
		{"missing lock text", func(r *routing.Rule) { r.LockText = "" }, "lock_text"},
		{"lock text with {value} (PHI)", func(r *routing.Rule) { r.LockText = "{priority} K+ {value}" }, "lock_text"},
		{"lock text with {bed} (PHI)", func(r *routing.Rule) { r.LockText = "{priority} bed {bed}" }, "lock_text"},
		{"lock text with {room} (PHI)", func(r *routing.Rule) { r.LockText = "{room}" }, "lock_text"},
		{"lock text with {test} (PHI)", func(r *routing.Rule) { r.LockText = "{unit} {test}" }, "lock_text"},
		{"body with unknown placeholder", func(r *routing.Rule) { r.Body = "{test} {mrn}" }, "body"},
		{"body with empty placeholder", func(r *routing.Rule) { r.Body = "{test} {}" }, "body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validRule()
			c.mutate(&r)
			err := r.Validate()
			if c.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ire *routing.InvalidRuleError
			if !errors.As(err, &ire) {
				t.Fatalf("Validate() = %v (%T), want *InvalidRuleError", err, err)
			}
			if ire.Field != c.wantField {
				t.Errorf("Field = %q, want %q (err %v)", ire.Field, c.wantField, err)
			}
			if ire.Rule != r.Name {
				t.Errorf("Rule = %q, want %q", ire.Rule, r.Name)
			}
			if !strings.Contains(err.Error(), c.wantField) {
				t.Errorf("error text %q does not name the field %q", err.Error(), c.wantField)
			}
		})
	}
}

func obs(code, system string, value float64, units string, flags ...string) ingest.Observation {
	return ingest.Observation{Code: code, System: system, Display: "Potassium", ValueType: "NM",
		Value: strconv.FormatFloat(value, 'f', -1, 64), Numeric: f64(value), Units: units, Flags: flags}
}

func result(o ...ingest.Observation) *ingest.Event {
	return &ingest.Event{Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: "m1",
		Patient: ingest.Patient{ID: "MRN1"}, Observations: o}
}

func TestRuleFires(t *testing.T) {
	codeOnly := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}}}
	anySystem := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{Code: "2823-3"}}}}
	flags := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}},
		Flags: []string{"HH", "LL"}}}
	thresholds := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}},
		Above: f64(6.0), Below: f64(2.8), Units: "mmol/L"}}
	noUnits := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}},
		Above: f64(6.0)}}
	flagsAndThreshold := routing.Rule{Enabled: true, Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}},
		Flags: []string{"HH"}, Above: f64(6.0), Units: "mmol/L"}}
	disabled := flags
	disabled.Enabled = false

	textObs := ingest.Observation{Code: "2823-3", System: "LN", ValueType: "ST", Value: "hemolyzed"}

	cases := []struct {
		name     string
		rule     routing.Rule
		ev       *ingest.Event
		wantCode string // "" means does not fire
		wantIdx  int    // which observation fires
	}{
		{"code match, no trigger", codeOnly, result(obs("2823-3", "LN", 4.1, "mmol/L")), "2823-3", 0},
		{"code match, system case-insensitive", codeOnly, result(obs("2823-3", "ln", 4.1, "mmol/L")), "2823-3", 0},
		{"code match, system differs", codeOnly, result(obs("2823-3", "L", 4.1, "mmol/L")), "", 0},
		{"code match, observation without system vs rule with system", codeOnly, result(obs("2823-3", "", 4.1, "mmol/L")), "", 0},
		{"rule without system matches any system", anySystem, result(obs("2823-3", "99LOCAL", 4.1, "mmol/L")), "2823-3", 0},
		{"rule without system matches empty system", anySystem, result(obs("2823-3", "", 4.1, "mmol/L")), "2823-3", 0},
		{"code mismatch", codeOnly, result(obs("2951-2", "LN", 140, "mmol/L")), "", 0},
		{"code match on text value, no trigger", codeOnly, result(textObs), "2823-3", 0},
		{"second observation fires", codeOnly, result(obs("2951-2", "LN", 140, "mmol/L"), obs("2823-3", "LN", 4.1, "mmol/L")), "2823-3", 1},
		{"first firing observation wins", flags, result(obs("2823-3", "LN", 4.1, "mmol/L"), obs("2823-3", "LN", 7.0, "mmol/L", "HH"),
			obs("2823-3", "LN", 1.9, "mmol/L", "LL")), "2823-3", 1},

		{"flag HH fires", flags, result(obs("2823-3", "LN", 6.9, "mmol/L", "HH")), "2823-3", 0},
		{"flag LL fires", flags, result(obs("2823-3", "LN", 2.1, "mmol/L", "LL")), "2823-3", 0},
		{"flag H does not fire", flags, result(obs("2823-3", "LN", 5.4, "mmol/L", "H")), "", 0},
		{"no flags does not fire", flags, result(obs("2823-3", "LN", 9.9, "mmol/L")), "", 0},
		{"flag among several", flags, result(obs("2823-3", "LN", 7.0, "mmol/L", "A", "HH")), "2823-3", 0},
		{"flag on text value fires", flags, result(ingest.Observation{Code: "2823-3", System: "LN", Value: ">10", Flags: []string{"HH"}}), "2823-3", 0},
		{"flag on other code does not fire", flags, result(obs("2951-2", "LN", 170, "mmol/L", "HH")), "", 0},

		{"above threshold", thresholds, result(obs("2823-3", "LN", 6.1, "mmol/L")), "2823-3", 0},
		{"at upper threshold does not fire", thresholds, result(obs("2823-3", "LN", 6.0, "mmol/L")), "", 0},
		{"below threshold", thresholds, result(obs("2823-3", "LN", 2.7, "mmol/L")), "2823-3", 0},
		{"at lower threshold does not fire", thresholds, result(obs("2823-3", "LN", 2.8, "mmol/L")), "", 0},
		{"within range", thresholds, result(obs("2823-3", "LN", 4.2, "mmol/L")), "", 0},
		{"units compared case-insensitively", thresholds, result(obs("2823-3", "LN", 6.5, "MMOL/L")), "2823-3", 0},
		{"units mismatch never fires above", thresholds, result(obs("2823-3", "LN", 60, "mg/dL")), "", 0},
		{"units mismatch never fires below", thresholds, result(obs("2823-3", "LN", 1, "mg/dL")), "", 0},
		{"units missing never fires", thresholds, result(obs("2823-3", "LN", 6.5, "")), "", 0},
		{"rule without units fires on any units", noUnits, result(obs("2823-3", "LN", 6.5, "mg/dL")), "2823-3", 0},
		{"threshold on text value does not fire", thresholds, result(textObs), "", 0},
		{"units mismatch, flag still fires", flagsAndThreshold, result(obs("2823-3", "LN", 1, "mg/dL", "HH")), "2823-3", 0},
		{"units mismatch, no flag, over threshold", flagsAndThreshold, result(obs("2823-3", "LN", 60, "mg/dL")), "", 0},

		{"disabled rule", disabled, result(obs("2823-3", "LN", 6.9, "mmol/L", "HH")), "", 0},
		{"disabled code-only rule", routing.Rule{Match: codeOnly.Match}, result(obs("2823-3", "LN", 4.1, "mmol/L")), "", 0},
		{"no observations", codeOnly, result(), "", 0},
	}
	for _, kind := range []ingest.Kind{ingest.KindAdmit, ingest.KindTransfer, ingest.KindDischarge, "unknown"} {
		ev := result(obs("2823-3", "LN", 6.9, "mmol/L", "HH"))
		ev.Kind = kind
		cases = append(cases, struct {
			name     string
			rule     routing.Rule
			ev       *ingest.Event
			wantCode string
			wantIdx  int
		}{"non-result kind " + string(kind), codeOnly, ev, "", 0})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.rule.Fires(c.ev)
			if c.wantCode == "" {
				if got != nil {
					t.Fatalf("Fires() = %+v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatalf("Fires() = nil, want observation %d", c.wantIdx)
			}
			if got != &c.ev.Observations[c.wantIdx] {
				t.Fatalf("Fires() returned %+v, want observation %d of the event", got, c.wantIdx)
			}
		})
	}
}

func TestRender(t *testing.T) {
	r := validRule()
	r.Body = "{test} {value} {units} ({flag}) in {unit} {room}/{bed} [{priority} {rule}]"
	loc := ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"}
	cases := []struct {
		name     string
		obs      ingest.Observation
		loc      ingest.Location
		wantLock string
		wantBody string
	}{
		{"numeric with flags", ingest.Observation{Code: "2823-3", Display: "Potassium", Value: "6.80", Numeric: f64(6.8),
			Units: "mmol/L", Flags: []string{"HH", "A"}}, loc,
			"PH Critical potassium on 4W",
			"Potassium 6.8 mmol/L (HH,A) in 4W 412/B [PH Critical potassium]"},
		{"display falls back to code", ingest.Observation{Code: "2823-3", Value: "7", Numeric: f64(7), Units: "mmol/L",
			Flags: []string{"HH"}}, loc,
			"PH Critical potassium on 4W",
			"2823-3 7 mmol/L (HH) in 4W 412/B [PH Critical potassium]"},
		{"text value kept verbatim", ingest.Observation{Code: "2823-3", Display: "Potassium", Value: "hemolyzed"}, loc,
			"PH Critical potassium on 4W",
			"Potassium hemolyzed  () in 4W 412/B [PH Critical potassium]"},
		{"unknown location", ingest.Observation{Code: "2823-3", Display: "Potassium", Value: "1.9", Numeric: f64(1.9),
			Units: "mmol/L", Flags: []string{"LL"}}, ingest.Location{},
			"PH Critical potassium on ",
			"Potassium 1.9 mmol/L (LL) in  / [PH Critical potassium]"},
		{"values are not re-expanded", ingest.Observation{Code: "2823-3", Display: "{value}", Value: "{unit}"},
			ingest.Location{Unit: "{bed}", Room: "1", Bed: "2"},
			"PH Critical potassium on {bed}",
			"{value} {unit}  () in {bed} 1/2 [PH Critical potassium]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := routing.FieldsFor(&r, &c.obs, c.loc)
			if got := routing.Render(r.LockText, f); got != c.wantLock {
				t.Errorf("lock text = %q, want %q", got, c.wantLock)
			}
			if got := routing.Render(r.Body, f); got != c.wantBody {
				t.Errorf("body = %q, want %q", got, c.wantBody)
			}
		})
	}
	if got := routing.Render("no placeholders {here", routing.Fields{Unit: "4W"}); got != "no placeholders {here" {
		t.Errorf("plain text = %q", got)
	}
}
