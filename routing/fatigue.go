package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// What routing does with a rule that fired (Plan.Action), in the order
// the controls are applied.
const (
	ActionUpdate   = "update"   // dedup: an open or held alert with the key absorbs it
	ActionSuppress = "suppress" // a control held it back (Plan.Reason: sustain, rate_limit, quiet_hours)
	ActionGroup    = "group"    // folded into the patient's open alert of the same group
	ActionHold     = "hold"     // quiet hours: stored as held, paged at Alert.ReleaseAt
	ActionOpen     = "open"     // a new alert, paged now
	ActionResolve  = "resolve"  // a normal reading (or an ended alarm) closes the alert
	ActionNone     = "none"     // a normal reading with nothing to do
)

// Suppression reasons (Plan.Reason, and the "reason" of alert.suppressed).
const (
	ReasonSustain    = "sustain"
	ReasonRateLimit  = "rate_limit"
	ReasonQuietHours = "quiet_hours"
)

// Plan is what routing will do with one hit; it is worked out by reading
// only, so a dry run shows it without writing anything.
type Plan struct {
	RuleID   string `json:"rule_id"`
	Action   string `json:"action"`
	Reason   string `json:"reason,omitempty"`
	DedupKey string `json:"-"`
	AlertID  string `json:"alert_id,omitempty"` // update, group, resolve: the alert concerned
	// Alert is the alert that would be opened or held (its Body holds PHI).
	Alert *Alert `json:"-"`
	// NoHolder: nobody holds the rule's target now; only the failsafe is
	// paged and the unit's schedulers are told.
	NoHolder bool `json:"no_holder,omitempty"`
	// Sustain is the sustained-condition run after this reading.
	Sustain *SustainRun `json:"sustain,omitempty"`

	obs          *ingest.Observation
	body         string
	sustainStart bool // the reading starts a run
	sustainDone  bool // the run is long enough: its row goes
	closing      []activeAlert
}

