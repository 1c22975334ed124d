package routing

import (
	"context"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/oncall"
)

// DryRunResult is what routing an event would do now, computed by reading
// only. It holds the rendered body (PHI from the event given): it is for
// the rule owner who supplied the event.
type DryRunResult struct {
	At        time.Time     `json:"at"`
	Kind      string        `json:"kind"`
	PatientID string        `json:"patient_id,omitempty"`
	Patient   DryRunPatient `json:"patient"`
	// RulesEnabled is how many rules were evaluated.
	RulesEnabled int `json:"rules_enabled"`
	// Matches lists the rules the event fired, and the rules whose codes
	// it carried with a normal value when that would do something.
	Matches []DryRunMatch `json:"matches"`
	// EvaluationErrors names rules whose CEL condition failed on this event
	// (they count as not matching).
	EvaluationErrors []string `json:"evaluation_errors,omitempty"`
	// AlertEffects is what an ADT event would do to the patient's open
	// alerts (retarget, close).
	AlertEffects []DryRunEffect `json:"alert_effects,omitempty"`
}

// DryRunPatient is the context rules would see.
type DryRunPatient struct {
	Known bool   `json:"known"` // ADT has been seen for the patient
	Unit  string `json:"unit,omitempty"`
	Room  string `json:"room,omitempty"`
	Bed   string `json:"bed,omitempty"`
	Class string `json:"class,omitempty"`
}

// DryRunMatch is one rule's verdict and what would follow.
type DryRunMatch struct {
	RuleID  string `json:"rule_id"`
	Name    string `json:"name"`
	Version int    `json:"version"`
	Fired   bool   `json:"fired"`
	Code    string `json:"code,omitempty"`
	Plan    *Plan  `json:"plan"`
	// Alert is the alert that would open (or be held).
	Alert *DryRunAlert `json:"alert,omitempty"`
	// PagedNow are the users the escalation would page first, at step
	// PagedStep of the effective policy (the engine also skips users with
	// no active device); empty for an update, a suppression or a hold.
	PagedNow  []string `json:"paged_now,omitempty"`
	PagedStep int      `json:"paged_step,omitempty"`
	// PagedAtRelease are the users a held alert would page if released now.
	PagedAtRelease []string `json:"paged_at_release,omitempty"`
}

// DryRunAlert is the alert a dry run would open.
type DryRunAlert struct {
	State      string     `json:"state"`
	Priority   string     `json:"priority"`
	Unit       string     `json:"unit"`
	TargetKind string     `json:"target_kind"`
	TargetID   string     `json:"target_id"`
	PolicyID   string     `json:"policy_id"`
	DelayPct   int        `json:"delay_pct"`
	Failsafe   bool       `json:"failsafe"`
	ReleaseAt  *time.Time `json:"release_at,omitempty"`
	LockScreen string     `json:"lock_screen"`
	Body       string     `json:"body"`
}

// DryRunEffect is what an ADT event would do to one open alert.
type DryRunEffect struct {
	AlertID string `json:"alert_id"`
	RuleID  string `json:"rule_id"`
	Effect  string `json:"effect"` // retarget, close, keep
}

