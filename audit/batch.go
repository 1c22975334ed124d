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

// AppendBatch adds entries to the chain within tx, in order, as if Append
// were called for each: the records, sequence numbers and hashes are the
// same (it builds records as Append does and hashes them with the same
// computeHash; keep newRecord and the column list in step with Append). It advances the head once and inserts the records in multi-row
// statements, so a group commit of many messages holds the head row for a
// few statements instead of three per record.
func AppendBatch(ctx context.Context, tx Execer, entries []Entry) ([]Record, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	recs := make([]Record, len(entries))
	for i, e := range entries {
		r, err := newRecord(e)
		if err != nil {
			return nil, err
		}
		recs[i] = r
	}
	var last int64
	var prev string
	err := tx.QueryRowContext(ctx, `UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash`,
		int64(len(recs))).Scan(&last, &prev)
	if err != nil {
		return nil, fmt.Errorf("audit head: %w", err)
	}
	first := last - int64(len(recs)) + 1
	for i := range recs {
		recs[i].Seq, recs[i].PrevHash = first+int64(i), prev
		recs[i].Hash = recs[i].computeHash()
		prev = recs[i].Hash
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET hash = $1 WHERE id = 1`, prev); err != nil {
		return nil, fmt.Errorf("audit head: %w", err)
	}
	for start := 0; start < len(recs); start += batchRows {
		if err := insertRecords(ctx, tx, recs[start:min(start+batchRows, len(recs))]); err != nil {
			return nil, err
		}
	}
	return recs, nil
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

func insertRecords(ctx context.Context, tx Execer, recs []Record) error {
	const cols = 16
	var q strings.Builder
	q.WriteString(`INSERT INTO audit_log (seq, at, actor_type, actor_id, actor_role, action,
		object_type, object_id, outcome, correlation_id, detail, prev_hash, hash, source_addr, device_id,
		hash_version) VALUES `)
	args := make([]any, 0, len(recs)*cols)
	for i, r := range recs {
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
		args = append(args, r.Seq, r.At.UnixMicro(), r.ActorType, r.ActorID, r.ActorRole, r.Action, r.ObjectType,
			r.ObjectID, r.Outcome, r.CorrelationID, string(r.Detail), r.PrevHash, r.Hash, r.SourceAddr, r.DeviceID,
			r.HashVersion)
	}
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("audit insert: %w", err)
	}
	return nil
}
