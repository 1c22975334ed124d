package messaging

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/internal/loop"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// Waker tells the node holding a device's connection that it has new
// messages. It is called after the commit, never inside a transaction.
type Waker interface {
	WakeDevices(deviceIDs []string)
}

// Engine pages escalation steps, records receipts and answers, and fires
// escalation timers. Every change is made in one transaction with its
// audit records; timers live in the same database as the answers, so an
// accept and the cancellation of its timer commit together.
type Engine struct {
	db       *db.DB
	sealer   routing.Sealer // opens alert bodies sealed at rest
	waker    Waker
	log      *slog.Logger
	now      func() time.Time
	digester Digester         // keyed digests of what is sent; nil stores none
	escrow   *EscrowPublicKey // seals a copy of each body for legal hold; nil keeps none
	expiry   Expiry
	lateness func(time.Duration) // observes each fired timer's lateness
}

// Digester makes and checks keyed digests of message plaintexts
// (*atrest.Keyring is one).
type Digester interface {
	Digest(data []byte) (keyID, digest string, err error)
	VerifyDigest(keyID, digest string, data []byte) (bool, error)
}

var _ Digester = (*atrest.Keyring)(nil)

// Option configures an Engine.
type Option func(*Engine)

// WithEscrow seals a copy of every message body to the offline escrow key.
func WithEscrow(k *EscrowPublicKey) Option { return func(e *Engine) { e.escrow = k } }

// WithExpiry sets how long messages live, by priority (DefaultExpiry
// otherwise).
func WithExpiry(x Expiry) Option { return func(e *Engine) { e.expiry = x } }

// WithDigester sets the keyed digest of message plaintexts; by default the
// sealer makes them when it can (an *atrest.Keyring does).
func WithDigester(d Digester) Option { return func(e *Engine) { e.digester = d } }

// WithTimerLateness calls observe, after each commit, with how late each
// fired escalation timer was: from its due time to the commit that fired it.
func WithTimerLateness(observe func(time.Duration)) Option {
	return func(e *Engine) { e.lateness = observe }
}

