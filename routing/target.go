package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/oncall"
)

// DefaultPrimaryDelaySeconds is how long a rule's target is given before
// the policy is paged, when the policy is only a failsafe step (so has no
// first-step delay to reuse).
const DefaultPrimaryDelaySeconds = 60

// EffectivePolicy is the policy the escalation engine pages for alert a,
// given the policy its id and priority resolve to (oncall.PolicyFor):
//
//   - a failsafe alert (nobody held the target when it opened) pages the
//     policy's last step only, at once;
//   - a role, team or user target replaces the targets of the policy's
//     first step (unless the policy is one chosen for the priority), keeping its delay (a one-step policy gets the target in
//     front of it, with DefaultPrimaryDelaySeconds); a policy target pages
//     the policy as it is;
//   - every step delay is scaled by a.DelayPct (at least 1 second).
//
// It depends on the alert's row only, so every page of one alert sees the
// same rungs.
func EffectivePolicy(p oncall.Policy, a *Alert) oncall.Policy {
	steps := make([]oncall.Step, len(p.Steps))
	for i, s := range p.Steps {
		steps[i] = oncall.Step{Targets: slices.Clone(s.Targets), DelaySeconds: s.DelaySeconds}
	}
	p.Steps, p.ByPriority = steps, nil
	if len(steps) == 0 {
		return p
	}
	if a.Failsafe {
		p.Steps, p.Repeat = steps[len(steps)-1:], 0
		return p
	}
	var t *oncall.Target
	switch a.TargetKind {
	case TargetRole:
		t = &oncall.Target{Kind: oncall.TargetRole, Role: a.TargetID}
	case TargetTeam:
		t = &oncall.Target{Kind: oncall.TargetTeam, TeamID: a.TargetID}
	case TargetUser:
		t = &oncall.Target{Kind: oncall.TargetUser, UserID: a.TargetID}
	}
	// A policy chosen for the alert's priority (by_priority) is the
	// hospital's explicit answer for that priority: the rule's target does
	// not rewrite it.
	if t != nil && t.Kind != "" && (a.PolicyID == "" || p.ID == a.PolicyID) {
		if len(steps) > 1 {
			steps[0].Targets = []oncall.Target{*t}
		} else {
			p.Steps = append([]oncall.Step{{Targets: []oncall.Target{*t}, DelaySeconds: DefaultPrimaryDelaySeconds}}, steps...)
		}
	}
	if pct := a.DelayPct; pct > 0 && pct != 100 {
		for i := range p.Steps {
			if d := p.Steps[i].DelaySeconds; d > 0 {
				p.Steps[i].DelaySeconds = max(1, (d*pct+50)/100)
			}
		}
	}
	return p
}

// alertTarget is the target an alert was opened for (its target role for
// an alert from before targets were stored).
func alertTarget(a *Alert) Target {
	switch a.TargetKind {
	case TargetRole:
		return Target{Role: a.TargetID}
	case TargetTeam:
		return Target{Team: a.TargetID}
	case TargetUser:
		return Target{User: a.TargetID}
	case TargetPolicy:
		return Target{Policy: a.TargetID}
	}
	return Target{Role: a.TargetRole}
}

// targetHeld reports whether anyone holds the rule's target in unit now:
// a role's holders (every roster layer: from Options.Holders when set,
// else read in q), a team's members, a known user, or the first step of a
// policy target.
func (r *Router) targetHeld(ctx context.Context, q Queryer, t Target, unit, priority string, now time.Time) (bool, error) {
	if s, ok := q.(*rtx); ok {
		q = s.Queryer // what the session was given: an oncall.Memo answers its roster reads again
	}
	kind, id := t.Kind()
	switch kind {
	case TargetRole:
		if unit == "" {
			return false, nil
		}
		var h []string
		var err error
		if r.opts.Holders != nil {
			h, err = r.opts.Holders.HoldersAt(ctx, unit, id, now)
		} else {
			h, err = oncall.HoldersAt(ctx, q, unit, id, now)
		}
		return len(h) > 0, err
	case TargetTeam:
		team, err := oncall.GetTeam(ctx, q, id)
		if errors.Is(err, oncall.ErrNotFound) {
			return false, nil
		}
		return len(team.Members) > 0, err
	case TargetUser:
		return oncall.UserExists(ctx, q, id)
	case TargetPolicy:
		p, err := oncall.PolicyFor(ctx, q, id, priority)
		if errors.Is(err, oncall.ErrNotFound) || (err == nil && len(p.Steps) == 0) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		users, err := oncall.ResolveStep(ctx, q, p.Steps[0], unit, now)
		return len(users) > 0, err
	}
	return false, nil
}