// DryRun shows what routing ev would do at now, without writing: which
// rules match, the alert that would open, who would be paged and what the
// lock screen would show. Run it in a transaction that is rolled back.
func (r *Router) DryRun(ctx context.Context, q Queryer, ev *ingest.Event, pseudo Pseudonymizer, now time.Time) (*DryRunResult, error) {
	rs, err := r.Ruleset(ctx, q)
	if err != nil {
		return nil, err
	}
	patientID := PatientID(pseudo, ev.Patient)
	res := &DryRunResult{At: now, Kind: string(ev.Kind), PatientID: patientID, RulesEnabled: len(rs.Rules()), Matches: []DryRunMatch{}}
	c, known, err := GetContext(ctx, q, patientID)
	if err != nil {
		return nil, err
	}
	view := patientView(ev, c, known)
	if ev.Kind.IsADT() {
		// Rules on ADT see the context after the event.
		next := c
		if ev.Kind != ingest.KindSwap && ev.Kind != ingest.KindMerge {
			next = nextContext(c, known, ev)
		} else if ev.Location.Unit != "" {
			next.Location = ev.Location
		}
		view = patientView(ev, next, true)
		if res.AlertEffects, err = r.adtEffects(ctx, q, rs, ev, patientID, c, known, next); err != nil {
			return nil, err
		}
	}
	res.Patient = DryRunPatient{Known: known, Unit: view.Location.Unit, Room: view.Location.Room, Bed: view.Location.Bed, Class: view.Class}
	st := &routeState{eventID: "dry-run", ev: ev, patientID: patientID, view: view, now: now}
	hits, errs := rs.Evaluate(ev, view, now)
	for _, e := range errs {
		res.EvaluationErrors = append(res.EvaluationErrors, e.RuleID)
	}
	hits = append(hits, rs.AlarmEndHits(ev)...)
	for _, h := range hits {
		p, err := r.plan(ctx, q, st, rs, h)
		if err != nil {
			return nil, err
		}
		if h.Normal && p.Action == ActionNone && p.Sustain == nil {
			continue
		}
		m := DryRunMatch{RuleID: h.Rule.Rule.ID, Name: h.Rule.Rule.Name, Version: h.Rule.Version, Fired: !h.Normal, Plan: p}
		if h.Obs != nil {
			m.Code = h.Obs.Code
		}
		if a := p.Alert; a != nil {
			m.Alert = &DryRunAlert{State: a.State, Priority: a.Priority, Unit: a.Unit, TargetKind: a.TargetKind,
				TargetID: a.TargetID, PolicyID: a.PolicyID, DelayPct: a.DelayPct, Failsafe: a.Failsafe,
				ReleaseAt: a.ReleaseAt, LockScreen: a.LockText, Body: a.Body}
			step, users, err := firstPaged(ctx, q, a, now)
			if err != nil {
				return nil, err
			}
			if p.Action == ActionOpen {
				m.PagedNow, m.PagedStep = users, step
			} else {
				m.PagedAtRelease = users
			}
		}
		res.Matches = append(res.Matches, m)
	}
	return res, nil
}

// firstPaged returns the first rung of a's effective policy that resolves
// to anyone now, and who.
func firstPaged(ctx context.Context, q Queryer, a *Alert, now time.Time) (int, []string, error) {
	pol, err := oncall.PolicyFor(ctx, q, a.PolicyID, a.Priority)
	if err != nil {
		return 0, nil, err
	}
	eff := EffectivePolicy(pol, a)
	for rung := 0; rung < eff.Rungs(); rung++ {
		users, err := oncall.ResolveStep(ctx, q, eff.Steps[eff.StepAt(rung)], a.Unit, now)
		if err != nil {
			return 0, nil, err
		}
		if len(users) > 0 {
			return rung, users, nil
		}
	}
	return 0, nil, nil
}

// adtEffects lists what a move or a discharge would do to open alerts.
func (r *Router) adtEffects(ctx context.Context, q Queryer, rs *Ruleset, ev *ingest.Event, patientID string, before Context, had bool, after Context) ([]DryRunEffect, error) {
	movedUnit := had && after.Location.Unit != "" && before.Location.Unit != after.Location.Unit
	if !movedUnit && ev.Kind != ingest.KindDischarge {
		return nil, nil
	}
	alerts, err := patientAlerts(ctx, q, patientID)
	if err != nil {
		return nil, err
	}
	var out []DryRunEffect
	for _, a := range alerts {
		cr := rs.Rule(a.ruleID)
		effect := "keep"
		switch {
		case movedUnit:
			mode := OnTransferRetarget
			if cr != nil && cr.Rule.OnTransfer != "" {
				mode = cr.Rule.OnTransfer
			}
			if mode == OnTransferClose || (mode == OnTransferRetarget && a.state != StateAccepted) {
				effect = mode
			}
		case cr != nil && cr.Rule.OnDischarge == OnDischargeClose:
			effect = "close"
		}
		out = append(out, DryRunEffect{AlertID: a.id, RuleID: a.ruleID, Effect: effect})
	}
	return out, nil
}
