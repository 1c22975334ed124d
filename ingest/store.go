package ingest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Event states in the store.
const (
	StatePending   = "pending"   // committed and acknowledged, not yet routed
	StateProcessed = "processed" // routed
	StateFailed    = "failed"    // routing failed; kept for inspection
)

// Sealer encrypts data at rest; the event store never writes PHI in clear.
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

// Tx is the transaction the store writes in (a *sql.Tx).
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Queue sends statements to the database together, in one round trip on
// PostgreSQL (*db.Pipe is one): the intakes write a batch of messages with
// a couple of round trips whatever its size.
type Queue interface {
	Exec(query string, args ...any)
	Query(scan func(Rows) error, query string, args ...any)
}

// Rows is what a queued query's scan function reads.
type Rows = interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Store keeps events durably, sealed, with their dedup key.
type Store struct {
	sealer   Sealer
	postgres bool // claims by partition, under advisory locks (SQLite has one writer)
}

// NewStore returns a store; skipLocked is the database's row-claiming
// clause (db.DB.SkipLocked): not empty on PostgreSQL, where several routing
// transactions claim at once.
func NewStore(sealer Sealer, skipLocked string) *Store {
	return &Store{sealer: sealer, postgres: skipLocked != ""}
}

// Prior is what a repeated message is answered with: the id and ACK code of
// the first copy, and when it arrived.
type Prior struct {
	EventID    string
	AckCode    string
	ReceivedAt time.Time
}

// ClaimDedup records that (source, sourceID) is answered by eventID with
// ackCode. It returns nil when the key was free or its last use arrived
// before cutoff (the dedup window has passed: a reused control id is a new
// message), and the earlier answer when a copy arrived at or after cutoff.
// On PostgreSQL a concurrent claim of the same key waits for the first
// transaction and then sees its row.
func (s *Store) ClaimDedup(ctx context.Context, tx Tx, source, sourceID, eventID, ackCode string, now, cutoff time.Time) (*Prior, error) {
	var claimed string
	err := tx.QueryRowContext(ctx, `INSERT INTO ingest_dedup (source, source_id, event_id, ack_code, received_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (source, source_id) DO UPDATE SET event_id = excluded.event_id,
			ack_code = excluded.ack_code, received_at = excluded.received_at
		WHERE ingest_dedup.received_at < $6
		RETURNING event_id`, source, sourceID, eventID, ackCode, now.UnixMicro(), cutoff.UnixMicro()).Scan(&claimed)
	if err == nil {
		return nil, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("claim dedup key: %w", err)
	}
	var p Prior
	var at int64
	err = tx.QueryRowContext(ctx, `SELECT event_id, ack_code, received_at FROM ingest_dedup
		WHERE source = $1 AND source_id = $2`, source, sourceID).Scan(&p.EventID, &p.AckCode, &at)
	if err != nil {
		return nil, fmt.Errorf("find prior event: %w", err)
	}
	p.ReceivedAt = time.UnixMicro(at)
	return &p, nil
}

