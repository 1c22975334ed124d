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

// pending is what a commit will write, in batches, once every entry has
// been looked at: one multi-row statement per table instead of several
// statements per resource (see BenchmarkIngestObservations).
type pending struct {
	claims    []ingest.DedupClaim
	events    []ingest.NewEvent
	resources []resourceRow
	keys      []resourceKey
	audits    []audit.Entry
	bySource  map[string]resourceRow   // source|source_id → created earlier in this commit
	byIdent   map[string][]resourceRow // type|identifier hash → created earlier in this commit
}

// resourceKey is the rest of a fhir_resources row.
type resourceKey struct {
	source, sourceID, idHash string
}

func newPending() *pending {
	return &pending{bySource: map[string]resourceRow{}, byIdent: map[string][]resourceRow{}}
}

// dedupForever is the window given to the store's dedup table: a FHIR
// create stays idempotent (fhir_resources is the lasting record).
const dedupForever = 100 * 365 * 24 * time.Hour

// create looks at one prepared entry in tx: a repeat answers with the
// first copy, a conditional create that matches answers with the match,
// stale readings are dropped; what is new is queued in p (with its audit
// records) for flush.
func (a *API) create(ctx context.Context, tx *sql.Tx, s sender, e *entry, now time.Time, p *pending) (outcome, error) {
	m := e.mapped
	out := outcome{typ: m.ResourceType, at: now}
	ev := m.Event
	ev.Source, ev.SourceID = s.source, a.sourceID(e)
	patientID := a.keys.Pseudonym("pt", ev.Patient.Key())
	entryAudit := audit.Entry{At: now, ActorType: audit.ActorIntegration, ActorID: s.actorID, ActorRole: s.role,
		Detail: map[string]any{"resource_type": m.ResourceType, "kind": string(ev.Kind), "trigger": ev.Trigger,
			"patient_id": patientID, "via": s.via, "source": s.source}}
	answerWith := func(r resourceRow, action string) (outcome, error) {
		out.status, out.id, out.eventID, out.at, out.duplicate = http.StatusOK, r.ID, r.EventID, r.CreatedAt, true
		entryAudit.Action, entryAudit.ObjectType, entryAudit.ObjectID = action, "fhir_resource", r.ID
		entryAudit.CorrelationID = r.EventID
		if entryAudit.CorrelationID == "" {
			entryAudit.CorrelationID = r.ID
		}
		entryAudit.Detail["fhir_id"] = r.ID
		p.audits = append(p.audits, entryAudit)
		return out, nil
	}
	if e.criteria != nil {
		hash := a.identifierHash(m.ResourceType, *e.criteria)
		matches, err := findByIdentifier(ctx, tx, m.ResourceType, hash)
		if err != nil {
			return out, err
		}
		matches = append(matches, p.byIdent[m.ResourceType+"|"+hash]...)
		switch len(matches) {
		case 0:
		case 1:
			return answerWith(matches[0], "ingest.conditional_match")
		default:
			return out, decode.Errorf(http.StatusPreconditionFailed, decode.CodeDuplicate, "If-None-Exist",
				"the criteria match several %s resources", m.ResourceType)
		}
	}
	if r, ok := p.bySource[ev.Source+"|"+ev.SourceID]; ok {
		return answerWith(r, "ingest.duplicate")
	}
	prior, err := findBySource(ctx, tx, ev.Source, ev.SourceID)
	if err != nil {
		return out, err
	}
	if prior != nil {
		return answerWith(*prior, "ingest.duplicate")
	}
	out.status, out.id = http.StatusCreated, ids.New("frs")
	entryAudit.Detail["fhir_id"] = out.id
	if ev.Kind == ingest.KindResult && len(ev.Observations) > 0 {
		kept := ev.Observations[:0:0]
		var stale []string
		for _, o := range ev.Observations {
			if !o.ObservedAt.IsZero() {
				fresh, err := freshReading(ctx, tx, patientID, o.System+"|"+o.Code, o.ObservedAt)
				if err != nil {
					return out, err
				}
				if !fresh {
					stale = append(stale, o.System+"|"+o.Code)
					continue
				}
			}
			kept = append(kept, o)
		}
		if len(stale) > 0 {
			p.audits = append(p.audits, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "fhir",
				Action: "ingest.stale_reading", ObjectType: "fhir_resource", ObjectID: out.id, CorrelationID: out.id,
				Detail: map[string]any{"resource_type": m.ResourceType, "patient_id": patientID, "codes": stale,
					"dropped": len(stale), "kept": len(kept)}})
		}
		ev.Observations = kept
	}
	routed := !(ev.Kind == ingest.KindResult && len(ev.Observations) == 0)
	if routed {
		if ev.OccurredAt.IsZero() {
			ev.OccurredAt = now
		}
		if err := ev.Validate(); err != nil {
			var ve *ingest.ValidationError
			if errors.As(err, &ve) {
				return out, decode.Errorf(http.StatusUnprocessableEntity, decode.CodeBusinessRule, e.path, "%s", ve.Error())
			}
			return out, err
		}
		out.eventID = ids.New("evt")
		evCopy := ev
		p.claims = append(p.claims, ingest.DedupClaim{Source: ev.Source, SourceID: ev.SourceID, EventID: out.eventID, At: now})
		p.events = append(p.events, ingest.NewEvent{ID: out.eventID, Event: &evCopy, Raw: e.raw, At: now})
	}
	row := resourceRow{ID: out.id, Type: m.ResourceType, EventID: out.eventID, CreatedAt: now}
	key := resourceKey{source: ev.Source, sourceID: ev.SourceID, idHash: a.hashOf(m)}
	p.resources, p.keys = append(p.resources, row), append(p.keys, key)
	p.bySource[ev.Source+"|"+ev.SourceID] = row
	if key.idHash != "" {
		p.byIdent[m.ResourceType+"|"+key.idHash] = append(p.byIdent[m.ResourceType+"|"+key.idHash], row)
	}
	entryAudit.Action, entryAudit.ObjectType, entryAudit.ObjectID, entryAudit.CorrelationID =
		"ingest.accepted", "event", out.eventID, out.eventID
	if !routed {
		entryAudit.ObjectType, entryAudit.ObjectID, entryAudit.CorrelationID = "fhir_resource", out.id, out.id
		entryAudit.Detail["routed"] = false
	}
	p.audits = append(p.audits, entryAudit)
	return out, nil
}

