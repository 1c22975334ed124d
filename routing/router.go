package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// Outcome is what routing one event did.
type Outcome struct {
	Opened  []*Alert // new alerts: the caller starts their escalation
	Updated []string // ids of open alerts that absorbed the event instead of paging again
}

// Route applies ev, stored as eventID, within tx. patientID is the
// patient's opaque pseudonym. Every change is audited in tx.
func (r *Router) Route(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, patientID string, now time.Time) (Outcome, error) {
	var out Outcome
	switch ev.Kind {
	case ingest.KindAdmit, ingest.KindTransfer, ingest.KindDischarge:
		c := Context{PatientID: patientID, Location: ev.Location, Admitted: ev.Kind != ingest.KindDischarge}
		if ev.Kind == ingest.KindDischarge {
			if prev, ok, err := GetContext(ctx, tx, patientID); err != nil {
				return out, err
			} else if ok && ev.Location.Unit == "" {
				c.Location = prev.Location
			}
		}
		if err := SetContext(ctx, tx, c, now); err != nil {
			return out, err
		}
		_, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "routing",
			Action: "patient.context_updated", ObjectType: "patient", ObjectID: patientID, CorrelationID: eventID,
			Detail: map[string]any{"event_id": eventID, "kind": string(ev.Kind), "unit": c.Location.Unit}})
		return out, err
	case ingest.KindResult:
		return r.routeResult(ctx, tx, eventID, ev, patientID, now)
	}
	return out, fmt.Errorf("route: unsupported event kind %q", ev.Kind)
}

func (r *Router) routeResult(ctx context.Context, tx Queryer, eventID string, ev *ingest.Event, patientID string, now time.Time) (Outcome, error) {
	var out Outcome
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
