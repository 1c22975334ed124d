package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// FHIR R4 AuditEvent, written with plain structs: only the elements Clarion
// fills. Identifiers use Clarion's own URN systems; references are logical
// (identifier + display), since Clarion does not serve the referenced
// resources.
type (
	fhirCoding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
	fhirCodeableConcept struct {
		Coding []fhirCoding `json:"coding,omitempty"`
		Text   string       `json:"text,omitempty"`
	}
	fhirIdentifier struct {
		System string `json:"system"`
		Value  string `json:"value"`
	}
	fhirReference struct {
		Identifier *fhirIdentifier `json:"identifier,omitempty"`
		Type       string          `json:"type,omitempty"`
		Display    string          `json:"display,omitempty"`
	}
	fhirNetwork struct {
		Address string `json:"address"`
		Type    string `json:"type"` // 1 machine name, 2 IP address
	}
	fhirAgent struct {
		Type      *fhirCodeableConcept  `json:"type,omitempty"`
		Role      []fhirCodeableConcept `json:"role,omitempty"`
		Who       fhirReference         `json:"who"`
		Requestor bool                  `json:"requestor"`
		Network   *fhirNetwork          `json:"network,omitempty"`
	}
	fhirSource struct {
		Site     string        `json:"site,omitempty"`
		Observer fhirReference `json:"observer"`
		Type     []fhirCoding  `json:"type,omitempty"`
	}
	fhirEntityDetail struct {
		Type        string `json:"type"`
		ValueString string `json:"valueString"`
	}
	fhirEntity struct {
		What   fhirReference      `json:"what"`
		Type   *fhirCoding        `json:"type,omitempty"`
		Role   *fhirCoding        `json:"role,omitempty"`
		Detail []fhirEntityDetail `json:"detail,omitempty"`
	}
	fhirAuditEvent struct {
		ResourceType string       `json:"resourceType"`
		ID           string       `json:"id"`
		Type         fhirCoding   `json:"type"`
		Subtype      []fhirCoding `json:"subtype,omitempty"`
		Action       string       `json:"action,omitempty"`
		Recorded     string       `json:"recorded"`
		Outcome      string       `json:"outcome,omitempty"`
		OutcomeDesc  string       `json:"outcomeDesc,omitempty"`
		Agent        []fhirAgent  `json:"agent"`
		Source       fhirSource   `json:"source"`
		Entity       []fhirEntity `json:"entity,omitempty"`
	}
)

// Code systems.
const (
	fhirDCM            = "http://dicom.nema.org/resources/ontology/DCM"
	fhirActionSystem   = "urn:clarion:audit-action"
	fhirSecuritySource = "http://terminology.hl7.org/CodeSystem/security-source-type"
	fhirObjectRole     = "http://terminology.hl7.org/CodeSystem/object-role"
	fhirObjectType     = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
)

// AuditEvent maps a record to a FHIR R4 AuditEvent. observer names the
// Clarion deployment that recorded it.
func AuditEvent(r Record, observer string) any { return toAuditEvent(r, observer) }

