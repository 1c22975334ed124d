package outbound

import (
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// SearchParam is one search parameter Clarion honours.
type SearchParam struct {
	Name string
	Type fhir.SearchParamType
	Doc  string
}

// ResourceSupport is what Clarion does with one resource type.
type ResourceSupport struct {
	Type              fhir.ResourceType
	Create            bool // POST [base]/Type (with If-None-Exist)
	Read              bool // GET [base]/Type/id
	Search            bool // GET [base]/Type?…
	Scope             string
	SearchParams      []SearchParam
	ConditionalCreate bool
}

var (
	pPatient     = SearchParam{"patient", fhir.SearchParamTypeReference, "the patient's pseudonym (pt_…), optionally as Patient/pt_… or urn:clarion:patient-pseudonym|pt_…"}
	pSubject     = SearchParam{"subject", fhir.SearchParamTypeReference, "same as patient"}
	pLastUpdated = SearchParam{"_lastUpdated", fhir.SearchParamTypeDate, "eq, ne, gt, ge, lt, le, sa, eb prefixes; repeat to bound both sides"}
)

// Supported lists exactly what the FHIR interface serves; the handlers and
// the CapabilityStatement are both driven by it.
var Supported = []ResourceSupport{
	{Type: fhir.ResourceTypeObservation, Create: true, ConditionalCreate: true, Scope: "system/Observation.write"},
	{Type: fhir.ResourceTypeEncounter, Create: true, ConditionalCreate: true, Scope: "system/Encounter.write"},
	{Type: fhir.ResourceTypeDiagnosticReport, Create: true, ConditionalCreate: true, Scope: "system/DiagnosticReport.write"},
	{Type: fhir.ResourceTypeCommunicationRequest, Create: true, ConditionalCreate: true, Read: true, Search: true,
		Scope: "system/CommunicationRequest.write, system/CommunicationRequest.read",
		SearchParams: []SearchParam{pPatient, pSubject,
			{"status", fhir.SearchParamTypeToken, "active (open alert) or completed (accepted or closed)"},
			{"identifier", fhir.SearchParamTypeToken, "system|value of a reported alert (ITI-84/ITI-85), or urn:clarion:alert|alr_…"},
			pLastUpdated}},
	{Type: fhir.ResourceTypeCommunication, Read: true, Search: true, Scope: "system/Communication.read",
		SearchParams: []SearchParam{pPatient, pSubject,
			{"status", fhir.SearchParamTypeToken, "in-progress (sent) or completed (delivered, or a response)"},
			{"based-on", fhir.SearchParamTypeReference, "CommunicationRequest/<alert id>"},
			pLastUpdated}},
	{Type: fhir.ResourceTypeFlag, Read: true, Search: true, Scope: "system/Flag.read",
		SearchParams: []SearchParam{pPatient, pSubject,
			{"status", fhir.SearchParamTypeToken, "active (open alert) or inactive"}, pLastUpdated}},
	{Type: fhir.ResourceTypeAuditEvent, Read: true, Search: true, Scope: "system/AuditEvent.read",
		SearchParams: []SearchParam{pPatient,
			{"outcome", fhir.SearchParamTypeToken, "0 (success) or 8 (failure)"},
			{"action", fhir.SearchParamTypeToken, "the Clarion action, e.g. alert.opened"},
			{"date", fhir.SearchParamTypeDate, "when recorded; same prefixes as _lastUpdated"},
			pLastUpdated}},
}

// Lookup returns the support of a resource type.
func Lookup(typ string) (ResourceSupport, bool) {
	for _, s := range Supported {
		if s.Type.Code() == typ {
			return s, true
		}
	}
	return ResourceSupport{}, false
}

// CapabilityStatement describes the FHIR interface at base.
func CapabilityStatement(base, version string, date time.Time) fhir.CapabilityStatement {
	cs := fhir.CapabilityStatement{
		Id: ptr("clarion"), Url: ptr(base + "/metadata"), Name: ptr("Clarion"), Title: ptr("Clarion clinical alert routing"),
		Status: fhir.PublicationStatusActive, Date: Instant(date), Publisher: ptr("Clarion"),
		Kind: fhir.CapabilityStatementKindInstance, FhirVersion: fhir.FHIRVersion4_0_1,
		Format:         []string{"json", "application/fhir+json", "application/json"},
		Software:       &fhir.CapabilityStatementSoftware{Name: "Clarion", Version: ptr(version)},
		Implementation: &fhir.CapabilityStatementImplementation{Description: "Clarion FHIR R4 interface", Url: ptr(base)},
		Description: ptr("Clarion receives vital signs, results, encounters and reported alerts (IHE mACM ITI-84), " +
			"subscribes to EHR FHIR servers (Subscriptions R4 Backport IG and R5-style notifications at " +
			"[base]/subscription-notification/<subscription id>), and serves its alerts, communications and audit trail."),
	}
	rest := fhir.CapabilityStatementRest{Mode: fhir.RestfulCapabilityModeServer,
		Documentation: ptr("Every interaction but GET [base]/metadata needs a bearer token with SMART-style system scopes."),
		Security: &fhir.CapabilityStatementRestSecurity{
			Service: []fhir.CodeableConcept{{Coding: []fhir.Coding{{
				System: ptr("http://terminology.hl7.org/CodeSystem/restful-security-service"), Code: ptr("SMART-on-FHIR")}}}},
			Description: ptr("Bearer tokens issued by `clarion token create --scopes`; scopes system/<Type|*>.<read|write|*|cruds>."),
		},
		Interaction: []fhir.CapabilityStatementRestInteraction{
			{Code: fhir.SystemRestfulInteractionTransaction, Documentation: ptr("all or nothing; POST entries of the created types only")},
			{Code: fhir.SystemRestfulInteractionBatch, Documentation: ptr("each entry on its own; POST entries of the created types only")},
		},
	}
	for _, s := range Supported {
		r := fhir.CapabilityStatementRestResource{Type: s.Type, Documentation: ptr("scopes: " + s.Scope)}
		if s.Create {
			r.Interaction = append(r.Interaction, fhir.CapabilityStatementRestResourceInteraction{Code: fhir.TypeRestfulInteractionCreate})
			r.ConditionalCreate = ptr(s.ConditionalCreate)
		}
		if s.Read {
			r.Interaction = append(r.Interaction, fhir.CapabilityStatementRestResourceInteraction{Code: fhir.TypeRestfulInteractionRead})
		}
		if s.Search {
			r.Interaction = append(r.Interaction, fhir.CapabilityStatementRestResourceInteraction{Code: fhir.TypeRestfulInteractionSearchType})
		}
		for _, p := range s.SearchParams {
			r.SearchParam = append(r.SearchParam, fhir.CapabilityStatementRestResourceSearchParam{Name: p.Name, Type: p.Type,
				Documentation: ptr(p.Doc)})
		}
		rest.Resource = append(rest.Resource, r)
	}
	cs.Rest = []fhir.CapabilityStatementRest{rest}
	return cs
}
