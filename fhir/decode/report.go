package decode

import (
	"fmt"
	"net/http"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/diagnostic_report_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

var reportStatus = map[string]bool{"partial": true, "preliminary": true, "final": true, "amended": true,
	"corrected": true, "appended": true}

// mapReport maps a DiagnosticReport: its contained result Observations are
// routed as one result event; results that are separate resources are
// routed when they are POSTed themselves (in the same Bundle, typically),
// so a report holding only such references is accepted with nothing to
// route of its own.
func mapReport(r *dpb.DiagnosticReport, path string) (*Mapped, *Error) {
	status := enumCode(r.GetStatus().GetValue())
	m := &Mapped{ResourceType: "DiagnosticReport", Identifier: firstIdentifier(r.GetIdentifier()), Status: status}
	if !reportStatus[status] {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".status",
			"status %q is not routed: Clarion routes partial, preliminary, final, amended, corrected and appended reports", status)
	}
	cont := contained(r.GetContained())
	p, perr := patientOf(r.GetSubject(), cont, path+".subject")
	if perr != nil {
		return nil, perr
	}
	m.Event.Kind, m.Event.Trigger, m.Event.Patient = ingest.KindResult, "DiagnosticReport", p
	switch e := r.GetEffective().GetChoice().(type) {
	case *dpb.DiagnosticReport_EffectiveX_DateTime:
		m.Event.OccurredAt = dateTime(e.DateTime)
	case *dpb.DiagnosticReport_EffectiveX_Period:
		m.Event.OccurredAt = periodTime(e.Period)
	}
	if len(r.GetResult()) == 0 {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeRequired, path+".result",
			"a report without results has nothing for Clarion to route")
	}
	for i, ref := range r.GetResult() {
		rr, _ := ReadRef(ref)
		if rr.Fragment == "" {
			continue // a separate Observation: routed on its own
		}
		c, ok := cont[rr.Fragment]
		rpath := fmt.Sprintf("%s.result[%d]", path, i)
		if !ok {
			return nil, Errorf(http.StatusBadRequest, CodeInvalid, rpath, "no contained resource with id %q", rr.Fragment)
		}
		sub := p
		om, oerr := observationFromContained(c, rpath, &sub)
		if oerr != nil {
			return nil, oerr
		}
		m.Event.Observations = append(m.Event.Observations, om.Event.Observations...)
	}
	return m, nil
}
