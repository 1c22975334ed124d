package hl7

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/ids"
)

// item is one message on its way to the database: an event to store (ev
// set) or a rejection to keep (perr set), and, once committed, its result.
type item struct {
	raw       []byte
	peer      Peer
	identity  string // bound sender identity, "" when none
	at        time.Time
	source    string // MSH-3^MSH-4 as claimed
	controlID string // MSH-10
	ev        *ingest.Event
	perr      *ParseError
	outcome   Outcome
	answer    string // the ACK code a rejection is answered with

	// Results, valid once submit returns.
	eventID string // event (or rejected message) id; the first copy's for a duplicate
	dup     bool
	err     error

	done chan bool // true: lead the next batch; false: committed
}

// committer groups the messages waiting at one moment into one
// transaction (group commit). There is no background goroutine: the first
// caller to find the committer idle leads, commits everything queued (up
// to max), wakes the others with their results, and hands the lead to the
// first message that queued meanwhile. Every message is still audited on
// its own and answered only after the commit that holds it.
type committer struct {
	max    int
	commit func(ctx context.Context, batch []*item) error

	mu    sync.Mutex
	queue []*item
	busy  bool
}

func (c *committer) submit(ctx context.Context, it *item) {
	it.done = make(chan bool, 1)
	c.mu.Lock()
	c.queue = append(c.queue, it)
	if c.busy {
		c.mu.Unlock()
		if lead := <-it.done; !lead {
			return
		}
	} else {
		c.busy = true
		c.mu.Unlock()
	}
	c.lead(ctx)
}

// lead commits the head of the queue (which holds the leader's own item).
// When the batch transaction fails, each message is retried in a
// transaction of its own, so one bad message cannot fail its neighbours;
// only the ones that fail again are answered AE/CE.
func (c *committer) lead(ctx context.Context) {
	c.mu.Lock()
	n := min(len(c.queue), c.max)
	batch := c.queue[:n:n]
	c.queue = append([]*item(nil), c.queue[n:]...)
	c.mu.Unlock()

	if err := c.commit(ctx, batch); err != nil {
		if len(batch) == 1 {
			batch[0].err = err
		} else {
			for _, it := range batch {
				it.err = c.commit(ctx, []*item{it})
			}
		}
	}

	c.mu.Lock()
	var next *item
	if len(c.queue) > 0 {
		next = c.queue[0]
	} else {
		c.busy = false
	}
	c.mu.Unlock()
	for _, it := range batch {
		it.done <- false
	}
	if next != nil {
		next.done <- true
	}
}

// result is what one item's part of a batch transaction decided; it is
// copied to the item only once the transaction has committed.
type result struct {
	eventID string
	dup     bool
}

// commitBatch stores a batch in one transaction: the new events' dedup
// keys claimed and the events inserted with one statement each, each
// rejection kept, and every message's audit record appended in one go. The
// statement count per batch stays flat as the batch grows.
func (in *Intake) commitBatch(ctx context.Context, batch []*item) error {
	results := make([]result, len(batch))
	err := in.db.InTx(ctx, func(tx *sql.Tx) error {
		var claims []ingest.DedupClaim
		claimOf := make([]int, len(batch)) // batch index → claim index, -1 when none
		first := map[string]int{}          // dedup key → claim index of its first copy in this batch
		for i, it := range batch {
			claimOf[i] = -1
			if it.ev == nil {
				id := ids.New("rej")
				if err := in.store.Reject(ctx, tx, ingest.Rejected{ID: id, Source: it.source, ControlID: it.controlID,
					Identity: it.identity, AckCode: it.answer, Code: it.perr.Code, Reason: it.perr.Error(),
					Raw: it.raw, At: it.at}); err != nil {
					return err
				}
				results[i] = result{eventID: id}
				continue
			}
			key := dedupKey(it.ev)
			if _, ok := first[key]; ok {
				results[i].dup = true // a later copy in this batch; its id is filled in below
				continue
			}
			first[key], claimOf[i] = len(claims), len(claims)
			claims = append(claims, ingest.DedupClaim{Source: it.ev.Source, SourceID: it.ev.SourceID,
				EventID: ids.New("evt"), At: it.at})
		}
		priors, err := in.store.ClaimDedupBatch(ctx, tx, claims, "AA", in.window)
		if err != nil {
			return err
		}
		var fresh []ingest.NewEvent
		for i, it := range batch {
			c := claimOf[i]
			if c < 0 {
				continue
			}
			if p := priors[c]; p != nil {
				claims[c].EventID = p.EventID // later copies in this batch answer from it too
				results[i] = result{eventID: p.EventID, dup: true}
				continue
			}
			results[i] = result{eventID: claims[c].EventID}
			fresh = append(fresh, ingest.NewEvent{ID: claims[c].EventID, Event: it.ev, Raw: it.raw, At: it.at})
			if it.ev.Kind == ingest.KindWatchdog && in.watch != nil {
				if err := in.watch.Seen(ctx, tx, reporterOf(it.ev), it.at); err != nil {
					return err
				}
			}
		}
		if err := in.store.InsertBatch(ctx, tx, fresh, "AA"); err != nil {
			return err
		}
		for i, it := range batch {
			if it.ev != nil && claimOf[i] < 0 {
				results[i].eventID = claims[first[dedupKey(it.ev)]].EventID
			}
		}
		_, err = audit.AppendBatch(ctx, tx, in.auditEntries(batch, results))
		return err
	})
	if err != nil {
		return err
	}
	for i, it := range batch {
		it.eventID, it.dup, it.err = results[i].eventID, results[i].dup, nil
	}
	return nil
}

func dedupKey(ev *ingest.Event) string { return ev.Source + "\x00" + ev.SourceID }

// auditEntries is one record per message, in batch order.
func (in *Intake) auditEntries(batch []*item, results []result) []audit.Entry {
	entries := make([]audit.Entry, len(batch))
	for i, it := range batch {
		e := in.auditEntry(it)
		switch {
		case it.ev == nil:
			e.Action, e.ObjectType, e.Outcome = "ingest.rejected", "rejected_message", "failure"
			e.Detail["error_code"], e.Detail["location"] = it.perr.Code, it.perr.Location()
		case results[i].dup:
			e.Action = "ingest.duplicate"
		default:
			e.Action = "ingest.accepted"
		}
		e.ObjectID, e.CorrelationID = results[i].eventID, results[i].eventID
		entries[i] = e
	}
	return entries
}

// auditEntry is the part of a message's audit record every outcome shares.
// The actor is the bound identity when there is one, else the claimed
// sender; neither is PHI.
func (in *Intake) auditEntry(it *item) audit.Entry {
	actor := it.identity
	if actor == "" {
		actor = it.source
	}
	detail := map[string]any{"control_id": it.controlID, "sender": it.source}
	if it.ev != nil {
		detail["trigger"], detail["kind"] = it.ev.Trigger, string(it.ev.Kind)
	}
	if it.identity != "" {
		detail["identity"] = it.identity
	}
	return audit.Entry{At: it.at, ActorType: audit.ActorIntegration, ActorID: actor, ActorRole: "integration",
		ObjectType: "event", SourceAddr: peerHost(it.peer.Addr), Detail: detail}
}

// reporterOf is the alarm reporter of a watchdog: Alarm.Reporter, else
// the sending application (MSH-3).
func reporterOf(ev *ingest.Event) string {
	if ev.Alarm != nil && ev.Alarm.Reporter != "" {
		return ev.Alarm.Reporter
	}
	app, _, _ := strings.Cut(ev.Source, "^")
	return app
}