// SustainRun is a run of out-of-range readings of one code.
type SustainRun struct {
	Code     string    `json:"code"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Readings int       `json:"readings"`
}

// routeState is what every hit of one event shares.
type routeState struct {
	eventID   string
	ev        *ingest.Event
	patientID string
	view      PatientView
	now       time.Time
}

// patientView is the patient as rules see them: ADT's context when known
// (the result's PV1 may be stale), else the message's own PV1.
func patientView(ev *ingest.Event, c Context, known bool) PatientView {
	if known {
		return PatientView{Location: c.Location, Class: c.Visit.Class, Admitted: c.Admitted, Known: true}
	}
	return PatientView{Location: ev.Location, Class: ev.Visit.Class}
}

// routeRules evaluates a result or an alarm against the rules and applies
// each hit.
func (r *Router) routeRules(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, now time.Time, out *Outcome) error {
	rs, err := tx.rules(ctx)
	if err != nil || !rs.Concerns(ev) {
		return err
	}
	c, known, err := GetContext(ctx, tx, out.PatientID)
	if err != nil {
		return err
	}
	st := &routeState{eventID: eventID, ev: ev, patientID: out.PatientID, view: patientView(ev, c, known), now: now}
	hits, errs := rs.Evaluate(ev, st.view, now)
	r.logEvalErrors(errs, eventID)
	hits = append(hits, rs.AlarmEndHits(ev)...)
	for _, h := range hits {
		p, err := r.plan(ctx, tx, st, rs, h)
		if err != nil {
			return err
		}
		if err := r.apply(ctx, tx, st, h, p, out); err != nil {
			return err
		}
	}
	return r.recordValues(ctx, tx, rs, st)
}

func (r *Router) logEvalErrors(errs []EvalError, eventID string) {
	for _, e := range errs {
		r.opts.Log.Warn("rule condition failed to evaluate; the rule did not match", "rule_id", e.RuleID, "event_id", eventID)
	}
}

// plan decides what one hit does, reading only.
func (r *Router) plan(ctx context.Context, q Queryer, st *routeState, rs *Ruleset, h Hit) (*Plan, error) {
	rule := &h.Rule.Rule
	p := &Plan{RuleID: rule.ID, obs: h.Obs, DedupKey: dedupKey(rule, st, h.Obs)}
	if h.Normal {
		return r.planNormal(ctx, q, st, rule, p)
	}
	f, err := r.fields(ctx, q, st, rule, h.Obs)
	if err != nil {
		return nil, err
	}
	lock, body := RenderMessage(rule, f)
	p.body = body
	// 1. Dedup: an open or held alert with the key absorbs the firing.
	act, err := r.findActive(ctx, q, p.DedupKey)
	if err != nil {
		return nil, err
	}
	if act != nil {
		p.Action, p.AlertID = ActionUpdate, act.id
		return p, nil
	}
	// 2. Sustained condition: not before it has lasted long enough.
	if s := rule.Sustain; s != nil && h.Obs != nil {
		run, started, err := nextRun(ctx, q, rule, st, h.Obs)
		if err != nil {
			return nil, err
		}
		p.Sustain, p.sustainStart = run, started
		if !s.satisfied(run) {
			p.Action, p.Reason = ActionSuppress, ReasonSustain
			return p, nil
		}
		p.sustainDone = true
	}
	// 3. Rate limit per patient and rule.
	if rl := rule.RateLimit; rl != nil {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM alerts WHERE rule_id = $1 AND patient_id = $2 AND created_at > $3`,
			rule.ID, st.patientID, st.now.Add(-time.Duration(rl.PerSeconds)*time.Second).UnixMicro()).Scan(&n); err != nil {
			return nil, fmt.Errorf("rate limit: %w", err)
		}
		if n >= rl.Max {
			p.Action, p.Reason = ActionSuppress, ReasonRateLimit
			return p, nil
		}
	}
	// 4. Grouping into the patient's open alert of the same group.
	if g := rule.Group; g != nil {
		id, err := findGroupAlert(ctx, q, st.patientID, g, rule.Priority, st.now)
		if err != nil {
			return nil, err
		}
		if id != "" {
			p.Action, p.AlertID = ActionGroup, id
			return p, nil
		}
	}
	a := &Alert{ID: ids.New("alr"), RuleID: rule.ID, EventID: st.eventID, PatientID: st.patientID, DedupKey: p.DedupKey,
		Priority: rule.Priority, Unit: st.view.Location.Unit, TargetRole: rule.Target.Role, PolicyID: rule.PolicyID,
		State: StateOpen, LockText: lock, Body: p.body, CreatedAt: st.now, UpdatedAt: st.now,
		DelayPct: r.delayPct(rule)}
	a.TargetKind, a.TargetID = rule.Target.Kind()
	if rule.Group != nil {
		a.GroupName = rule.Group.Name
	}
	p.Alert = a
	// 5. Quiet hours (PL and PN): hold until they end, or drop.
	if qh := rule.QuietHours; qh != nil {
		release, quiet, err := quietUntil(ctx, q, qh, a.Unit, st.now)
		if err != nil {
			return nil, err
		}
		if quiet && qh.Action == QuietDrop {
			p.Action, p.Reason, p.Alert = ActionSuppress, ReasonQuietHours, nil
			return p, nil
		}
		if quiet {
			a.State, a.ReleaseAt = StateHeld, &release
			p.Action, p.Reason = ActionHold, ReasonQuietHours
			return p, nil
		}
	}
	// 6. Open, to the target or, when nobody holds it, to the failsafe.
	held, err := r.targetHeld(ctx, q, rule.Target, a.Unit, rule.Priority, st.now)
	if err != nil {
		return nil, err
	}
	a.Failsafe, p.NoHolder = !held, !held
	p.Action = ActionOpen
	return p, nil
}

// planNormal decides what a normal reading does: it ends a sustained run
// and, when the rule says so, resolves the open alert.
func (r *Router) planNormal(ctx context.Context, q Queryer, st *routeState, rule *Rule, p *Plan) (*Plan, error) {
	p.Action = ActionNone
	if rule.Sustain != nil && p.obs != nil && st.ev.Kind == ingest.KindResult {
		run, err := getRun(ctx, q, rule.ID, st.patientID, p.obs.Code)
		if err != nil {
			return nil, err
		}
		p.Sustain = run
	}
	a := rule.AutoResolve
	ended := st.ev.Kind == ingest.KindAlarm && alarmEnded(st.ev)
	if a == nil || (ended && !a.OnAlarmEnd) || (!ended && !a.OnNormal) {
		return p, nil
	}
	act, err := r.activeByKey(ctx, q, p.DedupKey, true)
	if err != nil {
		return nil, err
	}
	if len(act) > 0 {
		p.Action, p.AlertID, p.closing = ActionResolve, act[0].id, act
		p.Reason = CloseNormal
		if ended {
			p.Reason = CloseAlarmEnd
		}
	}
	return p, nil
}

