// Package fhir is Clarion's FHIR R4 interface: resources POSTed by EHRs,
// labs and remote-monitoring platforms (and notifications of the EHR
// subscriptions Clarion holds) become events committed durably before the
// sender hears 201, exactly as HL7 messages do; Clarion's alerts,
// deliveries, responses and audit trail are served back as FHIR resources.
package fhir

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/internal/groupcommit"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	dtpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// Keyring pseudonymises identifiers and seals credentials at rest
// (*atrest.Keyring).
type Keyring interface {
	Pseudonym(prefix, value string) string
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

// API is the FHIR interface: intake, subscriptions and read-only views.
type API struct {
	db      *db.DB
	events  *ingest.Store
	keys    Keyring
	dec     *decode.Decoder
	enc     *jsonformat.Marshaller
	log     *slog.Logger
	now     func() time.Time
	kick    func()
	commits *groupcommit.Committer[*request]
	client  *http.Client
	base    string
	version string
}

// Option adjusts the API.
type Option func(*API)

// WithHTTPClient sets the client used to fetch from subscription sources.
func WithHTTPClient(c *http.Client) Option { return func(a *API) { a.client = c } }

// WithBaseURL fixes the base URL used in links and Location headers
// (default: derived from each request, honouring X-Forwarded-Proto).
func WithBaseURL(u string) Option { return func(a *API) { a.base = strings.TrimRight(u, "/") } }

// WithVersion sets the software version the CapabilityStatement shows.
func WithVersion(v string) Option { return func(a *API) { a.version = v } }

// New wires the FHIR interface. kick wakes the router after a commit (may
// be nil).
func New(d *db.DB, events *ingest.Store, keys Keyring, log *slog.Logger, now func() time.Time, kick func(), opts ...Option) (*API, error) {
	dec, err := decode.NewDecoder()
	if err != nil {
		return nil, err
	}
	enc, err := jsonformat.NewMarshaller(false, "", "", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhir encoder: %w", err)
	}
	if kick == nil {
		kick = func() {}
	}
	a := &API{db: d, events: events, keys: keys, dec: dec, enc: enc, log: log, now: now, kick: kick,
		client: &http.Client{Timeout: 15 * time.Second}, version: "dev"}
	for _, o := range opts {
		o(a)
	}
	a.commits = &groupcommit.Committer[*request]{Max: maxGroupEntries, Commit: a.commitRequests,
		Weight: func(r *request) int { return len(r.entries) }}
	if d.Dialect == db.Postgres {
		// Transactions in flight side by side share PostgreSQL's WAL
		// flushes and overlap their round trips; SQLite has one writer.
		a.commits.Parallel = parallelCommits
	}
	return a, nil
}

// sender is who a resource came from.
type sender struct {
	source  string // the events' Source: "fhir:<token subject>" or "fhir-sub:<subscription id>"
	actorID string
	role    string
	via     string // rest, batch, transaction, subscription
}

// entry is one resource to create.
type entry struct {
	path        string // FHIRPath of the resource: "Observation" or "Bundle.entry[2].resource"
	raw         []byte
	res         *r4pb.ContainedResource
	ifNoneExist string
	mapped      *decode.Mapped
	criteria    *decode.Identifier // parsed If-None-Exist
}

// outcome is what creating one entry did.
type outcome struct {
	status    int // 201 created, 200 already there
	id        string
	typ       string
	at        time.Time
	eventID   string
	duplicate bool
}

func (o outcome) location(base string) string {
	return base + "/" + o.typ + "/" + strings.Replace(o.id, "_", "-", 1) + "/_history/1"
}

// prepare maps the resource and reads its If-None-Exist.
func (a *API) prepare(e *entry) *decode.Error {
	m, err := decode.Map(e.res, e.path)
	if err != nil {
		var derr *decode.Error
		if errors.As(err, &derr) {
			return derr
		}
		return decode.Errorf(http.StatusUnprocessableEntity, decode.CodeProcessing, e.path, "%v", err)
	}
	e.mapped = m
	if e.ifNoneExist != "" {
		crit, derr := parseIfNoneExist(e.ifNoneExist)
		if derr != nil {
			return derr
		}
		e.criteria = crit
	}
	return nil
}

// parseIfNoneExist reads "identifier=system|value" (optionally after
// "Type?"); Clarion's conditional create matches business identifiers only.
func parseIfNoneExist(s string) (*decode.Identifier, *decode.Error) {
	if _, q, ok := strings.Cut(s, "?"); ok {
		s = q
	}
	vals, err := url.ParseQuery(s)
	if err != nil {
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "If-None-Exist", "not a search query: %v", err)
	}
	for k := range vals {
		if k != "identifier" {
			return nil, decode.Errorf(http.StatusBadRequest, decode.CodeNotSupported, "If-None-Exist",
				"Clarion's conditional create matches on identifier=system|value only, not %q", k)
		}
	}
	id, ok := decode.ParseToken(vals.Get("identifier"))
	if !ok || id.System == "" || len(vals["identifier"]) != 1 {
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "If-None-Exist",
			"want exactly one identifier=system|value")
	}
	return &id, nil
}

