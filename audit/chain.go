package audit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Records reach the chain in two steps. Append writes a record to
// audit_pending inside the caller's transaction, so it commits or rolls
// back with the change it records, and it takes no lock another
// transaction waits for. Chain then moves committed pending records into
// audit_log under the single head row: it numbers them, links each to the
// previous record's hash and deletes them from audit_pending, in one short
// transaction. Only Chain (and the checkpoint and purge records, which are
// chained directly) ever lock the head, so no audited change waits on
// another's commit; the chain lags the commits by one Chainer poll.
//
// Chain order is the order records became visible to Chain, oldest key
// first among those it sees. Records of one transaction keep their order,
// and a record committed before another transaction began is chained
// before that transaction's records (its key is smaller, and it is visible
// no later).

// DefaultChainBatch bounds the records one Chain call links.
const DefaultChainBatch = 1000

// pendingClock is the last time a pending key was made in this process:
// keys must increase strictly so records appended one after another keep
// their order, even within a nanosecond or across a step back of the wall
// clock. It is process state by nature, hence a package variable.
var pendingClock atomic.Int64

// nextPendingKey is 16 hex digits of a strictly increasing nanosecond time,
// then 8 random hex digits that keep two nodes' keys apart.
func nextPendingKey() string {
	now := time.Now().UnixNano()
	for {
		last := pendingClock.Load()
		t := max(now, last+1)
		if pendingClock.CompareAndSwap(last, t) {
			var r [4]byte
			_, _ = rand.Read(r[:])
			b := make([]byte, 0, 24)
			s := strconv.FormatInt(t, 16)
			b = append(b, strings.Repeat("0", 16-len(s))...)
			b = append(b, s...)
			return string(hex.AppendEncode(b, r[:]))
		}
	}
}

// Chain links up to limit committed pending records (DefaultChainBatch when
// limit is not positive) into the chain, oldest key first, in one
// transaction, and returns how many it linked. Several nodes may call it
// at once: the head lock serialises them, and each sees only records the
// other has not taken.
func Chain(ctx context.Context, d TxBeginner, limit int) (int, error) {
	if limit <= 0 {
		limit = DefaultChainBatch
	}
	// An idle poll reads one index entry and takes no lock.
	var first string
	err := d.QueryRowContext(ctx, `SELECT id FROM audit_pending ORDER BY id LIMIT 1`).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit chain: %w", err)
	}
	n := 0
	err = inTx(ctx, d, func(tx *sql.Tx) error {
		seq, prev, err := lockHead(ctx, tx)
		if err != nil {
			return err
		}
		keys, recs, err := readPending(ctx, tx, limit)
		if err != nil || len(recs) == 0 {
			return err // another node chained them first
		}
		if err := writeChained(ctx, tx, recs, seq, prev); err != nil {
			return err
		}
		for start := 0; start < len(keys); start += batchRows {
			chunk := keys[start:min(start+batchRows, len(keys))]
			args := make([]any, len(chunk))
			marks := make([]string, len(chunk))
			for i, k := range chunk {
				args[i], marks[i] = k, "$"+strconv.Itoa(i+1)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM audit_pending WHERE id IN (`+strings.Join(marks, ",")+`)`,
				args...); err != nil {
				return fmt.Errorf("audit chain: %w", err)
			}
		}
		n = len(recs)
		return nil
	})
	return n, err
}

// ChainAll chains until what is pending is shorter than a batch: everything
// committed before the call, unless writers keep adding faster than that.
func ChainAll(ctx context.Context, d TxBeginner) error {
	for {
		n, err := Chain(ctx, d, DefaultChainBatch)
		if err != nil || n < DefaultChainBatch {
			return err
		}
	}
}

// Pending counts the committed records not chained yet.
func Pending(ctx context.Context, q Querier) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&n); err != nil {
		return 0, fmt.Errorf("audit pending: %w", err)
	}
	return n, nil
}

// lockHead locks the head row until tx ends and returns the chain's tip.
func lockHead(ctx context.Context, tx Execer) (int64, string, error) {
	var seq int64
	var hash string
	if err := tx.QueryRowContext(ctx, `UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash`).
		Scan(&seq, &hash); err != nil {
		return 0, "", fmt.Errorf("audit head: %w", err)
	}
	return seq, hash, nil
}

// writeChained numbers recs after seq, links them from prev, inserts them
// into audit_log and moves the head; tx holds the head lock.
func writeChained(ctx context.Context, tx Execer, recs []Record, seq int64, prev string) error {
	for i := range recs {
		recs[i].Seq, recs[i].PrevHash = seq+int64(i)+1, prev
		recs[i].Hash = recs[i].computeHash()
		prev = recs[i].Hash
	}
	for start := 0; start < len(recs); start += batchRows {
		if err := insertRecords(ctx, tx, recs[start:min(start+batchRows, len(recs))]); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`,
		seq+int64(len(recs)), prev); err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	return nil
}

// appendChained links e straight into the chain within tx, after
// whatever is chained now: for the records a checkpoint or a purge makes
// of itself, which must sit at a known place in the chain.
func appendChained(ctx context.Context, tx Execer, e Entry) error {
	r, err := newRecord(e)
	if err != nil {
		return err
	}
	seq, prev, err := lockHead(ctx, tx)
	if err != nil {
		return err
	}
	return writeChained(ctx, tx, []Record{r}, seq, prev)
}

// readPending returns the oldest pending records, at most limit, with their keys.
func readPending(ctx context.Context, tx *sql.Tx, limit int) ([]string, []Record, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, `+pendingColumns+` FROM audit_pending ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("audit chain: %w", err)
	}
	defer rows.Close()
	var keys []string
	var recs []Record
	for rows.Next() {
		var k, detail string
		var at int64
		var r Record
		if err := rows.Scan(&k, &at, &r.ActorType, &r.ActorID, &r.ActorRole, &r.Action, &r.ObjectType, &r.ObjectID,
			&r.Outcome, &r.CorrelationID, &detail, &r.SourceAddr, &r.DeviceID, &r.HashVersion); err != nil {
			return nil, nil, fmt.Errorf("audit chain: %w", err)
		}
		r.At, r.Detail = time.UnixMicro(at).UTC(), []byte(detail)
		keys, recs = append(keys, k), append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("audit chain: %w", err)
	}
	return keys, recs, nil
}

// Chainer runs Chain every Poll, and again at once while a full batch was
// linked (a backlog drains at full speed).
type Chainer struct {
	DB    TxBeginner
	Batch int // records per transaction; 0 means DefaultChainBatch
	Log   *slog.Logger
}

// Run chains until ctx ends, then chains what is left.
func (c *Chainer) Run(ctx context.Context, poll time.Duration) {
	batch := c.Batch
	if batch <= 0 {
		batch = DefaultChainBatch
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		n, err := Chain(ctx, c.DB, batch)
		if err != nil && ctx.Err() == nil && c.Log != nil {
			c.Log.Error("audit chain", "error", err)
		}
		if n == batch && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := ChainAll(final, c.DB); err != nil && c.Log != nil {
				c.Log.Warn("audit chain at stop", "error", err)
			}
			return
		case <-t.C:
		}
	}
}
