package messaging

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/clarion-health/clarion/internal/db"
)

// The gateway reads what its devices are owed in one query per wake-up,
// for every device woken since the last one, instead of one query (or
// two) per connection: a burst of alerts to many devices on a node costs
// one round trip, not one per device. A node-wide sweep (every
// sweepEvery) covers a wake-up lost on the bus, for every connection at
// once, instead of a timer per connection.

// sweepEvery is how often, by default, every connection of the node is
// looked at regardless of wake-ups (WithSweep).
const sweepEvery = 5 * time.Second

// fetchChunk bounds the connections one fetch query covers.
const fetchChunk = 500

// gconn is one device connection as the node's fetcher sees it.
type gconn struct {
	deviceID string
	notify   chan struct{} // capacity 1: the mailbox has something

	mu      sync.Mutex
	fetched int64 // every message up to this sequence was handed over or is not to be sent
	box     []Envelope
	wipe    *string // set when the device is no longer active
	busy    bool    // the mailbox is being written: fetch nothing more for it yet
	more    bool    // fetch again once the mailbox is written
}

// fetcher serves every connection of a gateway.
type fetcher struct {
	mu    sync.Mutex
	conns map[string]map[*gconn]struct{}
	dirty map[*gconn]struct{}
	kick  chan struct{} // capacity 1
	once  sync.Once
}

func newFetcher() *fetcher {
	return &fetcher{conns: map[string]map[*gconn]struct{}{}, dirty: map[*gconn]struct{}{}, kick: make(chan struct{}, 1)}
}

func (f *fetcher) signal() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fetcher) add(c *gconn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.conns[c.deviceID]
	if m == nil {
		m = map[*gconn]struct{}{}
		f.conns[c.deviceID] = m
	}
	m[c] = struct{}{}
}

func (f *fetcher) remove(c *gconn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m := f.conns[c.deviceID]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(f.conns, c.deviceID)
		}
	}
	delete(f.dirty, c)
}

// wake marks a device's connections to be looked at by the next fetch.
func (f *fetcher) wake(deviceID string) {
	f.mu.Lock()
	for c := range f.conns[deviceID] {
		f.dirty[c] = struct{}{}
	}
	f.mu.Unlock()
	f.signal()
}

// wakeConn marks one connection.
func (f *fetcher) wakeConn(c *gconn) {
	f.mu.Lock()
	if _, ok := f.conns[c.deviceID][c]; ok {
		f.dirty[c] = struct{}{}
	}
	f.mu.Unlock()
	f.signal()
}

// sweep marks every connection.
func (f *fetcher) sweep() {
	f.mu.Lock()
	for _, m := range f.conns {
		for c := range m {
			f.dirty[c] = struct{}{}
		}
	}
	f.mu.Unlock()
	f.signal()
}

// take returns the marked connections whose mailbox is free, with their
// cursors; a busy one is fetched for again once its mailbox is written.
func (f *fetcher) take() ([]*gconn, []int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cs []*gconn
	var after []int64
	for c := range f.dirty {
		delete(f.dirty, c)
		c.mu.Lock()
		if c.busy {
			c.more = true
		} else {
			cs = append(cs, c)
			after = append(after, c.fetched)
		}
		c.mu.Unlock()
	}
	return cs, after
}