// flush writes what create queued, in multi-row statements.
func (a *API) flush(ctx context.Context, tx *sql.Tx, p *pending, now time.Time) error {
	priors, err := a.events.ClaimDedupBatch(ctx, tx, p.claims, "201", dedupForever)
	if err != nil {
		return err
	}
	for _, prior := range priors {
		if prior != nil {
			a.log.Warn("fhir dedup key already claimed by an event", "event_id", prior.EventID)
		}
	}
	if err := a.events.InsertBatch(ctx, tx, p.events, "201"); err != nil {
		return err
	}
	if err := insertResources(ctx, tx, p.resources, p.keys, now); err != nil {
		return err
	}
	err = audit.AppendBatch(ctx, tx, p.audits)
	return err
}

func (a *API) hashOf(m *decode.Mapped) string {
	if m.Identifier == nil {
		return ""
	}
	return a.identifierHash(m.ResourceType, *m.Identifier)
}

// commit creates entries in one transaction (all or nothing), retrying
// once when a concurrent copy of the same resource committed first.
func (a *API) commit(ctx context.Context, s sender, entries []*entry) ([]outcome, error) {
	var outs []outcome
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		now := a.now()
		outs = outs[:0]
		err = a.db.InTx(ctx, func(tx *sql.Tx) error {
			p := newPending()
			for _, e := range entries {
				o, err := a.create(ctx, tx, s, e, now, p)
				if err != nil {
					return err
				}
				outs = append(outs, o)
			}
			return a.flush(ctx, tx, p, now)
		})
		if !db.IsUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	routed := false
	for _, o := range outs {
		a.log.Info("fhir resource accepted", "fhir_id", o.id, "event_id", o.eventID, "resource_type", o.typ,
			"source", s.source, "via", s.via, "duplicate", o.duplicate, "status", o.status)
		routed = routed || (!o.duplicate && o.eventID != "")
	}
	if routed {
		a.kick()
	}
	return outs, nil
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
