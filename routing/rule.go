// Package routing turns events into alerts: it keeps each patient's
// location current from ADT, evaluates rules (shorthands and CEL) against
// results, alarms and ADT events, applies the alarm-fatigue controls
// (dedup, sustained conditions, auto-resolve, rate limits, quiet hours,
// grouping), and opens, updates or closes alerts. docs/rules.md is the
// reference for the rule format.
package routing

import (
	"fmt"
	"math"
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

// priorityRank orders priorities: PH 3 down to PN 0, unknown -1.
func priorityRank(p string) int {
	switch p {
	case PriorityHigh:
		return 3
	case PriorityMedium:
		return 2
	case PriorityLow:
		return 1
	case PriorityNone:
		return 0
	}
	return -1
}

// Code is a coded concept: a code in a code system ("LN" for LOINC).
type Code struct {
	System string `json:"system,omitempty"`
	Code   string `json:"code"`
}

// Match holds a rule's shorthand conditions. Every condition given must
// hold. Per observation: its code is listed (with its system when the rule
// names one) and, when triggers are given, any trigger holds: a listed
// abnormal flag, a value above Above or below Below (in Units when set).
// Per event: its kind is in Events (results and alarms when empty), the
// patient is in one of Locations, of one of PatientClass, and an alarm has
// one of AlarmPriority and AlarmType.
type Match struct {
	Codes []Code   `json:"codes,omitempty"`
	Flags []string `json:"flags,omitempty"`
	Above *float64 `json:"above,omitempty"`
	Below *float64 `json:"below,omitempty"`
	Units string   `json:"units,omitempty"` // when set, a value in other units never fires on thresholds
	// Events are event kinds ("result", "alarm", "adt.admit", ...).
	Events []string `json:"events,omitempty"`
	// Locations are "UNIT", "UNIT/ROOM" or "UNIT/ROOM/BED", matched against
	// where ADT says the patient is now.
	Locations    []string `json:"locations,omitempty"`
	PatientClass []string `json:"patient_class,omitempty"` // PV1-2: I, O, E, ...
	// AlarmPriority (PH, PM, PL, PN) and AlarmType (SP, ST, SA) match IHE
	// PCD-04 alarms only.
	AlarmPriority []string `json:"alarm_priority,omitempty"`
	AlarmType     []string `json:"alarm_type,omitempty"`
}

// Target is whom a rule's alert goes to first; exactly one field is set.
// The rule's policy (PolicyID) escalates after it and ends in its failsafe.
type Target struct {
	Role   string `json:"role,omitempty"`   // this role in the patient's current unit
	Team   string `json:"team,omitempty"`   // an oncall team, every member paged
	User   string `json:"user,omitempty"`   // a named user
	Policy string `json:"policy,omitempty"` // a named escalation policy, paged as it is
}

// Target kinds, as stored on the alert (alerts.target_kind).
const (
	TargetRole   = "role"
	TargetTeam   = "team"
	TargetUser   = "user"
	TargetPolicy = "policy"
)

// Kind and ID say which target is set ("" when none or several).
func (t Target) Kind() (kind, id string) {
	n := 0
	for _, kv := range [][2]string{{TargetRole, t.Role}, {TargetTeam, t.Team}, {TargetUser, t.User}, {TargetPolicy, t.Policy}} {
		if kv[1] != "" {
			n++
			kind, id = kv[0], kv[1]
		}
	}
	if n != 1 {
		return "", ""
	}
	return kind, id
}

func (t Target) isZero() bool { return t == Target{} }

// Escalation sets how fast the rule's alerts escalate: every step delay of
// the policy is multiplied by DelayScale (0.5 is twice as fast). It
// overrides the router's per-priority default (Options.DelayPercent).
type Escalation struct {
	DelayScale float64 `json:"delay_scale,omitempty"`
}

// Dedup adds fields to the dedup key, which is always the patient and the
// rule: "code" (one alert per observation code), "alarm_id" (per IHE alarm
// instance), "equipment" (per device), "unit".
type Dedup struct {
	By []string `json:"by,omitempty"`
}

// Sustain holds an alert back until the condition has held for Seconds
// (from the first out-of-range reading of the run) and for Readings
// consecutive readings; both when both are given. A normal reading ends
// the run; so does a gap longer than MaxGapSeconds (default 300) between
// two readings.
type Sustain struct {
	Seconds       int `json:"seconds,omitempty"`
	Readings      int `json:"readings,omitempty"`
	MaxGapSeconds int `json:"max_gap_seconds,omitempty"`
}

// DefaultMaxGapSeconds is Sustain.MaxGapSeconds when not given.
const DefaultMaxGapSeconds = 300

// AutoResolve closes the rule's alert when a later reading of its codes is
// normal (OnNormal), or when the IHE alarm it was opened for ends
// (OnAlarmEnd). An accepted alert is closed too, with a notice.
type AutoResolve struct {
	OnNormal   bool `json:"on_normal,omitempty"`
	OnAlarmEnd bool `json:"on_alarm_end,omitempty"`
}

// RateLimit: at most Max alerts per patient from this rule in any
// PerSeconds; further firings are suppressed (and audited).
type RateLimit struct {
	Max        int `json:"max"`
	PerSeconds int `json:"per_seconds"`
}

// QuietHours applies to PL and PN rules only: between From and To (HH:MM
// in the unit's time zone) an alert is held until To ("hold", the default)
// or dropped ("drop").
type QuietHours struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Action string `json:"action,omitempty"`
}