// run fetches for marked connections until ctx ends.
func (g *Gateway) runFetcher(ctx context.Context) {
	f := g.fetch
	defer g.fetchConn.release()
	sweep := time.NewTicker(g.sweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			f.sweep()
			continue
		case <-f.kick:
		}
		cs, after := f.take()
		for lo := 0; lo < len(cs); lo += fetchChunk {
			hi := min(lo+fetchChunk, len(cs))
			if err := g.fetchFor(ctx, cs[lo:hi], after[lo:hi]); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Error("gateway fetch", "connections", hi-lo, "error", err)
				g.fetchConn.release() // a fresh connection next time
				// Left to the next wake-up or sweep; back off briefly rather
				// than spin on a failing database.
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
}

// fetchQuery builds fetchFor's statement: $1 is now, $2 the limit, then
// the connections (index, device id, cursor). On PostgreSQL they go as
// three arrays, and the lateral joins, fenced by OFFSET 0 so the planner
// cannot flatten them, read each connection's messages by its own index
// lookup (planned once, on fetchConn). SQLite, which has no arrays, reads
// the connections from a VALUES list.
func fetchQuery(dialect db.Dialect, cs []*gconn, after []int64, now, limit int64) (string, []any) {
	const cols = `SELECT w.i, d.state, COALESCE(d.wipe_reason, ''), d.next_seq,
		m.seq, m.id, m.alert_id, m.priority, m.lock_text, m.sealed, m.created_at, m.expires_at`
	// COALESCE(purged_at, 0) = 0 is purged_at IS NULL (a purge time is
	// never 0) in a form messages_expiry cannot serve: that index, which
	// begins with purged_at, once made the plan read every unpurged
	// message for each device.
	const pending = `m.device_id = w.device AND m.seq > w.after AND m.seq <= w.after + $2
		AND (m.expires_at IS NULL OR m.expires_at > $1) AND COALESCE(m.purged_at, 0) = 0`
	args := []any{now, limit}
	if dialect == db.Postgres {
		idx, devs := make([]int64, len(cs)), make([]string, len(cs))
		for i, c := range cs {
			idx[i], devs[i] = int64(i), c.deviceID
		}
		return cols + `
		FROM unnest($3::bigint[], $4::text[], $5::bigint[]) AS w (i, device, after)
		CROSS JOIN LATERAL (SELECT state, wipe_reason, next_seq FROM devices WHERE id = w.device OFFSET 0) d
		LEFT JOIN LATERAL (SELECT * FROM messages m WHERE ` + pending + ` OFFSET 0) m ON d.state = 'active'
		ORDER BY w.i, m.seq`, append(args, idx, devs, after)
	}
	var q strings.Builder
	q.WriteString(cols + `
		FROM (SELECT column1 AS i, column2 AS device, column3 AS after FROM (VALUES `)
	for i, c := range cs {
		if i > 0 {
			q.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&q, "(CAST($%d AS BIGINT), CAST($%d AS TEXT), CAST($%d AS BIGINT))", n+1, n+2, n+3)
		args = append(args, i, c.deviceID, after[i])
	}
	q.WriteString(`)) AS w
		JOIN devices d ON d.id = w.device
		LEFT JOIN messages m ON d.state = 'active' AND ` + pending + `
		ORDER BY w.i, m.seq`)
	return q.String(), args
}

// fetchFor reads, in one query, each connection's device state and its
// next sendable messages after its cursor (at most g.batch, and 100), and
// hands them to the connections.
func (g *Gateway) fetchFor(ctx context.Context, cs []*gconn, after []int64) error {
	limit := int64(min(g.batch, 100))
	now := g.engine.now()
	query, args := fetchQuery(g.db.Dialect, cs, after, now.UnixMicro(), limit)
	rows, err := g.fetchConn.query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("pending messages: %w", err)
	}
	defer rows.Close()
	type found struct {
		seen    bool
		active  bool
		reason  string
		nextSeq int64
		msgs    []Envelope
	}
	res := make([]found, len(cs))
	for rows.Next() {
		var i int
		var state, reason string
		var next int64
		var seq, created, expires sql.NullInt64
		var id, alertID, priority, lockText sql.NullString
		var sealed []byte
		if err := rows.Scan(&i, &state, &reason, &next, &seq, &id, &alertID, &priority, &lockText, &sealed,
			&created, &expires); err != nil {
			return fmt.Errorf("pending messages: %w", err)
		}
		if i < 0 || i >= len(res) {
			return fmt.Errorf("pending messages: connection index %d out of range", i)
		}
		r := &res[i]
		r.seen, r.active, r.reason, r.nextSeq = true, state == DeviceActive, reason, next
		if !seq.Valid {
			continue
		}
		ev := Envelope{Type: "message", Seq: seq.Int64, MessageID: id.String, AlertID: alertID.String,
			Priority: priority.String, LockText: lockText.String, Sealed: sealed, SentAt: time.UnixMicro(created.Int64).UTC()}
		if expires.Valid {
			ev.expiresAt = time.UnixMicro(expires.Int64)
		}
		r.msgs = append(r.msgs, ev)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pending messages: %w", err)
	}
	for i, c := range cs {
		r := res[i]
		if !r.seen {
			continue // the device is gone; its connection ends on its next frame
		}
		c.mu.Lock()
		switch {
		case !r.active:
			reason := r.reason
			c.wipe = &reason
		default:
			c.box = append(c.box, r.msgs...)
			// Everything up to here was read: sent now, or expired, or purged
			// (never to be sent). A sequence beyond next_seq does not exist
			// yet; messages are numbered in commit order, so none below it
			// can appear later.
			c.fetched = max(c.fetched, min(after[i]+limit, r.nextSeq))
			if r.nextSeq > c.fetched {
				c.more = true
			}
		}
		handed := len(c.box) > 0 || c.wipe != nil
		if handed {
			c.busy = true
		}
		c.mu.Unlock()
		if handed {
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// drain takes what the fetcher handed to c: messages, and the order to
// wipe when the device is no longer active.
func (c *gconn) drain() ([]Envelope, *string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	box, wipe := c.box, c.wipe
	c.box, c.wipe = nil, nil
	return box, wipe
}

// written tells the fetcher c's mailbox was written: it may fetch for c
// again, and does at once if c was woken meanwhile or has more waiting.
func (f *fetcher) written(c *gconn) {
	c.mu.Lock()
	c.busy = false
	again := c.more
	c.more = false
	c.mu.Unlock()
	if again {
		f.wakeConn(c)
	}
}

// fetchConn is the connection the fetcher reads through. On PostgreSQL it
// is one of its own, set up so that the fetch is planned once and well:
// a generic plan (PostgreSQL's choice for a statement prepared on a
// connection, after a few executions) made while messages was nearly
// empty scanned every message for each device, 0.1-0.5 s a fetch once
// 5,000 were stored; planned afresh at each execution instead, planning
// took three quarters of the fetch's time in the load test. With
// sequential scans off, on this connection only, the generic plan is the
// per-device index lookup whatever the tables' sizes when it is made, and
// it is made once for the connection's life.
type fetchConn struct {
	db   *db.DB
	conn *sql.Conn // PostgreSQL: held from the first fetch to release
}

// fetchSetup is what the fetch connection is set to, each undone by
// release before the connection goes back to the pool.
var fetchSetup = [][2]string{
	{"SET enable_seqscan = off", "RESET enable_seqscan"},
	{"SET plan_cache_mode = force_generic_plan", "RESET plan_cache_mode"},
}

func (f *fetchConn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if f.db.Dialect != db.Postgres {
		return f.db.QueryContext(ctx, query, args...)
	}
	if f.conn == nil {
		c, err := f.db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		f.conn = c
		for _, s := range fetchSetup {
			if _, err := c.ExecContext(ctx, s[0]); err != nil {
				f.release()
				return nil, err
			}
		}
	}
	return f.conn.QueryContext(ctx, query, args...)
}

// release gives the connection back, its settings reset; one that cannot
// be reset is closed instead.
func (f *fetchConn) release() {
	c := f.conn
	if c == nil {
		return
	}
	f.conn = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range fetchSetup {
		if _, err := c.ExecContext(ctx, s[1]); err != nil {
			_ = c.Raw(func(any) error { return driver.ErrBadConn }) // discarded, not pooled
			break
		}
	}
	_ = c.Close()
}
