package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/oncall"
)

// Router applies ADT context and rules to events.
type Router struct {
	sealer Sealer
	opts   Options

	mu       sync.Mutex
	compiler *Compiler
	loaded   bool
	gen      int64
	set      *Ruleset
	compiled map[string]*CompiledRule // by "id@version"
	checked  map[string]time.Time     // unit → last coverage check made for a missing holder
}

// Options configure a router.
type Options struct {
	// DelayPercent is each priority's escalation speed: every step delay of
	// an alert of that priority is multiplied by DelayPercent/100 (50 pages
	// the next step twice as fast). A priority not listed escalates as its
	// policy says (100). A rule's escalation.delay_scale overrides it.
	DelayPercent map[string]int
	// Log receives rule-evaluation errors (rule and event ids only); nil
	// discards them.
	Log *slog.Logger
	// CoverageCheckEvery bounds how often this node checks a unit's
	// coverage (oncall.NotifyCoverage, which computes every roster over two
	// weeks) when an alert finds nobody holding its target: at most once
	// per unit per period (default one minute). Every such alert is still
	// audited (routing.no_holder) and still goes to the failsafe.
	CoverageCheckEvery time.Duration
	// Holders answers "who holds role R in unit U at T" from memory
	// (*oncall.Index is one); nil reads the rosters in the routing
	// transaction (oncall.HoldersAt), which sees that transaction's edits.
	Holders HolderIndex
	// Dialect is the database's: some lookups are written for PostgreSQL's
	// planner there. The zero value (SQLite) writes them portably, which
	// PostgreSQL runs too.
	Dialect db.Dialect
}

// HolderIndex says who holds a role in a unit at a time.
type HolderIndex interface {
	HoldersAt(ctx context.Context, unitID, role string, t time.Time) ([]string, error)
}

var _ HolderIndex = (*oncall.Index)(nil)

// NewRouter returns a router that seals alert bodies with sealer.
func NewRouter(sealer Sealer) *Router { return NewRouterWithOptions(sealer, Options{}) }

// NewRouterWithOptions returns a router with options.
func NewRouterWithOptions(sealer Sealer, o Options) *Router {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CoverageCheckEvery <= 0 {
		o.CoverageCheckEvery = time.Minute
	}
	return &Router{sealer: sealer, opts: o, checked: map[string]time.Time{}}
}

// Pseudonymizer maps a patient identifier to its opaque id
// (*atrest.Keyring is one).
type Pseudonymizer interface {
	Pseudonym(prefix, value string) string
}

// PatientID is the opaque pseudonym ("pt_…") routing, alerts and the audit
// know a patient by; "" when the event names no patient (a watchdog).
func PatientID(p Pseudonymizer, pt ingest.Patient) string {
	if pt.ID == "" {
		return ""
	}
	return p.Pseudonym("pt", pt.Key())
}

// Outcome is what routing one event did.
type Outcome struct {
	PatientID string   // the event's patient pseudonym ("" for none)
	Opened    []*Alert // new alerts: the caller starts their escalation
	Updated   []string // ids of open or held alerts that absorbed the event (dedup, grouping) instead of paging again
	// Retargeted alerts moved with their patient to another unit: the
	// caller starts their escalation again (their timers are cancelled).
	Retargeted []*Alert
	// Closed alerts were auto-resolved or closed by a transfer or
	// discharge; an accepted one must be told to its owner.
	Closed     []ClosedAlert
	Held       []string // alerts held for quiet hours, paged at their release time
	Suppressed int      // firings suppressed (sustain pending, rate limit, quiet hours drop)
}

// ClosedAlert is an alert routing closed.
type ClosedAlert struct {
	ID, RuleID, Reason string
	PreviousState      string
	AcceptedBy         string // set when it had been accepted: that user is owed a notice
}

// Route applies ev, stored as eventID, within tx. Patients are known only
// by the pseudonyms pseudo makes of them (Event.Patient, and for a merge or
// a bed swap the second patient too). Every change is audited in tx.
func (r *Router) Route(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, pseudo Pseudonymizer, now time.Time) (Outcome, error) {
	return r.Session(tx).Route(ctx, eventID, ev, pseudo, now)
}