// Quiet-hours actions.
const (
	QuietHold = "hold"
	QuietDrop = "drop"
)

// Group folds the alerts of rules with the same group Name for one patient
// into one alert when they fire within WindowSeconds of its opening and its
// priority is at least theirs.
type Group struct {
	Name          string `json:"name"`
	WindowSeconds int    `json:"window_seconds"`
}

// What happens to a rule's open alerts when the patient moves or leaves.
const (
	OnTransferRetarget = "retarget" // default: page the new unit's target from the first step
	OnTransferKeep     = "keep"
	OnTransferClose    = "close"
	OnDischargeKeep    = "keep" // default: a discharged patient's alert still reaches someone
	OnDischargeClose   = "close"
)

// Rule is one routing rule.
type Rule struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Enabled     bool   `json:"enabled"`
	Match       Match  `json:"match,omitzero"`
	// When is a CEL condition (docs/rules.md, "CEL environment"); with
	// shorthands, both must hold.
	When     string `json:"when,omitempty"`
	Priority string `json:"priority"`
	Target   Target `json:"target,omitzero"`
	// TargetRole is the older spelling of Target.Role; Normalize moves it.
	TargetRole string      `json:"target_role,omitempty"`
	PolicyID   string      `json:"policy_id"`
	Escalation *Escalation `json:"escalation,omitempty"`
	// LockText is shown on a locked screen: only {priority}, {unit} and
	// {rule} may appear in it, never PHI.
	LockText string `json:"lock_text"`
	// Body is sealed to the device; it shows only the fields it names:
	// {unit} {room} {bed} {test} {value} {units} {flag} {trend} {event}
	// {class} {priority} {rule}.
	Body        string       `json:"body"`
	Dedup       *Dedup       `json:"dedup,omitempty"`
	Sustain     *Sustain     `json:"sustain,omitempty"`
	AutoResolve *AutoResolve `json:"auto_resolve,omitempty"`
	RateLimit   *RateLimit   `json:"rate_limit,omitempty"`
	QuietHours  *QuietHours  `json:"quiet_hours,omitempty"`
	Group       *Group       `json:"group,omitempty"`
	OnTransfer  string       `json:"on_transfer,omitempty"`
	OnDischarge string       `json:"on_discharge,omitempty"`
}

