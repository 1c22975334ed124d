package messaging

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
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
// The devices' states are read together, then every acknowledgement's
// statements go together (a read receipt, rare beside them, is recorded
// on its own): three round trips and the commit for the batch, not three
// for each receipt.
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
		p := g.db.PipeIn(tx)
		states := map[string]string{} // device → state; absent: no such device
		for _, r := range sorted {
			if _, queued := states[r.deviceID]; !queued {
				states[r.deviceID] = ""
				p.Query(func(rows db.Rows) error {
					if rows.Next() {
						var state string
						if err := rows.Scan(&state); err != nil {
							return fmt.Errorf("device state: %w", err)
						}
						states[r.deviceID] = state
					}
					return nil
				}, `SELECT state FROM devices WHERE id = $1`, r.deviceID)
			}
		}
		if err := p.Flush(ctx); err != nil {
			return err
		}
		var queued []func() []audit.Entry // acknowledgements sent with the next flush
		settle := func() error {
			if err := p.Flush(ctx); err != nil {
				return err
			}
			for _, entries := range queued {
				if err := appendDelivered(rctx, tx, entries()); err != nil {
					return err
				}
			}
			queued = nil
			return nil
		}
		for _, r := range sorted {
			r.refused = nil
			if states[r.deviceID] != DeviceActive {
				r.refused = ErrDeviceRevoked
				continue
			}
			if r.messageID == "" {
				queued = append(queued, queueDelivered(p, r.deviceID, r.seq, now))
				continue
			}
			if err := settle(); err != nil { // what came before it, first
				return err
			}
			err := read(rctx, tx, r.deviceID, r.messageID, now)
			if isRefusal(err) {
				r.refused = err
				continue
			}
			if err != nil {
				return err
			}
		}
		if err := settle(); err != nil {
			return err
		}
		return held.Write(ctx, tx)
	})
}

// isRefusal reports whether err refuses a receipt before it wrote
// anything, leaving the transaction usable for the others.
func isRefusal(err error) bool {
	return errors.Is(err, ErrNotYours) || errors.Is(err, ErrDeviceRevoked)
}
