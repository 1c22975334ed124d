// Package routing turns events into alerts: it keeps each patient's
// location current from ADT, matches rules against results, and opens or
// updates one alert per dedup key.
package routing

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/clarion-health/clarion/ingest"
)

// Priorities, after IHE PCD's alarm priorities: high, medium, low, none.
const (
	PriorityHigh   = "PH"
	PriorityMedium = "PM"
	PriorityLow    = "PL"
	PriorityNone   = "PN"
)

// Code is a coded concept: a code in a code system ("LN" for LOINC).
type Code struct {
	System string `json:"system,omitempty"`
	Code   string `json:"code"`
}

// Match says which observations fire a rule. An observation fires when its
// code is listed and any of the triggers holds: a listed abnormal flag, a
// value above Above or below Below. With no trigger given, the code alone
// fires.
type Match struct {
	Codes []Code   `json:"codes"`
	Flags []string `json:"flags,omitempty"`
	Above *float64 `json:"above,omitempty"`
	Below *float64 `json:"below,omitempty"`
	Units string   `json:"units,omitempty"` // when set, a value in other units never fires on thresholds
}

// Rule is one routing rule.
type Rule struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Enabled    bool   `json:"enabled"`
	Match      Match  `json:"match"`
	Priority   string `json:"priority"`
	TargetRole string `json:"target_role"`
	PolicyID   string `json:"policy_id"`
	// LockText is shown on a locked screen: only {priority}, {unit} and
	// {rule} may appear in it, never PHI.
	LockText string `json:"lock_text"`
	// Body is sealed to the device: {unit} {room} {bed} {test} {value}
	// {units} {flag} {priority} {rule} may appear in it.
	Body string `json:"body"`
}

var (
	placeholder  = regexp.MustCompile(`\{([a-z_]*)\}`)
	lockFields   = []string{"priority", "unit", "rule"}
	bodyFields   = []string{"priority", "unit", "rule", "room", "bed", "test", "value", "units", "flag"}
	knownPrioriy = []string{PriorityHigh, PriorityMedium, PriorityLow, PriorityNone}
)

// Validate checks the rule; the error names the rule and the field.
func (r *Rule) Validate() error {
	bad := func(field, reason string) error { return &InvalidRuleError{Rule: r.Name, Field: field, Reason: reason} }
	switch {
	case r.ID == "":
		return bad("id", "required")
	case r.Name == "":
		return bad("name", "required")
	case len(r.Match.Codes) == 0:
		return bad("match.codes", "at least one code is required")
	case !slices.Contains(knownPrioriy, r.Priority):
		return bad("priority", fmt.Sprintf("must be one of %v", knownPrioriy))
	case r.TargetRole == "":
		return bad("target_role", "required")
	case r.PolicyID == "":
		return bad("policy_id", "required")
	case r.LockText == "":
		return bad("lock_text", "required")
	}
	for i, c := range r.Match.Codes {
		if c.Code == "" {
			return bad(fmt.Sprintf("match.codes[%d].code", i), "required")
		}
	}
	if err := checkTemplate(r.LockText, lockFields); err != nil {
		return bad("lock_text", err.Error())
	}
	if err := checkTemplate(r.Body, bodyFields); err != nil {
		return bad("body", err.Error())
	}
	return nil
}

func checkTemplate(tpl string, allowed []string) error {
	for _, m := range placeholder.FindAllStringSubmatch(tpl, -1) {
		if !slices.Contains(allowed, m[1]) {
			return fmt.Errorf("placeholder {%s} is not allowed here (allowed: %s)", m[1], strings.Join(allowed, ", "))
		}
	}
	return nil
}

// InvalidRuleError says which rule, which field and why.
type InvalidRuleError struct {
	Rule, Field, Reason string
}

func (e *InvalidRuleError) Error() string {
	return fmt.Sprintf("rule %q: %s: %s", e.Rule, e.Field, e.Reason)
}

// Fires returns the first observation of ev that fires r, or nil. An alarm
// is matched as the observation AlarmObservation makes of it.
func (r *Rule) Fires(ev *ingest.Event) *ingest.Observation {
	if !r.Enabled {
		return nil
	}
	switch ev.Kind {
	case ingest.KindResult:
		for i := range ev.Observations {
			o := &ev.Observations[i]
			if r.Match.fires(o) {
				return o
			}
		}
	case ingest.KindAlarm:
		if o := AlarmObservation(ev); o != nil && r.Match.fires(o) {
			return o
		}
	}
	return nil
}

// AlarmObservation is how rules see an IHE PCD-04 alarm: an observation
// whose code is the alarm's MDC event (Alarm.Source, system "MDC") and whose
// flag is its priority (PH, PM, PL, PN). Its display is the device's text
// for the event when the message gave one. An alarm that has ended (phase
// "end", or state "inactive") is nil: it neither opens nor updates an alert.
func AlarmObservation(ev *ingest.Event) *ingest.Observation {
	a := ev.Alarm
	if ev.Kind != ingest.KindAlarm || a == nil || a.Source == "" ||
		strings.EqualFold(a.Phase, "end") || strings.EqualFold(a.State, "inactive") {
		return nil
	}
	o := &ingest.Observation{Code: a.Source, System: "MDC", Display: a.Source, EquipmentID: a.EquipmentID}
	if a.Priority != "" {
		o.Flags = []string{a.Priority}
	}
	for i := range ev.Observations {
		if ev.Observations[i].Code == a.Source && ev.Observations[i].Value != "" {
			o.Display = ev.Observations[i].Value
			break
		}
	}
	return o
}

func (m *Match) fires(o *ingest.Observation) bool {
	if !slices.ContainsFunc(m.Codes, func(c Code) bool {
		return c.Code == o.Code && (c.System == "" || strings.EqualFold(c.System, o.System))
	}) {
		return false
	}
	if len(m.Flags) == 0 && m.Above == nil && m.Below == nil {
		return true
	}
	for _, f := range o.Flags {
		if slices.Contains(m.Flags, f) {
			return true
		}
	}
	if o.Numeric == nil || (m.Units != "" && !strings.EqualFold(m.Units, o.Units)) {
		return false
	}
	return (m.Above != nil && *o.Numeric > *m.Above) || (m.Below != nil && *o.Numeric < *m.Below)
}

// Fields are the values a template may show.
type Fields struct {
	Priority, Unit, Rule, Room, Bed, Test, Value, Units, Flag string
}

// FieldsFor collects a rule's template fields from the observation and the
// patient's location.
func FieldsFor(r *Rule, o *ingest.Observation, loc ingest.Location) Fields {
	f := Fields{Priority: r.Priority, Unit: loc.Unit, Rule: r.Name, Room: loc.Room, Bed: loc.Bed,
		Test: o.Display, Value: o.Value, Units: o.Units, Flag: strings.Join(o.Flags, ",")}
	if f.Test == "" {
		f.Test = o.Code
	}
	if o.Numeric != nil {
		f.Value = strconv.FormatFloat(*o.Numeric, 'f', -1, 64)
	}
	return f
}

// Render fills a template with fields; unknown placeholders were refused
// when the rule was validated.
func Render(tpl string, f Fields) string {
	return strings.NewReplacer("{priority}", f.Priority, "{unit}", f.Unit, "{rule}", f.Rule,
		"{room}", f.Room, "{bed}", f.Bed, "{test}", f.Test, "{value}", f.Value,
		"{units}", f.Units, "{flag}", f.Flag).Replace(tpl)
}

// UserError marks the error as safe to show the caller.
func (e *InvalidRuleError) UserError() {}