// Normalize folds the older spellings into the current ones: target_role
// becomes target.role, and a target policy is the rule's policy.
func (r *Rule) Normalize() {
	if r.TargetRole != "" && (r.Target.isZero() || r.Target.Role == r.TargetRole) {
		r.Target.Role, r.TargetRole = r.TargetRole, ""
	}
	if r.Target.Policy != "" && r.PolicyID == "" {
		r.PolicyID = r.Target.Policy
	}
}

var (
	placeholder = regexp.MustCompile(`\{([a-z_]*)\}`)
	ruleIDRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	groupNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	clockRe     = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
)

// Template fields: the lock screen may show only lockFields (no PHI).
var (
	lockFields    = []string{"priority", "unit", "rule"}
	bodyFields    = []string{"priority", "unit", "rule", "room", "bed", "test", "value", "units", "flag", "trend", "event", "class"}
	knownPriority = []string{PriorityHigh, PriorityMedium, PriorityLow, PriorityNone}
	eventKinds    = []ingest.Kind{ingest.KindResult, ingest.KindAlarm, ingest.KindAdmit, ingest.KindTransfer,
		ingest.KindDischarge, ingest.KindRegister, ingest.KindUpdate, ingest.KindCancelAdmit, ingest.KindCancelTransfer,
		ingest.KindCancelDischarge, ingest.KindSwap, ingest.KindMerge}
	dedupFields = []string{"code", "alarm_id", "equipment", "unit"}
)

// Validate checks the rule, its CEL condition included. The error is a
// RuleErrors listing every problem (which rule, which field, why); it is
// nil when the rule is valid. It checks a normalized copy of r.
func (r *Rule) Validate() error {
	c, err := NewCompiler()
	if err != nil {
		return err
	}
	if p := c.Check(r); len(p) > 0 {
		return p
	}
	return nil
}

