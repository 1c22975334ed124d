package routing

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

	"github.com/clarion-health/clarion/ingest"
)

// Limits on CEL conditions: the source size, and the runtime cost of one
// evaluation of a condition that loops (a comprehension: all, exists, map,
// filter); a unit is roughly one operation, a walk over 50 observations
// costs about 500. An evaluation over the limit stops and counts as not
// matching. A condition without a loop is bounded by its size.
const (
	MaxWhenLength = 4096
	CELCostLimit  = 10000
)

// The fields each CEL variable has (docs/rules.md, "CEL environment"). A
// condition naming another field is refused when the rule is loaded.
var celFields = map[string][]string{
	"event":   {"kind", "source", "trigger", "occurred_at", "observations"},
	"obs":     {"code", "system", "display", "value", "value_type", "numeric", "units", "flags", "status", "observed_at", "order", "equipment_id", "reference_range"},
	"patient": {"unit", "room", "bed", "facility", "class", "admitted", "known"},
	"alarm":   {"id", "source", "priority", "type", "phase", "state", "inactivation_state", "equipment_id", "reporter"},
}

// Compiler checks rules and compiles their CEL conditions. One compiler
// holds one CEL environment; it is safe for concurrent use.
type Compiler struct {
	env *cel.Env
}

// NewCompiler builds the CEL environment rules are evaluated in.
func NewCompiler() (*Compiler, error) {
	mapType := cel.MapType(cel.StringType, cel.DynType)
	env, err := cel.NewEnv(
		cel.Variable("event", mapType),
		cel.Variable("obs", mapType),
		cel.Variable("patient", mapType),
		cel.Variable("alarm", mapType),
		cel.Variable("now", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
		cel.ParserExpressionSizeLimit(MaxWhenLength),
		cel.ParserRecursionLimit(64),
	)
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	return &Compiler{env: env}, nil
}

// Check lists every problem of r (normalized first, on a copy): its
// fields and its CEL condition.
func (c *Compiler) Check(rule *Rule) RuleErrors {
	n := *rule
	n.Normalize()
	r := &n
	p := r.problems()
	if r.When != "" {
		if _, err := c.program(r.When); err != nil {
			p = append(p, &InvalidRuleError{Rule: r.label(), Field: "when", Reason: err.Error()})
		}
	}
	return p
}

// program compiles a CEL condition: it must parse, type-check, name only
// known fields and be a boolean.
func (c *Compiler) program(src string) (cel.Program, error) {
	if len(src) > MaxWhenLength {
		return nil, fmt.Errorf("longer than %d characters", MaxWhenLength)
	}
	ast, iss := c.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s", strings.ReplaceAll(strings.TrimSpace(iss.Err().Error()), "\n", " "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be a boolean expression, not %s", ast.OutputType())
	}
	var unknown []string
	loops := false
	celast.PreOrderVisit(ast.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.ComprehensionKind {
			loops = true
		}
		if e.Kind() != celast.SelectKind {
			return
		}
		sel := e.AsSelect()
		op := sel.Operand()
		if op.Kind() != celast.IdentKind {
			return
		}
		if fields, ok := celFields[op.AsIdent()]; ok && !slices.Contains(fields, sel.FieldName()) {
			unknown = append(unknown, fmt.Sprintf("%s.%s (fields of %s: %s)", op.AsIdent(), sel.FieldName(),
				op.AsIdent(), strings.Join(fields, ", ")))
		}
	}))
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown field %s", strings.Join(unknown, "; "))
	}
	// Without a comprehension (all, exists, map, filter, ...) a condition
	// does a bounded number of operations, each linear in the values it
	// reads: cost tracking (about half a microsecond an evaluation) is
	// spent only on conditions that loop.
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if loops {
		opts = append(opts, cel.CostLimit(CELCostLimit))
	}
	prg, err := c.env.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("program: %w", err)
	}
	return prg, nil
}

// CompiledRule is a validated rule ready to evaluate.
type CompiledRule struct {
	Rule    Rule
	Version int
	kinds   kindSet
	prg     cel.Program // nil without a When condition
}