// apply carries a plan out in tx.
func (r *Router) apply(ctx context.Context, tx Queryer, st *routeState, h Hit, p *Plan, out *Outcome) error {
	rule := &h.Rule.Rule
	t, _ := tx.(*rtx)
	free := false // the session's reads vouch that no alert is open for the key
	if t != nil && p.Action != ActionNone {
		free = t.keyFree(p.DedupKey)
		t.touch(st.patientID)
	}
	if h.Normal && p.Sustain != nil {
		// A run that ends without opening an alert is a spike the sustain
		// window kept from paging anyone.
		if err := deleteRun(ctx, tx, rule.ID, st.patientID, p.Sustain.Code); err != nil {
			return err
		}
		if err := r.suppressed(ctx, tx, st, rule, ReasonSustain, map[string]any{"readings": p.Sustain.Readings,
			"seconds": int(p.Sustain.Last.Sub(p.Sustain.First).Seconds()), "code": p.Sustain.Code}); err != nil {
			return err
		}
		out.Suppressed++
	}
	switch p.Action {
	case ActionNone:
		return nil
	case ActionResolve:
		for _, a := range p.closing {
			if err := r.resolveOne(ctx, tx, st, a, p.DedupKey, p.Reason, out); err != nil {
				return err
			}
		}
		return nil
	case ActionUpdate:
		if err := r.absorb(ctx, tx, p.AlertID, p.DedupKey, rule.ID, p.body, st.now); err != nil {
			return err
		}
		out.Updated = append(out.Updated, p.AlertID)
		return r.auditAlert(ctx, tx, st, "alert.updated", p.AlertID, map[string]any{"rule_id": rule.ID, "reason": "dedup"})
	case ActionSuppress:
		out.Suppressed++
		if p.Reason == ReasonSustain {
			if err := putRun(ctx, tx, rule.ID, st.patientID, p.Sustain); err != nil {
				return err
			}
			if !p.sustainStart {
				return nil
			}
			err := audit.Append(ctx, tx, audit.Entry{At: st.now, ActorType: audit.ActorSystem, ActorID: "routing",
				Action: "rule.sustain_started", ObjectType: "rule", ObjectID: rule.ID, CorrelationID: st.eventID,
				Detail: map[string]any{"event_id": st.eventID, "patient_id": st.patientID, "code": p.Sustain.Code}})
			return err
		}
		return r.suppressed(ctx, tx, st, rule, p.Reason, nil)
	case ActionGroup:
		if err := r.absorb(ctx, tx, p.AlertID, p.DedupKey, rule.ID, p.body, st.now); err != nil {
			return err
		}
		out.Updated = append(out.Updated, p.AlertID)
		return r.auditAlert(ctx, tx, st, "alert.grouped", p.AlertID, map[string]any{"rule_id": rule.ID,
			"group": rule.Group.Name})
	}
	// Open or hold.
	if p.sustainDone {
		if err := deleteRun(ctx, tx, rule.ID, st.patientID, p.Sustain.Code); err != nil {
			return err
		}
	}
	a := p.Alert
	inserted := t != nil && t.queueInsert(r.sealer, a, free)
	if !inserted {
		var err error
		if inserted, err = insertAlert(ctx, tx, r.sealer, a); err != nil {
			return err
		}
	}
	if !inserted {
		// A concurrent router opened the key first: fold into it.
		act, err := r.findActive(ctx, tx, p.DedupKey)
		if err != nil || act == nil {
			return errors.Join(err, fmt.Errorf("open alert: dedup key taken and not found"))
		}
		p.Action, p.AlertID = ActionUpdate, act.id
		return r.apply(ctx, tx, st, h, p, out)
	}
	if a.GroupName != "" {
		if err := putPart(ctx, tx, r.sealer, a.ID, a.DedupKey, rule.ID, a.Body, st.now); err != nil {
			return err
		}
	}
	detail := map[string]any{"rule_id": rule.ID, "priority": a.Priority, "unit": a.Unit, "patient_id": st.patientID,
		"target_kind": a.TargetKind, "target_id": a.TargetID, "policy_id": a.PolicyID, "delay_pct": a.DelayPct,
		"failsafe": a.Failsafe}
	if p.obs != nil {
		detail["code"] = p.obs.Code
	}
	if p.Sustain != nil {
		detail["sustained_readings"] = p.Sustain.Readings
	}
	action := "alert.opened"
	if a.State == StateHeld {
		action = "alert.held"
		detail["release_at"] = a.ReleaseAt.UTC().Format(time.RFC3339)
		out.Held = append(out.Held, a.ID)
	} else {
		out.Opened = append(out.Opened, a)
	}
	if err := r.auditAlert(ctx, tx, st, action, a.ID, detail); err != nil {
		return err
	}
	if p.NoHolder {
		return r.noHolder(ctx, tx, st.eventID, a, st.now)
	}
	return nil
}