func (a *API) identifierHash(typ string, id decode.Identifier) string {
	return a.keys.Pseudonym("fid", typ+"|"+id.System+"|"+id.Value)
}

// sourceID is the dedup key of a resource: its type and status with its
// identifier (so a correction of the same result is routed again while a
// retry is not), or a keyed hash of its content when it has none. An
// Encounter is always keyed by content: the same encounter moves (status,
// location) and each move must be routed.
func (a *API) sourceID(e *entry) string {
	m := e.mapped
	if m.Identifier != nil && m.ResourceType != "Encounter" {
		return m.ResourceType + "/" + m.Status + "/" + a.identifierHash(m.ResourceType, *m.Identifier)
	}
	return m.ResourceType + "/" + a.keys.Pseudonym("fh", string(compact(e.raw)))
}

func compact(raw []byte) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

// resourceKey is the rest of a fhir_resources row.
type resourceKey struct {
	source, sourceID, idHash string
}

// dedupForever is the window given to the store's dedup table: a FHIR
// create stays idempotent (fhir_resources is the lasting record).
const dedupForever = 100 * 365 * 24 * time.Hour

// maxGroupEntries bounds the entries one group commit holds (a request
// larger than that, a big transaction Bundle, commits alone).
const maxGroupEntries = 1000

// parallelCommits is how many group transactions a node keeps in flight
// at once on PostgreSQL.
const parallelCommits = 2

// request is what one call creates: the entries of a POST, a Bundle or a
// notification, all from one sender, all or none. Several requests may
// share a transaction (group commit); outs is set once it has committed.
type request struct {
	s       sender
	entries []*entry
	outs    []outcome
	err     error // set once committed or failed
}

// work is one entry on its way through a transaction.
type work struct {
	r         *request
	e         *entry
	ev        ingest.Event // with Source and SourceID
	patientID string
	idHash    string       // keyed hash of the entry's own identifier, "" when none
	critHash  string       // keyed hash of its If-None-Exist identifier, "" when none
	fresh     bool         // a new resource (not a repeat, not a conditional match)
	answer    *resourceRow // else the stored resource it is answered with,
	origin    *work        // or the one created earlier in this transaction,
	action    string       // and how (ingest.duplicate, ingest.conditional_match)
	out       outcome
	audits    []audit.Entry // in order
}