// Compile validates r (normalized) and compiles its condition.
func (c *Compiler) Compile(r Rule, version int) (*CompiledRule, error) {
	r.Normalize()
	if p := c.Check(&r); len(p) > 0 {
		return nil, p
	}
	kinds, _ := r.Match.kinds()
	cr := &CompiledRule{Rule: r, Version: version, kinds: kinds}
	if r.When != "" {
		prg, err := c.program(r.When)
		if err != nil {
			return nil, err
		}
		cr.prg = prg
	}
	return cr, nil
}

// Ruleset is the compiled, indexed set of enabled rules. Rules with codes
// are found through their codes, so an observation is checked only
// against the rules that name its code and the rules that name none.
type Ruleset struct {
	rules    []*CompiledRule // by id
	byID     map[string]*CompiledRule
	byCode   map[string][]int32      // code → rule indexes, ascending
	anyCode  map[ingest.Kind][]int32 // rules without codes, per kind they listen to
	trend    map[string]bool         // codes whose last value a {trend} needs
	trendAll bool                    // a {trend} rule without codes: keep every numeric value
}

// NewRuleset indexes compiled rules (disabled ones are left out).
func NewRuleset(rules []*CompiledRule) *Ruleset {
	rs := &Ruleset{byID: map[string]*CompiledRule{}, byCode: map[string][]int32{},
		anyCode: map[ingest.Kind][]int32{}, trend: map[string]bool{}}
	for _, r := range rules {
		if r.Rule.Enabled {
			rs.rules = append(rs.rules, r)
		}
	}
	sort.Slice(rs.rules, func(i, j int) bool { return rs.rules[i].Rule.ID < rs.rules[j].Rule.ID })
	for i, r := range rs.rules {
		rs.byID[r.Rule.ID] = r
		idx := int32(i)
		if len(r.Rule.Match.Codes) > 0 {
			seen := map[string]bool{}
			for _, c := range r.Rule.Match.Codes {
				if !seen[c.Code] {
					seen[c.Code] = true
					rs.byCode[c.Code] = append(rs.byCode[c.Code], idx)
				}
				if r.Rule.usesTrend() {
					rs.trend[c.Code] = true
				}
			}
		} else {
			for _, k := range eventKinds {
				if r.kinds.has(k) {
					rs.anyCode[k] = append(rs.anyCode[k], idx)
				}
			}
			if r.Rule.usesTrend() {
				rs.trendAll = true
			}
		}
	}
	return rs
}

// Rules returns the enabled compiled rules, by id.
func (rs *Ruleset) Rules() []*CompiledRule { return rs.rules }

// Rule returns the enabled rule with this id, or nil.
func (rs *Ruleset) Rule(id string) *CompiledRule { return rs.byID[id] }

// Concerns reports whether any rule can act on a result or alarm: a rule
// indexed under one of its codes, a rule without codes for its kind, or a
// trend kept for one of its values. Most results concern no rule; routing
// then has nothing to read or write for them.
func (rs *Ruleset) Concerns(ev *ingest.Event) bool {
	if len(rs.anyCode[ev.Kind]) > 0 {
		return true
	}
	switch ev.Kind {
	case ingest.KindResult:
		for i := range ev.Observations {
			o := &ev.Observations[i]
			if len(rs.byCode[o.Code]) > 0 || o.Numeric != nil && rs.tracksTrend(o.Code) {
				return true
			}
		}
	case ingest.KindAlarm:
		if o := alarmObservation(ev); o != nil {
			return len(rs.byCode[o.Code]) > 0
		}
	}
	return false
}

// tracksTrend reports whether the last value of code must be kept.
func (rs *Ruleset) tracksTrend(code string) bool { return rs.trendAll || rs.trend[code] }

// PatientView is what rules know of the patient: where ADT says they are
// now (else where the message says), and the visit class.
type PatientView struct {
	Location ingest.Location
	Class    string
	Admitted bool
	Known    bool // ADT has been seen for the patient
}

// Hit is one rule's verdict on one event.
type Hit struct {
	Rule *CompiledRule
	// Obs is the observation that fired the rule (the first one), or for a
	// normal hit the reading that was normal; nil for an ADT event.
	Obs *ingest.Observation
	// Normal: a reading of the rule's codes did not fire it (and none of
	// the event's readings did). Auto-resolve and sustained conditions
	// act on it.
	Normal bool
}

