package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// batchRows bounds one multi-row INSERT: 16 parameters a row stays far
// below both PostgreSQL's and SQLite's parameter limits.
const batchRows = 200

// AppendBatch records entries within tx, in order, as Append does for one:
// a multi-row INSERT into audit_pending, whatever the batch size.
func AppendBatch(ctx context.Context, tx Execer, entries []Entry) error {
	if hold(ctx, entries) {
		return nil
	}
	return writePending(ctx, tx, entries)
}

// writePending is AppendBatch, never held.
func writePending(ctx context.Context, tx Execer, entries []Entry) error {
	stmts, err := pendingSQL(entries)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if _, err := tx.ExecContext(ctx, st.query, st.args...); err != nil {
			return fmt.Errorf("audit insert: %w", err)
		}
	}
	return nil
}

// Queue sends statements to the database together with others (*db.Pipe
// is one).
type Queue interface {
	Exec(query string, args ...any)
}

// QueueBatch is AppendBatch on a queue: the records are written when the
// queue is sent, within its transaction.
func QueueBatch(q Queue, entries []Entry) error {
	stmts, err := pendingSQL(entries)
	for _, st := range stmts {
		q.Exec(st.query, st.args...)
	}
	return err
}

type statement struct {
	query string
	args  []any
}

// pendingSQL builds the multi-row INSERTs of entries into audit_pending,
// batchRows records a statement, with keys in the entries' order.
func pendingSQL(entries []Entry) ([]statement, error) {
	const cols = 14
	var out []statement
	for start := 0; start < len(entries); start += batchRows {
		chunk := entries[start:min(start+batchRows, len(entries))]
		args := make([]any, 0, len(chunk)*cols)
		for _, e := range chunk {
			r, err := newRecord(e)
			if err != nil {
				return nil, err
			}
			args = append(args, nextPendingKey(), r.At.UnixMicro(), r.ActorType, r.ActorID, r.ActorRole, r.Action,
				r.ObjectType, r.ObjectID, r.Outcome, r.CorrelationID, string(r.Detail), r.SourceAddr, r.DeviceID,
				r.HashVersion)
		}
		out = append(out, statement{`INSERT INTO audit_pending (id, ` + pendingColumns + `) VALUES ` +
			placeholders(len(chunk), cols), args})
	}
	return out, nil
}

// newRecord applies Append's defaults to e.
func newRecord(e Entry) (Record, error) {
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
	return Record{
		At: e.At.UTC().Truncate(time.Microsecond), ActorType: e.ActorType, ActorID: e.ActorID, ActorRole: e.ActorRole,
		Action: e.Action, ObjectType: e.ObjectType, ObjectID: e.ObjectID, Outcome: e.Outcome,
		CorrelationID: e.CorrelationID, SourceAddr: e.SourceAddr, DeviceID: e.DeviceID, Detail: detail,
		HashVersion: CurrentHashVersion,
	}, nil
}

// pendingColumns are the columns of audit_pending after its key, in the
// order insertPending binds them and scanPending reads them.
const pendingColumns = `at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
	correlation_id, detail, source_addr, device_id, hash_version`

// insertRecords writes chained records to audit_log in one statement.
func insertRecords(ctx context.Context, tx Execer, recs []Record) error {
	const cols = 16
	args := make([]any, 0, len(recs)*cols)
	for _, r := range recs {
		args = append(args, r.Seq, r.At.UnixMicro(), r.ActorType, r.ActorID, r.ActorRole, r.Action, r.ObjectType,
			r.ObjectID, r.Outcome, r.CorrelationID, string(r.Detail), r.PrevHash, r.Hash, r.SourceAddr, r.DeviceID,
			r.HashVersion)
	}
	q := `INSERT INTO audit_log (seq, at, actor_type, actor_id, actor_role, action, object_type, object_id, outcome,
		correlation_id, detail, prev_hash, hash, source_addr, device_id, hash_version) VALUES ` + placeholders(len(recs), cols)
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("audit insert: %w", err)
	}
	return nil
}

// placeholders is "($1, …, $cols), (…)" for rows rows.
func placeholders(rows, cols int) string {
	var q strings.Builder
	for i := range rows {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('(')
		for c := range cols {
			if c > 0 {
				q.WriteByte(',')
			}
			fmt.Fprintf(&q, "$%d", i*cols+c+1)
		}
		q.WriteByte(')')
	}
	return q.String()
}