// NewEngine wires an engine.
func NewEngine(d *db.DB, sealer routing.Sealer, waker Waker, log *slog.Logger, now func() time.Time, opts ...Option) *Engine {
	e := &Engine{db: d, sealer: sealer, waker: waker, log: log, now: now, expiry: DefaultExpiry()}
	if dg, ok := sealer.(Digester); ok {
		e.digester = dg
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Escrow returns the escrow key messages are copied to, or nil.
func (e *Engine) Escrow() *EscrowPublicKey { return e.escrow }

// Plain is a message body before sealing: what a device shows once
// decrypted. It repeats the message and device ids so a device can check
// the envelope it came in.
type Plain struct {
	MessageID string    `json:"message_id"`
	DeviceID  string    `json:"device_id"`
	AlertID   string    `json:"alert_id"`
	Priority  string    `json:"priority"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	Unit      string    `json:"unit"`
	Step      int       `json:"step"`
	SentAt    time.Time `json:"sent_at"`
}

// Start pages the first reachable step of a newly opened alert, inside tx
// (a *sql.Tx, or an oncall.Memo over one, whose roster and policy reads it
// shares). Nobody has answered the alert yet. It returns the devices to
// wake once tx commits.
func (e *Engine) Start(ctx context.Context, tx Queryer, a *routing.Alert, now time.Time) ([]string, error) {
	return e.start(ctx, tx, a, now, false)
}

// Restart is Start for an alert routing moved to another unit: paged from
// its first step again, sparing whoever accepted it already (when several
// accepts are required).
func (e *Engine) Restart(ctx context.Context, tx Queryer, a *routing.Alert, now time.Time) ([]string, error) {
	return e.start(ctx, tx, a, now, true)
}

func (e *Engine) start(ctx context.Context, tx Queryer, a *routing.Alert, now time.Time, answered bool) ([]string, error) {
	policy, err := oncall.PolicyFor(ctx, tx, a.PolicyID, a.Priority)
	if err != nil {
		return nil, err
	}
	if err := fixAcceptsRequired(ctx, tx, a, policy); err != nil {
		return nil, err
	}
	var accepted []string
	if answered {
		if accepted, err = acceptedUsers(ctx, tx, a.ID); err != nil {
			return nil, err
		}
	}
	return e.pageWith(ctx, tx, a, policy, 0, now, "opened", accepted)
}

// page sends the alert to the first rung, from `from` on, that reaches at
// least one active device, and schedules the timer for the rung after it.
// Rungs unroll the policy's repeats (oncall.Policy): with no repeat a rung
// is a step. The policy is the alert's, or the one its by_priority names
// for the alert's priority. A rung whose targets nobody holds is skipped
// and audited: an alert never waits on an empty step. Past the last rung,
// the failsafe is paged again. With several accepts required, whoever
// accepted already is not paged again as the escalation goes on.
func (e *Engine) page(ctx context.Context, tx Queryer, a *routing.Alert, from int, now time.Time, reason string) ([]string, error) {
	policy, err := oncall.PolicyFor(ctx, tx, a.PolicyID, a.Priority)
	if err != nil {
		return nil, err
	}
	accepted, err := acceptedUsers(ctx, tx, a.ID)
	if err != nil {
		return nil, err
	}
	return e.pageWith(ctx, tx, a, policy, from, now, reason, accepted)
}

// pageWith is page with the policy (oncall.PolicyFor) and the users who
// accepted already read.
func (e *Engine) pageWith(ctx context.Context, tx Queryer, a *routing.Alert, policy oncall.Policy, from int, now time.Time,
	reason string, accepted []string) ([]string, error) {
	// The rule's target, failsafe flag and priority speed shape the policy.
	policy = routing.EffectivePolicy(policy, a)
	last := policy.Rungs() - 1
	if from > last {
		from = last
	}
	sys := func(action string, detail map[string]any) error {
		err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "escalation",
			Action: action, ObjectType: "alert", ObjectID: a.ID, CorrelationID: a.EventID, Detail: detail})
		return err
	}
	for rung := from; rung <= last; rung++ {
		step := policy.Steps[policy.StepAt(rung)]
		users, err := oncall.ResolveStep(ctx, tx, step, a.Unit, now)
		if err != nil {
			return nil, err
		}
		resolved := len(users)
		users = slices.DeleteFunc(users, func(u string) bool { return slices.Contains(accepted, u) })
		if resolved > 0 && len(users) == 0 {
			// Everyone this rung names accepted already.
			if err := sys("escalation.step_already_accepted", map[string]any{"alert_id": a.ID, "step": rung,
				"policy_step": policy.StepAt(rung)}); err != nil {
				return nil, err
			}
			continue
		}
		targets, err := devicesOf(ctx, tx, users)
		if err != nil {
			return nil, err
		}
		if len(targets) == 0 {
			if err := sys("escalation.step_unreachable", map[string]any{"alert_id": a.ID, "step": rung,
				"policy_step": policy.StepAt(rung), "users": len(users)}); err != nil {
				return nil, err
			}
			continue
		}
		// In device order, as every transaction takes devices (HeldPages),
		// even one not holding its pages. The timer for the next rung is
		// stored with the last message.
		slices.SortStableFunc(targets, func(a, b Device) int { return cmp.Compare(a.ID, b.ID) })
		var timer *pendingTimer
		if rung < last {
			timer = &pendingTimer{id: ids.New("tmr"), step: rung,
				due: now.Add(time.Duration(step.DelaySeconds) * time.Second).UnixMicro()}
		}
		var wake []string
		for i, d := range targets {
			var t *pendingTimer
			if i == len(targets)-1 {
				t = timer
			}
			if err := e.send(ctx, tx, a, d, rung, now, t); err != nil {
				return nil, err
			}
			wake = append(wake, d.ID)
		}
		// An alert opened or retargeted in this transaction and paged at
		// its first rung already reads so: no update.
		if a.State != routing.StateOpen || a.Step != rung || !a.UpdatedAt.Equal(now) {
			if err := routing.SetAlertState(ctx, tx, a.ID, routing.StateOpen, rung, "", now); err != nil {
				return nil, err
			}
		}
		if reason != "opened" || rung > 0 {
			if err := sys("alert.escalated", map[string]any{"alert_id": a.ID, "from_step": a.Step, "to_step": rung,
				"policy_id": policy.ID, "policy_step": policy.StepAt(rung), "reason": reason,
				"failsafe": rung == last}); err != nil {
				return nil, err
			}
		}
		a.Step = rung
		return wake, nil
	}
	if len(accepted) > 0 {
		// Short of the accepts it needs, with nobody left to page: it stays
		// open for whoever was paged and has not answered yet.
		e.log.Warn("alert short of accepts, nobody left to page", "alert_id", a.ID, "policy_id", a.PolicyID,
			"accepts", len(accepted))
		return nil, sys("alert.accepts_short", map[string]any{"alert_id": a.ID, "policy_id": a.PolicyID, "accepts": len(accepted)})
	}
	e.log.Error("alert reaches no device, failsafe included", "alert_id", a.ID, "policy_id", a.PolicyID)
	return nil, sys("alert.unreachable", map[string]any{"alert_id": a.ID, "policy_id": a.PolicyID})
}

// devicesOf returns the active devices of users, in user order: those
// prefetched under ctx (HeldPages.PrefetchDevices) from memory.
func devicesOf(ctx context.Context, tx Queryer, users []string) ([]Device, error) {
	var known map[string][]Device
	if h, ok := ctx.Value(heldPagesKey{}).(*HeldPages); ok {
		known = h.devices
	}
	var out []Device
	for _, u := range users {
		devs, ok := known[u]
		if !ok {
			var err error
			if devs, err = ActiveDevices(ctx, tx, u); err != nil {
				return nil, err
			}
		}
		out = append(out, devs...)
	}
	return out, nil
}

// messageInsert stores a message; $3 is its sequence number on its device.
const messageInsert = `INSERT INTO messages (id, device_id, seq, alert_id, user_id, step, priority, lock_text, sealed,
	created_at, expires_at, body_digest, digest_key_id, escrow_sealed, escrow_key_id)
	VALUES ($1, $2, %s, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`

// pendingTimer is an escalation timer to schedule for the alert of the
// message it is stored with.
type pendingTimer struct {
	id   string
	step int
	due  int64 // unix microseconds
}

// timerInsert schedules a timer; $%d are its id, its alert, step and due
// time.
const timerInsert = `INSERT INTO escalation_timers (id, alert_id, step, due_at, state) VALUES ($%d, $%d, $%d, $%d, 'pending')`

// storeMessage stores message id (the rest of its columns in cols, from
// alert_id on) under device deviceID's next sequence number, and returns
// that number; timer, when not nil, is scheduled for the message's alert.
// The device row is locked until the transaction ends, so a device's
// messages commit in the order of their numbers. On PostgreSQL one
// statement does it all (the number is taken, the timer inserted, in
// common table expressions), where SQLite takes two or three: a round
// trip less for each paged alert.
func (e *Engine) storeMessage(ctx context.Context, tx Queryer, deviceID, id string, timer *pendingTimer, cols ...any) (int64, error) {
	var seq int64
	if e.db.Dialect == db.Postgres {
		query, args := storeMessageSQL(deviceID, id, timer, cols)
		if err := tx.QueryRowContext(ctx, query, args...).Scan(&seq); err != nil {
			return 0, fmt.Errorf("store message: %w", err)
		}
		return seq, nil
	}
	args := append([]any{id, deviceID}, cols...)
	if err := tx.QueryRowContext(ctx, `UPDATE devices SET next_seq = next_seq + 1 WHERE id = $1 RETURNING next_seq`,
		deviceID).Scan(&seq); err != nil {
		return 0, fmt.Errorf("next sequence: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(messageInsert, "$15"), append(args, seq)...); err != nil {
		return 0, fmt.Errorf("store message: %w", err)
	}
	if timer != nil {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(timerInsert, 1, 2, 3, 4), timer.id, args[2], timer.step,
			timer.due); err != nil {
			return 0, fmt.Errorf("schedule escalation: %w", err)
		}
	}
	return seq, nil
}

// storeMessageSQL is storeMessage's statement on PostgreSQL; it returns
// the sequence number.
func storeMessageSQL(deviceID, id string, timer *pendingTimer, cols []any) (string, []any) {
	args := append([]any{id, deviceID}, cols...)
	with := `WITH s AS (UPDATE devices SET next_seq = next_seq + 1 WHERE id = $2 RETURNING next_seq)`
	if timer != nil {
		n := len(args)
		with += `, t AS (` + fmt.Sprintf(timerInsert, n+1, 3, n+2, n+3) + `)`
		args = append(args, timer.id, timer.step, timer.due)
	}
	return with + ` ` + fmt.Sprintf(messageInsert, `(SELECT next_seq FROM s)`) + ` RETURNING seq`, args
}

// send seals the alert for one device and stores it under the device's
// next sequence number, with its expiry; only sealed forms are stored: the
// device's, and the escrow copy when an escrow key is configured, beside a
// keyed digest of the plaintext. timer, when not nil, is scheduled with it.
func (e *Engine) send(ctx context.Context, tx Queryer, a *routing.Alert, d Device, step int, now time.Time,
	timer *pendingTimer) error {
	id := ids.New("msg")
	plain, err := json.Marshal(Plain{MessageID: id, DeviceID: d.ID, AlertID: a.ID, Priority: a.Priority,
		Title: a.LockText, Body: a.Body, Unit: a.Unit, Step: step, SentAt: now.UTC()})
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	sealed, err := Seal(d.Suite, d.PublicKey, MessageInfo(id, d.ID), plain)
	if err != nil {
		return fmt.Errorf("seal message for %s: %w", d.ID, err)
	}
	var digest, digestKey, escrowKey sql.NullString
	var escrowed any // NULL unless an escrow key is configured
	if e.digester != nil {
		k, dg, err := e.digester.Digest(plain)
		if err != nil {
			return fmt.Errorf("digest message: %w", err)
		}
		digestKey, digest = sql.NullString{String: k, Valid: true}, sql.NullString{String: dg, Valid: true}
	}
	if e.escrow != nil {
		sealedCopy, err := e.escrow.Seal(id, plain)
		if err != nil {
			return fmt.Errorf("escrow message: %w", err)
		}
		escrowed = sealedCopy
		escrowKey = sql.NullString{String: e.escrow.KeyID, Valid: true}
	}
	expires := now.Add(e.expiry.For(a.Priority))
	pg := heldPage{deviceID: d.ID, id: id, timer: timer, cols: []any{a.ID, d.UserID, step, a.Priority, a.LockText, sealed,
		now.UnixMicro(), expires.UnixMicro(), digest, digestKey, escrowed, escrowKey},
		entry: audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "messaging",
			Action: "message.sent", ObjectType: "message", ObjectID: id, CorrelationID: a.EventID,
			Detail: map[string]any{"alert_id": a.ID, "device_id": d.ID, "user_id": d.UserID, "step": step}}}
	if held, ok := ctx.Value(heldPagesKey{}).(*HeldPages); ok {
		held.pages = append(held.pages, pg)
		return nil
	}
	return e.storePage(ctx, tx, pg)
}

// heldPage is one message to store, with its timer and audit record.
type heldPage struct {
	deviceID, id string
	timer        *pendingTimer
	cols         []any // storeMessage's, from alert_id on
	entry        audit.Entry
}

// storePage stores a message and appends its audit record, with the
// sequence number it was given.
func (e *Engine) storePage(ctx context.Context, tx Queryer, pg heldPage) error {
	seq, err := e.storeMessage(ctx, tx, pg.deviceID, pg.id, pg.timer, pg.cols...)
	if err != nil {
		return err
	}
	pg.entry.Detail["seq"] = seq
	return audit.Append(ctx, tx, pg.entry)
}

// HeldPages are the messages paged under a context from HoldPages, not yet
// stored. Storing a message locks its device's row until the transaction
// ends (sequence numbers commit in order), so a transaction that pages
// several devices must lock them in one order, the same for every such
// transaction, or two of them can each wait for the other: PostgreSQL
// then rolls one back, a second later. Flush stores the held messages in
// device order.
//
// The context also remembers the active devices PrefetchDevices read.
type HeldPages struct {
	e       *Engine
	pages   []heldPage
	devices map[string][]Device // user → active devices, for the users prefetched
	reading map[string]bool     // users whose devices are queued to be read
}

type heldPagesKey struct{}

// HoldPages returns a context under which Start, Restart and the timers'
// escalations hold their messages back until Flush. Whatever reads or
// changes an alert's messages or timers later in the transaction must
// come after a Flush.
func (e *Engine) HoldPages(ctx context.Context) (context.Context, *HeldPages) {
	h := &HeldPages{e: e}
	return context.WithValue(ctx, heldPagesKey{}, h), h
}

// PrefetchDevices reads the active devices of users, a query each all
// sent at once on p (one round trip on PostgreSQL, p a Pipe within the
// transaction); paging under this context then finds theirs in memory.
// Users whose devices were read already (QueueDevices) are not read
// again, and when none is left nothing is sent. For a transaction that
// changes no device's state (routing a batch): the memory is not updated.
func (h *HeldPages) PrefetchDevices(ctx context.Context, p *db.Pipe, users []string) error {
	if !h.QueueDevices(p, users) {
		return nil
	}
	return p.Flush(ctx)
}

// QueueDevices queues on p the reads PrefetchDevices sends, for the users
// whose devices are not known yet, to go with whatever p sends next; it
// reports whether it queued any.
func (h *HeldPages) QueueDevices(p *db.Pipe, users []string) bool {
	if h.devices == nil {
		h.devices, h.reading = map[string][]Device{}, map[string]bool{}
	}
	queued := false
	for _, u := range users {
		if _, known := h.devices[u]; known || h.reading[u] {
			continue
		}
		h.reading[u], queued = true, true
		p.Query(func(rows db.Rows) error {
			devs, err := scanDevices(rows)
			h.devices[u] = devs // none is an answer too
			delete(h.reading, u)
			return err
		}, activeDevicesSQL, u, DeviceActive)
	}
	return queued
}

// Held reports whether messages are waiting for Flush.
func (h *HeldPages) Held() bool { return len(h.pages) > 0 }

// Flush stores the held messages within tx, by device, each device's in
// the order they were paged. On PostgreSQL, in a transaction db.InTx
// began, their statements go together in one round trip (db.PipeIn); in
// a db.Behind, with what its Pipe holds (the alerts they page, say).
func (h *HeldPages) Flush(ctx context.Context, tx Queryer) error {
	pages := h.pages
	h.pages = nil
	slices.SortStableFunc(pages, func(a, b heldPage) int { return cmp.Compare(a.deviceID, b.deviceID) })
	var p *db.Pipe
	switch t := tx.(type) {
	case *db.Behind:
		p = t.Pipe
	case *sql.Tx:
		if len(pages) > 1 {
			p = h.e.db.PipeIn(t)
		}
	}
	if p == nil || h.e.db.Dialect != db.Postgres {
		for _, pg := range pages {
			if err := h.e.storePage(ctx, tx, pg); err != nil {
				return err
			}
		}
		return nil
	}
	entries := make([]audit.Entry, len(pages))
	for i, pg := range pages {
		entries[i] = pg.entry
		query, args := storeMessageSQL(pg.deviceID, pg.id, pg.timer, pg.cols)
		p.Query(func(rows db.Rows) error {
			var seq int64
			if !rows.Next() {
				if err := rows.Err(); err != nil {
					return err
				}
				return fmt.Errorf("device %s: no sequence number", pg.deviceID)
			}
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			entries[i].Detail["seq"] = seq
			return nil
		}, query, args...)
	}
	if err := p.Flush(ctx); err != nil {
		return fmt.Errorf("store messages: %w", err)
	}
	return audit.AppendBatch(ctx, tx, entries)
}

// timerBatch is how many due timers one FireDue transaction claims: every
// timer of a batch commits when the last is done, so a smaller batch is
// less late under a backlog, but costs more commits (25 measured worse on
// PostgreSQL than 100: docs/messaging.md, benchmark method).
const timerBatch = 100

// FireDue fires the escalation timers due at now, up to timerBatch of them:
// each is claimed once (SKIP LOCKED across nodes), marked fired, and
// escalates its alert if the alert is still open at that step. It returns
// how many timers it fired; a full batch means more may be due.
func (e *Engine) FireDue(ctx context.Context, now time.Time) (int, error) {
	var wake []string
	var dues []int64
	err := e.db.InTx(ctx, func(tx *sql.Tx) error {
		wake, dues = nil, nil
		ctx, held := e.HoldPages(ctx) // the devices are locked in order, at the end
		rows, err := tx.QueryContext(ctx, `SELECT id, alert_id, step, due_at FROM escalation_timers
			WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $2`+e.db.SkipLocked(), now.UnixMicro(), timerBatch)
		if err != nil {
			return fmt.Errorf("claim timers: %w", err)
		}
		type timer struct {
			id, alertID string
			step        int
			due         int64
		}
		var due []timer
		for rows.Next() {
			var t timer
			if err := rows.Scan(&t.id, &t.alertID, &t.step, &t.due); err != nil {
				rows.Close()
				return fmt.Errorf("claim timers: %w", err)
			}
			due = append(due, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim timers: %w", err)
		}
		for _, t := range due {
			if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET state = 'fired', fired_at = $1 WHERE id = $2`,
				now.UnixMicro(), t.id); err != nil {
				return fmt.Errorf("fire timer: %w", err)
			}
			dues = append(dues, t.due)
			a, err := routing.GetAlert(ctx, tx, e.sealer, t.alertID, e.db.ForUpdate())
			if err != nil {
				return err
			}
			if a.State != routing.StateOpen || a.Step != t.step {
				continue
			}
			w, err := e.page(ctx, tx, a, t.step+1, now, "no_accept")
			if err != nil {
				return err
			}
			wake = append(wake, w...)
		}
		return held.Flush(ctx, tx)
	})
	if err != nil {
		return 0, err
	}
	if e.lateness != nil {
		done := e.now()
		for _, d := range dues {
			e.lateness(done.Sub(time.UnixMicro(d)))
		}
	}
	e.waker.WakeDevices(wake)
	return len(dues), nil
}