// EvalError is a CEL condition that failed at run time (a missing field,
// a type mismatch, the cost limit): the rule counts as not matching. It
// names the rule only; the CEL message is not kept, as it may quote a
// value.
type EvalError struct {
	RuleID string
}

// Evaluate runs every rule that can apply to ev and returns their hits in
// rule-id order: at most one per rule, a firing one when any observation
// fires it. An ended alarm (phase end) fires nothing; AlarmEndHits lists
// the rules it resolves.
func (rs *Ruleset) Evaluate(ev *ingest.Event, pv PatientView, now time.Time) ([]Hit, []EvalError) {
	if len(rs.rules) == 0 {
		return nil, nil
	}
	e := evaluation{rs: rs, ev: ev, pv: pv, now: now}
	switch {
	case ev.Kind == ingest.KindResult:
		for i := range ev.Observations {
			e.observation(&ev.Observations[i])
		}
	case ev.Kind == ingest.KindAlarm:
		if o := AlarmObservation(ev); o != nil {
			e.observation(o)
		}
	case ev.Kind.IsADT():
		for _, idx := range rs.anyCode[ev.Kind] {
			e.try(idx, nil)
		}
	}
	sort.Slice(e.hits, func(i, j int) bool { return e.hits[i].Rule.Rule.ID < e.hits[j].Rule.Rule.ID })
	return e.hits, e.errs
}

// AlarmEndHits returns the rules with auto_resolve.on_alarm_end whose codes
// name the ended alarm's event, in rule-id order (nil unless ev is an alarm
// that ended).
func (rs *Ruleset) AlarmEndHits(ev *ingest.Event) []Hit {
	if !alarmEnded(ev) {
		return nil
	}
	o := alarmObservation(ev)
	var out []Hit
	for _, idx := range rs.byCode[o.Code] {
		r := rs.rules[idx]
		if a := r.Rule.AutoResolve; a != nil && a.OnAlarmEnd && r.kinds.has(ingest.KindAlarm) && r.Rule.Match.codeMatches(o) {
			out = append(out, Hit{Rule: r, Obs: o, Normal: true})
		}
	}
	return out
}

// evaluation is one event's pass over the rules.
type evaluation struct {
	rs   *Ruleset
	ev   *ingest.Event
	pv   PatientView
	now  time.Time
	hits []Hit
	errs []EvalError
	// state per rule index: 0 untouched, 1 normal hit recorded, 2 fired.
	state []uint8
	act   *activation
}

func (e *evaluation) observation(o *ingest.Observation) {
	for _, idx := range e.rs.byCode[o.Code] {
		e.try(idx, o)
	}
	for _, idx := range e.rs.anyCode[e.ev.Kind] {
		e.try(idx, o)
	}
}

// try evaluates rule idx on observation o (nil for an ADT event).
func (e *evaluation) try(idx int32, o *ingest.Observation) {
	if e.state == nil {
		e.state = make([]uint8, len(e.rs.rules))
	}
	if e.state[idx] == 2 {
		return
	}
	r := e.rs.rules[idx]
	m := &r.Rule.Match
	if !r.kinds.has(e.ev.Kind) || !m.inLocation(e.pv.Location) ||
		(len(m.PatientClass) > 0 && !slices.Contains(m.PatientClass, e.pv.Class)) {
		return
	}
	if len(m.AlarmPriority) > 0 || len(m.AlarmType) > 0 {
		a := e.ev.Alarm
		if e.ev.Kind != ingest.KindAlarm || a == nil ||
			(len(m.AlarmPriority) > 0 && !slices.Contains(m.AlarmPriority, a.Priority)) ||
			(len(m.AlarmType) > 0 && !slices.Contains(m.AlarmType, a.Type)) {
			return
		}
	}
	if o != nil && !m.codeMatches(o) {
		return
	}
	fired := o == nil || m.triggers(o)
	if fired && r.prg != nil {
		ok, err := e.cel(r, o)
		if err != nil {
			e.errs = append(e.errs, EvalError{RuleID: r.Rule.ID})
			return
		}
		fired = ok
	}
	switch {
	case fired && e.state[idx] == 1:
		for i := range e.hits {
			if e.hits[i].Rule == r {
				e.hits[i] = Hit{Rule: r, Obs: o}
			}
		}
		e.state[idx] = 2
	case fired:
		e.hits = append(e.hits, Hit{Rule: r, Obs: o})
		e.state[idx] = 2
	case e.state[idx] == 0 && o != nil && len(m.Codes) > 0 && m.canBeNormal(o):
		e.hits = append(e.hits, Hit{Rule: r, Obs: o, Normal: true})
		e.state[idx] = 1
	}
}

