package decode

import (
	"net/http"
	"strings"

	crpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/communication_request_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

// Reported alerts (IHE mACM ITI-84) without a coded reason or category get
// this code, so that one rule can route every reported alert.
const (
	ReportedAlertSystem = "MACM"
	ReportedAlertCode   = "ITI-84"
)

// mapCommunicationRequest maps an IHE mACM "Mobile Report Alert" (ITI-84)
// to a result event with one observation that routing rules match like any
// other: its code is the first coding of reasonCode, else of category, else
// MACM/ITI-84; its value is the first payload string; its flag is the
// request's priority (routine, urgent, asap, stat).
func mapCommunicationRequest(c *crpb.CommunicationRequest, path string) (*Mapped, *Error) {
	status := enumCode(c.GetStatus().GetValue())
	m := &Mapped{ResourceType: "CommunicationRequest", Identifier: firstIdentifier(c.GetIdentifier()), Status: status}
	if status != "active" {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".status",
			"status %q: Clarion routes reported alerts with status active only", status)
	}
	cont := contained(c.GetContained())
	p, perr := patientOf(c.GetSubject(), cont, path+".subject")
	if perr != nil {
		return nil, perr
	}
	code, ok := firstCoding(append(c.GetReasonCode(), c.GetCategory()...)...)
	if !ok {
		code = coded{System: ReportedAlertSystem, Code: ReportedAlertCode, Display: "Reported alert"}
	}
	o := ingest.Observation{Code: code.Code, System: code.System, Display: code.Display, ValueType: "ST", Status: "F",
		ObservedAt: dateTime(c.GetAuthoredOn())}
	for _, pl := range c.GetPayload() {
		if s := pl.GetContent().GetStringValue().GetValue(); s != "" {
			o.Value = s
			break
		}
	}
	if pr := c.GetPriority(); pr != nil {
		o.Flags = []string{strings.ToLower(enumCode(pr.GetValue()))}
	}
	m.Event.Kind, m.Event.Trigger, m.Event.Patient = ingest.KindResult, "CommunicationRequest", p
	m.Event.OccurredAt = o.ObservedAt
	m.Event.Observations = []ingest.Observation{o}
	return m, nil
}