// NextTimer returns when the earliest pending escalation timer is due, and
// false when none is pending.
func (e *Engine) NextTimer(ctx context.Context) (time.Time, bool, error) {
	var due sql.NullInt64
	if err := e.db.QueryRowContext(ctx, `SELECT MIN(due_at) FROM escalation_timers WHERE state = 'pending'`).Scan(&due); err != nil {
		return time.Time{}, false, fmt.Errorf("next timer: %w", err)
	}
	if !due.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMicro(due.Int64), true, nil
}

// timerWait is how long RunTimers sleeps: until the next due timer, but no
// longer than poll (timers made on other nodes are seen at the next poll),
// and not at all when the last batch was full.
func timerWait(now, next time.Time, pending, fullBatch bool, poll time.Duration) time.Duration {
	switch {
	case fullBatch:
		return 0
	case !pending:
		return poll
	}
	return min(max(next.Sub(now), 0), poll)
}

// RunTimers fires due timers until ctx ends. It wakes at the exact due time
// of the earliest pending timer, and at least every poll to see timers
// scheduled by other nodes, so a timer is late by the time its transaction
// takes, not by a polling interval.
func (e *Engine) RunTimers(ctx context.Context, poll time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := e.FireDue(ctx, e.now())
		var next time.Time
		pending := false
		if err == nil {
			next, pending, err = e.NextTimer(ctx)
		}
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("escalation timers", "error", err)
			}
			t.Reset(poll) // back off rather than spin on a failing query
			continue
		}
		t.Reset(timerWait(e.now(), next, pending, n == timerBatch, poll))
	}
}