func toAuditEvent(r Record, observer string) fhirAuditEvent {
	ev := fhirAuditEvent{
		ResourceType: "AuditEvent",
		ID:           "clarion-audit-" + strconv.FormatInt(r.Seq, 10),
		Type:         eventType(r.Action),
		Subtype:      []fhirCoding{{System: fhirActionSystem, Code: r.Action}},
		Action:       eventAction(r.Action),
		Recorded:     r.At.UTC().Format(time.RFC3339Nano),
		Source: fhirSource{Site: observer,
			Observer: fhirReference{Identifier: &fhirIdentifier{System: "urn:clarion:node", Value: observer}, Display: "Clarion"},
			Type:     []fhirCoding{{System: fhirSecuritySource, Code: "4", Display: "Application Server"}}},
	}
	ev.Outcome, ev.OutcomeDesc = eventOutcome(r.Outcome)
	actor := fhirAgent{
		Type:      &fhirCodeableConcept{Text: r.ActorType},
		Who:       fhirReference{Identifier: &fhirIdentifier{System: "urn:clarion:" + nonEmpty(r.ActorType, "actor"), Value: r.ActorID}},
		Requestor: true,
	}
	if r.ActorRole != "" {
		actor.Role = []fhirCodeableConcept{{Text: r.ActorRole}}
	}
	if r.SourceAddr != "" {
		actor.Network = &fhirNetwork{Address: r.SourceAddr, Type: networkType(r.SourceAddr)}
	}
	ev.Agent = []fhirAgent{actor}
	if r.DeviceID != "" && !(r.ActorType == ActorDevice && r.ActorID == r.DeviceID) {
		ev.Agent = append(ev.Agent, fhirAgent{Type: &fhirCodeableConcept{Text: "device"},
			Who: fhirReference{Identifier: &fhirIdentifier{System: "urn:clarion:device", Value: r.DeviceID}, Type: "Device"}})
	}
	if r.ObjectType != "" || r.ObjectID != "" {
		ent := fhirEntity{
			What: fhirReference{Identifier: &fhirIdentifier{System: "urn:clarion:" + nonEmpty(r.ObjectType, "object"),
				Value: r.ObjectID}, Display: r.ObjectType},
			Type: &fhirCoding{System: fhirObjectType, Code: "2", Display: "System Object"},
		}
		if r.ObjectType == "patient" {
			// Patients appear only by their opaque pseudonym, never an MRN.
			ent.Type = &fhirCoding{System: fhirObjectType, Code: "1", Display: "Person"}
			ent.Role = &fhirCoding{System: fhirObjectRole, Code: "1", Display: "Patient"}
		}
		if r.CorrelationID != "" {
			ent.Detail = append(ent.Detail, fhirEntityDetail{Type: "correlation_id", ValueString: r.CorrelationID})
		}
		if len(r.Detail) > 0 && string(r.Detail) != "{}" {
			ent.Detail = append(ent.Detail, fhirEntityDetail{Type: "detail", ValueString: string(r.Detail)})
		}
		ent.Detail = append(ent.Detail, fhirEntityDetail{Type: "chain", ValueString: fmt.Sprintf(
			"seq=%d hash=%s prev_hash=%s hash_version=%d", r.Seq, r.Hash, r.PrevHash, r.HashVersion)})
		ev.Entity = []fhirEntity{ent}
	}
	return ev
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// eventType maps an action to the DICOM audit event ID (the R4 binding).
func eventType(action string) fhirCoding {
	switch {
	case strings.HasPrefix(action, "auth.") || strings.HasPrefix(action, "login") || strings.HasPrefix(action, "token."):
		return fhirCoding{System: fhirDCM, Code: "110114", Display: "User Authentication"}
	case action == "audit.queried":
		return fhirCoding{System: fhirDCM, Code: "110112", Display: "Query"}
	case action == "audit.exported":
		return fhirCoding{System: fhirDCM, Code: "110106", Display: "Export"}
	case strings.HasPrefix(action, "patient."):
		return fhirCoding{System: fhirDCM, Code: "110110", Display: "Patient Record"}
	case strings.HasPrefix(action, "audit."):
		return fhirCoding{System: fhirDCM, Code: "110101", Display: "Audit Log Used"}
	case strings.HasPrefix(action, "ingest."):
		return fhirCoding{System: fhirDCM, Code: "110107", Display: "Import"}
	}
	return fhirCoding{System: fhirDCM, Code: "110100", Display: "Application Activity"}
}

// eventAction maps the verb of an action to C, R, U, D or E.
func eventAction(action string) string {
	verb := action[strings.LastIndexByte(action, '.')+1:]
	switch verb {
	case "opened", "issued", "created", "saved", "enrolled", "added":
		return "C"
	case "read", "queried", "verified", "exported", "viewed":
		return "R"
	case "purged", "deleted", "wiped", "revoked":
		return "D"
	case "updated", "escalated", "accepted", "declined", "delivered", "sent", "context_updated", "routed",
		"rotated", "closed":
		return "U"
	}
	return "E"
}

// eventOutcome maps Clarion's outcome to the R4 codes 0, 4, 8, 12.
func eventOutcome(o string) (string, string) {
	switch o {
	case "", "success":
		return "0", ""
	case "no_effect":
		return "0", o
	case "error":
		return "8", o
	}
	return "4", o // failure, denied, rejected: the action did not take place
}

// networkType is 2 for an IP address (with or without a port), else 1.
func networkType(addr string) string {
	host := addr
	if h, _, ok := strings.Cut(addr, ":"); ok && strings.Count(addr, ":") == 1 {
		host = h
	}
	if strings.Trim(host, "0123456789.") == "" || strings.Contains(host, ":") {
		return "2"
	}
	return "1"
}

// fhirExport streams a Bundle of type collection: the header, then one
// entry per record, then the closing brackets.
type fhirExport struct {
	w        *bufio.Writer
	observer string
	n        int
}

func newFHIRExport(w io.Writer, observer string, now time.Time) (*fhirExport, error) {
	f := &fhirExport{w: bufio.NewWriter(w), observer: observer}
	_, err := fmt.Fprintf(f.w, `{"resourceType":"Bundle","type":"collection","timestamp":%q,"entry":[`,
		now.UTC().Format(time.RFC3339Nano))
	return f, err
}

func (f *fhirExport) Write(r Record) error {
	b, err := json.Marshal(struct {
		Resource fhirAuditEvent `json:"resource"`
	}{toAuditEvent(r, f.observer)})
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if f.n > 0 {
		f.w.WriteByte(',')
	}
	f.n++
	_, err = f.w.Write(b)
	return err
}

func (f *fhirExport) Close() error {
	f.w.WriteString("]}\n")
	return f.w.Flush()
}
