package messaging

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/groupcommit"
)

// Receipts (delivered and read) from all of a node's devices are group
// committed: those waiting when a transaction starts share it, so a burst
// of acknowledgements from many devices costs one commit, not one each.
// Each is answered only after its commit. When a shared transaction fails,
// its receipts are retried each in a transaction of its own, so a bad one
// fails alone. A receipt of a device that is no longer active, or for a
// message that is not the device's, is refused within the transaction and
// changes nothing.

// receiptBatch bounds the receipts one transaction records.
const receiptBatch = 200

// receiptSlots is how many receipt transactions may be in flight at once.
const receiptSlots = 2

type receipt struct {
	deviceID  string
	seq       int64  // ack: every message up to seq is delivered
	messageID string // read: this message was opened
	refused   error  // set by its commit: refused, and nothing written
}

func newReceipts(g *Gateway) *groupcommit.Committer[*receipt] {
	return &groupcommit.Committer[*receipt]{Max: receiptBatch, Parallel: receiptSlots, Commit: g.commitReceipts}
}

// record commits r, alone or with others, and returns once it is
// committed (nil), refused or failed.
func (g *Gateway) record(ctx context.Context, r *receipt) error {
	if err := g.receipts.Submit(ctx, r)[0]; err != nil {
		return err
	}
	return r.refused
}

// commitReceipts records batch in one transaction; a receipt refused
// within it changes nothing and leaves the transaction to the others.
func (g *Gateway) commitReceipts(ctx context.Context, batch []*receipt) error {
	now := g.engine.now()
	return g.db.InTx(ctx, func(tx *sql.Tx) error {
		// The receipts' audit records are written together, in one
		// statement. A refusal comes before its receipt appends any.
		rctx, held := audit.Defer(ctx)
		// A receipt locks its device's row until commit; taken in device
		// order, as routing and the timers take theirs (HeldPages), two
		// transactions never wait on each other in a cycle.
		sorted := slices.Clone(batch)
		slices.SortStableFunc(sorted, func(a, b *receipt) int { return cmp.Compare(a.deviceID, b.deviceID) })
		for _, r := range sorted {
			r.refused = nil
			err := recordReceipt(rctx, tx, r, now)
			if isRefusal(err) {
				r.refused = err
				continue
			}
			if err != nil {
				return err
			}
		}
		return held.Write(ctx, tx)
	})
}

// recordReceipt records one receipt in tx: the device must still be active.
func recordReceipt(ctx context.Context, tx *sql.Tx, r *receipt, now time.Time) error {
	if err := requireActive(ctx, tx, r.deviceID); err != nil {
		return err
	}
	if r.messageID != "" {
		return read(ctx, tx, r.deviceID, r.messageID, now)
	}
	return delivered(ctx, tx, r.deviceID, r.seq, now)
}

// isRefusal reports whether err refuses a receipt before it wrote
// anything, leaving the transaction usable for the others.
func isRefusal(err error) bool {
	return errors.Is(err, ErrNotYours) || errors.Is(err, ErrDeviceRevoked)
}
