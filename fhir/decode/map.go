package decode

import (
	"net/http"

	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

// Routed lists the resource types Clarion accepts for create.
var Routed = []string{"Observation", "Encounter", "DiagnosticReport", "CommunicationRequest"}

// Mapped is an inbound resource read into the event Clarion routes. The
// caller sets Event.Source and Event.SourceID (who sent it, and its dedup
// key) and Event.OccurredAt when the resource gave no time.
type Mapped struct {
	ResourceType string
	Identifier   *Identifier // the first business identifier, nil when none
	Status       string      // the resource's status code
	Event        ingest.Event
}

// Map reads a decoded resource. path is the FHIRPath of the resource
// ("Observation", or "Bundle.entry[3].resource"); a refusal is an *Error
// with status 422 (valid FHIR that Clarion cannot route).
func Map(cr *r4pb.ContainedResource, path string) (*Mapped, error) {
	var (
		m    *Mapped
		merr *Error
	)
	switch r := cr.GetOneofResource().(type) {
	case *r4pb.ContainedResource_Observation:
		m, merr = mapObservation(r.Observation, path, nil)
	case *r4pb.ContainedResource_Encounter:
		m, merr = mapEncounter(r.Encounter, path)
	case *r4pb.ContainedResource_DiagnosticReport:
		m, merr = mapReport(r.DiagnosticReport, path)
	case *r4pb.ContainedResource_CommunicationRequest:
		m, merr = mapCommunicationRequest(r.CommunicationRequest, path)
	default:
		return nil, Errorf(http.StatusUnprocessableEntity, CodeNotSupported, path,
			"Clarion accepts Observation, Encounter, DiagnosticReport and CommunicationRequest, not %s", TypeOf(cr))
	}
	if merr != nil {
		return nil, merr
	}
	return m, nil
}