// createAll creates the entries of reqs in the pipelined transaction p,
// with three round trips on PostgreSQL whatever their number: the lookups
// of earlier copies and conditional-create matches (sent with BEGIN), the
// stale-reading check of the new resources, and the writes (sent with
// COMMIT). It returns each request's outcomes, valid once p commits.
func (a *API) createAll(ctx context.Context, p *db.Pipe, reqs []*request, now time.Time) ([][]outcome, func(), error) {
	var ws []*work
	bySource := map[string][]string{}
	byIdent := map[string][]string{}
	for _, r := range reqs {
		for _, e := range r.entries {
			m := e.mapped
			w := &work{r: r, e: e, ev: m.Event, out: outcome{typ: m.ResourceType, at: now}}
			w.ev.Source, w.ev.SourceID = r.s.source, a.sourceID(e)
			w.patientID = a.keys.Pseudonym("pt", w.ev.Patient.Key())
			w.idHash = a.hashOf(m)
			bySource[w.ev.Source] = append(bySource[w.ev.Source], w.ev.SourceID)
			if e.criteria != nil {
				w.critHash = a.identifierHash(m.ResourceType, *e.criteria)
				byIdent[m.ResourceType] = append(byIdent[m.ResourceType], w.critHash)
			}
			ws = append(ws, w)
		}
	}
	foundSource := map[string]resourceRow{}
	foundIdent := map[string][]resourceRow{}
	pg := a.db.Dialect == db.Postgres
	queueBySource(p, pg, bySource, foundSource)
	queueByIdentifier(p, pg, byIdent, foundIdent)
	if err := p.Flush(ctx); err != nil {
		return nil, nil, err
	}

	// Repeats and matches, in order: an entry also sees those created
	// before it in this transaction.
	newSource := map[string]*work{}
	newIdent := map[string][]*work{}
	newest := map[readingKey]int64{}
	for _, w := range ws {
		m := w.e.mapped
		if w.critHash != "" {
			key := m.ResourceType + "|" + w.critHash
			stored, created := foundIdent[key], newIdent[key]
			switch len(stored) + len(created) {
			case 0:
			case 1:
				if len(stored) == 1 {
					w.answer = &stored[0]
				} else {
					w.origin = created[0]
				}
				w.action = "ingest.conditional_match"
				continue
			default:
				return nil, nil, decode.Errorf(http.StatusPreconditionFailed, decode.CodeDuplicate, "If-None-Exist",
					"the criteria match several %s resources", m.ResourceType)
			}
		}
		key := w.ev.Source + "|" + w.ev.SourceID
		if o, ok := newSource[key]; ok {
			w.origin, w.action = o, "ingest.duplicate"
			continue
		}
		if r, ok := foundSource[key]; ok {
			w.answer, w.action = &r, "ingest.duplicate"
			continue
		}
		w.fresh = true
		w.out.status, w.out.id = http.StatusCreated, ids.New("frs")
		newSource[key] = w
		if w.idHash != "" {
			newIdent[m.ResourceType+"|"+w.idHash] = append(newIdent[m.ResourceType+"|"+w.idHash], w)
		}
		if w.ev.Kind == ingest.KindResult {
			for _, o := range w.ev.Observations {
				if !o.ObservedAt.IsZero() {
					k := readingKey{w.patientID, o.System + "|" + o.Code}
					if at, ok := newest[k]; !ok || o.ObservedAt.UnixMicro() > at {
						newest[k] = o.ObservedAt.UnixMicro()
					}
				}
			}
		}
	}
	seen := map[readingKey]int64{} // the newest time so far of each key
	if len(newest) > 0 {
		queueReadings(p, newest, seen)
		if err := p.Flush(ctx); err != nil {
			return nil, nil, err
		}
	}

	// In order: the new resources with their stale readings dropped and
	// their events queued; the others answered with what they match.
	var claims []ingest.DedupClaim
	var events []ingest.NewEvent
	var resources []resourceRow
	var keys []resourceKey
	for _, w := range ws {
		if !w.fresh {
			r := w.answer
			if w.origin != nil { // created earlier in this transaction: done by now
				r = &resourceRow{ID: w.origin.out.id, Type: w.origin.out.typ, EventID: w.origin.out.eventID, CreatedAt: now}
			}
			a.answerWith(w, *r, w.action, now)
			continue
		}
		if err := a.createNew(w, now, seen, &claims, &events); err != nil {
			return nil, nil, err
		}
		resources = append(resources, resourceRow{ID: w.out.id, Type: w.out.typ, EventID: w.out.eventID, CreatedAt: now})
		keys = append(keys, resourceKey{source: w.ev.Source, sourceID: w.ev.SourceID, idHash: w.idHash})
	}
	var audits []audit.Entry
	for _, w := range ws {
		audits = append(audits, w.audits...)
	}
	claimed := map[string]bool{}
	a.events.QueueClaims(p, claims, "201", dedupForever, claimed)
	if err := a.events.QueueEvents(p, events, "201"); err != nil {
		return nil, nil, err
	}
	queueResources(p, resources, keys, now)
	if err := audit.QueueBatch(p, audits); err != nil {
		return nil, nil, err
	}
	outs := make([][]outcome, len(reqs))
	i := 0
	for r, req := range reqs {
		outs[r] = make([]outcome, len(req.entries))
		for j := range req.entries {
			outs[r][j] = ws[i].out
			i++
		}
	}
	// Sent with COMMIT by the caller. A key already claimed (by an event
	// not made here) is only worth a warning: fhir_resources decides.
	warn := func() {
		for _, c := range claims {
			if !claimed[c.EventID] {
				a.log.Warn("fhir dedup key already claimed by an event", "event_id", c.EventID)
			}
		}
	}
	return outs, warn, nil
}