// problems lists what is wrong with the rule apart from its CEL condition.
func (r *Rule) problems() RuleErrors {
	var out RuleErrors
	bad := func(field, reason string, args ...any) {
		if len(args) > 0 {
			reason = fmt.Sprintf(reason, args...)
		}
		out = append(out, &InvalidRuleError{Rule: r.label(), Field: field, Reason: reason})
	}
	switch {
	case r.ID == "":
		bad("id", "required")
	case !ruleIDRe.MatchString(r.ID):
		bad("id", "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if strings.TrimSpace(r.Name) == "" {
		bad("name", "required")
	}
	m := &r.Match
	kinds, err := m.kinds()
	if err != nil {
		bad("match.events", "%v", err)
	}
	results, alarms := kinds.has(ingest.KindResult), kinds.has(ingest.KindAlarm)
	alarmOnly := len(m.AlarmPriority) > 0 || len(m.AlarmType) > 0
	switch {
	case len(m.Codes) == 0 && r.When == "" && results && !alarmOnly:
		bad("match.codes", "at least one code is required unless the rule has a `when` condition, "+
			"alarm_priority/alarm_type, or listens only to ADT events")
	case len(m.Codes) == 0 && r.When == "" && alarms && !results && !alarmOnly:
		bad("match.codes", "an alarm rule needs codes (MDC events), alarm_priority/alarm_type or a `when` condition")
	case len(m.Codes) > 0 && !results && !alarms:
		bad("match.codes", "ADT events carry no observations: codes never match them")
	}
	for i, c := range m.Codes {
		if strings.TrimSpace(c.Code) == "" {
			bad(fmt.Sprintf("match.codes[%d].code", i), "required")
		}
	}
	for i, f := range m.Flags {
		if strings.TrimSpace(f) == "" {
			bad(fmt.Sprintf("match.flags[%d]", i), "must not be empty")
		}
	}
	for name, v := range map[string]*float64{"match.above": m.Above, "match.below": m.Below} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			bad(name, "must be a finite number")
		}
	}
	if m.Above != nil && m.Below != nil && *m.Above < *m.Below {
		bad("match.above", "is below match.below (%s < %s): the rule would fire on every value",
			strconv.FormatFloat(*m.Above, 'f', -1, 64), strconv.FormatFloat(*m.Below, 'f', -1, 64))
	}
	if (m.Above != nil || m.Below != nil || len(m.Flags) > 0) && len(m.Codes) == 0 {
		bad("match.codes", "flags, above and below apply to the listed codes: list at least one")
	}
	for i, l := range m.Locations {
		parts := strings.Split(l, "/")
		if len(parts) > 3 || slices.Contains(parts, "") {
			bad(fmt.Sprintf("match.locations[%d]", i), "must be UNIT, UNIT/ROOM or UNIT/ROOM/BED")
		}
	}
	for i, c := range m.PatientClass {
		if strings.TrimSpace(c) == "" {
			bad(fmt.Sprintf("match.patient_class[%d]", i), "must not be empty")
		}
	}
	if alarmOnly && !alarms {
		bad("match.events", "alarm_priority and alarm_type match alarms only: add \"alarm\" to events")
	}
	for i, p := range m.AlarmPriority {
		if !slices.Contains(knownPriority, p) {
			bad(fmt.Sprintf("match.alarm_priority[%d]", i), "must be one of %v", knownPriority)
		}
	}
	for i, t := range m.AlarmType {
		if !slices.Contains([]string{"SP", "ST", "SA"}, t) {
			bad(fmt.Sprintf("match.alarm_type[%d]", i), "must be SP (physiological), ST (technical) or SA (advisory)")
		}
	}
	if !slices.Contains(knownPriority, r.Priority) {
		bad("priority", "must be one of %v", knownPriority)
	}
	kind, _ := r.Target.Kind()
	switch {
	case r.TargetRole != "":
		bad("target_role", "is the older spelling of target.role and conflicts with target: give one")
	case kind == "" && r.Target.isZero():
		bad("target", "required: one of role, team, user or policy")
	case kind == "":
		bad("target", "give exactly one of role, team, user or policy")
	}
	if r.Target.Policy != "" && r.PolicyID != r.Target.Policy {
		bad("policy_id", "differs from target.policy: a policy target is the rule's policy")
	}
	if r.PolicyID == "" {
		bad("policy_id", "required: the escalation policy that follows the target and ends in its failsafe")
	}
	if e := r.Escalation; e != nil && e.DelayScale != 0 && (e.DelayScale < 0.1 || e.DelayScale > 10 || math.IsNaN(e.DelayScale)) {
		bad("escalation.delay_scale", "must be between 0.1 and 10")
	}
	if r.LockText == "" {
		bad("lock_text", "required")
	} else if err := checkTemplate(r.LockText, lockFields); err != nil {
		bad("lock_text", "%v", err)
	}
	if err := checkTemplate(r.Body, bodyFields); err != nil {
		bad("body", "%v", err)
	}
	if d := r.Dedup; d != nil {
		for i, f := range d.By {
			switch {
			case !slices.Contains(dedupFields, f):
				bad(fmt.Sprintf("dedup.by[%d]", i), "must be one of %v (patient and rule are always part of the key)", dedupFields)
			case slices.Contains(d.By[:i], f):
				bad(fmt.Sprintf("dedup.by[%d]", i), "listed twice")
			}
		}
	}
	if s := r.Sustain; s != nil {
		switch {
		case s.Seconds < 0 || s.Seconds > 86400:
			bad("sustain.seconds", "must be 0 to 86400")
		case s.Readings < 0 || s.Readings > 1000:
			bad("sustain.readings", "must be 0 to 1000")
		case s.Seconds == 0 && s.Readings == 0:
			bad("sustain", "give seconds, readings or both")
		case s.MaxGapSeconds < 0 || s.MaxGapSeconds > 86400:
			bad("sustain.max_gap_seconds", "must be 0 to 86400")
		}
		if len(m.Codes) == 0 {
			bad("sustain", "a sustained condition is kept per observation code: list match.codes")
		}
		if !results {
			bad("sustain", "applies to results (vitals): add \"result\" to match.events")
		}
	}
	if a := r.AutoResolve; a != nil {
		if a.OnNormal && len(m.Codes) == 0 {
			bad("auto_resolve.on_normal", "needs match.codes: only a reading of the rule's own codes can be normal")
		}
		if a.OnAlarmEnd && (len(m.Codes) == 0 || !alarms) {
			bad("auto_resolve.on_alarm_end", "needs match.codes (the MDC events) and \"alarm\" in match.events")
		}
	}
	if rl := r.RateLimit; rl != nil {
		if rl.Max < 1 {
			bad("rate_limit.max", "must be at least 1")
		}
		if rl.PerSeconds < 1 || rl.PerSeconds > 7*86400 {
			bad("rate_limit.per_seconds", "must be 1 to 604800 (a week)")
		}
	}
	if q := r.QuietHours; q != nil {
		if r.Priority == PriorityHigh || r.Priority == PriorityMedium {
			bad("quiet_hours", "applies to PL and PN rules only: a %s alert is never held or dropped", r.Priority)
		}
		if !clockRe.MatchString(q.From) {
			bad("quiet_hours.from", "must be HH:MM (24-hour)")
		}
		if !clockRe.MatchString(q.To) {
			bad("quiet_hours.to", "must be HH:MM (24-hour)")
		}
		if q.From == q.To && q.From != "" {
			bad("quiet_hours.to", "must differ from quiet_hours.from")
		}
		if q.Action != "" && q.Action != QuietHold && q.Action != QuietDrop {
			bad("quiet_hours.action", "must be %q or %q", QuietHold, QuietDrop)
		}
	}
	if g := r.Group; g != nil {
		if !groupNameRe.MatchString(g.Name) {
			bad("group.name", "must be 1 to 32 lowercase letters, digits, '_' or '-'")
		}
		if g.WindowSeconds < 1 || g.WindowSeconds > 3600 {
			bad("group.window_seconds", "must be 1 to 3600")
		}
	}
	if !slices.Contains([]string{"", OnTransferRetarget, OnTransferKeep, OnTransferClose}, r.OnTransfer) {
		bad("on_transfer", "must be %q, %q or %q", OnTransferRetarget, OnTransferKeep, OnTransferClose)
	}
	if !slices.Contains([]string{"", OnDischargeKeep, OnDischargeClose}, r.OnDischarge) {
		bad("on_discharge", "must be %q or %q", OnDischargeKeep, OnDischargeClose)
	}
	return out
}