// PurgeDedup forgets dedup keys that arrived before cutoff.
func (s *Store) PurgeDedup(ctx context.Context, tx Tx, cutoff time.Time) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM ingest_dedup WHERE received_at < $1`, cutoff.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("purge dedup keys: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Insert stores ev (and the raw message it came from) as pending. The caller
// commits tx and only then acknowledges; the dedup key is claimed apart,
// with ClaimDedup, in the same transaction.
func (s *Store) Insert(ctx context.Context, tx Tx, id string, ev *Event, raw []byte, ackCode string, now time.Time) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	var sealedRaw []byte
	if raw != nil {
		sealedRaw = s.sealer.Seal(raw, []byte(id+"/raw"))
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO events (id, source, source_id, kind, received_at, payload, raw, ack_code, state, route_part)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		id, ev.Source, ev.SourceID, string(ev.Kind), now.UnixMicro(), s.sealer.Seal(payload, []byte(id)),
		sealedRaw, ackCode, StatePending, routePart(ev))
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// routePart is the route_part column of ev: its partition, or NULL for a
// barrier.
func routePart(ev *Event) any {
	if p := ev.RoutePart(); p >= 0 {
		return p
	}
	return nil
}

// Rejected is a refused message, kept sealed for an analyst to inspect.
// Every field but Raw is free of PHI: Reason is a fixed description that
// locates the problem without quoting values.
type Rejected struct {
	ID        string
	Source    string // MSH-3^MSH-4 as claimed, "" when unreadable
	ControlID string // MSH-10, "" when unreadable
	Identity  string // the sender identity bound to the connection, if any
	AckCode   string // the answer sent: AE, AR, CE or CR
	Code      int    // HL7 table 0357
	Reason    string
	Raw       []byte
	At        time.Time
}

// Reject keeps a message that was refused, sealed, for an analyst to inspect.
func (s *Store) Reject(ctx context.Context, tx Tx, r Rejected) error {
	if _, err := tx.ExecContext(ctx, rejectSQL, s.rejectArgs(r)...); err != nil {
		return fmt.Errorf("keep rejected message: %w", err)
	}
	return nil
}

// QueueReject is Reject on a queue.
func (s *Store) QueueReject(q Queue, r Rejected) { q.Exec(rejectSQL, s.rejectArgs(r)...) }

const rejectSQL = `INSERT INTO rejected_messages (id, source, control_id, identity, ack_code,
	received_at, error_code, error_text, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`

func (s *Store) rejectArgs(r Rejected) []any {
	return []any{r.ID, r.Source, r.ControlID, r.Identity, r.AckCode, r.At.UnixMicro(), r.Code, r.Reason,
		s.sealer.Seal(r.Raw, []byte(r.ID))}
}

// Stored is an event read back from the store.
type Stored struct {
	ID         string
	ReceivedAt time.Time
	Event      Event
}

// openEvent unseals and decodes a stored event's payload into st.Event.
func (s *Store) openEvent(st *Stored, payload []byte) error {
	plain, err := s.sealer.Open(payload, []byte(st.ID))
	if err != nil {
		return fmt.Errorf("open event %s: %w", st.ID, err)
	}
	if err := json.Unmarshal(plain, &st.Event); err != nil {
		return fmt.Errorf("decode event %s: %w", st.ID, err)
	}
	return nil
}

// AllParts lists every routing partition: what a worker routing all of a
// node's events claims.
func AllParts() []int {
	parts := make([]int, RouteParts)
	for i := range parts {
		parts[i] = i
	}
	return parts
}

// LockParts takes, for the rest of tx, the routing partitions of parts
// that no other transaction holds (a PostgreSQL advisory lock each, in a
// key space of this schema), and returns them: the ones to pass to
// ClaimBatch. Events of one partition are thus routed one transaction at
// a time, however many workers and nodes route. SQLite has one writer:
// every partition is granted.
func (s *Store) LockParts(ctx context.Context, tx Tx, parts []int) ([]int, error) {
	if !s.postgres {
		return parts, nil
	}
	var granted string
	if err := tx.QueryRowContext(ctx, lockPartsSQL, int32s(parts)).Scan(&granted); err != nil {
		return nil, fmt.Errorf("lock routing partitions: %w", err)
	}
	return parseParts(granted)
}

// parseParts reads lockPartsSQL's answer.
func parseParts(s string) ([]int, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if s == "" {
		return nil, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("lock routing partitions: %q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// Flusher is a Queue that can send what it holds at once (*db.Pipe is).
type Flusher interface {
	Queue
	Flush(ctx context.Context) error
}

// LockAndClaim is LockParts then ClaimBatch, their two statements sent
// together on p (one round trip on PostgreSQL, p within tx): the claim,
// a statement of its own, still sees every commit made before the locks
// were granted, and reads the partitions granted from the setting the
// lock's statement left in the transaction. It returns the partitions
// granted, and the events.
func (s *Store) LockAndClaim(ctx context.Context, p Flusher, tx Tx, parts []int, limit int) ([]int, []Stored, error) {
	if !s.postgres {
		evs, err := s.ClaimBatch(ctx, tx, parts, limit)
		return parts, evs, err
	}
	var granted []int
	p.Query(func(rows Rows) error {
		if !rows.Next() {
			return errors.New("lock routing partitions: no row")
		}
		var g string
		if err := rows.Scan(&g); err != nil {
			return fmt.Errorf("lock routing partitions: %w", err)
		}
		var err error
		granted, err = parseParts(g)
		return err
	}, lockPartsSQL, int32s(parts))
	var claimed []claimedRow
	p.Query(func(rows Rows) (err error) {
		claimed, err = scanClaimedEvents(rows)
		return err
	}, claimGrantedSQL, limit)
	if err := p.Flush(ctx); err != nil {
		return nil, nil, err
	}
	if len(claimed) == 0 {
		var err error
		if claimed, err = readClaimed(tx.QueryContext(ctx, claimBarrierSQL, RouteParts)); err != nil {
			return nil, nil, err
		}
	}
	evs, err := s.openClaimed(claimed)
	return granted, evs, err
}

func int32s(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

// ClaimBatch returns up to limit pending events, oldest first, locked for
// this transaction. On SQLite (one writer, one routing worker) they are
// the oldest pending events. On PostgreSQL they are the oldest events of
// parts (partitions the caller holds, from LockParts) received before the
// oldest pending barrier (Event.RoutePart); or a barrier alone, once it
// is the oldest pending event, whatever the partitions. An event that
// cannot be opened or decoded fails the whole call: ClaimNext, one at a
// time, then names it.
func (s *Store) ClaimBatch(ctx context.Context, tx Tx, parts []int, limit int) ([]Stored, error) {
	claimed, err := s.claim(ctx, tx, parts, limit)
	if err != nil {
		return nil, err
	}
	return s.openClaimed(claimed)
}

// openClaimed opens the claimed events' payloads; one that cannot be
// opened fails the whole call.
func (s *Store) openClaimed(claimed []claimedRow) ([]Stored, error) {
	out := make([]Stored, len(claimed))
	for i, c := range claimed {
		out[i] = c.Stored
		if err := s.openEvent(&out[i], c.payload); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ClaimNext is ClaimBatch for one event; nil when none is pending. When
// the event cannot be opened, it is returned (its id set) with the error.
func (s *Store) ClaimNext(ctx context.Context, tx Tx, parts []int) (*Stored, error) {
	claimed, err := s.claim(ctx, tx, parts, 1)
	if err != nil || len(claimed) == 0 {
		return nil, err
	}
	st := claimed[0].Stored
	return &st, s.openEvent(&st, claimed[0].payload)
}

// claimedRow is a claimed event not yet opened.
type claimedRow struct {
	Stored
	payload []byte
}

// The claiming statements. claimOldestSQL's $1 is the pending state; the
// partitioned ones name it in their text, so that PostgreSQL's generic
// plans can use the partial index of pending events by partition
// (events_pending_part) whatever the backlog: a claim reads only the rows
// it returns.
const (
	claimOldestSQL = `SELECT id, received_at, payload FROM events WHERE state = $1
		ORDER BY received_at, id LIMIT $2`
	// The first pending barrier, when no event of any partition (0 to
	// $1-1) is older; another node claiming it skips it. Both reads go
	// through events_pending_part, each bounded by the barrier. The outer
	// state test is not redundant: a claim whose snapshot predates another
	// transaction's commit of this barrier finds the row updated, and
	// PostgreSQL rechecks only the outer conditions on its newest version
	// (the id's subquery keeps its old answer); without the test the
	// barrier would be claimed, and routed, twice.
	claimBarrierSQL = `SELECT id, received_at, payload FROM events e
		WHERE e.id = (SELECT id FROM events WHERE state = 'pending' AND route_part IS NULL
			ORDER BY received_at, id LIMIT 1)
		AND e.state = 'pending'
		AND NOT EXISTS (SELECT 1 FROM generate_series(0, $1::int - 1) AS p(part) CROSS JOIN LATERAL (SELECT 1 FROM events o
			WHERE o.state = 'pending' AND o.route_part = p.part AND o.received_at <= e.received_at
				AND (o.received_at, o.id) < (e.received_at, e.id) LIMIT 1) x)
		FOR UPDATE SKIP LOCKED`
	// lockPartsSQL is LockParts' statement: it leaves the partitions
	// granted in a setting of the transaction, for claimGrantedSQL, and
	// returns them as that setting reads ("{1,5,9}").
	lockPartsSQL = `SELECT set_config('` + grantedSetting + `', COALESCE(array_agg(p), '{}')::text, true)
		FROM unnest($1::int[]) AS p WHERE pg_try_advisory_xact_lock(hashtext('clarion.route_part.' || current_schema()), p)`
)

// grantedSetting holds, for the rest of a transaction, the partitions
// lockPartsSQL granted it.
const grantedSetting = "clarion.route_parts"

// claimPartsTemplate reads the oldest events of each partition (from %[1]s)
// before the first pending barrier, from the index partition by
// partition, then merged; %[2]s is the limit. No row lock: the
// partitions' advisory locks keep other claims away.
const claimPartsTemplate = `WITH b AS MATERIALIZED (SELECT received_at, id FROM events
		WHERE state = 'pending' AND route_part IS NULL ORDER BY received_at, id LIMIT 1)
	SELECT e.id, e.received_at, e.payload FROM %[1]s AS p(part)
	CROSS JOIN LATERAL (SELECT id, received_at, payload FROM events
		WHERE state = 'pending' AND route_part = p.part
			AND NOT EXISTS (SELECT 1 FROM b WHERE (b.received_at, b.id) < (events.received_at, events.id))
		ORDER BY received_at, id LIMIT %[2]s OFFSET 0) e
	ORDER BY e.received_at, e.id LIMIT %[2]s`

var (
	// claimPartsSQL claims from the partitions $1, at most $2 events.
	claimPartsSQL = fmt.Sprintf(claimPartsTemplate, "unnest($1::int[])", "$2")
	// claimGrantedSQL claims from the partitions lockPartsSQL granted the
	// transaction, at most $1 events.
	claimGrantedSQL = fmt.Sprintf(claimPartsTemplate, "unnest(current_setting('"+grantedSetting+"')::int[])", "$1")
)

func (s *Store) claim(ctx context.Context, tx Tx, parts []int, limit int) ([]claimedRow, error) {
	if !s.postgres {
		return readClaimed(tx.QueryContext(ctx, claimOldestSQL, StatePending, limit))
	}
	// The partitions' events first: any there are come before every
	// pending barrier. Only when there are none can a barrier be the
	// oldest pending event (a round trip less per batch, mostly).
	if len(parts) > 0 {
		evs, err := readClaimed(tx.QueryContext(ctx, claimPartsSQL, int32s(parts), limit))
		if err != nil || len(evs) > 0 {
			return evs, err
		}
	}
	return readClaimed(tx.QueryContext(ctx, claimBarrierSQL, RouteParts))
}

func readClaimed(rows *sql.Rows, err error) ([]claimedRow, error) {
	if err != nil {
		return nil, fmt.Errorf("claim events: %w", err)
	}
	defer rows.Close()
	return scanClaimedEvents(rows)
}

func scanClaimedEvents(rows Rows) ([]claimedRow, error) {
	var out []claimedRow
	for rows.Next() {
		var c claimedRow
		var received int64
		if err := rows.Scan(&c.ID, &received, &c.payload); err != nil {
			return nil, fmt.Errorf("claim events: %w", err)
		}
		c.ReceivedAt = time.UnixMicro(received)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim events: %w", err)
	}
	return out, nil
}

// SetStates marks events processed or failed in one statement.
func (s *Store) SetStates(ctx context.Context, tx Tx, ids []string, state string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	query, args := setStatesSQL(ids, state, now)
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("set event states: %w", err)
	}
	return nil
}

// QueueStates is SetStates on a queue.
func (s *Store) QueueStates(q Queue, ids []string, state string, now time.Time) {
	if len(ids) > 0 {
		query, args := setStatesSQL(ids, state, now)
		q.Exec(query, args...)
	}
}

func setStatesSQL(ids []string, state string, now time.Time) (string, []any) {
	args := []any{state, now.UnixMicro()}
	marks := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		marks[i] = fmt.Sprintf("$%d", i+3)
	}
	return `UPDATE events SET state = $1, processed_at = $2 WHERE id IN (` + strings.Join(marks, ",") + `)`, args
}

// SetState marks an event processed or failed.
func (s *Store) SetState(ctx context.Context, tx Tx, id, state string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET state = $1, processed_at = $2 WHERE id = $3`, state, now.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("set event state: %w", err)
	}
	return nil
}