// suppressed audits a firing a control held back, on the rule.
func (r *Router) suppressed(ctx context.Context, tx Queryer, st *routeState, rule *Rule, reason string, extra map[string]any) error {
	d := map[string]any{"event_id": st.eventID, "patient_id": st.patientID, "reason": reason, "priority": rule.Priority}
	for k, v := range extra {
		d[k] = v
	}
	err := audit.Append(ctx, tx, audit.Entry{At: st.now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "alert.suppressed", ObjectType: "rule", ObjectID: rule.ID, CorrelationID: st.eventID, Detail: d})
	return err
}

func (r *Router) auditAlert(ctx context.Context, tx Queryer, st *routeState, action, alertID string, detail map[string]any) error {
	detail["event_id"] = st.eventID
	err := audit.Append(ctx, tx, audit.Entry{At: st.now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: action, ObjectType: "alert", ObjectID: alertID, CorrelationID: st.eventID, Detail: detail})
	return err
}

// delayPct is the alert's escalation speed: the rule's, else its
// priority's, else 100.
func (r *Router) delayPct(rule *Rule) int {
	if e := rule.Escalation; e != nil && e.DelayScale > 0 {
		return int(e.DelayScale*100 + 0.5)
	}
	if p, ok := r.opts.DelayPercent[rule.Priority]; ok && p > 0 {
		return p
	}
	return 100
}

// fields collects the template fields of a hit, the trend included.
func (r *Router) fields(ctx context.Context, q Queryer, st *routeState, rule *Rule, o *ingest.Observation) (Fields, error) {
	f := FieldsFor(rule, o, st.view.Location)
	f.Event, f.Class = eventName(st.ev.Kind), st.view.Class
	if o != nil && o.Numeric != nil && rule.usesTrend() {
		prev, err := r.lastValue(ctx, q, st.patientID, o)
		if err != nil {
			return f, err
		}
		f.Trend = Trend(*o.Numeric, prev)
	}
	return f, nil
}

// dedupKey is patient|rule, then the rule's dedup.by fields.
func dedupKey(rule *Rule, st *routeState, o *ingest.Observation) string {
	k := st.patientID + "|" + rule.ID
	if rule.Dedup == nil {
		return k
	}
	var b strings.Builder
	b.WriteString(k)
	for _, f := range rule.Dedup.By {
		b.WriteByte('|')
		switch f {
		case "code":
			if o != nil {
				b.WriteString(o.System + "^" + o.Code)
			}
		case "alarm_id":
			if st.ev.Alarm != nil {
				b.WriteString(st.ev.Alarm.ID)
			}
		case "equipment":
			if o != nil && o.EquipmentID != "" {
				b.WriteString(o.EquipmentID)
			} else if st.ev.Alarm != nil {
				b.WriteString(st.ev.Alarm.EquipmentID)
			}
		case "unit":
			b.WriteString(st.view.Location.Unit)
		}
	}
	return b.String()
}

// activeAlert is an alert a key or a group points at.
type activeAlert struct {
	id, state, ruleID, acceptedBy, group string
}

// findActive returns the open or held alert holding key (as its dedup key
// or as a part of a grouped alert), or nil.
func (r *Router) findActive(ctx context.Context, q Queryer, key string) (*activeAlert, error) {
	act, err := r.activeByKey(ctx, q, key, false)
	if err != nil || len(act) == 0 {
		return nil, err
	}
	return &act[0], nil
}

