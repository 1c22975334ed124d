package messaging

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"
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
	done      chan error
}

type receipts struct {
	queue chan *receipt
	once  sync.Once
}

func newReceipts() *receipts { return &receipts{queue: make(chan *receipt, 4*receiptBatch)} }

// record queues r and waits until it is committed (or refused).
func (g *Gateway) record(ctx context.Context, r *receipt) error {
	g.receipts.once.Do(func() {
		for range receiptSlots {
			go g.runReceipts(g.base)
		}
	})
	r.done = make(chan error, 1)
	select {
	case g.receipts.queue <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.base.Done():
		return errors.New("gateway shutting down")
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Gateway) runReceipts(ctx context.Context) {
	for {
		var batch []*receipt
		select {
		case <-ctx.Done():
			g.failQueued(ctx)
			return
		case r := <-g.receipts.queue:
			batch = append(batch, r)
		}
	more:
		for len(batch) < receiptBatch {
			select {
			case r := <-g.receipts.queue:
				batch = append(batch, r)
			default:
				break more
			}
		}
		g.commitReceipts(context.WithoutCancel(ctx), batch)
	}
}

// failQueued answers the receipts still queued at shutdown: not recorded
// (the device sends its ack again when it reconnects).
func (g *Gateway) failQueued(ctx context.Context) {
	for {
		select {
		case r := <-g.receipts.queue:
			r.done <- ctx.Err()
		default:
			return
		}
	}
}

// commitReceipts records batch in one transaction, or, when that fails,
// each receipt in its own.
func (g *Gateway) commitReceipts(ctx context.Context, batch []*receipt) {
	now := g.engine.now()
	refused := make([]error, len(batch))
	err := g.db.InTx(ctx, func(tx *sql.Tx) error {
		for i, r := range batch {
			refused[i] = nil
			err := recordReceipt(ctx, tx, r, now)
			if isRefusal(err) {
				refused[i] = err
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(batch) == 1 {
		for i, r := range batch {
			if err != nil {
				r.done <- err
			} else {
				r.done <- refused[i]
			}
		}
		return
	}
	g.log.Warn("receipt group commit failed; recording its receipts one by one", "receipts", len(batch), "error", err)
	for _, r := range batch {
		r.done <- g.db.InTx(ctx, func(tx *sql.Tx) error { return recordReceipt(ctx, tx, r, now) })
	}
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
