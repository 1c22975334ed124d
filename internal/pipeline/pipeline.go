// Package pipeline routes committed events: it claims each pending event,
// applies it to patient context and rules, starts the escalation of every
// alert it opens, and marks it processed, all in one transaction. An event
// acknowledged to its sender is therefore routed exactly once, even if the
// node dies between the ACK and the routing.
package pipeline

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/routing"
)

// Pseudonymizer maps a patient identifier to its opaque id.
type Pseudonymizer interface {
	Pseudonym(prefix, value string) string
}

// Publisher receives alert lifecycle events after commit.
type Publisher interface {
	PublishAlert(ctx context.Context, ev bus.AlertEvent) error
}

// Worker routes pending events.
type Worker struct {
	db      *db.DB
	events  *ingest.Store
	router  *routing.Router
	engine  *messaging.Engine
	pseudo  Pseudonymizer
	waker   messaging.Waker
	pub     Publisher
	log     *slog.Logger
	now     func() time.Time
	kick    chan struct{}
	retries map[string]int
}

// maxAttempts bounds retries of an event whose routing keeps failing; it is
// then marked failed (audited, kept for inspection) so it cannot block the
// events behind it.
const maxAttempts = 5

// New wires a worker.
func New(d *db.DB, events *ingest.Store, router *routing.Router, engine *messaging.Engine, pseudo Pseudonymizer,
	waker messaging.Waker, pub Publisher, log *slog.Logger, now func() time.Time) *Worker {
	return &Worker{db: d, events: events, router: router, engine: engine, pseudo: pseudo, waker: waker, pub: pub,
		log: log, now: now, kick: make(chan struct{}, 1), retries: map[string]int{}}
}

// Kick wakes the worker after a commit, so routing starts at once rather
// than at the next poll.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run routes events until ctx ends; it finishes the event in hand first.
func (w *Worker) Run(ctx context.Context, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			more, err := w.ProcessOne(context.WithoutCancel(ctx))
			if err != nil {
				break
			}
			if !more {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
			if _, err := w.ReleaseHeld(context.WithoutCancel(ctx)); err != nil {
				w.log.Error("release held alerts", "error", err)
			}
		}
	}
}

// ProcessOne routes the oldest pending event; it reports whether there was one.
func (w *Worker) ProcessOne(ctx context.Context) (bool, error) {
	now := w.now()
	var wake []string
	var opened []*routing.Alert
	var closed []routing.ClosedAlert
	var eventID string
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		st, err := w.events.ClaimNext(ctx, tx)
		if st != nil {
			eventID = st.ID
		}
		if err != nil || st == nil {
			return err
		}
		out, err := w.router.Route(ctx, tx, st.ID, &st.Event, w.pseudo, now)
		if err != nil {
			return err
		}
		patientID := out.PatientID
		// Opened alerts start their escalation; retargeted ones (their
		// patient moved unit, their timers cancelled by routing) start it
		// again in the new unit.
		for _, a := range append(append([]*routing.Alert{}, out.Opened...), out.Retargeted...) {
			devs, err := w.engine.Start(ctx, tx, a, now)
			if err != nil {
				return err
			}
			wake = append(wake, devs...)
		}
		opened, closed = out.Opened, out.Closed
		if _, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "pipeline",
			Action: "event.routed", ObjectType: "event", ObjectID: st.ID, CorrelationID: st.ID,
			Detail: map[string]any{"kind": string(st.Event.Kind), "patient_id": patientID,
				"alerts_opened": len(out.Opened), "alerts_updated": len(out.Updated), "alerts_closed": len(out.Closed),
				"alerts_held": len(out.Held), "alerts_retargeted": len(out.Retargeted), "suppressed": out.Suppressed}}); err != nil {
			return err
		}
		return w.events.SetState(ctx, tx, st.ID, ingest.StateProcessed, now)
	})
	if err != nil {
		w.log.Error("route event", "event_id", eventID, "error", err)
		if eventID != "" {
			w.retries[eventID]++
			if w.retries[eventID] >= maxAttempts {
				w.fail(ctx, eventID, now)
			}
		}
		return eventID != "", err
	}
	if eventID == "" {
		return false, nil
	}
	delete(w.retries, eventID)
	w.waker.WakeDevices(wake)
	w.publishOpened(ctx, eventID, opened, now)
	for _, c := range closed {
		// An accepted alert closed by routing is owed a notice to whoever
		// accepted it: the lifecycle event carries it to the stream.
		w.log.Info("alert closed", "alert_id", c.ID, "event_id", eventID, "rule_id", c.RuleID, "reason", c.Reason,
			"previous_state", c.PreviousState)
		if err := w.pub.PublishAlert(ctx, bus.AlertEvent{Type: "closed", AlertID: c.ID, EventID: eventID, RuleID: c.RuleID,
			At: now}); err != nil {
			w.log.Warn("publish alert event", "alert_id", c.ID, "error", err)
		}
	}
	return true, nil
}

func (w *Worker) publishOpened(ctx context.Context, eventID string, opened []*routing.Alert, now time.Time) {
	for _, a := range opened {
		w.log.Info("alert opened", "alert_id", a.ID, "event_id", eventID, "rule_id", a.RuleID, "priority", a.Priority, "unit", a.Unit)
		if err := w.pub.PublishAlert(ctx, bus.AlertEvent{Type: "opened", AlertID: a.ID, EventID: eventID, RuleID: a.RuleID,
			Priority: a.Priority, Unit: a.Unit, PatientID: a.PatientID, At: now}); err != nil {
			w.log.Warn("publish alert event", "alert_id", a.ID, "error", err)
		}
	}
}

// ReleaseHeld pages the alerts held for quiet hours whose hours have
// ended, in one transaction with their release; it returns how many.
func (w *Worker) ReleaseHeld(ctx context.Context) (int, error) {
	now := w.now()
	var wake []string
	var released []*routing.Alert
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if released, err = w.router.ReleaseHeld(ctx, tx, w.db.SkipLocked(), now); err != nil {
			return err
		}
		for _, a := range released {
			devs, err := w.engine.Start(ctx, tx, a, now)
			if err != nil {
				return err
			}
			wake = append(wake, devs...)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	w.waker.WakeDevices(wake)
	for _, a := range released {
		w.publishOpened(ctx, a.EventID, []*routing.Alert{a}, now)
	}
	return len(released), nil
}

func (w *Worker) fail(ctx context.Context, eventID string, now time.Time) {
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := w.events.SetState(ctx, tx, eventID, ingest.StateFailed, now); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "pipeline",
			Action: "event.routing_failed", ObjectType: "event", ObjectID: eventID, CorrelationID: eventID,
			Outcome: "failure", Detail: map[string]any{"attempts": maxAttempts}})
		return err
	})
	if err != nil {
		w.log.Error("mark event failed", "event_id", eventID, "error", err)
		return
	}
	delete(w.retries, eventID)
}