// activeByKey lists the alerts holding key, open and held ones first;
// withAccepted adds accepted ones (auto-resolve closes those too).
func (r *Router) activeByKey(ctx context.Context, q Queryer, key string, withAccepted bool) ([]activeAlert, error) {
	if t, ok := q.(*rtx); ok {
		if got, ok := t.activeFor(key, withAccepted); ok {
			if verifyActive {
				return got, t.verifyActive(ctx, r, key, withAccepted, got)
			}
			return got, nil
		}
	}
	accepted := ""
	if withAccepted {
		accepted = StateAccepted
	}
	// The grouped alerts, by their parts. On PostgreSQL each is read by id
	// through a lateral join fenced by OFFSET 0: a plain join's cached plan,
	// made while alerts was nearly empty, scanned every open alert on each
	// call. SQLite has no LATERAL and always probes the primary key.
	grouped := `FROM alert_parts p JOIN alerts a ON a.id = p.alert_id`
	if r.opts.Dialect == db.Postgres {
		grouped = `FROM alert_parts p CROSS JOIN LATERAL (SELECT * FROM alerts WHERE id = p.alert_id OFFSET 0) a`
	}
	rows, err := q.QueryContext(ctx, `SELECT id, state, rule_id, COALESCE(accepted_by, ''), group_name, created_at FROM alerts
		WHERE dedup_key = $1 AND state IN ('open', 'held', $2)
		UNION SELECT a.id, a.state, a.rule_id, COALESCE(a.accepted_by, ''), a.group_name, a.created_at
		`+grouped+`
		WHERE p.part_key = $1 AND a.state IN ('open', 'held', $2)
		ORDER BY 6 DESC`, key, accepted)
	if err != nil {
		return nil, fmt.Errorf("find alert by key: %w", err)
	}
	defer rows.Close()
	var out []activeAlert
	for rows.Next() {
		var a activeAlert
		var created int64
		if err := rows.Scan(&a.id, &a.state, &a.ruleID, &a.acceptedBy, &a.group, &created); err != nil {
			return nil, fmt.Errorf("find alert by key: %w", err)
		}
		if !containsAlert(out, a.id) {
			out = append(out, a)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return openFirst(out), nil
}

// openFirst puts open and held alerts before accepted ones: dedup folds
// into those only.
func openFirst(alerts []activeAlert) []activeAlert {
	var first, rest []activeAlert
	for _, a := range alerts {
		if a.state == StateAccepted {
			rest = append(rest, a)
		} else {
			first = append(first, a)
		}
	}
	return append(first, rest...)
}

func containsAlert(list []activeAlert, id string) bool {
	for _, a := range list {
		if a.id == id {
			return true
		}
	}
	return false
}

// absorb folds a firing into an open or held alert: the newest body and a
// count; for a grouped alert, into its part for key (added if new).
func (r *Router) absorb(ctx context.Context, tx Queryer, alertID, key, ruleID, body string, now time.Time) error {
	var group string
	if err := tx.QueryRowContext(ctx, `SELECT group_name FROM alerts WHERE id = $1`, alertID).Scan(&group); err != nil {
		return fmt.Errorf("absorb: %w", err)
	}
	if group == "" {
		_, err := tx.ExecContext(ctx, `UPDATE alerts SET updates = updates + 1, body = $1, updated_at = $2 WHERE id = $3`,
			r.sealer.Seal([]byte(body), []byte(alertID)), now.UnixMicro(), alertID)
		if err != nil {
			return fmt.Errorf("update alert: %w", err)
		}
		return nil
	}
	if err := putPart(ctx, tx, r.sealer, alertID, key, ruleID, body, now); err != nil {
		return err
	}
	joined, err := groupedBody(ctx, tx, r.sealer, alertID)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE alerts SET updates = updates + 1, body = $1, updated_at = $2 WHERE id = $3`,
		r.sealer.Seal([]byte(joined), []byte(alertID)), now.UnixMicro(), alertID)
	if err != nil {
		return fmt.Errorf("update grouped alert: %w", err)
	}
	return nil
}

// putPart adds or refreshes one part of a grouped alert.
func putPart(ctx context.Context, tx Queryer, sealer Sealer, alertID, key, ruleID, body string, now time.Time) error {
	sealed := sealer.Seal([]byte(body), []byte(alertID+"|"+key))
	_, err := tx.ExecContext(ctx, `INSERT INTO alert_parts (alert_id, part_key, rule_id, seq, body, hits, resolved, updated_at)
		VALUES ($1, $2, $3, (SELECT COUNT(*) FROM alert_parts WHERE alert_id = $1), $4, 1, 0, $5)
		ON CONFLICT (alert_id, part_key) DO UPDATE SET body = excluded.body, hits = alert_parts.hits + 1,
		resolved = 0, updated_at = excluded.updated_at`, alertID, key, ruleID, sealed, now.UnixMicro())
	if err != nil {
		return fmt.Errorf("alert part: %w", err)
	}
	return nil
}

// groupedBody is a grouped alert's body: its parts' bodies, one per line,
// in the order they joined.
func groupedBody(ctx context.Context, q Queryer, sealer Sealer, alertID string) (string, error) {
	rows, err := q.QueryContext(ctx, `SELECT part_key, body FROM alert_parts WHERE alert_id = $1 ORDER BY seq`, alertID)
	if err != nil {
		return "", fmt.Errorf("alert parts: %w", err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var key string
		var sealed []byte
		if err := rows.Scan(&key, &sealed); err != nil {
			return "", fmt.Errorf("alert parts: %w", err)
		}
		plain, err := sealer.Open(sealed, []byte(alertID+"|"+key))
		if err != nil {
			return "", fmt.Errorf("open alert part: %w", err)
		}
		lines = append(lines, string(plain))
	}
	return strings.Join(lines, "\n"), rows.Err()
}

// rekeyParts moves a merged patient's part keys to the survivor.
func rekeyParts(ctx context.Context, tx Queryer, alertID, prior, survivor string) error {
	rows, err := tx.QueryContext(ctx, `SELECT part_key FROM alert_parts WHERE alert_id = $1`, alertID)
	if err != nil {
		return fmt.Errorf("rekey parts: %w", err)
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return fmt.Errorf("rekey parts: %w", err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, prior+"|"); ok {
			if _, err := tx.ExecContext(ctx, `UPDATE alert_parts SET part_key = $1 WHERE alert_id = $2 AND part_key = $3`,
				survivor+"|"+rest, alertID, k); err != nil {
				return fmt.Errorf("rekey parts: %w", err)
			}
		}
	}
	return nil
}

// findGroupAlert returns the patient's open or held alert of group g opened
// within its window whose priority is at least the firing rule's.
func findGroupAlert(ctx context.Context, q Queryer, patientID string, g *Group, priority string, now time.Time) (string, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, priority FROM alerts WHERE patient_id = $1 AND group_name = $2
		AND state IN ('open', 'held') AND created_at >= $3 ORDER BY created_at DESC`,
		patientID, g.Name, now.Add(-time.Duration(g.WindowSeconds)*time.Second).UnixMicro())
	if err != nil {
		return "", fmt.Errorf("find group alert: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, prio string
		if err := rows.Scan(&id, &prio); err != nil {
			return "", fmt.Errorf("find group alert: %w", err)
		}
		if priorityRank(prio) >= priorityRank(priority) {
			return id, nil
		}
	}
	return "", rows.Err()
}

// resolveOne auto-resolves one alert for key: a grouped alert only when
// its last unresolved part is resolved.
func (r *Router) resolveOne(ctx context.Context, tx Queryer, st *routeState, a activeAlert, key, reason string, out *Outcome) error {
	if a.group != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE alert_parts SET resolved = 1, updated_at = $1 WHERE alert_id = $2 AND part_key = $3`,
			st.now.UnixMicro(), a.id, key); err != nil {
			return fmt.Errorf("resolve part: %w", err)
		}
		var open int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM alert_parts WHERE alert_id = $1 AND resolved = 0`, a.id).Scan(&open); err != nil {
			return fmt.Errorf("resolve part: %w", err)
		}
		if open > 0 {
			return r.auditAlert(ctx, tx, st, "alert.part_resolved", a.id, map[string]any{"reason": reason, "parts_open": open})
		}
	}
	return r.closeAlert(ctx, tx, st.eventID, a.id, reason, st.now, out)
}