// StateRejected is the listing state of a refused message (it lives in
// rejected_messages, not events).
const StateRejected = "rejected"

// Raw-message errors.
var (
	ErrNotFound  = errors.New("message not found")
	ErrRawPurged = errors.New("raw message purged after its retention")
)

// PurgeRaw drops the sealed raw form of accepted and rejected messages that
// arrived before cutoff; the events themselves, and the metadata of
// rejected messages, are kept.
func (s *Store) PurgeRaw(ctx context.Context, tx Tx, cutoff time.Time) (events, rejected int64, err error) {
	res, err := tx.ExecContext(ctx, `UPDATE events SET raw = NULL WHERE raw IS NOT NULL AND received_at < $1`,
		cutoff.UnixMicro())
	if err != nil {
		return 0, 0, fmt.Errorf("purge raw events: %w", err)
	}
	events, _ = res.RowsAffected()
	res, err = tx.ExecContext(ctx, `UPDATE rejected_messages SET raw = NULL WHERE raw IS NOT NULL AND received_at < $1`,
		cutoff.UnixMicro())
	if err != nil {
		return events, 0, fmt.Errorf("purge raw rejected messages: %w", err)
	}
	rejected, _ = res.RowsAffected()
	return events, rejected, nil
}

// MessageInfo is the metadata of one inbound message: no PHI.
type MessageInfo struct {
	ID         string    `json:"id"`
	State      string    `json:"state"` // pending, processed, failed or rejected
	Source     string    `json:"source"`
	ControlID  string    `json:"control_id"`
	Kind       string    `json:"kind,omitempty"`
	AckCode    string    `json:"ack_code"`
	ReceivedAt time.Time `json:"received_at"`
	ErrorCode  int       `json:"error_code,omitempty"`
	ErrorText  string    `json:"error_text,omitempty"`
	Identity   string    `json:"identity,omitempty"`
	RawKept    bool      `json:"raw_kept"`
}

