package routing_test

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/routing"
)

func TestParseRulesExamples(t *testing.T) {
	data, err := os.ReadFile("testdata/rules/examples.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := routing.ParseRules(data, compiler(t))
	if err != nil {
		t.Fatalf("ParseRules(examples) = %v", err)
	}
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.ID)
	}
	if want := []string{"critical-potassium", "spo2-low-sustained", "admit-notice-4w", "vent-alarm"}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	// Export then parse again: the same rules.
	out, err := routing.MarshalRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	again, err := routing.ParseRules(out, compiler(t))
	if err != nil {
		t.Fatalf("re-parse of the export: %v\n%s", err, out)
	}
	for i := range rules {
		a, _ := json.Marshal(rules[i])
		b, _ := json.Marshal(again[i])
		if string(a) != string(b) {
			t.Errorf("rule %s changed in the round trip:\n%s\n%s", rules[i].ID, a, b)
		}
	}
}

// Every problem of a file comes back at once, each naming the rule, the
// field and the line.
func TestParseRulesReportsEveryProblem(t *testing.T) {
	data, err := os.ReadFile("testdata/rules/invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = routing.ParseRules(data, compiler(t))
	var re routing.RuleErrors
	if !errors.As(err, &re) {
		t.Fatalf("ParseRules = %v, want RuleErrors", err)
	}
	type key struct {
		rule, field string
		line        int
	}
	var got []key
	for _, p := range re {
		got = append(got, key{p.Rule, p.Field, p.Line})
	}
	want := []key{
		{"Leaky lock screen", "priority", 10},
		{"Leaky lock screen", "target", 10},
		{"Leaky lock screen", "lock_text", 10},
		{"Typo in CEL", "when", 17},
		{"unknown-field", "(unknown field)", 27}, // the line of the unknown field itself
		{"Fine", "quiet_hours.to", 28},
		{"Fine", "id", 28},
		{"Fine", "name", 28},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing problem %+v\ngot %+v\n%v", w, got, err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d: %v", len(got), len(want), err)
	}
	for _, s := range []string{"line 10: rule \"Leaky lock screen\": lock_text: placeholder {value} is not allowed",
		"unknown field obs.numerc"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error text lacks %q:\n%v", s, err)
		}
	}
}

func TestParseRulesFileShape(t *testing.T) {
	cases := []struct{ name, yaml, wantField string }{
		{"empty", "", "rules"},
		{"a list at the top", "- id: x\n", "rules"},
		{"rules not a list", "rules: 3\n", "rules"},
		{"unknown top-level key", "rules: []\nroutes: []\n", "routes"},
		{"syntax error", "rules: [\n", "yaml"},
		{"wrong type", "rules:\n  - id: x\n    enabled: maybe\n", "(type)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := routing.ParseRules([]byte(c.yaml), compiler(t))
			var re routing.RuleErrors
			if !errors.As(err, &re) || !slices.ContainsFunc(re, func(e *routing.InvalidRuleError) bool { return e.Field == c.wantField }) {
				t.Fatalf("ParseRules = %v, want a problem on %q", err, c.wantField)
			}
		})
	}
}
