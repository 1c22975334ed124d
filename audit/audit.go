// Package audit is the append-only, hash-chained log of every step Clarion
// takes. Each record is appended inside the transaction of the change it
// records, so the log and the data never disagree. Records carry ids and
// codes, never PHI: patients appear by their opaque pseudonym.
package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Actor types.
const (
	ActorSystem      = "system"
	ActorIntegration = "integration"
	ActorUser        = "user"
	ActorDevice      = "device"
)

// Entry is what a caller records.
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
	Detail        json.RawMessage `json:"detail"`
	PrevHash      string          `json:"prev_hash"`
	Hash          string          `json:"hash"`
}

// Execer is what Append needs: a transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Append adds e to the chain within tx. Advancing the single head row locks
// it until tx ends, so concurrent writers (several nodes included) append
// one after another and the chain stays linear.
func Append(ctx context.Context, tx Execer, e Entry) (Record, error) {
	if e.Outcome == "" {
		e.Outcome = "success"
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	detail := []byte("{}")
	if len(e.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(e.Detail); err != nil {
			return Record{}, fmt.Errorf("audit detail: %w", err)
		}
	}
	r := Record{
		At: e.At.UTC().Truncate(time.Microsecond), ActorType: e.ActorType, ActorID: e.ActorID, ActorRole: e.ActorRole,
		Action: e.Action, ObjectType: e.ObjectType, ObjectID: e.ObjectID, Outcome: e.Outcome,
		CorrelationID: e.CorrelationID, Detail: detail,
	}
	err := tx.QueryRowContext(ctx,
		`UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash`).Scan(&r.Seq, &r.PrevHash)
	if err != nil {
		return Record{}, fmt.Errorf("audit head: %w", err)
	}
	r.Hash = r.computeHash()
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET hash = $1 WHERE id = 1`, r.Hash); err != nil {
		return Record{}, fmt.Errorf("audit head: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (seq, at, actor_type, actor_id, actor_role, action,
		object_type, object_id, outcome, correlation_id, detail, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		r.Seq, r.At.UnixMicro(), r.ActorType, r.ActorID, r.ActorRole, r.Action, r.ObjectType, r.ObjectID,
		r.Outcome, r.CorrelationID, string(r.Detail), r.PrevHash, r.Hash)
	if err != nil {
		return Record{}, fmt.Errorf("audit insert: %w", err)
	}
	return r, nil
}

// computeHash is SHA-256 over every field, each length-prefixed so that no
// two different records encode alike.
func (r *Record) computeHash() string {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field("clarion-audit-v1")
	field(strconv.FormatInt(r.Seq, 10))
	field(strconv.FormatInt(r.At.UnixMicro(), 10))
	for _, s := range []string{r.ActorType, r.ActorID, r.ActorRole, r.Action, r.ObjectType, r.ObjectID,
		r.Outcome, r.CorrelationID, string(r.Detail), r.PrevHash} {
		field(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Querier runs read queries (a *sql.DB or *sql.Tx).
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Problem names the first record that breaks the chain.
type Problem struct {
	Seq    int64
	Reason string
}

func (p *Problem) Error() string { return fmt.Sprintf("audit record %d: %s", p.Seq, p.Reason) }

// Verify walks the whole chain. It returns the number of records checked and
// a *Problem naming the first bad record: an edited record (its hash no
// longer matches), a removed or reordered one (a gap in seq or a broken
// link), or a truncated tail (the head is ahead of the last record).
func Verify(ctx context.Context, q Querier) (int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, at, actor_type, actor_id, actor_role, action, object_type,
		object_id, outcome, correlation_id, detail, prev_hash, hash FROM audit_log ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("audit verify: %w", err)
	}
	defer rows.Close()
	var n, last int64
	prev := ""
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return n, err
		}
		switch {
		case r.Seq != last+1:
			return n, &Problem{last + 1, fmt.Sprintf("missing (next record present is %d)", r.Seq)}
		case r.PrevHash != prev:
			return n, &Problem{r.Seq, "link to the previous record is broken"}
		case r.computeHash() != r.Hash:
			return n, &Problem{r.Seq, "contents do not match its hash (altered)"}
		}
		prev, last = r.Hash, r.Seq
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("audit verify: %w", err)
	}
	var headSeq int64
	var headHash string
	if err := q.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash); err != nil {
		return n, fmt.Errorf("audit head: %w", err)
	}
	if headSeq != last || headHash != prev {
		return n, &Problem{last + 1, fmt.Sprintf("missing: the chain head is at record %d", headSeq)}
	}
	return n, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRecord(s scanner) (Record, error) {
	var r Record
	var at int64
	var detail string
	err := s.Scan(&r.Seq, &at, &r.ActorType, &r.ActorID, &r.ActorRole, &r.Action, &r.ObjectType,
		&r.ObjectID, &r.Outcome, &r.CorrelationID, &detail, &r.PrevHash, &r.Hash)
	if err != nil {
		return r, fmt.Errorf("audit scan: %w", err)
	}
	r.At = time.UnixMicro(at).UTC()
	r.Detail = json.RawMessage(detail)
	return r, nil
}

// ByCorrelation returns the records tied to one correlation id, in order.
func ByCorrelation(ctx context.Context, q Querier, correlationID string) ([]Record, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, at, actor_type, actor_id, actor_role, action, object_type,
		object_id, outcome, correlation_id, detail, prev_hash, hash FROM audit_log
		WHERE correlation_id = $1 ORDER BY seq`, correlationID)
	if err != nil {
		return nil, fmt.Errorf("audit query: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