// closeAlert closes an open, held or accepted alert and cancels its
// pending escalation timers, in tx (timers first, then the alert: the
// engine's lock order). Closing an accepted alert is never silent: it is
// audited with the owner to notify, and returned in Outcome.Closed.
func (r *Router) closeAlert(ctx context.Context, tx Queryer, eventID, alertID, reason string, now time.Time, out *Outcome) error {
	if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET state = 'cancelled' WHERE alert_id = $1 AND state = 'pending'`,
		alertID); err != nil {
		return fmt.Errorf("cancel timers: %w", err)
	}
	var state, ruleID, acceptedBy string
	err := tx.QueryRowContext(ctx, `SELECT state, rule_id, COALESCE(accepted_by, '') FROM alerts WHERE id = $1`, alertID).
		Scan(&state, &ruleID, &acceptedBy)
	if err != nil {
		return fmt.Errorf("close alert: %w", err)
	}
	if state == StateClosed {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE alerts SET state = $1, close_reason = $2, closed_at = $3, updated_at = $3
		WHERE id = $4`, StateClosed, reason, now.UnixMicro(), alertID); err != nil {
		return fmt.Errorf("close alert: %w", err)
	}
	detail := map[string]any{"event_id": eventID, "rule_id": ruleID, "reason": reason, "previous_state": state}
	c := ClosedAlert{ID: alertID, RuleID: ruleID, Reason: reason, PreviousState: state}
	if state == StateAccepted {
		detail["notify_user_id"], c.AcceptedBy = acceptedBy, acceptedBy
	}
	out.Closed = append(out.Closed, c)
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "alert.closed", ObjectType: "alert", ObjectID: alertID, CorrelationID: eventID, Detail: detail})
	return err
}