// answerWith answers an entry with an existing resource r.
func (a *API) answerWith(w *work, r resourceRow, action string, now time.Time) {
	w.out.status, w.out.id, w.out.eventID, w.out.at, w.out.duplicate = http.StatusOK, r.ID, r.EventID, r.CreatedAt, true
	e := a.entryAudit(w, now)
	e.Action, e.ObjectType, e.ObjectID, e.CorrelationID = action, "fhir_resource", r.ID, r.EventID
	if e.CorrelationID == "" {
		e.CorrelationID = r.ID
	}
	e.Detail["fhir_id"] = r.ID
	w.audits = append(w.audits, e)
}

// entryAudit is the part of an entry's audit record every outcome shares.
func (a *API) entryAudit(w *work, now time.Time) audit.Entry {
	s := w.r.s
	return audit.Entry{At: now, ActorType: audit.ActorIntegration, ActorID: s.actorID, ActorRole: s.role,
		Detail: map[string]any{"resource_type": w.out.typ, "kind": string(w.ev.Kind), "trigger": w.ev.Trigger,
			"patient_id": w.patientID, "via": s.via, "source": s.source}}
}

// createNew drops the stale readings of a new resource (seen holds the
// newest time of each reading key so far, and is advanced) and queues its
// event, if it still routes anything, with its audit records.
func (a *API) createNew(w *work, now time.Time, seen map[readingKey]int64, claims *[]ingest.DedupClaim,
	events *[]ingest.NewEvent) error {
	ev := w.ev
	if ev.Kind == ingest.KindResult && len(ev.Observations) > 0 {
		kept := ev.Observations[:0:0]
		var stale []string
		for _, o := range ev.Observations {
			if !o.ObservedAt.IsZero() {
				k := readingKey{w.patientID, o.System + "|" + o.Code}
				at := o.ObservedAt.UnixMicro()
				if last, ok := seen[k]; ok && at < last {
					stale = append(stale, k.code)
					continue
				}
				seen[k] = at
			}
			kept = append(kept, o)
		}
		if len(stale) > 0 {
			w.audits = append(w.audits, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "fhir",
				Action: "ingest.stale_reading", ObjectType: "fhir_resource", ObjectID: w.out.id, CorrelationID: w.out.id,
				Detail: map[string]any{"resource_type": w.out.typ, "patient_id": w.patientID, "codes": stale,
					"dropped": len(stale), "kept": len(kept)}})
		}
		ev.Observations = kept
	}
	e := a.entryAudit(w, now)
	e.Detail["fhir_id"] = w.out.id
	routed := !(ev.Kind == ingest.KindResult && len(ev.Observations) == 0)
	if routed {
		if ev.OccurredAt.IsZero() {
			ev.OccurredAt = now
		}
		if err := ev.Validate(); err != nil {
			var ve *ingest.ValidationError
			if errors.As(err, &ve) {
				return decode.Errorf(http.StatusUnprocessableEntity, decode.CodeBusinessRule, w.e.path, "%s", ve.Error())
			}
			return err
		}
		w.out.eventID = ids.New("evt")
		evCopy := ev
		*claims = append(*claims, ingest.DedupClaim{Source: ev.Source, SourceID: ev.SourceID, EventID: w.out.eventID, At: now})
		*events = append(*events, ingest.NewEvent{ID: w.out.eventID, Event: &evCopy, Raw: w.e.raw, At: now})
		e.Action, e.ObjectType, e.ObjectID, e.CorrelationID = "ingest.accepted", "event", w.out.eventID, w.out.eventID
	} else {
		e.Action, e.ObjectType, e.ObjectID, e.CorrelationID = "ingest.accepted", "fhir_resource", w.out.id, w.out.id
		e.Detail["routed"] = false
	}
	w.audits = append(w.audits, e)
	return nil
}

func (a *API) hashOf(m *decode.Mapped) string {
	if m.Identifier == nil {
		return ""
	}
	return a.identifierHash(m.ResourceType, *m.Identifier)
}

