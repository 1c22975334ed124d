// Package audit is the append-only, hash-chained log of every step Clarion
// takes. Each record is appended inside the transaction of the change it
// records, so the log and the data never disagree. Records carry ids and
// codes, never PHI: patients appear by their opaque pseudonym.
//
// Beyond the chain the package signs checkpoints of the chain head
// (Ed25519), verifies chain and checkpoints, queries and exports the log
// (JSON lines, CSV, a FHIR R4 AuditEvent Bundle), streams it to a SIEM from
// an outbox, and purges records past the retention horizon up to a
// checkpoint. It imports only the standard library.
package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// Actor types.
const (
	ActorSystem      = "system"
	ActorIntegration = "integration"
	ActorUser        = "user"
	ActorDevice      = "device"
)

// Entry is what a caller records. SourceAddr and DeviceID are optional.
type Entry struct {
	At            time.Time
	ActorType     string
	ActorID       string
	ActorRole     string
	Action        string // e.g. "ingest.accepted", "alert.opened", "message.read"
	ObjectType    string
	ObjectID      string
	Outcome       string // "success" unless said otherwise
	CorrelationID string // ties event → alert → messages → responses
	SourceAddr    string // the caller's network address (IP or host:port), when there is one
	DeviceID      string // the device the action came from or went to, when there is one
	Detail        map[string]any
}

// Record is a stored entry with its place in the chain.
type Record struct {
	Seq           int64           `json:"seq"`
	At            time.Time       `json:"at"`
	ActorType     string          `json:"actor_type"`
	ActorID       string          `json:"actor_id"`
	ActorRole     string          `json:"actor_role"`
	Action        string          `json:"action"`
	ObjectType    string          `json:"object_type"`
	ObjectID      string          `json:"object_id"`
	Outcome       string          `json:"outcome"`
	CorrelationID string          `json:"correlation_id"`
	SourceAddr    string          `json:"source_addr"`
	DeviceID      string          `json:"device_id"`
	Detail        json.RawMessage `json:"detail"`
	PrevHash      string          `json:"prev_hash"`
	Hash          string          `json:"hash"`
	HashVersion   int             `json:"hash_version"`
}

// Execer is what Append needs: a transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Append records e within tx. The record is written to audit_pending and
// commits (or rolls back) with tx; Chain links it into the hash chain right
// after, in commit order. Appending takes no lock shared with other
// transactions, so audited changes on every node commit side by side.
//
// Within a context from Defer, the record is held instead and written by
// the Deferred's Write, with the records of the same transaction (so are
// AppendBatch's).
func Append(ctx context.Context, tx Execer, e Entry) error {
	return AppendBatch(ctx, tx, []Entry{e})
}

// Deferred holds the records appended within one transaction, to write
// them in one statement before it commits rather than one statement each:
// the routing worker appends several records for every alert it opens.
type Deferred struct {
	mu      sync.Mutex
	entries []Entry
}

type deferredKey struct{}

// hold keeps entries in the context's Deferred, if it has one.
func hold(ctx context.Context, entries []Entry) bool {
	d, ok := ctx.Value(deferredKey{}).(*Deferred)
	if ok {
		d.mu.Lock()
		d.entries = append(d.entries, entries...)
		d.mu.Unlock()
	}
	return ok
}

// Defer returns a context under which Append holds records in the
// returned Deferred. Use it only inside one transaction's function, and
// call Write in that transaction before it commits: a record held and
// never written is lost. A held entry is encoded when written: do not
// change its Detail after appending it.
func Defer(ctx context.Context) (context.Context, *Deferred) {
	d := &Deferred{}
	return context.WithValue(ctx, deferredKey{}, d), d
}

// Write appends the held records, then more, within tx, in order, and
// empties d.
func (d *Deferred) Write(ctx context.Context, tx Execer, more ...Entry) error {
	return writePending(ctx, tx, d.take(more))
}

// Queue is Write on a queue (QueueBatch): the records are written when
// the queue is sent.
func (d *Deferred) Queue(q Queue, more ...Entry) error {
	return QueueBatch(q, d.take(more))
}

// take empties d, returning what it held followed by more.
func (d *Deferred) take(more []Entry) []Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries := append(d.entries, more...)
	d.entries = nil
	return entries
}

// Querier runs read queries (a *sql.DB or *sql.Tx).
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// recordColumns is the select list scanRecord reads, in its order.
const recordColumns = `seq, at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
	correlation_id, detail, prev_hash, hash, source_addr, device_id, hash_version`

type scanner interface{ Scan(dest ...any) error }

func scanRecord(s scanner) (Record, error) {
	var r Record
	var at int64
	var detail string
	err := s.Scan(&r.Seq, &at, &r.ActorType, &r.ActorID, &r.ActorRole, &r.Action, &r.ObjectType,
		&r.ObjectID, &r.Outcome, &r.CorrelationID, &detail, &r.PrevHash, &r.Hash, &r.SourceAddr, &r.DeviceID,
		&r.HashVersion)
	if err != nil {
		return r, fmt.Errorf("audit scan: %w", err)
	}
	r.At = time.UnixMicro(at).UTC()
	r.Detail = json.RawMessage(detail)
	return r, nil
}

// ByCorrelation returns the records tied to one correlation id, in order.
func ByCorrelation(ctx context.Context, q Querier, correlationID string) ([]Record, error) {
	page, err := Query(ctx, q, Filter{CorrelationID: correlationID, Limit: MaxPage})
	if err != nil {
		return nil, err
	}
	return page.Records, nil
}