// satisfied reports whether a run is long enough to open an alert.
func (s *Sustain) satisfied(run *SustainRun) bool {
	if s.Seconds > 0 && run.Last.Sub(run.First) < time.Duration(s.Seconds)*time.Second {
		return false
	}
	return s.Readings == 0 || run.Readings >= s.Readings
}

func (s *Sustain) maxGap() time.Duration {
	if s.MaxGapSeconds > 0 {
		return time.Duration(s.MaxGapSeconds) * time.Second
	}
	return DefaultMaxGapSeconds * time.Second
}

// readingTime is when a reading was taken: its own time, else the
// message's, else now.
func readingTime(o *ingest.Observation, ev *ingest.Event, now time.Time) time.Time {
	switch {
	case !o.ObservedAt.IsZero():
		return o.ObservedAt
	case !ev.OccurredAt.IsZero():
		return ev.OccurredAt
	}
	return now
}

// nextRun is the sustained run after an out-of-range reading; started is
// true when the reading begins a new run.
func nextRun(ctx context.Context, q Queryer, rule *Rule, st *routeState, o *ingest.Observation) (*SustainRun, bool, error) {
	t := readingTime(o, st.ev, st.now)
	run, err := getRun(ctx, q, rule.ID, st.patientID, o.Code)
	if err != nil {
		return nil, false, err
	}
	if run == nil || t.Sub(run.Last) > rule.Sustain.maxGap() || t.Before(run.First) {
		return &SustainRun{Code: o.Code, First: t, Last: t, Readings: 1}, true, nil
	}
	next := *run
	next.Readings++
	if t.After(next.Last) {
		next.Last = t
	}
	return &next, false, nil
}

func getRun(ctx context.Context, q Queryer, ruleID, patientID, code string) (*SustainRun, error) {
	var first, last int64
	run := &SustainRun{Code: code}
	err := q.QueryRowContext(ctx, `SELECT first_at, last_at, readings FROM rule_sustain WHERE rule_id = $1 AND patient_id = $2
		AND code = $3`, ruleID, patientID, code).Scan(&first, &last, &run.Readings)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sustain state: %w", err)
	}
	run.First, run.Last = time.UnixMicro(first).UTC(), time.UnixMicro(last).UTC()
	return run, nil
}

func putRun(ctx context.Context, tx Queryer, ruleID, patientID string, run *SustainRun) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rule_sustain (rule_id, patient_id, code, first_at, last_at, readings)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule_id, patient_id, code) DO UPDATE SET first_at = excluded.first_at,
		last_at = excluded.last_at, readings = excluded.readings`,
		ruleID, patientID, run.Code, run.First.UnixMicro(), run.Last.UnixMicro(), run.Readings)
	if err != nil {
		return fmt.Errorf("sustain state: %w", err)
	}
	return nil
}

func deleteRun(ctx context.Context, tx Queryer, ruleID, patientID, code string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM rule_sustain WHERE rule_id = $1 AND patient_id = $2 AND code = $3`,
		ruleID, patientID, code); err != nil {
		return fmt.Errorf("sustain state: %w", err)
	}
	return nil
}