// noHolder records that nobody holds an alert's target: the alert goes to
// the failsafe (Alert.Failsafe), the unit's coverage is checked now (at most
// once a minute per unit and node) so its schedulers get a notice for each
// gap of a required role (oncall.NotifyCoverage), and "routing.no_holder"
// is audited.
func (r *Router) noHolder(ctx context.Context, tx Queryer, eventID string, a *Alert, now time.Time) error {
	notices, checked := 0, false
	var schedulers []string
	if a.Unit != "" {
		if r.coverageDue(a.Unit, now) {
			_, created, err := oncall.NotifyCoverage(ctx, tx, a.Unit, now)
			if err != nil {
				return err
			}
			notices, checked = len(created), true
		}
		var err error
		if schedulers, err = oncall.Schedulers(ctx, tx, a.Unit); err != nil {
			return err
		}
	}
	if schedulers == nil {
		schedulers = []string{}
	}
	err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "routing.no_holder", ObjectType: "alert", ObjectID: a.ID, CorrelationID: eventID,
		Detail: map[string]any{"event_id": eventID, "rule_id": a.RuleID, "unit": a.Unit, "target_kind": a.TargetKind,
			"target_id": a.TargetID, "policy_id": a.PolicyID, "paged": "failsafe", "schedulers": schedulers,
			"coverage_checked": checked, "coverage_notices": notices}})
	return err
}

// coverageDue reports whether this node should check unit's coverage now
// (at most once per Options.CoverageCheckEvery), and notes it.
func (r *Router) coverageDue(unit string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.checked[unit]; ok && now.Sub(last) < r.opts.CoverageCheckEvery && !now.Before(last) {
		return false
	}
	r.checked[unit] = now
	return true
}

// afterADT applies an ADT event's consequences beyond the context: open
// alerts follow a move or a discharge as their rules say, and rules on the
// event's kind fire.
func (r *Router) afterADT(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, before Context, had bool, after Context, now time.Time, out *Outcome) error {
	if err := r.moved(ctx, tx, eventID, before, had, after, now, out); err != nil {
		return err
	}
	if ev.Kind == ingest.KindDischarge {
		if err := r.discharged(ctx, tx, eventID, after.PatientID, now, out); err != nil {
			return err
		}
	}
	return r.adtRules(ctx, tx, eventID, ev, after.PatientID, after, now, out)
}

// adtRules fires the rules that listen to the ADT event's kind.
func (r *Router) adtRules(ctx context.Context, tx *rtx, eventID string, ev *ingest.Event, patientID string, c Context, now time.Time, out *Outcome) error {
	rs, err := tx.rules(ctx)
	if err != nil {
		return err
	}
	if len(rs.anyCode[ev.Kind]) == 0 {
		return nil
	}
	st := &routeState{eventID: eventID, ev: ev, patientID: patientID, view: patientView(ev, c, true), now: now}
	hits, errs := rs.Evaluate(ev, st.view, now)
	r.logEvalErrors(errs, eventID)
	for _, h := range hits {
		p, err := r.plan(ctx, tx, st, rs, h)
		if err != nil {
			return err
		}
		if err := r.apply(ctx, tx, st, h, p, out); err != nil {
			return err
		}
	}
	return nil
}