// Responses a device may give.
const (
	ResponseAccept  = "accept"
	ResponseDecline = "decline"
)

// ErrNotYours is returned when a device answers a message sent to another.
var ErrNotYours = errors.New("message was not sent to this device")

// Respond records a device's answer to a message. An accept counts towards
// the alert's accepts_required (distinct users; 1 unless its policy says
// otherwise): the accept that reaches it accepts the alert and cancels its
// pending timers in the same transaction; an accept short of it is recorded
// and the escalation goes on. Once every user paged at the current step has
// answered (declined, or accepted without completing the count), the alert
// escalates at once. It returns the alert's state afterwards.
func (e *Engine) Respond(ctx context.Context, deviceID, messageID, response string) (string, error) {
	res, err := e.RespondCount(ctx, deviceID, messageID, response)
	return res.AlertState, err
}

// Answer is the outcome of a response.
type Answer struct {
	AlertState      string `json:"alert_state"`
	Accepts         int    `json:"accepts"`          // distinct users who accepted so far
	AcceptsRequired int    `json:"accepts_required"` // accepts that close the alert
}

// RespondCount is Respond, also telling how many accepts the alert has and
// needs.
func (e *Engine) RespondCount(ctx context.Context, deviceID, messageID, response string) (Answer, error) {
	if response != ResponseAccept && response != ResponseDecline {
		return Answer{}, &InvalidError{"response", "must be accept or decline"}
	}
	now := e.now()
	var wake []string
	var ans Answer
	err := e.db.InTx(ctx, func(tx *sql.Tx) error {
		var alertID, userID string
		var step int
		err := tx.QueryRowContext(ctx, `SELECT alert_id, user_id, step FROM messages WHERE id = $1 AND device_id = $2`,
			messageID, deviceID).Scan(&alertID, &userID, &step)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotYours
		}
		if err != nil {
			return fmt.Errorf("respond: %w", err)
		}
		// Lock order is timers, then alert, as in FireDue: the reverse
		// would deadlock an accept against a timer firing for that alert.
		if err := lockPendingTimers(ctx, tx, alertID, e.db.ForUpdate()); err != nil {
			return err
		}
		a, err := routing.GetAlert(ctx, tx, e.sealer, alertID, e.db.ForUpdate())
		if err != nil {
			return err
		}
		if a.State == routing.StateOpen {
			// An answer to a finished alert is audited but does not
			// overwrite what the message recorded while it mattered.
			if _, err := tx.ExecContext(ctx, `UPDATE messages SET response = $1, responded_at = $2 WHERE id = $3`,
				response, now.UnixMicro(), messageID); err != nil {
				return fmt.Errorf("respond: %w", err)
			}
		}
		if ans.AcceptsRequired, err = acceptsRequired(ctx, tx, a.ID); err != nil {
			return err
		}
		accepted, err := acceptedUsers(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		ans.Accepts = len(accepted)
		entry := audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID, ActorRole: "device",
			Action: "alert.declined", ObjectType: "alert", ObjectID: a.ID, CorrelationID: a.EventID, DeviceID: deviceID,
			Detail: map[string]any{"message_id": messageID, "user_id": userID, "step": step, "alert_state": a.State,
				"accepts": ans.Accepts, "accepts_required": ans.AcceptsRequired}}
		ans.AlertState = a.State
		switch {
		case a.State != routing.StateOpen:
			entry.Outcome = "no_effect"
			if response == ResponseAccept {
				entry.Action = "alert.accepted"
			}
		case response == ResponseAccept && ans.Accepts >= ans.AcceptsRequired:
			entry.Action = "alert.accepted"
			if err := routing.SetAlertState(ctx, tx, a.ID, routing.StateAccepted, a.Step, userID, now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET state = 'cancelled' WHERE alert_id = $1 AND state = 'pending'`,
				a.ID); err != nil {
				return fmt.Errorf("cancel timers: %w", err)
			}
			ans.AlertState = routing.StateAccepted
		case response == ResponseAccept:
			// One of several accepts required: counted, the alert stays open.
			entry.Action = "alert.accept_recorded"
		}
		entry.Detail["alert_state"] = ans.AlertState
		if err := audit.Append(ctx, tx, entry); err != nil {
			return err
		}
		if ans.AlertState != routing.StateOpen || (response == ResponseDecline && step != a.Step) {
			return nil
		}
		// Is anyone paged at the current step still to answer? A user who
		// declined at this step, or accepted at any, has answered.
		var waiting int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(DISTINCT user_id) FROM messages WHERE alert_id = $1 AND step = $2
			AND user_id NOT IN (SELECT user_id FROM messages WHERE alert_id = $1
				AND ((step = $2 AND response = 'decline') OR response = 'accept'))`,
			a.ID, a.Step).Scan(&waiting); err != nil {
			return fmt.Errorf("count answers: %w", err)
		}
		if waiting > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET state = 'cancelled' WHERE alert_id = $1 AND state = 'pending'`,
			a.ID); err != nil {
			return fmt.Errorf("cancel timers: %w", err)
		}
		reason := "declined"
		if response == ResponseAccept {
			reason = "more_accepts_required"
		}
		pctx, held := e.HoldPages(ctx) // the next step's devices locked in order
		if wake, err = e.page(pctx, tx, a, a.Step+1, now, reason); err != nil {
			return err
		}
		return held.Flush(pctx, tx)
	})
	if err != nil {
		return Answer{}, err
	}
	e.waker.WakeDevices(wake)
	return ans, nil
}

// acceptsRequired returns how many distinct users must accept the alert:
// the value fixed when its escalation started, 1 for alerts started before
// multi-accept existed.
func acceptsRequired(ctx context.Context, q Queryer, alertID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT required FROM alert_acceptance WHERE alert_id = $1`, alertID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("accepts required: %w", err)
	}
	return max(n, 1), nil
}

// fixAcceptsRequired records, as the alert's escalation starts, how many
// accepts its policy (the one by_priority picks, as oncall.PolicyFor
// returned it) requires.
func fixAcceptsRequired(ctx context.Context, tx Queryer, a *routing.Alert, policy oncall.Policy) error {
	n := policy.AcceptsRequired
	if n <= 1 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO alert_acceptance (alert_id, required) VALUES ($1, $2)
		ON CONFLICT (alert_id) DO NOTHING`, a.ID, n); err != nil {
		return fmt.Errorf("accepts required: %w", err)
	}
	return nil
}

// acceptedUsers returns the distinct users who accepted the alert.
func acceptedUsers(ctx context.Context, q Queryer, alertID string) ([]string, error) {
	return queryStrings(ctx, q, "accepted users", `SELECT DISTINCT user_id FROM messages
		WHERE alert_id = $1 AND response = 'accept' ORDER BY user_id`, alertID)
}

// lockPendingTimers locks an alert's pending timers in id order.
func lockPendingTimers(ctx context.Context, tx *sql.Tx, alertID, forUpdate string) error {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM escalation_timers WHERE alert_id = $1 AND state = 'pending'
		ORDER BY id`+forUpdate, alertID)
	if err != nil {
		return fmt.Errorf("lock timers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}

// Delivered records that a device holds every message up to seq.
func (e *Engine) Delivered(ctx context.Context, deviceID string, seq int64) error {
	now := e.now()
	return e.db.InTx(ctx, func(tx *sql.Tx) error {
		p := e.db.PipeIn(tx)
		entries := queueDelivered(p, deviceID, seq, now)
		if err := p.Flush(ctx); err != nil {
			return err
		}
		return appendDelivered(ctx, tx, entries())
	})
}

// queueDelivered queues, on p, the two statements that record a device's
// acknowledgement of every message up to seq, whatever their number. The
// messages are updated before the device row, the order in which a
// response locks them (its message, then the device it pages), so the two
// cannot deadlock. Once p is flushed, the function returned gives the
// audit records of the messages delivered, in sequence order.
func queueDelivered(p *db.Pipe, deviceID string, seq int64, now time.Time) func() []audit.Entry {
	type msg struct {
		seq                  int64
		id, alertID, eventID string
	}
	var msgs []msg
	// A message that expired undelivered was never sent (the gateway
	// skips it): an acknowledgement past its sequence does not deliver it.
	p.Query(func(rows db.Rows) error {
		for rows.Next() {
			var m msg
			var eventID sql.NullString
			if err := rows.Scan(&m.seq, &m.id, &m.alertID, &eventID); err != nil {
				return fmt.Errorf("delivered: %w", err)
			}
			m.eventID = eventID.String
			msgs = append(msgs, m)
		}
		return nil
	}, `UPDATE messages SET delivered_at = $1
		WHERE device_id = $2 AND seq <= $3 AND delivered_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
		RETURNING seq, id, alert_id, (SELECT a.event_id FROM alerts a WHERE a.id = messages.alert_id)`,
		now.UnixMicro(), deviceID, seq)
	// A device cannot acknowledge past what was sent to it.
	p.Exec(`UPDATE devices SET acked_seq = CASE WHEN $1 < next_seq THEN $1 ELSE next_seq END,
		last_seen_at = $2 WHERE id = $3 AND acked_seq < CASE WHEN $1 < next_seq THEN $1 ELSE next_seq END`,
		seq, now.UnixMicro(), deviceID)
	return func() []audit.Entry {
		slices.SortFunc(msgs, func(a, b msg) int { return cmp.Compare(a.seq, b.seq) })
		entries := make([]audit.Entry, len(msgs))
		for i, m := range msgs {
			entries[i] = audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID,
				ActorRole: "device", Action: "message.delivered", ObjectType: "message", ObjectID: m.id,
				CorrelationID: m.eventID, Detail: map[string]any{"alert_id": m.alertID}}
		}
		return entries
	}
}

// appendDelivered audits what queueDelivered recorded.
func appendDelivered(ctx context.Context, tx audit.Execer, entries []audit.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	return audit.AppendBatch(ctx, tx, entries)
}

// Read records that a message was opened on its device.
func (e *Engine) Read(ctx context.Context, deviceID, messageID string) error {
	now := e.now()
	return e.db.InTx(ctx, func(tx *sql.Tx) error { return read(ctx, tx, deviceID, messageID, now) })
}

// read is Read within tx.
func read(ctx context.Context, tx *sql.Tx, deviceID, messageID string, now time.Time) error {
	var alertID, eventID string
	var readAt sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT m.alert_id, a.event_id, m.read_at FROM messages m JOIN alerts a ON a.id = m.alert_id
		WHERE m.id = $1 AND m.device_id = $2`, messageID, deviceID).Scan(&alertID, &eventID, &readAt)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotYours
	}
	if err != nil || readAt.Valid {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE messages SET read_at = $1, delivered_at = COALESCE(delivered_at, $1) WHERE id = $2`,
		now.UnixMicro(), messageID); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID,
		ActorRole: "device", Action: "message.read", ObjectType: "message", ObjectID: messageID,
		CorrelationID: eventID, Detail: map[string]any{"alert_id": alertID}})
	return err
}