// ListMessages returns the newest messages first, at most limit, in one
// state or (state "") in all of them.
func (s *Store) ListMessages(ctx context.Context, q Tx, state string, limit int) ([]MessageInfo, error) {
	var out []MessageInfo
	if state != StateRejected {
		where, args := "", []any{limit}
		if state != "" {
			where, args = "WHERE state = $2", append(args, state)
		}
		rows, err := q.QueryContext(ctx, `SELECT id, state, source, source_id, kind, ack_code, received_at,
			raw IS NOT NULL FROM events `+where+` ORDER BY received_at DESC, id DESC LIMIT $1`, args...)
		if err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		out, err = scanInfos(rows, out, func(m *MessageInfo) []any {
			return []any{&m.Kind, &m.AckCode}
		})
		if err != nil {
			return nil, err
		}
	}
	if state == "" || state == StateRejected {
		rows, err := q.QueryContext(ctx, `SELECT id, 'rejected', source, control_id, identity, ack_code, received_at,
			raw IS NOT NULL, error_code, error_text FROM rejected_messages ORDER BY received_at DESC, id DESC LIMIT $1`, limit)
		if err != nil {
			return nil, fmt.Errorf("list rejected messages: %w", err)
		}
		var err2 error
		out, err2 = scanRejected(rows, out)
		if err2 != nil {
			return nil, err2
		}
	}
	slices.SortStableFunc(out, func(a, b MessageInfo) int {
		if c := b.ReceivedAt.Compare(a.ReceivedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func scanInfos(rows *sql.Rows, out []MessageInfo, extra func(*MessageInfo) []any) ([]MessageInfo, error) {
	defer rows.Close()
	for rows.Next() {
		var m MessageInfo
		var at int64
		ex := extra(&m)
		dest := []any{&m.ID, &m.State, &m.Source, &m.ControlID, ex[0], ex[1], &at, &m.RawKept}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan message: %w", err)
		}
		m.ReceivedAt = time.UnixMicro(at).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return out, nil
}

func scanRejected(rows *sql.Rows, out []MessageInfo) ([]MessageInfo, error) {
	defer rows.Close()
	for rows.Next() {
		var m MessageInfo
		var at int64
		if err := rows.Scan(&m.ID, &m.State, &m.Source, &m.ControlID, &m.Identity, &m.AckCode, &at,
			&m.RawKept, &m.ErrorCode, &m.ErrorText); err != nil {
			return nil, fmt.Errorf("scan rejected message: %w", err)
		}
		m.ReceivedAt = time.UnixMicro(at).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rejected messages: %w", err)
	}
	return out, nil
}

// Raw opens the sealed raw message of an accepted ("evt_…") or rejected
// ("rej_…") message. It returns ErrNotFound or ErrRawPurged.
func (s *Store) Raw(ctx context.Context, q Tx, id string) ([]byte, error) {
	query, aad := `SELECT raw FROM events WHERE id = $1`, id+"/raw"
	if strings.HasPrefix(id, "rej_") {
		query, aad = `SELECT raw FROM rejected_messages WHERE id = $1`, id
	}
	var sealed []byte
	err := q.QueryRowContext(ctx, query, id).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read raw message: %w", err)
	}
	if sealed == nil {
		return nil, ErrRawPurged
	}
	raw, err := s.sealer.Open(sealed, []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("open raw message %s: %w", id, err)
	}
	return raw, nil
}

// DedupClaim is one key ClaimDedupBatch claims for a new event.
type DedupClaim struct {
	Source, SourceID, EventID string
	At                        time.Time
}

// ClaimDedupBatch is ClaimDedup for many distinct keys in one statement
// (plus one to read each earlier answer): the result holds, in the order
// of claims, nil for a key claimed and the earlier answer for a key taken
// within window before its claim's time.
func (s *Store) ClaimDedupBatch(ctx context.Context, tx Tx, claims []DedupClaim, ackCode string, window time.Duration) ([]*Prior, error) {
	out := make([]*Prior, len(claims))
	if len(claims) == 0 {
		return out, nil
	}
	query, args := claimSQL(claims, ackCode, window)
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("claim dedup keys: %w", err)
	}
	claimed := map[string]bool{}
	err = scanClaimed(rows, claimed)
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	for i, c := range claims {
		if claimed[c.EventID] {
			continue
		}
		p, err := s.ClaimDedup(ctx, tx, c.Source, c.SourceID, c.EventID, ackCode, c.At, c.At.Add(-window))
		if err != nil {
			return nil, err
		}
		out[i] = p // a duplicate: rare, so read one at a time
	}
	return out, nil
}

// QueueClaims queues ClaimDedupBatch's statement; once sent, claimed holds
// the event ids of the claims that took their key. The others are
// duplicates: QueuePrior reads what each was answered.
func (s *Store) QueueClaims(q Queue, claims []DedupClaim, ackCode string, window time.Duration, claimed map[string]bool) {
	if len(claims) == 0 {
		return
	}
	query, args := claimSQL(claims, ackCode, window)
	q.Query(func(rows Rows) error { return scanClaimed(rows, claimed) }, query, args...)
}

// QueueGuardedClaims claims every key as QueueClaims does, in a
// statement that aborts the transaction when any of them was already
// taken (it divides by zero: PostgreSQL has no RAISE outside a function).
// A writer that expects no duplicate can then send a whole batch, COMMIT
// included, in one round trip: should a claim lose, nothing of the batch
// is kept and IsClaimLost tells the writer to redo it with QueueClaims,
// reading the earlier answers. PostgreSQL only: SQLite divides by zero
// without complaint.
func (s *Store) QueueGuardedClaims(q Queue, claims []DedupClaim, ackCode string, window time.Duration) {
	if len(claims) == 0 {
		return
	}
	query, args := claimSQL(claims, ackCode, window)
	// COUNT over the claims that won is one row even when none did.
	q.Exec(fmt.Sprintf(`WITH won AS (%s) SELECT 1 / (COUNT(*) / $%d) FROM won`, query, len(args)+1),
		append(args, len(claims))...)
}

// IsClaimLost reports whether err is QueueGuardedClaims' abort.
func IsClaimLost(err error) bool {
	var coder interface{ SQLState() string }
	return errors.As(err, &coder) && coder.SQLState() == "22012" // division_by_zero
}

// QueuePrior queues the read of the answer a dedup key was given; once
// sent, p holds it.
func (s *Store) QueuePrior(q Queue, source, sourceID string, p *Prior) {
	q.Query(func(rows Rows) error {
		if !rows.Next() {
			return fmt.Errorf("find prior event: %w", sql.ErrNoRows)
		}
		var at int64
		if err := rows.Scan(&p.EventID, &p.AckCode, &at); err != nil {
			return fmt.Errorf("find prior event: %w", err)
		}
		p.ReceivedAt = time.UnixMicro(at)
		return nil
	}, `SELECT event_id, ack_code, received_at FROM ingest_dedup WHERE source = $1 AND source_id = $2`, source, sourceID)
}

// claimSQL claims every key in one upsert that takes a free key, or one
// whose last use is older than window before the claim, and returns the
// event ids of the claims that won.
func claimSQL(claims []DedupClaim, ackCode string, window time.Duration) (string, []any) {
	var q strings.Builder
	q.WriteString(`INSERT INTO ingest_dedup (source, source_id, event_id, ack_code, received_at) VALUES `)
	args := []any{window.Microseconds(), ackCode}
	for i, c := range claims {
		if i > 0 {
			q.WriteByte(',')
		}
		n := len(args)
		fmt.Fprintf(&q, "($%d, $%d, $%d, $2, $%d)", n+1, n+2, n+3, n+4)
		args = append(args, c.Source, c.SourceID, c.EventID, c.At.UnixMicro())
	}
	q.WriteString(` ON CONFLICT (source, source_id) DO UPDATE SET event_id = excluded.event_id,
		ack_code = excluded.ack_code, received_at = excluded.received_at
		WHERE ingest_dedup.received_at < excluded.received_at - $1
		RETURNING event_id`)
	return q.String(), args
}

func scanClaimed(rows Rows, claimed map[string]bool) error {
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("claim dedup keys: %w", err)
		}
		claimed[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("claim dedup keys: %w", err)
	}
	return nil
}

// NewEvent is one event for InsertBatch.
type NewEvent struct {
	ID    string
	Event *Event
	Raw   []byte
	At    time.Time
}

// InsertBatch is Insert for many events in one statement.
func (s *Store) InsertBatch(ctx context.Context, tx Tx, evs []NewEvent, ackCode string) error {
	if len(evs) == 0 {
		return nil
	}
	query, args, err := s.insertSQL(evs, ackCode)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}

// QueueEvents is InsertBatch on a queue.
func (s *Store) QueueEvents(q Queue, evs []NewEvent, ackCode string) error {
	if len(evs) == 0 {
		return nil
	}
	query, args, err := s.insertSQL(evs, ackCode)
	if err != nil {
		return err
	}
	q.Exec(query, args...)
	return nil
}

// insertSQL seals the events (and their raw messages) and builds one
// multi-row INSERT of them.
func (s *Store) insertSQL(evs []NewEvent, ackCode string) (string, []any, error) {
	var q strings.Builder
	q.WriteString(`INSERT INTO events (id, source, source_id, kind, received_at, payload, raw, ack_code, state, route_part) VALUES `)
	args := []any{ackCode, StatePending}
	for i, e := range evs {
		payload, err := json.Marshal(e.Event)
		if err != nil {
			return "", nil, fmt.Errorf("encode event: %w", err)
		}
		var sealedRaw []byte
		if e.Raw != nil {
			sealedRaw = s.sealer.Seal(e.Raw, []byte(e.ID+"/raw"))
		}
		if i > 0 {
			q.WriteByte(',')
		}
		n := len(args)
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $1, $2, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8)
		args = append(args, e.ID, e.Event.Source, e.Event.SourceID, string(e.Event.Kind), e.At.UnixMicro(),
			s.sealer.Seal(payload, []byte(e.ID)), sealedRaw, routePart(e.Event))
	}
	return q.String(), args, nil
}
