package hl7

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// Intake is the MLLP handler: parse, map, commit durably, then acknowledge.
// AA is only ever returned after the event and its audit record are
// committed; a repeat of a message (same sender, same MSH-10) is answered
// as the first copy was and is not stored or routed again.
type Intake struct {
	db       *db.DB
	store    *ingest.Store
	log      *slog.Logger
	now      func() time.Time
	onCommit func()               // wakes the router
	observe  func(ackCode string) // counts ACKs by code
}

var _ Handler = (*Intake)(nil)

// NewIntake wires the handler. onCommit and observe may be nil.
func NewIntake(d *db.DB, store *ingest.Store, log *slog.Logger, now func() time.Time, onCommit func(), observe func(string)) *Intake {
	if onCommit == nil {
		onCommit = func() {}
	}
	if observe == nil {
		observe = func(string) {}
	}
	return &Intake{db: d, store: store, log: log, now: now, onCommit: onCommit, observe: observe}
}

// ackCodeFor says how to refuse: AR for what Clarion does not support (the
// sender should not resend), AE for an error in the message's content.
func ackCodeFor(perr *ParseError) string {
	if perr.Code >= CodeUnsupportedType && perr.Code <= CodeUnsupportedVersion {
		return "AR"
	}
	return "AE"
}

// HandleMLLP answers one framed message.
func (in *Intake) HandleMLLP(ctx context.Context, payload []byte, peer net.Addr) []byte {
	now := in.now()
	ackID := ids.New("ack")
	m, err := Parse(payload)
	if err != nil {
		perr := asParseError(err)
		in.reject(ctx, "", perr, payload, peer, now)
		in.observe("AR")
		return BuildRejectFor(payload, perr, now, ackID)
	}
	source := m.Get("MSH-3.1") + "^" + m.Get("MSH-4.1")
	ev, err := ToEvent(m)
	if err != nil {
		perr := asParseError(err)
		code := ackCodeFor(perr)
		in.reject(ctx, source, perr, payload, peer, now)
		in.observe(code)
		return BuildACK(m, code, perr, now, ackID)
	}
	code, dup, err := in.commit(ctx, &ev, payload, peer, now)
	if err != nil {
		in.log.Error("mllp commit failed", "source", source, "control_id", ev.SourceID, "error", err)
		in.observe("AE")
		return BuildACK(m, "AE", &ParseError{Code: CodeApplicationInternal, Msg: "message not stored; resend later"}, now, ackID)
	}
	in.log.Info("mllp message accepted", "source", source, "control_id", ev.SourceID, "trigger", ev.Trigger,
		"duplicate", dup, "ack", code)
	if !dup {
		in.onCommit()
	}
	in.observe(code)
	return BuildACK(m, code, nil, now, ackID)
}

func (in *Intake) commit(ctx context.Context, ev *ingest.Event, raw []byte, peer net.Addr, now time.Time) (code string, dup bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		code, dup = "AA", false
		err = in.db.InTx(ctx, func(tx *sql.Tx) error {
			prior, err := in.store.FindPrior(ctx, tx, ev.Source, ev.SourceID)
			if err != nil {
				return err
			}
			entry := audit.Entry{At: now, ActorType: audit.ActorIntegration, ActorID: ev.Source, ActorRole: "integration",
				ObjectType: "event", Detail: map[string]any{"control_id": ev.SourceID, "trigger": ev.Trigger,
					"kind": string(ev.Kind), "peer": peerHost(peer)}}
			if prior != nil {
				code, dup = prior.AckCode, true
				entry.Action, entry.ObjectID, entry.CorrelationID = "ingest.duplicate", prior.EventID, prior.EventID
				_, err = audit.Append(ctx, tx, entry)
				return err
			}
			id := ids.New("evt")
			if err := in.store.Insert(ctx, tx, id, ev, raw, code, now); err != nil {
				return err
			}
			entry.Action, entry.ObjectID, entry.CorrelationID = "ingest.accepted", id, id
			_, err = audit.Append(ctx, tx, entry)
			return err
		})
		if !db.IsUniqueViolation(err) {
			return code, dup, err
		}
		// A concurrent copy committed first: answer from it.
	}
	return code, dup, err
}

func (in *Intake) reject(ctx context.Context, source string, perr *ParseError, raw []byte, peer net.Addr, now time.Time) {
	id := ids.New("rej")
	err := in.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := in.store.Reject(ctx, tx, id, source, perr.Code, perr.Error(), raw, now); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorIntegration, ActorID: source,
			ActorRole: "integration", Action: "ingest.rejected", ObjectType: "rejected_message", ObjectID: id,
			CorrelationID: id, Outcome: "failure",
			Detail: map[string]any{"error_code": perr.Code, "location": perr.Location(), "peer": peerHost(peer)}})
		return err
	})
	if err != nil {
		in.log.Error("keep rejected message", "error", err)
	}
	in.log.Warn("mllp message rejected", "source", source, "error_code", perr.Code, "location", perr.Location())
}

func asParseError(err error) *ParseError {
	var perr *ParseError
	if errors.As(err, &perr) {
		return perr
	}
	return &ParseError{Code: CodeApplicationInternal, Msg: "message could not be processed"}
}

func peerHost(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