// Envelope is a stored message as the gateway sends it: the sealed body
// and the lock-screen line, which never carries PHI.
type Envelope struct {
	Type      string    `json:"type"` // "message"
	Seq       int64     `json:"seq"`
	MessageID string    `json:"message_id"`
	AlertID   string    `json:"alert_id"`
	Priority  string    `json:"priority"`
	LockText  string    `json:"lock_text"`
	Sealed    []byte    `json:"sealed"` // base64 in JSON: HPKE enc || ciphertext
	SentAt    time.Time `json:"sent_at"`
	expiresAt time.Time // when the gateway stops sending it and devices delete it
}

// PendingMessages returns what the gateway may still send a device: its
// messages with seq > after that have not expired by now, in order. An
// expired message is never sent.
func PendingMessages(ctx context.Context, q Queryer, deviceID string, after int64, now time.Time, limit int) ([]Envelope, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, id, alert_id, priority, lock_text, sealed, created_at, expires_at FROM messages
		WHERE device_id = $1 AND seq > $2 AND (expires_at IS NULL OR expires_at > $3) AND purged_at IS NULL
		ORDER BY seq LIMIT $4`, deviceID, after, now.UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("pending messages: %w", err)
	}
	defer rows.Close()
	var out []Envelope
	for rows.Next() {
		ev := Envelope{Type: "message"}
		var created int64
		var expires sql.NullInt64
		if err := rows.Scan(&ev.Seq, &ev.MessageID, &ev.AlertID, &ev.Priority, &ev.LockText, &ev.Sealed, &created, &expires); err != nil {
			return nil, fmt.Errorf("pending messages: %w", err)
		}
		ev.SentAt = time.UnixMicro(created).UTC()
		if expires.Valid {
			ev.expiresAt = time.UnixMicro(expires.Int64)
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

// MessagesAfter returns a device's messages with seq > after, in order.
func MessagesAfter(ctx context.Context, q Queryer, deviceID string, after int64, limit int) ([]Envelope, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, id, alert_id, priority, lock_text, sealed, created_at FROM messages
		WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, deviceID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("messages after: %w", err)
	}
	defer rows.Close()
	var out []Envelope
	for rows.Next() {
		ev := Envelope{Type: "message"}
		var created int64
		if err := rows.Scan(&ev.Seq, &ev.MessageID, &ev.AlertID, &ev.Priority, &ev.LockText, &ev.Sealed, &created); err != nil {
			return nil, fmt.Errorf("messages after: %w", err)
		}
		ev.SentAt = time.UnixMicro(created).UTC()
		out = append(out, ev)
	}
	return out, rows.Err()
}

// HandOff moves open, unaccepted alerts to the people who now hold their
// current step's roles: for each open alert whose policy has handoff on,
// the current step is resolved again at now, and every user it names who
// was not paged at this step yet is paged (audited as alert.handed_off).
// The step's pending timer is pushed back so the incoming holder gets the
// step's full delay. Earlier recipients keep their message and may still
// accept. Each alert is handled in its own transaction; running it on
// several nodes at once pages nobody twice (the alert row is locked and the
// messages already sent are checked). It returns how many alerts moved.
func (e *Engine) HandOff(ctx context.Context, now time.Time) (int, error) {
	var open []string
	rows, err := e.db.QueryContext(ctx, `SELECT id FROM alerts WHERE state = 'open' ORDER BY created_at, id`)
	if err != nil {
		return 0, fmt.Errorf("handoff: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("handoff: %w", err)
		}
		open = append(open, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("handoff: %w", err)
	}
	moved := 0
	for _, id := range open {
		var wake []string
		err := e.db.InTx(ctx, func(tx *sql.Tx) (err error) {
			wake, err = e.handOff(ctx, tx, id, now)
			return err
		})
		if err != nil {
			return moved, err
		}
		if len(wake) > 0 {
			moved++
			e.waker.WakeDevices(wake)
		}
	}
	return moved, nil
}

func (e *Engine) handOff(ctx context.Context, tx *sql.Tx, alertID string, now time.Time) ([]string, error) {
	// Lock order is timers, then alert, as in FireDue and Respond.
	if err := lockPendingTimers(ctx, tx, alertID, e.db.ForUpdate()); err != nil {
		return nil, err
	}
	a, err := routing.GetAlert(ctx, tx, e.sealer, alertID, e.db.ForUpdate())
	if err != nil || a.State != routing.StateOpen {
		return nil, err
	}
	policy, err := oncall.PolicyFor(ctx, tx, a.PolicyID, a.Priority)
	if err != nil || !policy.Handoff {
		return nil, err
	}
	policy = routing.EffectivePolicy(policy, a)
	step := policy.Steps[policy.StepAt(a.Step)]
	if !step.HasRosterTargets() {
		return nil, nil
	}
	users, err := oncall.ResolveStep(ctx, tx, step, a.Unit, now)
	if err != nil {
		return nil, err
	}
	paged, err := pagedAt(ctx, tx, a.ID, a.Step)
	if err != nil {
		return nil, err
	}
	incoming := slices.DeleteFunc(slices.Clone(users), func(u string) bool { return slices.Contains(paged, u) })
	targets, err := devicesOf(ctx, tx, incoming)
	if err != nil || len(targets) == 0 {
		return nil, err
	}
	var wake []string
	for _, d := range targets {
		if err := e.send(ctx, tx, a, d, a.Step, now, nil); err != nil {
			return nil, err
		}
		wake = append(wake, d.ID)
	}
	due := now.Add(time.Duration(step.DelaySeconds) * time.Second).UnixMicro()
	if _, err := tx.ExecContext(ctx, `UPDATE escalation_timers SET due_at = $1 WHERE alert_id = $2 AND step = $3
		AND state = 'pending' AND due_at < $1`, due, a.ID, a.Step); err != nil {
		return nil, fmt.Errorf("handoff timer: %w", err)
	}
	if err := routing.SetAlertState(ctx, tx, a.ID, routing.StateOpen, a.Step, "", now); err != nil {
		return nil, err
	}
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "escalation",
		Action: "alert.handed_off", ObjectType: "alert", ObjectID: a.ID, CorrelationID: a.EventID,
		Detail: map[string]any{"alert_id": a.ID, "step": a.Step, "policy_id": policy.ID,
			"policy_step": policy.StepAt(a.Step), "from_users": paged, "to_users": incoming}})
	return wake, err
}

// pagedAt returns the users already sent the alert at a rung.
func pagedAt(ctx context.Context, tx *sql.Tx, alertID string, rung int) ([]string, error) {
	return queryStrings(ctx, tx, "paged users", `SELECT DISTINCT user_id FROM messages
		WHERE alert_id = $1 AND step = $2 ORDER BY user_id`, alertID, rung)
}

// RunHandoffs checks for shift changes every `every` until ctx ends.
func (e *Engine) RunHandoffs(ctx context.Context, every time.Duration) {
	loop.Every(ctx, every, 30*time.Second, func(ctx context.Context) {
		if _, err := e.HandOff(ctx, e.now()); err != nil && ctx.Err() == nil {
			e.log.Error("alert handoff", "error", err)
		}
	})
}
