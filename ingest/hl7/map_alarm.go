package hl7

import (
	"strings"

	"github.com/clarion-health/clarion/ingest"
)

// MDC reference ids an IHE PCD-04 ORU^R40 is read by. Clarion keys on the
// text, never the number: vendors' numbers differ (MDC_EVT_ACTIVE is 196614
// from one and 258047 from another).
const (
	mdcEventPrefix  = "MDC_EVT_"
	mdcWatchdog     = "MDC_EVT_ACTIVE" // the reporter's keep-alive
	mdcPhase        = "MDC_ATTR_EVENT_PHASE"
	mdcState        = "MDC_ATTR_ALARM_STATE"
	mdcInactivation = "MDC_ATTR_ALARM_INACTIVATION_STATE"
	mdcPriority     = "MDC_ATTR_ALARM_PRIORITY"
	mdcType         = "MDC_ATTR_ALERT_TYPE"
)

// mapAlarm fills an ORU^R40 (IHE PCD-04). The alarm's facets are OBX
// segments under its OBR:
//
//	OBR-3                                the alert's identity across its phases
//	first OBX whose OBX-3 is MDC_EVT_*   the event (Alarm.Source), with OBX-8
//	                                     carrying priority (PH PM PL PN) and type
//	                                     (SP ST SA), and OBX-18 the equipment
//	OBX MDC_ATTR_EVENT_PHASE             start, continue, end, ...
//	OBX MDC_ATTR_ALARM_STATE             active, inactive, latched, ...
//	OBX MDC_ATTR_ALARM_INACTIVATION_STATE enabled, audio-paused, ...
//	OBX MDC_ATTR_ALARM_PRIORITY          priority, when sent as its own facet
//	OBX MDC_ATTR_ALERT_TYPE              type, when sent as its own facet
//
// A facet OBX wins over OBX-8. An event of MDC_EVT_ACTIVE is the reporter's
// watchdog: KindWatchdog, with no observations and no patient required.
func mapAlarm(m *Message, ev *ingest.Event, ver version) error {
	if pid, ok := m.Segment("PID", 1); ok {
		ev.Patient = cxPatient(pid.Field(3))
	}
	pv1, _ := inGroup(m, 1, "PV1")
	ev.Location = locationOf(pv1)
	if m.Count("OBX") == 0 {
		return perr(CodeSegmentSequence, "OBX", 1, 0, 0, "an alarm needs OBX segments")
	}
	obs, err := observations(m, ver)
	if err != nil {
		return err
	}
	a := &ingest.Alarm{Reporter: text(m.MSH().Field(3).Comp(1))}
	if obr, ok := m.Segment("OBR", 1); ok {
		a.ID = text(obr.Field(3).Rep(1))
	}
	event := -1
	for i := range obs {
		if o := &obs[i]; o.System == "MDC" && strings.HasPrefix(o.Code, mdcEventPrefix) {
			event = i
			break
		}
	}
	if event < 0 {
		return perr(CodeRequiredMissing, "OBX", 0, 3, 0, "an alarm needs an OBX whose OBX-3 is an MDC_EVT_ event")
	}
	a.Source, a.EquipmentID = obs[event].Code, obs[event].EquipmentID
	for _, f := range obs[event].Flags {
		switch f {
		case "PH", "PM", "PL", "PN":
			a.Priority = f
		case "SP", "ST", "SA":
			a.Type = f
		}
	}
	for i := range obs {
		o := &obs[i]
		if o.System != "MDC" || o.Value == "" {
			continue
		}
		switch o.Code {
		case mdcPhase:
			a.Phase = o.Value
		case mdcState:
			a.State = o.Value
		case mdcInactivation:
			a.InactivationState = o.Value
		case mdcPriority:
			a.Priority = o.Value
		case mdcType:
			a.Type = o.Value
		}
	}
	ev.Alarm = a
	if a.Source == mdcWatchdog {
		ev.Kind = ingest.KindWatchdog
		return nil
	}
	ev.Observations = obs
	return nil
}