// forgetPatientState drops a merged-away patient's sustained runs and last
// values: a run or a trend never spans two identities.
func forgetPatientState(ctx context.Context, tx Queryer, patientID string) error {
	for _, q := range []string{`DELETE FROM rule_sustain WHERE patient_id = $1`, `DELETE FROM patient_last_values WHERE patient_id = $1`} {
		if _, err := tx.ExecContext(ctx, q, patientID); err != nil {
			return fmt.Errorf("forget patient state: %w", err)
		}
	}
	return nil
}

// quietUntil reports whether now is inside the quiet hours in the unit's
// time zone, and when they end. A unit with no known zone is never quiet:
// the alert is paged.
func quietUntil(ctx context.Context, q Queryer, qh *QuietHours, unit string, now time.Time) (time.Time, bool, error) {
	if unit == "" {
		return time.Time{}, false, nil
	}
	var zone string
	err := q.QueryRowContext(ctx, `SELECT time_zone FROM units WHERE id = $1`, unit).Scan(&zone)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("unit time zone: %w", err)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return time.Time{}, false, nil
	}
	return QuietWindow(qh.From, qh.To, now.In(loc))
}

// QuietWindow reports whether local (a time in the unit's zone) is in
// [from, to) (HH:MM, wrapping midnight when to is earlier), and when that
// window ends.
func QuietWindow(from, to string, local time.Time) (time.Time, bool, error) {
	f, err1 := clockMinutes(from)
	t, err2 := clockMinutes(to)
	if err := errors.Join(err1, err2); err != nil {
		return time.Time{}, false, err
	}
	m := local.Hour()*60 + local.Minute()
	in := (f < t && m >= f && m < t) || (f > t && (m >= f || m < t))
	if !in {
		return time.Time{}, false, nil
	}
	y, mo, d := local.Date()
	end := time.Date(y, mo, d, t/60, t%60, 0, 0, local.Location())
	if !end.After(local) {
		end = time.Date(y, mo, d+1, t/60, t%60, 0, 0, local.Location())
	}
	return end.UTC(), true, nil
}

func clockMinutes(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("bad clock time %q", s)
	}
	return hh*60 + mm, nil
}

// lastValue returns the patient's previous value of o's code in o's units
// (nil when unknown or in other units).
func (r *Router) lastValue(ctx context.Context, q Queryer, patientID string, o *ingest.Observation) (*float64, error) {
	var sealed []byte
	err := q.QueryRowContext(ctx, `SELECT value FROM patient_last_values WHERE patient_id = $1 AND code = $2`,
		patientID, o.Code).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last value: %w", err)
	}
	plain, err := r.sealer.Open(sealed, []byte(patientID+"|"+o.Code))
	if err != nil {
		return nil, fmt.Errorf("open last value: %w", err)
	}
	num, units, _ := strings.Cut(string(plain), "|")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !strings.EqualFold(units, o.Units) {
		return nil, nil
	}
	return &v, nil
}

// recordValues keeps the last numeric value of every code a {trend} needs.
func (r *Router) recordValues(ctx context.Context, tx Queryer, rs *Ruleset, st *routeState) error {
	if st.ev.Kind != ingest.KindResult || st.patientID == "" {
		return nil
	}
	for i := range st.ev.Observations {
		o := &st.ev.Observations[i]
		if o.Numeric == nil || !rs.tracksTrend(o.Code) {
			continue
		}
		sealed := r.sealer.Seal([]byte(formatNumber(*o.Numeric)+"|"+o.Units), []byte(st.patientID+"|"+o.Code))
		if _, err := tx.ExecContext(ctx, `INSERT INTO patient_last_values (patient_id, code, value, observed_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id, code) DO UPDATE SET value = excluded.value,
			observed_at = excluded.observed_at`, st.patientID, o.Code, sealed,
			readingTime(o, st.ev, st.now).UnixMicro()); err != nil {
			return fmt.Errorf("last value: %w", err)
		}
	}
	return nil
}
