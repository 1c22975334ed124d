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
	"slices"
	"sync"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/oncall"
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

// Worker routes pending events, in one lane or several (SetLanes).
type Worker struct {
	db     *db.DB
	events *ingest.Store
	router *routing.Router
	engine *messaging.Engine
	pseudo Pseudonymizer
	waker  messaging.Waker
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time
	lanes  []*lane
	all    *lane // claims every partition: ProcessBatch and ProcessOne
}

// A lane is one routing loop: its own transactions, over its share of the
// routing partitions (ingest.RoutePart). Lanes route different patients at
// once; each patient's events stay in one lane, in order.
type lane struct {
	*Worker
	parts   []int
	kick    chan struct{}
	retries map[string]int
	// holders: who held a role in each unit when a batch of this lane
	// last read its rosters. The next batch reads their devices with the
	// rosters, a guess that spares the devices' own round trip when the
	// rosters have not changed (whoever the guess missed is read after).
	holders map[string][]string
}

// maxAttempts bounds retries of an event whose routing keeps failing; it is
// then marked failed (audited, kept for inspection) so it cannot block the
// events behind it.
const maxAttempts = 5

// New wires a worker with one lane.
func New(d *db.DB, events *ingest.Store, router *routing.Router, engine *messaging.Engine, pseudo Pseudonymizer,
	waker messaging.Waker, pub Publisher, log *slog.Logger, now func() time.Time) *Worker {
	w := &Worker{db: d, events: events, router: router, engine: engine, pseudo: pseudo, waker: waker, pub: pub,
		log: log, now: now}
	w.all = w.newLane(ingest.AllParts())
	w.lanes = []*lane{w.all}
	return w
}

func (w *Worker) newLane(parts []int) *lane {
	return &lane{Worker: w, parts: parts, kick: make(chan struct{}, 1), retries: map[string]int{},
		holders: map[string][]string{}}
}

// SetLanes divides the routing partitions among n lanes, before Run. On
// PostgreSQL a routing transaction spends most of its time waiting for
// round trips, so a second lane nearly doubles what a node routes; SQLite
// has one writer, and keeps one lane.
func (w *Worker) SetLanes(n int) {
	if w.db.Dialect != db.Postgres || n < 1 {
		n = 1
	}
	n = min(n, ingest.RouteParts)
	if n == 1 {
		w.lanes = []*lane{w.all}
		return
	}
	w.lanes = make([]*lane, n)
	for i := range n {
		var parts []int
		for p := i; p < ingest.RouteParts; p += n {
			parts = append(parts, p)
		}
		w.lanes[i] = w.newLane(parts)
	}
}

