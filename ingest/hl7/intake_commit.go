package hl7

import (
	"context"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
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
}

// result is what one item's part of a batch transaction decided; it is
// copied to the item only once the transaction has committed.
type result struct {
	eventID string
	dup     bool
}

// commitBatch stores a batch in one transaction. On PostgreSQL it first
// assumes that no message repeats an earlier one (the common case) and
// sends the whole transaction, COMMIT included, in one round trip, with a
// guard that aborts it should any dedup key turn out to be taken; the
// batch is then stored the careful way (storeBatch with optimistic false).
// A lock-step sender, one message per transaction, pays one round trip
// and one WAL flush per message.
func (in *Intake) commitBatch(ctx context.Context, batch []*item) error {
	if in.db.Dialect == db.Postgres {
		err := in.storeBatch(ctx, batch, true)
		if !ingest.IsClaimLost(err) {
			return err
		}
	}
	return in.storeBatch(ctx, batch, false)
}

// storeBatch stores a batch in one transaction of two round trips on
// PostgreSQL, whatever its size: the new events' dedup keys are claimed
// (one statement) and sent with BEGIN; then the events, the rejections and
// every message's audit record are sent with COMMIT. A duplicate costs one
// more round trip, to read the answer the first copy was given. When
// optimistic, the claims are guarded instead of read back, and everything
// goes in one round trip.
func (in *Intake) storeBatch(ctx context.Context, batch []*item, optimistic bool) error {
	results := make([]result, len(batch))
	err := in.db.InPipe(ctx, func(p *db.Pipe) error {
		var claims []ingest.DedupClaim
		claimOf := make([]int, len(batch)) // batch index → claim index, -1 when none
		first := map[string]int{}          // dedup key → claim index of its first copy in this batch
		for i, it := range batch {
			claimOf[i] = -1
			if it.ev == nil {
				id := ids.New("rej")
				in.store.QueueReject(p, ingest.Rejected{ID: id, Source: it.source, ControlID: it.controlID,
					Identity: it.identity, AckCode: it.answer, Code: it.perr.Code, Reason: it.perr.Error(),
					Raw: it.raw, At: it.at})
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
		claimed := map[string]bool{}
		priors := make([]*ingest.Prior, len(claims))
		if optimistic {
			in.store.QueueGuardedClaims(p, claims, "AA", in.window) // every claim wins, or nothing is kept
		} else {
			in.store.QueueClaims(p, claims, "AA", in.window, claimed)
			if err := p.Flush(ctx); err != nil {
				return err
			}
			for c := range claims {
				if !claimed[claims[c].EventID] {
					priors[c] = &ingest.Prior{}
					in.store.QueuePrior(p, claims[c].Source, claims[c].SourceID, priors[c])
				}
			}
			if err := p.Flush(ctx); err != nil {
				return err
			}
		}
		var fresh []ingest.NewEvent
		for i, it := range batch {
			c := claimOf[i]
			if c < 0 {
				continue
			}
			if prior := priors[c]; prior != nil {
				claims[c].EventID = prior.EventID // later copies in this batch answer from it too
				results[i] = result{eventID: prior.EventID, dup: true}
				continue
			}
			results[i] = result{eventID: claims[c].EventID}
			fresh = append(fresh, ingest.NewEvent{ID: claims[c].EventID, Event: it.ev, Raw: it.raw, At: it.at})
			if it.ev.Kind == ingest.KindWatchdog && in.watch != nil {
				in.watch.Seen(p, reporterOf(it.ev), it.at)
			}
		}
		if err := in.store.QueueEvents(p, fresh, "AA"); err != nil {
			return err
		}
		for i, it := range batch {
			if it.ev != nil && claimOf[i] < 0 {
				results[i].eventID = claims[first[dedupKey(it.ev)]].EventID
			}
		}
		return audit.QueueBatch(p, in.auditEntries(batch, results))
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
