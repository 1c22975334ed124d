// Package outbound builds the FHIR R4 resources Clarion serves, with the
// samply model structs: OperationOutcome, CapabilityStatement, Bundles
// (searchset, batch-response, transaction-response), and the read-only
// views of Clarion's own records: alerts as CommunicationRequest and Flag,
// messages and responses as Communication, the audit log as AuditEvent.
// Every builder's output validates against the strict google/fhir decoder
// (the tests round-trip each one).
package outbound

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/clarion-health/clarion/fhir/decode"
)

// Identifier systems Clarion uses in the resources it serves.
const (
	SystemPseudonym = "urn:clarion:patient-pseudonym" // the opaque pt_… pseudonym: Clarion keeps no patient id in clear
	SystemAlert     = "urn:clarion:alert"
	SystemRule      = "urn:clarion:rule"
	SystemUser      = "urn:clarion:user"
	SystemDevice    = "urn:clarion:device"
	SystemResponse  = "urn:clarion:response"
	SystemAction    = "urn:clarion:audit-action"
	SystemObject    = "urn:clarion:audit-object"
	SystemActor     = "urn:clarion:audit-actor"
)

// ContentType is what every FHIR answer is sent as.
const ContentType = "application/fhir+json; charset=utf-8"

// ID turns a Clarion id ("alr_0abc…") into a FHIR id ("alr-0abc…"): FHIR
// ids allow letters, digits, "-" and "." only. Clarion ids hold a single
// "_" after the prefix, so the mapping is reversible.
func ID(clarionID string) string { return strings.Replace(clarionID, "_", "-", 1) }

// ClarionID reverses ID.
func ClarionID(fhirID string) string { return strings.Replace(fhirID, "-", "_", 1) }

// Instant formats a time as a FHIR instant (UTC, microseconds).
func Instant(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func ptr[T any](v T) *T { return &v }

func meta(updated time.Time) *fhir.Meta {
	return &fhir.Meta{VersionId: ptr("1"), LastUpdated: ptr(Instant(updated))}
}

// PatientRef references a patient by pseudonym: Clarion holds no patient
// identifier in clear outside sealed data, so a logical reference by the
// pseudonym is all it can give (and all a search by patient can take).
func PatientRef(pseudonym string) *fhir.Reference {
	return &fhir.Reference{Type: ptr("Patient"), Identifier: &fhir.Identifier{System: ptr(SystemPseudonym), Value: ptr(pseudonym)}}
}

func identified(typ, system, value string) *fhir.Reference {
	return &fhir.Reference{Type: ptr(typ), Identifier: &fhir.Identifier{System: ptr(system), Value: ptr(value)}}
}

// Marshal encodes a samply resource.
func Marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // the samply structs always encode
		panic(err)
	}
	return b
}

// OperationOutcome lists the issues of a refused (or accepted) request.
func OperationOutcome(issues ...decode.Issue) fhir.OperationOutcome {
	oo := fhir.OperationOutcome{Issue: make([]fhir.OperationOutcomeIssue, 0, len(issues))}
	for _, is := range issues {
		sev := fhir.IssueSeverityError
		switch is.Severity {
		case "fatal":
			sev = fhir.IssueSeverityFatal
		case "warning":
			sev = fhir.IssueSeverityWarning
		case "information":
			sev = fhir.IssueSeverityInformation
		}
		out := fhir.OperationOutcomeIssue{Severity: sev, Code: issueType(is.Code)}
		if is.Diagnostics != "" {
			out.Diagnostics = ptr(is.Diagnostics)
		}
		if is.Expression != "" {
			out.Expression = []string{is.Expression}
		}
		oo.Issue = append(oo.Issue, out)
	}
	return oo
}

// Information is a one-issue informational OperationOutcome.
func Information(text string) fhir.OperationOutcome {
	return OperationOutcome(decode.Issue{Severity: "information", Code: decode.CodeInformation, Diagnostics: text})
}

func issueType(code string) fhir.IssueType {
	for t := fhir.IssueTypeInvalid; t <= fhir.IssueTypeInformational; t++ {
		if t.Code() == code {
			return t
		}
	}
	return fhir.IssueTypeProcessing
}

// Entry is one entry of a Bundle Clarion answers with.
type Entry struct {
	FullURL  string
	Resource []byte // the resource's JSON, or nil
	// Response fields (batch-response, transaction-response).
	Status       string // "201 Created"
	Location     string
	LastModified time.Time
	Outcome      []byte // an OperationOutcome's JSON
}

// SearchSet is a page of search results with its self and next links.
func SearchSet(entries []Entry, self, next string, now time.Time) fhir.Bundle {
	b := fhir.Bundle{Type: fhir.BundleTypeSearchset, Timestamp: ptr(Instant(now)),
		Link: []fhir.BundleLink{{Relation: "self", Url: self}}}
	if next != "" {
		b.Link = append(b.Link, fhir.BundleLink{Relation: "next", Url: next})
	}
	mode := fhir.SearchEntryModeMatch
	for _, e := range entries {
		b.Entry = append(b.Entry, fhir.BundleEntry{FullUrl: ptr(e.FullURL), Resource: e.Resource,
			Search: &fhir.BundleEntrySearch{Mode: &mode}})
	}
	return b
}

// ResponseBundle answers a batch or a transaction.
func ResponseBundle(transaction bool, entries []Entry, now time.Time) fhir.Bundle {
	t := fhir.BundleTypeBatchResponse
	if transaction {
		t = fhir.BundleTypeTransactionResponse
	}
	b := fhir.Bundle{Type: t, Timestamp: ptr(Instant(now)), Entry: make([]fhir.BundleEntry, 0, len(entries))}
	for _, e := range entries {
		r := &fhir.BundleEntryResponse{Status: e.Status}
		if e.Location != "" {
			r.Location = ptr(e.Location)
		}
		if !e.LastModified.IsZero() {
			r.LastModified = ptr(Instant(e.LastModified))
		}
		if e.Outcome != nil {
			r.Outcome = e.Outcome
		}
		be := fhir.BundleEntry{Response: r}
		if e.FullURL != "" {
			be.FullUrl = ptr(e.FullURL)
		}
		if e.Resource != nil {
			be.Resource = e.Resource
		}
		b.Entry = append(b.Entry, be)
	}
	return b
}