// Kick wakes the worker after a commit, so routing starts at once rather
// than at the next poll.
func (w *Worker) Kick() {
	for _, l := range w.lanes {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// maxBatch bounds the events one routing transaction takes. A burst is
// routed a batch per commit instead of an event per commit; under light
// load a batch holds the one event that is waiting, so nothing waits for
// company.
const maxBatch = 32

// gather is the least time between the starts of two routing batches
// when events trickle in (see Run): the most it adds to an alert's latency.
const gather = 3 * time.Millisecond

// busyWait is how long a lane waits before trying again for partitions
// another node (or, in tests, process) held, when it had nothing else.
const busyWait = 20 * time.Millisecond

// Run routes events until ctx ends, each lane in a goroutine of its own;
// each finishes the batch in hand first. The first lane also releases the
// alerts held for quiet hours.
func (w *Worker) Run(ctx context.Context, poll time.Duration) {
	var wg sync.WaitGroup
	for i, l := range w.lanes {
		wg.Go(func() { l.run(ctx, poll, i == 0) })
	}
	wg.Wait()
}

func (l *lane) run(ctx context.Context, poll time.Duration, releases bool) {
	t := time.NewTicker(poll)
	defer t.Stop()
	var last time.Time // when the last batch started
	for {
		for ctx.Err() == nil {
			// A steady stream of events is routed a few per commit rather
			// than one: the next batch starts no sooner than gather after
			// the last, so the events arriving meanwhile go together. A
			// backlog (full batches) is routed without waiting.
			if wait := gather - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			last = time.Now()
			n, busy, err := l.processBatch(context.WithoutCancel(ctx), maxBatch)
			if busy && n == 0 && err == nil {
				// Another node holds some of our partitions: it routes
				// them now, and they may have more once it commits.
				select {
				case <-ctx.Done():
					return
				case <-time.After(busyWait):
				}
				continue
			}
			if db.IsTransient(err) {
				// Two lanes (or nodes) paging the same devices in
				// opposite orders: PostgreSQL rolled one back. Again.
				l.log.Warn("route batch rolled back by a deadlock; routing it again", "error", err)
				continue
			}
			if err != nil {
				// One event may be at fault: route them one at a time, so
				// it fails (and is retried, then set aside) alone.
				l.log.Warn("route batch failed; routing its events one by one", "error", err)
				if n, err = l.processEach(context.WithoutCancel(ctx), maxBatch); err != nil {
					break
				}
			}
			if n < maxBatch && !busy {
				break // caught up: the next commit's kick (or the poll) wakes us
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-t.C:
			if !releases {
				continue
			}
			if _, err := l.ReleaseHeld(context.WithoutCancel(ctx)); err != nil {
				l.log.Error("release held alerts", "error", err)
			}
		}
	}
}

// routed is what routing one event did, acted on once its transaction
// has committed.
type routed struct {
	eventID string
	wake    []string // devices with a new message
	opened  []*routing.Alert
	closed  []routing.ClosedAlert
}

// ProcessBatch routes up to limit pending events, oldest first, in one
// transaction, and returns how many it routed. On failure nothing of the
// batch is kept; the caller then routes the events with ProcessOne.
func (w *Worker) ProcessBatch(ctx context.Context, limit int) (int, error) {
	n, _, err := w.all.processBatch(ctx, limit)
	return n, err
}

// processBatch is ProcessBatch over the lane's partitions; busy reports
// that another transaction held some of them.
func (l *lane) processBatch(ctx context.Context, limit int) (n int, busy bool, err error) {
	now := l.now()
	var done []routed
	// One pipe serves the batch's reads and last writes, each flush a
	// round trip: the first carries BEGIN, the partitions' locks and the
	// claim, the last the audit records, the events' state and COMMIT. The
	// alerts the batch opens wait on it too, until their messages are
	// stored or a statement is sent through btx (db.InBehind).
	err = l.db.InBehind(ctx, func(btx *db.Behind) error {
		done = done[:0]
		p := btx.Pipe
		parts, evs, err := l.events.LockAndClaim(ctx, p, btx, l.parts, limit)
		if err != nil {
			return err
		}
		busy = len(parts) < len(l.parts)
		if len(evs) == 0 {
			return nil
		}
		ids := make([]string, len(evs))
		entries := make([]audit.Entry, len(evs))
		// Routing edits no roster: who holds a role is read once per
		// transaction, by routing and the escalation's start alike.
		q := oncall.NewMemo(btx)
		sess := l.router.Session(q)
		sess.WriteBehind(p)
		// The patients' contexts are read for the whole batch at once.
		patients := make([]string, 0, len(evs))
		for i := range evs {
			if p := evs[i].Event.Patient; p.ID != "" {
				patients = append(patients, routing.PatientID(l.pseudo, p))
			}
		}
		if err := sess.Prefetch(ctx, patients); err != nil {
			return err
		}
		// The records routing and paging append are written together, in
		// one statement with the events' own, before the commit. The
		// messages are stored together too, in device order (see
		// messaging.HeldPages), before anything else touches their alerts:
		// before the next event of a patient paged in this batch.
		actx, held := audit.Defer(ctx)
		actx, pages := l.engine.HoldPages(actx)
		// Who holds each role in the patients' units, and their devices,
		// are read once for the batch too, not once for each alert; so are
		// the patients' active alerts.
		sess.QueueActive(p, patients) // their alerts, for dedup: sent with the rosters
		sess.QueueRules(p)
		q.QueuePolicies(p, sess.PolicyIDs())
		units := sess.Units()
		pages.QueueDevices(p, l.guessHolders(units))
		users, err := q.PrefetchUnits(ctx, p, units, now)
		if err != nil {
			return err
		}
		for _, u := range units {
			l.holders[u] = q.UnitHolders(u, now)
		}
		if err := pages.PrefetchDevices(actx, p, users); err != nil { // those the guess missed
			return err
		}
		paged := map[string]bool{} // patients with messages held
		for i := range evs {
			patient := evs[i].Event.Patient.Key()
			if paged[patient] {
				if err := pages.Flush(actx, btx); err != nil {
					return err
				}
				clear(paged)
			}
			r, entry, err := l.route(actx, q, sess, &evs[i], now)
			if err != nil {
				return err
			}
			if pages.Held() {
				paged[patient] = true
			}
			done, ids[i], entries[i] = append(done, r), evs[i].ID, entry
		}
		if err := pages.Flush(actx, btx); err != nil {
			return err
		}
		// The audit records and the events' new state go together, with
		// the COMMIT.
		if err := held.Queue(p, entries...); err != nil {
			return err
		}
		l.events.QueueStates(p, ids, ingest.StateProcessed, now)
		return nil
	})
	if err != nil {
		return 0, busy, err
	}
	for _, r := range done {
		l.afterCommit(ctx, r, now)
	}
	return len(done), busy, nil
}

// guessHolders returns who held a role in units when the lane last read
// their rosters.
func (l *lane) guessHolders(units []string) []string {
	var out []string
	for _, u := range units {
		out = append(out, l.holders[u]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// processEach calls ProcessOne up to n times, until no event is pending
// or one fails; it returns how many it routed.
func (l *lane) processEach(ctx context.Context, n int) (int, error) {
	routed := 0
	for range n {
		more, err := l.processOne(ctx)
		if err != nil || !more {
			return routed, err
		}
		routed++
	}
	return routed, nil
}

// ProcessOne routes the oldest pending event in a transaction of its own;
// it reports whether there was one. An event whose routing keeps failing
// is marked failed after maxAttempts.
func (w *Worker) ProcessOne(ctx context.Context) (bool, error) { return w.all.processOne(ctx) }

func (l *lane) processOne(ctx context.Context) (bool, error) {
	now := l.now()
	var r routed
	var eventID string
	err := l.db.InTx(ctx, func(tx *sql.Tx) error {
		parts, err := l.events.LockParts(ctx, tx, l.parts)
		if err != nil {
			return err
		}
		st, err := l.events.ClaimNext(ctx, tx, parts)
		if st != nil {
			eventID = st.ID
		}
		if err != nil || st == nil {
			return err
		}
		var entry audit.Entry
		q := oncall.NewMemo(tx)
		pctx, pages := l.engine.HoldPages(ctx) // its devices locked in order
		if r, entry, err = l.route(pctx, q, l.router.Session(q), st, now); err != nil {
			return err
		}
		if err := pages.Flush(pctx, tx); err != nil {
			return err
		}
		if err := audit.Append(ctx, tx, entry); err != nil {
			return err
		}
		return l.events.SetState(ctx, tx, st.ID, ingest.StateProcessed, now)
	})
	if err != nil {
		l.log.Error("route event", "event_id", eventID, "error", err)
		if eventID != "" && !db.IsTransient(err) { // a deadlock is no fault of the event's
			l.retries[eventID]++
			if l.retries[eventID] >= maxAttempts {
				l.fail(ctx, eventID, now)
			}
		}
		return eventID != "", err
	}
	if eventID == "" {
		return false, nil
	}
	delete(l.retries, eventID)
	l.afterCommit(ctx, r, now)
	return true, nil
}

// route applies one claimed event within tx (sess is the router's session
// on it; the memo shares roster reads between routing and escalation):
// routing, then the escalation of every alert it opened. It returns what
// to do after the commit and the event's audit record (the caller appends
// it).
func (w *Worker) route(ctx context.Context, tx *oncall.Memo, sess *routing.Session, st *ingest.Stored, now time.Time) (routed, audit.Entry, error) {
	r := routed{eventID: st.ID}
	out, err := sess.Route(ctx, st.ID, &st.Event, w.pseudo, now)
	if err != nil {
		return r, audit.Entry{}, err
	}
	// Opened alerts start their escalation; retargeted ones (their patient
	// moved unit, their timers cancelled by routing) start it again in the
	// new unit.
	for _, a := range out.Opened {
		devs, err := w.engine.Start(ctx, tx, a, now)
		if err != nil {
			return r, audit.Entry{}, err
		}
		r.wake = append(r.wake, devs...)
	}
	for _, a := range out.Retargeted {
		devs, err := w.engine.Restart(ctx, tx, a, now)
		if err != nil {
			return r, audit.Entry{}, err
		}
		r.wake = append(r.wake, devs...)
	}
	r.opened, r.closed = out.Opened, out.Closed
	entry := audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "pipeline",
		Action: "event.routed", ObjectType: "event", ObjectID: st.ID, CorrelationID: st.ID,
		Detail: map[string]any{"kind": string(st.Event.Kind), "patient_id": out.PatientID,
			"alerts_opened": len(out.Opened), "alerts_updated": len(out.Updated), "alerts_closed": len(out.Closed),
			"alerts_held": len(out.Held), "alerts_retargeted": len(out.Retargeted), "suppressed": out.Suppressed}}
	return r, entry, nil
}

// afterCommit wakes the devices with new messages and publishes the
// lifecycle events of a committed event.
func (w *Worker) afterCommit(ctx context.Context, r routed, now time.Time) {
	w.waker.WakeDevices(r.wake)
	w.publishOpened(ctx, r.eventID, r.opened, now)
	for _, c := range r.closed {
		// An accepted alert closed by routing is owed a notice to whoever
		// accepted it: the lifecycle event carries it to the stream.
		w.log.Info("alert closed", "alert_id", c.ID, "event_id", r.eventID, "rule_id", c.RuleID, "reason", c.Reason,
			"previous_state", c.PreviousState)
		if err := w.pub.PublishAlert(ctx, bus.AlertEvent{Type: "closed", AlertID: c.ID, EventID: r.eventID,
			RuleID: c.RuleID, At: now}); err != nil {
			w.log.Warn("publish alert event", "alert_id", c.ID, "error", err)
		}
	}
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
		pctx, pages := w.engine.HoldPages(ctx) // their devices locked in order
		for _, a := range released {
			devs, err := w.engine.Start(pctx, tx, a, now)
			if err != nil {
				return err
			}
			wake = append(wake, devs...)
		}
		return pages.Flush(pctx, tx)
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

func (l *lane) fail(ctx context.Context, eventID string, now time.Time) {
	err := l.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := l.events.SetState(ctx, tx, eventID, ingest.StateFailed, now); err != nil {
			return err
		}
		err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "pipeline",
			Action: "event.routing_failed", ObjectType: "event", ObjectID: eventID, CorrelationID: eventID,
			Outcome: "failure", Detail: map[string]any{"attempts": maxAttempts}})
		return err
	})
	if err != nil {
		l.log.Error("mark event failed", "event_id", eventID, "error", err)
		return
	}
	delete(l.retries, eventID)
}
