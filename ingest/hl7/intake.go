package hl7

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/clarion-health/clarion/internal/groupcommit"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// Intake is the MLLP handler: parse, check the sender, map, commit durably,
// then acknowledge. AA/CA is only ever returned after the event and its
// audit record are committed; a repeat of a message (same sender, same
// MSH-10, within the dedup window) is answered as the first copy was and is
// not stored or routed again. Concurrent messages share one transaction
// (internal/groupcommit).
type Intake struct {
	db       *db.DB
	store    *ingest.Store
	log      *slog.Logger
	now      func() time.Time
	onCommit func()               // wakes the router
	observe  func(ackCode string) // counts ACKs by code

	senders  *Senders
	window   time.Duration
	watch    WatchdogRecorder
	commits  *groupcommit.Committer[*item]
	maxBatch int
}

var _ Handler = (*Intake)(nil)

// parallelCommits is how many batch transactions a node keeps in flight
// on PostgreSQL.
const parallelCommits = 2

// DefaultDedupWindow is how long a control id is remembered per sender.
const DefaultDedupWindow = 24 * time.Hour

// IntakeOption configures an Intake.
type IntakeOption func(*Intake)

// WithSenders binds sender identities to the MSH-3^MSH-4 values they may
// send as. Without it (or with nil) any peer may send as any sender.
func WithSenders(s *Senders) IntakeOption { return func(in *Intake) { in.senders = s } }

// WithDedupWindow sets how long a (sender, MSH-10) pair is answered as a
// duplicate; default 24h.
func WithDedupWindow(d time.Duration) IntakeOption {
	return func(in *Intake) {
		if d > 0 {
			in.window = d
		}
	}
}

// WithWatchdogs records each committed watchdog message (see Watchdog).
func WithWatchdogs(w WatchdogRecorder) IntakeOption { return func(in *Intake) { in.watch = w } }

// WithMaxBatch bounds how many messages share one transaction; default 256.
func WithMaxBatch(n int) IntakeOption {
	return func(in *Intake) {
		if n > 0 {
			in.maxBatch = n
		}
	}
}

// NewIntake wires the handler. onCommit and observe may be nil.
func NewIntake(d *db.DB, store *ingest.Store, log *slog.Logger, now func() time.Time, onCommit func(), observe func(string), opts ...IntakeOption) *Intake {
	if onCommit == nil {
		onCommit = func() {}
	}
	if observe == nil {
		observe = func(string) {}
	}
	in := &Intake{db: d, store: store, log: log, now: now, onCommit: onCommit, observe: observe,
		window: DefaultDedupWindow, maxBatch: 256}
	for _, o := range opts {
		o(in)
	}
	in.commits = &groupcommit.Committer[*item]{Max: in.maxBatch, Commit: in.commitBatch}
	if d.Dialect == db.Postgres {
		// Batches in flight side by side share PostgreSQL's WAL flushes
		// and overlap their round trips; SQLite has one writer.
		in.commits.Parallel = parallelCommits
	}
	if in.senders == nil {
		log.Warn("mllp sender binding not configured: any peer may send as any MSH-3/MSH-4")
	}
	return in
}

// ackCodeFor says how to refuse: R for what Clarion does not support (the
// sender should not resend), E for an error in the message's content.
func ackCodeFor(perr *ParseError) Outcome {
	if perr.Code >= CodeUnsupportedType && perr.Code <= CodeUnsupportedVersion {
		return Refused
	}
	return Errored
}

// errNotAuthorised answers a message whose MSH-3^MSH-4 the connection's
// identity is not bound to. Table 0357 has no "not authorised" code before
// v2.8; 207 (application internal error) with this text and MSH-3 as the
// location is what interface engines display.
func errNotAuthorised() *ParseError {
	return &ParseError{Code: CodeApplicationInternal, Segment: "MSH", SegmentSeq: 1, Field: 3,
		Msg: "sender not authorised to send as this MSH-3/MSH-4"}
}

var errNotStored = &ParseError{Code: CodeApplicationInternal, Msg: "message not stored; resend later"}

// HandleMLLP answers one framed message.
func (in *Intake) HandleMLLP(ctx context.Context, payload []byte, peer Peer) [][]byte {
	now := in.now()
	binding, bound := in.senders.Identify(peer)
	it := &item{raw: payload, peer: peer, identity: binding.Identity, at: now}
	m, err := Parse(payload)
	if err != nil {
		it.perr, it.outcome, it.answer = asParseError(err), Refused, "AR"
		in.submit(ctx, it)
		in.observe("AR")
		return [][]byte{BuildRejectFor(payload, it.perr, now, ids.New("ack"))}
	}
	if m.Get("MSH-9.1") == "ACK" {
		// Never acknowledge an acknowledgement (a sender's answer to our
		// application ACK, say): that would loop.
		in.log.Debug("mllp ack received; not answered", "peer_host", peerHost(peer.Addr))
		return nil
	}
	mode := AckModeOf(m)
	it.source, it.controlID = m.Get("MSH-3.1")+"^"+m.Get("MSH-4.1"), m.Get("MSH-10")
	switch ev, err := ToEvent(m); {
	case in.senders != nil && (!bound || !binding.Allows(it.source)):
		it.perr, it.outcome = errNotAuthorised(), Refused
	case err != nil:
		it.perr = asParseError(err)
		it.outcome = ackCodeFor(it.perr)
	default:
		it.ev, it.outcome = &ev, Accepted
	}
	it.answer = string(mode.letter()) + string(it.outcome)
	in.submit(ctx, it)
	switch {
	case it.ev != nil && it.err != nil:
		in.log.Error("mllp commit failed", "source", it.source, "control_id", it.controlID, "error", it.err)
		it.outcome, it.perr = Errored, errNotStored
	case it.ev != nil:
		in.log.Info("mllp message accepted", "source", it.source, "control_id", it.controlID,
			"trigger", it.ev.Trigger, "duplicate", it.dup, "event_id", it.eventID)
		if !it.dup {
			in.onCommit()
		}
	}
	replies := Replies(m, mode, it.outcome, it.perr, now)
	for _, r := range replies {
		in.observe(ackCode(r))
	}
	return replies
}

// submit commits it (alone or with concurrent messages) and logs a
// rejection that could not be kept: its answer is sent all the same.
func (in *Intake) submit(ctx context.Context, it *item) {
	it.err = in.commits.Submit(ctx, it)[0]
	if it.ev == nil {
		if it.err != nil {
			in.log.Error("keep rejected message", "error", it.err)
		}
		in.log.Warn("mllp message rejected", "source", it.source, "identity", it.identity,
			"error_code", it.perr.Code, "location", it.perr.Location())
	}
}

// ackCode is MSA-1 of a reply built by BuildACK.
func ackCode(reply []byte) string {
	s := string(reply)
	if i := strings.Index(s, "\rMSA"); i >= 0 && len(s) >= i+7 {
		return s[i+5 : i+7]
	}
	return ""
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