// label names the rule in an error: its name, else its id.
func (r *Rule) label() string {
	if r.Name != "" {
		return r.Name
	}
	return r.ID
}

func checkTemplate(tpl string, allowed []string) error {
	for _, m := range placeholder.FindAllStringSubmatch(tpl, -1) {
		if !slices.Contains(allowed, m[1]) {
			return fmt.Errorf("placeholder {%s} is not allowed here (allowed: %s)", m[1], strings.Join(allowed, ", "))
		}
	}
	return nil
}

// usesTrend reports whether the body shows {trend}.
func (r *Rule) usesTrend() bool { return strings.Contains(r.Body, "{trend}") }

// InvalidRuleError says which rule, which field and why. Line is the line
// of the rule in a YAML file (0 when it did not come from one).
type InvalidRuleError struct {
	Rule, Field, Reason string
	Line                int
}

func (e *InvalidRuleError) Error() string {
	s := fmt.Sprintf("rule %q: %s: %s", e.Rule, e.Field, e.Reason)
	if e.Line > 0 {
		s = fmt.Sprintf("line %d: %s", e.Line, s)
	}
	return s
}

// UserError marks the error as safe to show the caller.
func (e *InvalidRuleError) UserError() {}

// RuleErrors is every problem found in one rule or one file.
type RuleErrors []*InvalidRuleError

