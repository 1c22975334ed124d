package decode

import (
	"fmt"
	"net/http"

	dtpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

// Encounter mapping (documented in docs/fhir.md):
//
//	arrived, in-progress + a current location → adt.admit, or adt.transfer
//	                                            when a completed location precedes it
//	finished                                  → adt.discharge
//	any other status                          → 422 (nothing to route)
//
// The current location is the last Encounter.location whose status is
// active (or absent). Its unit is the Location's id (Location/4W → "4W");
// a contained Location is read with its partOf chain by physicalType
// (bd → bed, ro → room, wa/wi/lvl/bu/si or none → unit), named by its
// first identifier value, else its name; a display-only reference gives
// the display as the unit.
func mapEncounter(e *encpb.Encounter, path string) (*Mapped, *Error) {
	status := enumCode(e.GetStatus().GetValue())
	m := &Mapped{ResourceType: "Encounter", Identifier: firstIdentifier(e.GetIdentifier()), Status: status}
	cont := contained(e.GetContained())
	p, perr := patientOf(e.GetSubject(), cont, path+".subject")
	if perr != nil {
		return nil, perr
	}
	ev := &m.Event
	ev.Patient, ev.Trigger = p, "Encounter"
	if id := m.Identifier; id != nil {
		ev.Visit.Number = id.Value
	}
	ev.Visit.Class = classOf(e.GetClassValue().GetCode().GetValue())
	for _, part := range e.GetParticipant() {
		for _, t := range part.GetType() {
			if c, ok := firstCoding(t); ok && c.Code == "ATND" {
				if r, ok := ReadRef(part.GetIndividual()); ok {
					ev.Visit.Attending = refLabel(r)
				}
			}
		}
	}
	switch status {
	case "arrived", "in-progress":
		cur, prior := -1, false
		for i, l := range e.GetLocation() {
			switch s := l.GetStatus(); {
			case s == nil || enumCode(s.GetValue()) == "active":
				cur = i
			case enumCode(s.GetValue()) == "completed":
				prior = true
			}
		}
		if cur < 0 {
			return nil, Errorf(http.StatusUnprocessableEntity, CodeRequired, path+".location",
				"an %s encounter needs a current (active) location: it tells Clarion the patient's unit", status)
		}
		lpath := fmt.Sprintf("%s.location[%d].location", path, cur)
		loc, lerr := locationOf(e.GetLocation()[cur].GetLocation(), cont, lpath)
		if lerr != nil {
			return nil, lerr
		}
		ev.Location = loc
		ev.Kind = ingest.KindAdmit
		if prior {
			ev.Kind = ingest.KindTransfer
		}
		ev.OccurredAt = dateTime(e.GetPeriod().GetStart())
	case "finished":
		ev.Kind = ingest.KindDischarge
		ev.OccurredAt = dateTime(e.GetPeriod().GetEnd())
	default:
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".status",
			"status %q does not move the patient: Clarion routes arrived, in-progress (admit/transfer) and finished (discharge) encounters", status)
	}
	return m, nil
}

func classOf(code string) string {
	switch code {
	case "IMP", "ACUTE", "NONAC":
		return "I"
	case "EMER":
		return "E"
	case "AMB", "OBSENC", "HH", "VR":
		return "O"
	case "PRENC":
		return "P"
	}
	return code
}

func locationOf(ref *dtpb.Reference, cont map[string]*r4pb.ContainedResource, path string) (ingest.Location, *Error) {
	r, ok := ReadRef(ref)
	if !ok {
		return ingest.Location{}, Errorf(http.StatusUnprocessableEntity, CodeRequired, path, "the location reference is empty")
	}
	if r.Type != "" && r.Type != "Location" {
		return ingest.Location{}, Errorf(http.StatusUnprocessableEntity, CodeValue, path, "the reference must be to a Location, not a %s", r.Type)
	}
	var loc ingest.Location
	if r.Fragment != "" {
		seen := map[string]bool{}
		for id := r.Fragment; id != "" && !seen[id]; {
			seen[id] = true
			c := cont[id].GetLocation()
			if c == nil {
				break
			}
			name := c.GetName().GetValue()
			if v := firstIdentifier(c.GetIdentifier()); v != nil {
				name = v.Value
			}
			kind := ""
			if cc, ok := firstCoding(c.GetPhysicalType()); ok {
				kind = cc.Code
			}
			switch kind {
			case "bd":
				loc.Bed = name
			case "ro":
				loc.Room = name
			default:
				if loc.Unit == "" {
					loc.Unit = name
				}
			}
			next, _ := ReadRef(c.GetPartOf())
			id = next.Fragment
		}
	} else {
		loc.Unit = r.ID
		if loc.Unit == "" && r.Identifier != nil {
			loc.Unit = r.Identifier.Value
		}
		if loc.Unit == "" {
			loc.Unit = r.Display
		}
	}
	if loc.Unit == "" {
		return loc, Errorf(http.StatusUnprocessableEntity, CodeRequired, path,
			"the location names no unit: give Location/<unit id>, an identifier, or a display")
	}
	return loc, nil
}
