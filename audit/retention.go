package audit

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DefaultRetention is six years (of 365.25 days): HIPAA's retention period
// for documentation (45 CFR 164.316(b)(2)).
const DefaultRetention = 6 * 8766 * time.Hour

// ActionPurged is the record a purge leaves of itself.
const ActionPurged = "audit.purged"

// PurgeOptions says what to purge and who asks.
type PurgeOptions struct {
	Horizon  time.Time           // records strictly older than this may go
	Postgres bool                // set the session flag the guard trigger checks
	Keys     []ed25519.PublicKey // trusted keys: the chain is verified before anything is deleted
	By       Entry               // actor fields for the audit.purged record
	Now      time.Time
}

// PurgeResult says what a purge removed.
type PurgeResult struct {
	ThroughSeq  int64 `json:"through_seq"` // the anchor checkpoint: the chain now starts after it
	Deleted     int64 `json:"deleted"`
	Checkpoints int64 `json:"checkpoints_deleted"`
}

// Purge deletes the records older than the horizon, but only up to the
// newest checkpoint that lies wholly before it, so the remaining chain
// verifies from that checkpoint's signed hash. Records newer than that
// checkpoint stay even when they are past the horizon. The chain is
// verified first (a purge must not destroy the evidence of tampering), and
// the purge appends an audit.purged record in the same transaction. It
// returns ErrNothingToPurge when no checkpoint qualifies.
func Purge(ctx context.Context, d PurgeDB, o PurgeOptions) (PurgeResult, error) {
	var res PurgeResult
	// Decide and verify outside the transaction: on SQLite a transaction
	// holds the only connection, and a walk of years of records is long.
	if _, err := purgeAnchor(ctx, d, o.Horizon); err != nil {
		return res, err
	}
	if _, err := VerifyAll(ctx, d, VerifyOptions{Keys: o.Keys}); err != nil {
		return res, fmt.Errorf("audit purge refused, the chain does not verify: %w", err)
	}
	err := inTx(ctx, d, func(tx *sql.Tx) error {
		if o.Postgres {
			if _, err := tx.ExecContext(ctx, `SET LOCAL `+PurgeSetting+` = 'on'`); err != nil {
				return fmt.Errorf("audit purge: %w", err)
			}
		}
		anchor, err := purgeAnchor(ctx, tx, o.Horizon)
		if err != nil {
			return err
		}
		r, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE seq <= $1`, anchor)
		if err != nil {
			return fmt.Errorf("audit purge: %w", err)
		}
		if res.Deleted, _ = r.RowsAffected(); res.Deleted == 0 {
			return ErrNothingToPurge // another node purged the same range first
		}
		if r, err = tx.ExecContext(ctx, `DELETE FROM audit_checkpoints WHERE seq < $1`, anchor); err != nil {
			return fmt.Errorf("audit purge: %w", err)
		}
		res.Checkpoints, _ = r.RowsAffected()
		res.ThroughSeq = anchor
		e := o.By
		e.At, e.Action, e.ObjectType, e.ObjectID = o.Now, ActionPurged, "audit_log", "chain"
		e.Detail = map[string]any{"through_seq": res.ThroughSeq, "deleted": res.Deleted,
			"checkpoints_deleted": res.Checkpoints, "horizon": o.Horizon.UTC().Format(time.RFC3339)}
		return appendChained(ctx, tx, e)
	})
	return res, err
}

// PurgeDB is what Purge needs: transactions and reads (a *sql.DB).
type PurgeDB interface {
	TxBeginner
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// purgeAnchor is the newest checkpoint such that it and every record before
// it are older than the horizon, and that still has records to purge.
func purgeAnchor(ctx context.Context, q Querier, horizon time.Time) (int64, error) {
	var firstKept, head, oldest sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MIN(seq) FROM audit_log WHERE at >= $1`, horizon.UnixMicro()).
		Scan(&firstKept); err != nil {
		return 0, fmt.Errorf("audit purge: %w", err)
	}
	if err := q.QueryRowContext(ctx, `SELECT MAX(seq), MIN(seq) FROM audit_log`).Scan(&head, &oldest); err != nil {
		return 0, fmt.Errorf("audit purge: %w", err)
	}
	cut := head.Int64
	if firstKept.Valid {
		cut = firstKept.Int64 - 1
	}
	var anchor sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit_checkpoints WHERE seq <= $1`, cut).Scan(&anchor); err != nil {
		return 0, fmt.Errorf("audit purge: %w", err)
	}
	if !anchor.Valid || anchor.Int64 < oldest.Int64 {
		return 0, ErrNothingToPurge
	}
	return anchor.Int64, nil
}

// Retention runs Purge periodically with a horizon of Keep before now.
type Retention struct {
	DB       PurgeDB
	Keep     time.Duration
	Postgres bool
	Keys     []ed25519.PublicKey
	Now      func() time.Time
}

// Tick purges once; ErrNothingToPurge is not an error here.
func (r *Retention) Tick(ctx context.Context) (PurgeResult, error) {
	now := r.Now()
	res, err := Purge(ctx, r.DB, PurgeOptions{Horizon: now.Add(-r.Keep), Postgres: r.Postgres, Keys: r.Keys, Now: now,
		By: Entry{ActorType: ActorSystem, ActorID: "retention"}})
	if errors.Is(err, ErrNothingToPurge) {
		return res, nil
	}
	return res, err
}