// Session routes several events in one transaction, in the order given:
// the rules in force are read once, when the first event needs them.
type Session struct{ tx *rtx }

// Session binds the router to tx.
func (r *Router) Session(tx Queryer) *Session { return &Session{tx: &rtx{Queryer: tx, r: r}} }

// rtx is a routing transaction and the rules in force in it.
type rtx struct {
	Queryer
	r  *Router
	rs *Ruleset
	// contexts holds the patient contexts Prefetch read, kept current by
	// the context writes made through the session.
	contexts map[string]knownContext
	// active and touched: the alerts QueueActive read, by patient, and
	// the patients whose alerts the session has written since.
	active  map[string][]keyedAlert
	touched map[string]bool
	gen     *int64 // the rules' generation, when QueueRules read it
	// behind, set by WriteBehind: where new alerts the session's reads
	// vouch for are queued instead of sent.
	behind *db.Pipe
}

// knownContext is GetContext's answer for one patient.
type knownContext struct {
	c     Context
	known bool
}

// Prefetch reads the contexts of the patients a batch of events concerns
// in one query, so that routing each result or alarm need not read its
// own. The session then answers GetContext for them from memory, and
// keeps its answers current with the writes it makes (SetContext, a
// merge). ADT events, which write a context, read it afresh
// (freshContext): what another node committed since the batch began is
// built upon, not overwritten.
func (s *Session) Prefetch(ctx context.Context, patientIDs []string) error {
	got, err := getContexts(ctx, s.tx.Queryer, patientIDs)
	if err != nil {
		return err
	}
	if s.tx.contexts == nil {
		s.tx.contexts = map[string]knownContext{}
	}
	for _, id := range patientIDs {
		c, ok := got[id]
		if !ok {
			c = Context{PatientID: id}
		}
		s.tx.contexts[id] = knownContext{c, ok}
	}
	return nil
}