// commit creates entries in one transaction (all or nothing), through the
// group committer: requests arriving together share a transaction.
func (a *API) commit(ctx context.Context, s sender, entries []*entry) ([]outcome, error) {
	r := &request{s: s, entries: entries}
	r.err = a.commits.Submit(ctx, r)[0]
	return r.outs, r.err
}

// commitRequests creates the entries of reqs in one transaction, retrying
// once when a concurrent copy of the same resource committed first (or
// PostgreSQL broke a deadlock), and only then sets each request's
// outcomes; then it logs them and wakes the router.
func (a *API) commitRequests(ctx context.Context, reqs []*request) error {
	var outs [][]outcome
	var warn func()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		now := a.now()
		err = a.db.InPipe(ctx, func(p *db.Pipe) error {
			var err error
			outs, warn, err = a.createAll(ctx, p, reqs, now)
			return err
		})
		if !db.IsUniqueViolation(err) && !isDeadlock(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	warn()
	routed := false
	for i, r := range reqs {
		r.outs = outs[i]
		for _, o := range r.outs {
			a.log.Info("fhir resource accepted", "fhir_id", o.id, "event_id", o.eventID, "resource_type", o.typ,
				"source", r.s.source, "via", r.s.via, "duplicate", o.duplicate, "status", o.status)
			routed = routed || (!o.duplicate && o.eventID != "")
		}
	}
	if routed {
		a.kick()
	}
	return nil
}

// isDeadlock reports whether PostgreSQL aborted the transaction to break
// a deadlock (it is safe to run again).
func isDeadlock(err error) bool {
	var coder interface{ SQLState() string }
	return errors.As(err, &coder) && coder.SQLState() == "40P01"
}

// reject keeps a refused resource sealed for inspection, audited; the
// audit and the log carry issue codes and element paths, never values.
func (a *API) reject(ctx context.Context, s sender, raw []byte, derr *decode.Error) {
	if len(raw) == 0 {
		return
	}
	now := a.now()
	id := ids.New("rej")
	var codes, paths []string
	for _, is := range derr.Issues {
		codes, paths = append(codes, is.Code), append(paths, is.Expression)
	}
	summary := fmt.Sprintf("fhir %d: %s", derr.Status, strings.Join(paths, ", "))
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := a.events.Reject(ctx, tx, ingest.Rejected{ID: id, Source: s.source, Identity: s.actorID,
			AckCode: strconv.Itoa(derr.Status), Code: derr.Status, Reason: summary, Raw: raw, At: now}); err != nil {
			return err
		}
		err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorIntegration, ActorID: s.actorID,
			ActorRole: s.role, Action: "ingest.rejected", ObjectType: "rejected_message", ObjectID: id, CorrelationID: id,
			Outcome: "failure", Detail: map[string]any{"status": derr.Status, "issue_codes": codes, "expressions": paths,
				"via": s.via, "source": s.source}})
		return err
	})
	if err != nil {
		a.log.Error("keep rejected fhir resource", "error", err)
	}
	a.log.Warn("fhir resource rejected", "source", s.source, "via", s.via, "status", derr.Status,
		"issue_codes", strings.Join(codes, ","), "expressions", strings.Join(paths, ","))
}

// represent is the stored form of a created resource: as posted, with the
// server's id and meta.
func (a *API) represent(e *entry, o outcome) ([]byte, error) {
	cr := proto.Clone(e.res).(*r4pb.ContainedResource)
	r := decode.ResourceOf(cr).ProtoReflect()
	fields := r.Descriptor().Fields()
	idField, metaField := fields.ByName("id"), fields.ByName("meta")
	if idField == nil || metaField == nil {
		return nil, fmt.Errorf("represent %s: no id or meta", o.typ)
	}
	r.Set(idField, protoValue(&dtpb.Id{Value: strings.Replace(o.id, "_", "-", 1)}))
	r.Set(metaField, protoValue(&dtpb.Meta{VersionId: &dtpb.Id{Value: "1"},
		LastUpdated: &dtpb.Instant{ValueUs: o.at.UnixMicro(), Timezone: "Z", Precision: dtpb.Instant_MICROSECOND}}))
	return a.enc.Marshal(cr)
}

func protoValue(m proto.Message) protoreflect.Value {
	return protoreflect.ValueOfMessage(m.ProtoReflect())
}
