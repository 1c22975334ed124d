package ingest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
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

// Store keeps events durably, sealed, with their dedup key.
type Store struct {
	sealer     Sealer
	skipLocked string // the dialect's row-claiming clause, or ""
}

// NewStore returns a store; skipLocked is " FOR UPDATE SKIP LOCKED" on
// PostgreSQL and "" on SQLite.
func NewStore(sealer Sealer, skipLocked string) *Store {
	return &Store{sealer: sealer, skipLocked: skipLocked}
}

// Prior is what a repeated message is answered with: the id and ACK code of
// the first copy.
type Prior struct {
	EventID string
	AckCode string
}

// FindPrior returns the earlier copy of (source, sourceID), if any.
func (s *Store) FindPrior(ctx context.Context, tx Tx, source, sourceID string) (*Prior, error) {
	var p Prior
	err := tx.QueryRowContext(ctx, `SELECT id, ack_code FROM events WHERE source = $1 AND source_id = $2`,
		source, sourceID).Scan(&p.EventID, &p.AckCode)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find prior event: %w", err)
	}
	return &p, nil
}

// Insert stores ev (and the raw message it came from) as pending. The caller
// commits tx and only then acknowledges. A concurrent copy of the same
// message fails on the unique key; the caller then answers from FindPrior.
func (s *Store) Insert(ctx context.Context, tx Tx, id string, ev *Event, raw []byte, ackCode string, now time.Time) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	var sealedRaw []byte
	if raw != nil {
		sealedRaw = s.sealer.Seal(raw, []byte(id+"/raw"))
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO events (id, source, source_id, kind, received_at, payload, raw, ack_code, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		id, ev.Source, ev.SourceID, string(ev.Kind), now.UnixMicro(), s.sealer.Seal(payload, []byte(id)),
		sealedRaw, ackCode, StatePending)
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// Reject keeps a message that was refused, sealed, for an analyst to inspect.
func (s *Store) Reject(ctx context.Context, tx Tx, id, source string, code int, reason string, raw []byte, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rejected_messages (id, source, received_at, error_code, error_text, raw)
		VALUES ($1, $2, $3, $4, $5, $6)`, id, source, now.UnixMicro(), code, reason, s.sealer.Seal(raw, []byte(id)))
	if err != nil {
		return fmt.Errorf("keep rejected message: %w", err)
	}
	return nil
}

// Stored is an event read back from the store.
type Stored struct {
	ID         string
	ReceivedAt time.Time
	Event      Event
}

// ClaimNext returns the oldest pending event, locked for this transaction on
// PostgreSQL so another node skips it; nil when none is pending.
func (s *Store) ClaimNext(ctx context.Context, tx Tx) (*Stored, error) {
	var st Stored
	var received int64
	var payload []byte
	err := tx.QueryRowContext(ctx, `SELECT id, received_at, payload FROM events WHERE state = $1
		ORDER BY received_at, id LIMIT 1`+s.skipLocked, StatePending).Scan(&st.ID, &received, &payload)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim event: %w", err)
	}
	st.ReceivedAt = time.UnixMicro(received)
	plain, err := s.sealer.Open(payload, []byte(st.ID))
	if err != nil {
		return &st, fmt.Errorf("open event %s: %w", st.ID, err)
	}
	if err := json.Unmarshal(plain, &st.Event); err != nil {
		return &st, fmt.Errorf("decode event %s: %w", st.ID, err)
	}
	return &st, nil
}

// SetState marks an event processed or failed.
func (s *Store) SetState(ctx context.Context, tx Tx, id, state string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET state = $1, processed_at = $2 WHERE id = $3`, state, now.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("set event state: %w", err)
	}
	return nil
}