// Units returns the units of the patients Prefetch found placed, sorted:
// where the batch's alerts will mostly go.
func (s *Session) Units() []string {
	seen := map[string]bool{}
	for _, k := range s.tx.contexts {
		if u := k.c.Location.Unit; k.known && u != "" {
			seen[u] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// PolicyIDs returns the escalation policies the rules in force name, as
// the router last loaded them (none before it has): what a batch's alerts
// will most likely escalate by, for the caller to read with its other
// reads (oncall.Memo.QueuePolicies).
func (s *Session) PolicyIDs() []string {
	r := s.tx.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, cr := range r.set.rules {
		if id := cr.Rule.PolicyID; id != "" {
			seen[id] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// rules returns the ruleset, reading it at the first call (from the
// generation QueueRules read, when it did).
func (t *rtx) rules(ctx context.Context) (*Ruleset, error) {
	if t.rs == nil {
		var rs *Ruleset
		var err error
		if t.gen != nil {
			rs, err = t.r.rulesetAt(ctx, t.Queryer, *t.gen)
		} else {
			rs, err = t.r.Ruleset(ctx, t.Queryer)
		}
		if err != nil {
			return nil, err
		}
		t.rs = rs
	}
	return t.rs, nil
}

// QueueRules queues, on p, the read of the rules' generation that the
// session's first routing would send on its own: once p is flushed, the
// rules in force are known without it (reloaded only when changed). p
// must be a Pipe within the session's transaction.
func (s *Session) QueueRules(p *db.Pipe) {
	t := s.tx
	p.Query(func(rows db.Rows) error {
		if !rows.Next() {
			if err := rows.Err(); err != nil {
				return err
			}
			return errors.New("rule generation: no row")
		}
		var g int64
		if err := rows.Scan(&g); err != nil {
			return fmt.Errorf("rule generation: %w", err)
		}
		t.gen = &g
		return nil
	}, ruleGenerationSQL)
}

// Route is Router.Route within the session's transaction.
func (s *Session) Route(ctx context.Context, eventID string, ev *ingest.Event, pseudo Pseudonymizer, now time.Time) (Outcome, error) {
	r, tx := s.tx.r, s.tx
	out := Outcome{PatientID: PatientID(pseudo, ev.Patient)}
	if ev.Kind != ingest.KindResult && ev.Kind != ingest.KindAlarm {
		// ADT moves, closes and merges alerts: what was read of them goes.
		tx.touch(out.PatientID)
		if ev.Other != nil {
			tx.touch(PatientID(pseudo, ev.Other.Patient))
		}
		if ev.PriorPatient != nil {
			tx.touch(PatientID(pseudo, *ev.PriorPatient))
		}
	}
	var err error
	switch ev.Kind {
	case ingest.KindSwap:
		if ev.Other == nil {
			return out, errors.New("route: bed swap without its second patient")
		}
		err = r.swap(ctx, tx, eventID, ev, out.PatientID, PatientID(pseudo, ev.Other.Patient), now, &out)
	case ingest.KindMerge:
		if ev.PriorPatient == nil {
			return out, errors.New("route: merge without its prior patient")
		}
		err = r.merge(ctx, tx, eventID, ev, out.PatientID, PatientID(pseudo, *ev.PriorPatient), now, &out)
	case ingest.KindAdmit, ingest.KindTransfer, ingest.KindDischarge, ingest.KindRegister, ingest.KindUpdate,
		ingest.KindCancelAdmit, ingest.KindCancelTransfer, ingest.KindCancelDischarge:
		err = r.applyADT(ctx, tx, eventID, ev, out.PatientID, now, &out)
	case ingest.KindResult, ingest.KindAlarm:
		err = r.routeRules(ctx, tx, eventID, ev, now, &out)
	case ingest.KindWatchdog:
		// A reporter's keep-alive: answered at intake, nothing to route.
	default:
		return out, fmt.Errorf("route: unsupported event kind %q", ev.Kind)
	}
	return out, err
}

// Ruleset returns the compiled enabled rules as q sees them, recompiling
// only the rules whose version changed since the last call (programs are
// cached by rule id and version).
func (r *Router) Ruleset(ctx context.Context, q Queryer) (*Ruleset, error) {
	gen, err := ruleGeneration(ctx, q)
	if err != nil {
		return nil, err
	}
	return r.rulesetAt(ctx, q, gen)
}

// rulesetAt is Ruleset once the rules' generation, gen, has been read.
func (r *Router) rulesetAt(ctx context.Context, q Queryer, gen int64) (*Ruleset, error) {
	var err error
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.loaded && gen == r.gen {
		return r.set, nil
	}
	if r.compiler == nil {
		if r.compiler, err = NewCompiler(); err != nil {
			return nil, err
		}
	}
	defs, err := enabledRuleDefs(ctx, q)
	if err != nil {
		return nil, err
	}
	next := make(map[string]*CompiledRule, len(defs))
	list := make([]*CompiledRule, 0, len(defs))
	for _, d := range defs {
		key := d.id + "@" + strconv.Itoa(d.version)
		cr := r.compiled[key]
		if cr == nil {
			if cr, err = r.compileStored(d); err != nil {
				// Validated when saved: this happens only if a newer Clarion
				// refuses what an older one accepted. The rule is left out
				// and said so on every reload rather than stopping routing.
				r.opts.Log.Error("stored rule does not compile; it is not evaluated", "rule_id", d.id, "version", d.version, "error", err)
				continue
			}
		}
		next[key] = cr
		list = append(list, cr)
	}
	r.compiled, r.set, r.gen, r.loaded = next, NewRuleset(list), gen, true
	return r.set, nil
}

// compileStored compiles a stored rule: its fields were validated when it
// was saved, so only its condition is compiled again.
func (r *Router) compileStored(d storedDef) (*CompiledRule, error) {
	var rule Rule
	if err := json.Unmarshal([]byte(d.def), &rule); err != nil {
		return nil, fmt.Errorf("rule %s definition: %w", d.id, err)
	}
	rule.Normalize()
	kinds, err := rule.Match.kinds()
	if err != nil {
		return nil, err
	}
	cr := &CompiledRule{Rule: rule, Version: d.version, kinds: kinds}
	if rule.When != "" {
		if cr.prg, err = r.compiler.program(rule.When); err != nil {
			return nil, err
		}
	}
	return cr, nil
}

// nextContext is the patient context after one single-patient ADT event,
// given the one before it (had is false when there was none).
func nextContext(c Context, had bool, ev *ingest.Event) Context {
	given := ev.Location.Unit != ""
	moveTo := func(l ingest.Location) {
		if had && c.Location != l {
			c.Previous = c.Location
		}
		c.Location = l
	}
	switch ev.Kind {
	case ingest.KindAdmit:
		c.Location, c.Visit, c.Admitted = ev.Location, ev.Visit, true // a new encounter
		return c
	case ingest.KindTransfer:
		moveTo(ev.Location)
		c.Admitted = true
	case ingest.KindDischarge:
		c.Admitted = false
	case ingest.KindRegister:
		c.Admitted = true
	case ingest.KindUpdate:
		if !had {
			c.Admitted = given
		}
	case ingest.KindCancelAdmit:
		c.Admitted = false
		return c
	case ingest.KindCancelTransfer:
		switch {
		case had && c.Previous.Unit != "": // what Clarion knew before the transfer wins
			c.Location, c.Previous = c.Previous, ingest.Location{} // nothing left to cancel
		case given:
			c.Location = ev.Location
		}
		return c
	case ingest.KindCancelDischarge:
		c.Admitted = true
	}
	if given && ev.Kind != ingest.KindTransfer {
		c.Location = ev.Location
	}
	c.Visit = mergeVisit(c.Visit, ev.Visit)
	return c
}

// mergeVisit keeps what the event does not say.
func mergeVisit(v, with ingest.Visit) ingest.Visit {
	if with.Class != "" {
		v.Class = with.Class
	}
	if with.Attending != "" {
		v.Attending = with.Attending
	}
	if with.Number != "" {
		v.Number = with.Number
	}
	return v
}

// applyADT updates one patient's context.
func (r *Router) applyADT(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, patientID string, now time.Time, out *Outcome) error {
	prev, had, err := freshContext(ctx, tx, patientID)
	if err != nil {
		return err
	}
	c := nextContext(prev, had, ev)
	c.PatientID = patientID
	if err := SetContext(ctx, tx, c, now); err != nil {
		return err
	}
	if err := auditContext(ctx, tx, eventID, ev.Kind, c, now, nil); err != nil {
		return err
	}
	return r.afterADT(ctx, tx, eventID, ev, prev, had, c, now, out)
}

// swap exchanges two patients' beds (A17). Each goes where its PV1-3 says;
// a patient whose PV1-3 is empty takes the other's last known location.
func (r *Router) swap(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, a, b string, now time.Time, out *Outcome) error {
	ca, hadA, err := freshContext(ctx, tx, a)
	if err != nil {
		return err
	}
	cb, hadB, err := freshContext(ctx, tx, b)
	if err != nil {
		return err
	}
	beforeA, beforeB := ca, cb
	toA, toB := ev.Location, ev.Other.Location
	if toA.Unit == "" {
		toA = cb.Location
	}
	if toB.Unit == "" {
		toB = ca.Location
	}
	ca.Previous, ca.Location, ca.Admitted = ca.Location, toA, true
	cb.Previous, cb.Location, cb.Admitted = cb.Location, toB, true
	ca.Visit = mergeVisit(ca.Visit, ev.Visit)
	for _, c := range []struct {
		self  Context
		other string
	}{{ca, b}, {cb, a}} {
		if err := SetContext(ctx, tx, c.self, now); err != nil {
			return err
		}
		if err := auditContext(ctx, tx, eventID, ev.Kind, c.self, now, map[string]any{"swapped_with": c.other}); err != nil {
			return err
		}
	}
	if err := r.afterADT(ctx, tx, eventID, ev, beforeA, hadA, ca, now, out); err != nil {
		return err
	}
	// The second patient moves too; ADT rules fire for the event's patient only.
	return r.moved(ctx, tx, eventID, beforeB, hadB, cb, now, out)
}

// merge folds the prior patient identity into the surviving one (A40): the
// more recently updated of their contexts becomes the survivor's (with what
// the message's PV1 says on top), the prior context is deleted, and the
// prior patient's alerts move to the survivor, open ones with their dedup
// key, so that later results for the survivor update them.
func (r *Router) merge(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, survivor, prior string, now time.Time, out *Outcome) error {
	if survivor == prior {
		return nil // the same identity: nothing to fold
	}
	cs, hadS, err := freshContext(ctx, tx, survivor)
	if err != nil {
		return err
	}
	cp, hadP, err := freshContext(ctx, tx, prior)
	if err != nil {
		return err
	}
	c := cs
	if hadP && (!hadS || cp.UpdatedAt.After(cs.UpdatedAt)) {
		c = cp
	}
	c.PatientID = survivor
	if ev.Location.Unit != "" {
		c.Location, c.Admitted = ev.Location, true
	}
	c.Visit = mergeVisit(c.Visit, ev.Visit)
	moved, err := r.moveAlerts(ctx, tx, eventID, prior, survivor, now)
	if err != nil {
		return err
	}
	if hadS || hadP || ev.Location.Unit != "" {
		if err := SetContext(ctx, tx, c, now); err != nil {
			return err
		}
	}
	if hadP {
		if err := deleteContext(ctx, tx, prior); err != nil {
			return err
		}
	}
	if err := forgetPatientState(ctx, tx, prior); err != nil {
		return err
	}
	if err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "patient.merged", ObjectType: "patient", ObjectID: survivor, CorrelationID: eventID,
		Detail: map[string]any{"event_id": eventID, "prior_patient_id": prior, "unit": c.Location.Unit,
			"alerts_moved": moved}}); err != nil {
		return err
	}
	return r.adtRules(ctx, tx, eventID, ev, survivor, c, now, out)
}

// moveAlerts gives the prior patient's alerts to the survivor. An open
// alert keeps its old dedup key when the survivor already has an open alert
// on the same rule: both stay open rather than one being lost.
func (r *Router) moveAlerts(ctx context.Context, tx Queryer, eventID, prior, survivor string, now time.Time) (int, error) {
	alerts, err := alertsOf(ctx, tx, prior)
	if err != nil {
		return 0, err
	}
	for _, a := range alerts {
		key := a.dedupKey
		if rest, ok := strings.CutPrefix(a.dedupKey, prior+"|"); ok {
			key = survivor + "|" + rest
		}
		if a.state == StateOpen {
			taken, err := openDedupTaken(ctx, tx, key)
			if err != nil {
				return 0, err
			}
			if taken {
				key = a.dedupKey
			}
		}
		if err := reassignAlert(ctx, tx, a.id, survivor, key, now); err != nil {
			return 0, err
		}
		if err := rekeyParts(ctx, tx, a.id, prior, survivor); err != nil {
			return 0, err
		}
		if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
			Action: "alert.patient_merged", ObjectType: "alert", ObjectID: a.id, CorrelationID: eventID,
			Detail: map[string]any{"event_id": eventID, "from_patient_id": prior, "to_patient_id": survivor,
				"state": a.state}}); err != nil {
			return 0, err
		}
	}
	return len(alerts), nil
}

// auditContext records a context change: ids, kinds and unit codes only.
func auditContext(ctx context.Context, tx Queryer, eventID string, kind ingest.Kind, c Context, now time.Time, extra map[string]any) error {
	detail := map[string]any{"event_id": eventID, "kind": string(kind), "unit": c.Location.Unit, "admitted": c.Admitted}
	for k, v := range extra {
		detail[k] = v
	}
	err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "patient.context_updated", ObjectType: "patient", ObjectID: c.PatientID, CorrelationID: eventID,
		Detail: detail})
	return err
}