// patientAlerts lists a patient's open, held and accepted alerts.
func patientAlerts(ctx context.Context, q Queryer, patientID string) ([]activeAlert, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, state, rule_id, COALESCE(accepted_by, ''), group_name FROM alerts
		WHERE patient_id = $1 AND state IN ('open', 'held', 'accepted') ORDER BY id`, patientID)
	if err != nil {
		return nil, fmt.Errorf("patient alerts: %w", err)
	}
	defer rows.Close()
	var out []activeAlert
	for rows.Next() {
		var a activeAlert
		if err := rows.Scan(&a.id, &a.state, &a.ruleID, &a.acceptedBy, &a.group); err != nil {
			return nil, fmt.Errorf("patient alerts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// moved applies on_transfer to the patient's alerts when their unit
// changed: retarget (the default) moves open and held alerts to the new
// unit and pages an open one again from its first step (an accepted one
// stays with whoever accepted it); keep leaves them; close closes them.
func (r *Router) moved(ctx context.Context, tx *rtx, eventID string, before Context, had bool, after Context, now time.Time, out *Outcome) error {
	from, to := before.Location.Unit, after.Location.Unit
	if !had || from == to || to == "" {
		return nil
	}
	alerts, err := patientAlerts(ctx, tx, after.PatientID)
	if err != nil || len(alerts) == 0 {
		return err
	}
	rs, err := tx.rules(ctx)
	if err != nil {
		return err
	}
	for _, a := range alerts {
		mode := OnTransferRetarget
		if cr := rs.Rule(a.ruleID); cr != nil && cr.Rule.OnTransfer != "" {
			mode = cr.Rule.OnTransfer
		}
		switch {
		case mode == OnTransferKeep:
		case mode == OnTransferClose:
			if err := r.closeAlert(ctx, tx, eventID, a.id, CloseTransfer, now, out); err != nil {
				return err
			}
		case a.state == StateOpen || a.state == StateHeld:
			if err := r.retarget(ctx, tx, eventID, a, rs.Rule(a.ruleID), from, to, now, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// retarget moves an open or held alert to the patient's new unit.
func (r *Router) retarget(ctx context.Context, tx Queryer, eventID string, act activeAlert, cr *CompiledRule, from, to string, now time.Time, out *Outcome) error {
	a, err := GetAlert(ctx, tx, r.sealer, act.id, "")
	if err != nil {
		return err
	}
	held, err := r.targetHeld(ctx, tx, alertTarget(a), to, a.Priority, now)
	if err != nil {
		return err
	}
	lock := a.LockText
	if cr != nil {
		lock, _ = RenderMessage(&cr.Rule, Fields{Priority: a.Priority, Unit: to, Rule: cr.Rule.Name})
	}
	if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET state = 'cancelled' WHERE alert_id = $1 AND state = 'pending'`,
		a.ID); err != nil {
		return fmt.Errorf("cancel timers: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE alerts SET unit = $1, failsafe = $2, step = 0, lock_text = $3, updated_at = $4
		WHERE id = $5`, to, boolInt(!held), lock, now.UnixMicro(), a.ID); err != nil {
		return fmt.Errorf("retarget alert: %w", err)
	}
	a.Unit, a.Failsafe, a.Step, a.LockText, a.UpdatedAt = to, !held, 0, lock, now
	if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "alert.retargeted", ObjectType: "alert", ObjectID: a.ID, CorrelationID: eventID,
		Detail: map[string]any{"event_id": eventID, "rule_id": a.RuleID, "from_unit": from, "to_unit": to,
			"state": a.State, "failsafe": a.Failsafe}}); err != nil {
		return err
	}
	if a.State == StateOpen {
		out.Retargeted = append(out.Retargeted, a)
	}
	if !held {
		return r.noHolder(ctx, tx, eventID, a, now)
	}
	return nil
}

// discharged applies on_discharge: keep (the default: a result that
// arrives after discharge still reaches someone) or close.
func (r *Router) discharged(ctx context.Context, tx *rtx, eventID, patientID string, now time.Time, out *Outcome) error {
	alerts, err := patientAlerts(ctx, tx, patientID)
	if err != nil || len(alerts) == 0 {
		return err
	}
	rs, err := tx.rules(ctx)
	if err != nil {
		return err
	}
	for _, a := range alerts {
		if cr := rs.Rule(a.ruleID); cr != nil && cr.Rule.OnDischarge == OnDischargeClose {
			if err := r.closeAlert(ctx, tx, eventID, a.id, CloseDischarge, now, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReleaseHeld opens the held alerts whose quiet hours have ended (at most
// 100 per call; lock is the dialect's SKIP LOCKED clause or "") and
// returns them for the escalation engine to start, in tx. The target is
// checked again at release: nobody holding it sends the alert to the
// failsafe, as when it opens. A held alert whose key meanwhile has an open
// alert folds into it. Each release is audited ("alert.released").
func (r *Router) ReleaseHeld(ctx context.Context, tx Queryer, lock string, now time.Time) ([]*Alert, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM alerts WHERE state = 'held' AND release_at <= $1
		ORDER BY release_at LIMIT 100`+lock, now.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("held alerts: %w", err)
	}
	var due []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("held alerts: %w", err)
		}
		due = append(due, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []*Alert
	for _, id := range due {
		a, err := GetAlert(ctx, tx, r.sealer, id, "")
		if err != nil {
			return nil, err
		}
		taken, err := openDedupTaken(ctx, tx, a.DedupKey)
		if err != nil {
			return nil, err
		}
		if taken {
			act, err := r.findActive(ctx, tx, a.DedupKey)
			if err != nil {
				return nil, err
			}
			var o Outcome
			if act != nil {
				if err := r.absorb(ctx, tx, act.id, a.DedupKey, a.RuleID, a.Body, now); err != nil {
					return nil, err
				}
			}
			if err := r.closeAlert(ctx, tx, a.EventID, a.ID, CloseDedup, now, &o); err != nil {
				return nil, err
			}
			continue
		}
		held, err := r.targetHeld(ctx, tx, alertTarget(a), a.Unit, a.Priority, now)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE alerts SET state = 'open', failsafe = $1, updated_at = $2 WHERE id = $3`,
			boolInt(!held), now.UnixMicro(), a.ID); err != nil {
			return nil, fmt.Errorf("release alert: %w", err)
		}
		a.State, a.Failsafe, a.UpdatedAt = StateOpen, !held, now
		if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
			Action: "alert.released", ObjectType: "alert", ObjectID: a.ID, CorrelationID: a.EventID,
			Detail: map[string]any{"rule_id": a.RuleID, "unit": a.Unit, "failsafe": a.Failsafe, "reason": ReasonQuietHours}}); err != nil {
			return nil, err
		}
		if !held {
			if err := r.noHolder(ctx, tx, a.EventID, a, now); err != nil {
				return nil, err
			}
		}
		out = append(out, a)
	}
	return out, nil
}