func (e RuleErrors) Error() string {
	parts := make([]string, len(e))
	for i, p := range e {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap lets errors.As find each *InvalidRuleError.
func (e RuleErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, p := range e {
		out[i] = p
	}
	return out
}

// UserError marks the errors as safe to show the caller.
func (e RuleErrors) UserError() {}

// kindSet is a set of event kinds.
type kindSet uint32

func kindBit(k ingest.Kind) kindSet {
	if i := slices.Index(eventKinds, k); i >= 0 {
		return 1 << i
	}
	return 0
}

func (s kindSet) has(k ingest.Kind) bool { return s&kindBit(k) != 0 }

// kinds is the set of event kinds the rule listens to.
func (m *Match) kinds() (kindSet, error) {
	if len(m.Events) == 0 {
		return kindBit(ingest.KindResult) | kindBit(ingest.KindAlarm), nil
	}
	var s kindSet
	for _, e := range m.Events {
		b := kindBit(ingest.Kind(e))
		if b == 0 {
			return 0, fmt.Errorf("unknown event kind %q (known: %v)", e, eventKinds)
		}
		s |= b
	}
	return s, nil
}

// Fires evaluates the rule's code and trigger shorthands (not its CEL
// condition, nor the per-event shorthands, which need the patient's
// context: see Ruleset.Evaluate) and returns the first observation of ev
// that fires r, or nil. An alarm is matched as the observation
// AlarmObservation makes of it.
func (r *Rule) Fires(ev *ingest.Event) *ingest.Observation {
	if !r.Enabled {
		return nil
	}
	kinds, err := r.Match.kinds()
	if err != nil || !kinds.has(ev.Kind) {
		return nil
	}
	switch ev.Kind {
	case ingest.KindResult:
		for i := range ev.Observations {
			o := &ev.Observations[i]
			if r.Match.codeMatches(o) && r.Match.triggers(o) {
				return o
			}
		}
	case ingest.KindAlarm:
		if o := AlarmObservation(ev); o != nil && r.Match.codeMatches(o) && r.Match.triggers(o) {
			return o
		}
	}
	return nil
}

// AlarmObservation is how rules see an IHE PCD-04 alarm: an observation
// whose code is the alarm's MDC event (Alarm.Source, system "MDC") and whose
// flag is its priority (PH, PM, PL, PN). Its display is the device's text
// for the event when the message gave one. An alarm that has ended (phase
// "end", or state "inactive") is nil: it neither opens nor updates an alert
// (it may close one: AutoResolve.OnAlarmEnd).
func AlarmObservation(ev *ingest.Event) *ingest.Observation {
	if alarmEnded(ev) {
		return nil
	}
	return alarmObservation(ev)
}

// alarmEnded reports whether ev is an alarm whose phase is end or whose
// state is inactive.
func alarmEnded(ev *ingest.Event) bool {
	a := ev.Alarm
	return ev.Kind == ingest.KindAlarm && a != nil && a.Source != "" &&
		(strings.EqualFold(a.Phase, "end") || strings.EqualFold(a.State, "inactive"))
}

func alarmObservation(ev *ingest.Event) *ingest.Observation {
	a := ev.Alarm
	if ev.Kind != ingest.KindAlarm || a == nil || a.Source == "" {
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

// codeMatches reports whether o has one of the listed codes (any code when
// none is listed).
func (m *Match) codeMatches(o *ingest.Observation) bool {
	if len(m.Codes) == 0 {
		return true
	}
	return slices.ContainsFunc(m.Codes, func(c Code) bool {
		return c.Code == o.Code && (c.System == "" || strings.EqualFold(c.System, o.System))
	})
}

// hasTriggers reports whether the rule names flags or thresholds.
func (m *Match) hasTriggers() bool { return len(m.Flags) > 0 || m.Above != nil || m.Below != nil }

// triggers reports whether a listed flag or a threshold holds for o (true
// when none is given).
func (m *Match) triggers(o *ingest.Observation) bool {
	if !m.hasTriggers() {
		return true
	}
	for _, f := range o.Flags {
		if slices.Contains(m.Flags, f) {
			return true
		}
	}
	if !m.comparable(o) {
		return false
	}
	return (m.Above != nil && *o.Numeric > *m.Above) || (m.Below != nil && *o.Numeric < *m.Below)
}

// comparable reports whether o's value can be compared with the rule's
// thresholds: numeric, and in the rule's units when it names them.
func (m *Match) comparable(o *ingest.Observation) bool {
	return o.Numeric != nil && (m.Units == "" || strings.EqualFold(m.Units, o.Units))
}

// canBeNormal reports whether a reading that did not fire says the
// condition is over: with thresholds, only a comparable value does (a
// hemolysed sample says nothing about potassium).
func (m *Match) canBeNormal(o *ingest.Observation) bool {
	if m.Above != nil || m.Below != nil {
		return m.comparable(o)
	}
	return true
}

// inLocation reports whether loc is one of the rule's locations (true when
// none is listed).
func (m *Match) inLocation(loc ingest.Location) bool {
	if len(m.Locations) == 0 {
		return true
	}
	for _, l := range m.Locations {
		parts := strings.Split(l, "/")
		have := []string{loc.Unit, loc.Room, loc.Bed}
		ok := true
		for i, p := range parts {
			if i >= len(have) || !strings.EqualFold(p, have[i]) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// Fields are the values a template may show.
type Fields struct {
	Priority, Unit, Rule, Room, Bed, Test, Value, Units, Flag, Trend, Event, Class string
}

// FieldsFor collects a rule's template fields from the observation (nil
// for an ADT event) and the patient's location.
func FieldsFor(r *Rule, o *ingest.Observation, loc ingest.Location) Fields {
	f := Fields{Priority: r.Priority, Unit: loc.Unit, Rule: r.Name, Room: loc.Room, Bed: loc.Bed}
	if o == nil {
		return f
	}
	f.Test, f.Value, f.Units, f.Flag = o.Display, o.Value, o.Units, strings.Join(o.Flags, ",")
	if f.Test == "" {
		f.Test = o.Code
	}
	if o.Numeric != nil {
		f.Value = formatNumber(*o.Numeric)
	}
	return f
}

func formatNumber(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Trend describes a value against the previous one: "↑ from 5.9",
// "↓ from 7.1" or "= 6.9 before"; "" without a previous value.
func Trend(current float64, previous *float64) string {
	if previous == nil {
		return ""
	}
	p := formatNumber(*previous)
	switch {
	case current > *previous:
		return "↑ from " + p
	case current < *previous:
		return "↓ from " + p
	}
	return "= " + p + " before"
}

// eventNames are what {event} shows for each kind.
func eventName(k ingest.Kind) string {
	switch k {
	case ingest.KindAdmit:
		return "Admission"
	case ingest.KindTransfer:
		return "Transfer"
	case ingest.KindDischarge:
		return "Discharge"
	case ingest.KindRegister:
		return "Registration"
	case ingest.KindUpdate:
		return "Patient update"
	case ingest.KindCancelAdmit:
		return "Admission cancelled"
	case ingest.KindCancelTransfer:
		return "Transfer cancelled"
	case ingest.KindCancelDischarge:
		return "Discharge cancelled"
	case ingest.KindSwap:
		return "Bed swap"
	case ingest.KindMerge:
		return "Patient merge"
	case ingest.KindAlarm:
		return "Alarm"
	case ingest.KindResult:
		return "Result"
	}
	return string(k)
}

// RenderMessage is what routing shows for a rule: its lock screen and body
// filled with fields, without the blanks an empty field leaves at either
// end.
func RenderMessage(r *Rule, f Fields) (lock, body string) {
	return strings.TrimSpace(Render(r.LockText, f)), strings.TrimSpace(Render(r.Body, f))
}

// Render fills a template with fields; unknown placeholders were refused
// when the rule was validated. Values are never re-expanded.
func Render(tpl string, f Fields) string {
	return strings.NewReplacer("{priority}", f.Priority, "{unit}", f.Unit, "{rule}", f.Rule,
		"{room}", f.Room, "{bed}", f.Bed, "{test}", f.Test, "{value}", f.Value,
		"{units}", f.Units, "{flag}", f.Flag, "{trend}", f.Trend, "{event}", f.Event, "{class}", f.Class).Replace(tpl)
}
