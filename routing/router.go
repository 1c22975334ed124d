package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/ids"
)

// Router applies ADT context and rules to events.
type Router struct {
	sealer Sealer
}

// NewRouter returns a router that seals alert bodies with sealer.
func NewRouter(sealer Sealer) *Router { return &Router{sealer: sealer} }

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
	Updated   []string // ids of open alerts that absorbed the event instead of paging again
}

// Route applies ev, stored as eventID, within tx. Patients are known only
// by the pseudonyms pseudo makes of them (Event.Patient, and for a merge or
// a bed swap the second patient too). Every change is audited in tx.
func (r *Router) Route(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, pseudo Pseudonymizer, now time.Time) (Outcome, error) {
	out := Outcome{PatientID: PatientID(pseudo, ev.Patient)}
	var err error
	switch ev.Kind {
	case ingest.KindSwap:
		if ev.Other == nil {
			return out, errors.New("route: bed swap without its second patient")
		}
		err = r.swap(ctx, tx, eventID, ev, out.PatientID, PatientID(pseudo, ev.Other.Patient), now)
	case ingest.KindMerge:
		if ev.PriorPatient == nil {
			return out, errors.New("route: merge without its prior patient")
		}
		err = r.merge(ctx, tx, eventID, ev, out.PatientID, PatientID(pseudo, *ev.PriorPatient), now)
	case ingest.KindAdmit, ingest.KindTransfer, ingest.KindDischarge, ingest.KindRegister, ingest.KindUpdate,
		ingest.KindCancelAdmit, ingest.KindCancelTransfer, ingest.KindCancelDischarge:
		err = r.applyADT(ctx, tx, eventID, ev, out.PatientID, now)
	case ingest.KindResult, ingest.KindAlarm:
		return r.routeRules(ctx, tx, eventID, ev, out, now)
	case ingest.KindWatchdog:
		// A reporter's keep-alive: answered at intake, nothing to route.
	default:
		return out, fmt.Errorf("route: unsupported event kind %q", ev.Kind)
	}
	return out, err
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
func (r *Router) applyADT(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, patientID string, now time.Time) error {
	prev, had, err := GetContext(ctx, tx, patientID)
	if err != nil {
		return err
	}
	c := nextContext(prev, had, ev)
	c.PatientID = patientID
	if err := SetContext(ctx, tx, c, now); err != nil {
		return err
	}
	return auditContext(ctx, tx, eventID, ev.Kind, c, now, nil)
}

// swap exchanges two patients' beds (A17). Each goes where its PV1-3 says;
// a patient whose PV1-3 is empty takes the other's last known location.
func (r *Router) swap(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, a, b string, now time.Time) error {
	ca, _, err := GetContext(ctx, tx, a)
	if err != nil {
		return err
	}
	cb, _, err := GetContext(ctx, tx, b)
	if err != nil {
		return err
	}
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
	return nil
}

// merge folds the prior patient identity into the surviving one (A40): the
// more recently updated of their contexts becomes the survivor's (with what
// the message's PV1 says on top), the prior context is deleted, and the
// prior patient's alerts move to the survivor, open ones with their dedup
// key, so that later results for the survivor update them.
func (r *Router) merge(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, survivor, prior string, now time.Time) error {
	if survivor == prior {
		return nil // the same identity: nothing to fold
	}
	cs, hadS, err := GetContext(ctx, tx, survivor)
	if err != nil {
		return err
	}
	cp, hadP, err := GetContext(ctx, tx, prior)
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
	_, err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "patient.merged", ObjectType: "patient", ObjectID: survivor, CorrelationID: eventID,
		Detail: map[string]any{"event_id": eventID, "prior_patient_id": prior, "unit": c.Location.Unit,
			"alerts_moved": moved}})
	return err
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
		if _, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
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
	_, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "patient.context_updated", ObjectType: "patient", ObjectID: c.PatientID, CorrelationID: eventID,
		Detail: detail})
	return err
}

// routeRules matches a result's observations, or an alarm, against the
// rules; each rule that fires opens an alert, or updates the open one for
// the same patient and rule.
func (r *Router) routeRules(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, out Outcome, now time.Time) (Outcome, error) {
	patientID := out.PatientID
	rules, err := Rules(ctx, tx)
	if err != nil {
		return out, err
	}
	loc := ev.Location
	if c, ok, err := GetContext(ctx, tx, patientID); err != nil {
		return out, err
	} else if ok {
		loc = c.Location // ADT knows where the patient is now; the result may be stale
	}
	for i := range rules {
		rule := &rules[i]
		obs := rule.Fires(ev)
		if obs == nil {
			continue
		}
		fields := FieldsFor(rule, obs, loc)
		body := Render(rule.Body, fields)
		dedup := patientID + "|" + rule.ID
		// Twice at most: when a concurrent router opens the same dedup key
		// first, the insert does nothing and the second pass updates it.
		for attempt := 0; attempt < 2; attempt++ {
			var openID string
			err := tx.QueryRowContext(ctx, `SELECT id FROM alerts WHERE dedup_key = $1 AND state = $2`, dedup, StateOpen).Scan(&openID)
			if err == nil {
				if err := r.update(ctx, tx, openID, eventID, rule.ID, body, now); err != nil {
					return out, err
				}
				out.Updated = append(out.Updated, openID)
				break
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return out, fmt.Errorf("find open alert: %w", err)
			}
			a := &Alert{ID: ids.New("alr"), RuleID: rule.ID, EventID: eventID, PatientID: patientID, DedupKey: dedup,
				Priority: rule.Priority, Unit: loc.Unit, TargetRole: rule.TargetRole, PolicyID: rule.PolicyID,
				State: StateOpen, LockText: Render(rule.LockText, fields), Body: body, CreatedAt: now, UpdatedAt: now}
			inserted, err := insertAlert(ctx, tx, r.sealer, a)
			if err != nil {
				return out, err
			}
			if !inserted {
				continue
			}
			if _, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
				Action: "alert.opened", ObjectType: "alert", ObjectID: a.ID, CorrelationID: eventID,
				Detail: map[string]any{"event_id": eventID, "rule_id": rule.ID, "priority": a.Priority,
					"unit": a.Unit, "patient_id": patientID, "code": obs.Code}}); err != nil {
				return out, err
			}
			out.Opened = append(out.Opened, a)
			break
		}
	}
	return out, nil
}

// update folds a new matching event into an open alert instead of paging again.
func (r *Router) update(ctx context.Context, tx Queryer, alertID, eventID, ruleID, body string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE alerts SET updates = updates + 1, body = $1, updated_at = $2 WHERE id = $3`,
		r.sealer.Seal([]byte(body), []byte(alertID)), now.UnixMicro(), alertID)
	if err != nil {
		return fmt.Errorf("update alert: %w", err)
	}
	_, err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
		Action: "alert.updated", ObjectType: "alert", ObjectID: alertID, CorrelationID: eventID,
		Detail: map[string]any{"event_id": eventID, "rule_id": ruleID, "reason": "dedup"}})
	return err
}