func (e *evaluation) cel(r *CompiledRule, o *ingest.Observation) (bool, error) {
	if e.act == nil {
		e.act = newActivation(e.ev, e.pv, e.now)
	}
	e.act.setObs(o)
	out, _, err := r.prg.Eval(e.act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("not a boolean")
	}
	return bool(b), nil
}

// activation binds the CEL variables for one event. Each variable's map
// is built the first time a condition reads it, once per event (obs once
// per observation), and shared by every rule.
type activation struct {
	ev                    *ingest.Event
	pv                    PatientView
	now                   time.Time
	event, patient, alarm map[string]any
	obsFor                *ingest.Observation
	obs                   map[string]any
	obsMaps               map[*ingest.Observation]map[string]any
}

var _ interpreter.Activation = (*activation)(nil)

func newActivation(ev *ingest.Event, pv PatientView, now time.Time) *activation {
	return &activation{ev: ev, pv: pv, now: now}
}

func (a *activation) eventMap() map[string]any {
	if a.event == nil {
		ev := a.ev
		list := make([]any, len(ev.Observations))
		for i := range ev.Observations {
			list[i] = a.obsMap(&ev.Observations[i])
		}
		a.event = map[string]any{"kind": string(ev.Kind), "source": ev.Source, "trigger": ev.Trigger, "observations": list}
		if !ev.OccurredAt.IsZero() {
			a.event["occurred_at"] = ev.OccurredAt
		}
	}
	return a.event
}

func (a *activation) patientMap() map[string]any {
	if a.patient == nil {
		l := a.pv.Location
		a.patient = map[string]any{"unit": l.Unit, "room": l.Room, "bed": l.Bed, "facility": l.Facility,
			"class": a.pv.Class, "admitted": a.pv.Admitted, "known": a.pv.Known}
	}
	return a.patient
}

func (a *activation) alarmMap() map[string]any {
	if a.alarm == nil {
		al := ingest.Alarm{}
		if a.ev.Alarm != nil {
			al = *a.ev.Alarm
		}
		a.alarm = map[string]any{"id": al.ID, "source": al.Source, "priority": al.Priority, "type": al.Type,
			"phase": al.Phase, "state": al.State, "inactivation_state": al.InactivationState,
			"equipment_id": al.EquipmentID, "reporter": al.Reporter}
	}
	return a.alarm
}

func (a *activation) obsMap(o *ingest.Observation) map[string]any {
	if m, ok := a.obsMaps[o]; ok {
		return m
	}
	var x ingest.Observation
	if o != nil {
		x = *o
	}
	flags := x.Flags
	if flags == nil {
		flags = []string{}
	}
	m := map[string]any{"code": x.Code, "system": x.System, "display": x.Display, "value": x.Value,
		"value_type": x.ValueType, "units": x.Units, "flags": flags, "status": x.Status, "order": x.Order,
		"equipment_id": x.EquipmentID, "reference_range": x.ReferenceRange}
	if x.Numeric != nil {
		m["numeric"] = *x.Numeric
	}
	if !x.ObservedAt.IsZero() {
		m["observed_at"] = x.ObservedAt
	}
	if a.obsMaps == nil {
		a.obsMaps = map[*ingest.Observation]map[string]any{}
	}
	a.obsMaps[o] = m
	return m
}

// setObs binds obs to o for the next evaluations (its map is built when
// a condition reads it).
func (a *activation) setObs(o *ingest.Observation) {
	if o != a.obsFor || a.obs == nil {
		a.obsFor, a.obs = o, nil
	}
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "event":
		return a.eventMap(), true
	case "obs":
		if a.obs == nil {
			a.obs = a.obsMap(a.obsFor)
		}
		return a.obs, true
	case "patient":
		return a.patientMap(), true
	case "alarm":
		return a.alarmMap(), true
	case "now":
		return a.now, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }
