package hl7

import (
	"errors"
	"strings"
	"time"

	"github.com/clarion-health/clarion/ingest"
)

// ToEvent maps a message to an ingest.Event:
//
//	ADT A01 A02 A03 A04 A08 A11 A12 A13   the patient and where they are (map_adt.go)
//	ADT A17                               a bed swap: Event.Other is the second patient
//	ADT A40                               a merge: Event.PriorPatient is MRG-1
//	ORU R01                               results, IHE PCD-01 device observations (map_oru.go)
//	ORU R40                               IHE PCD-04 alarms and watchdogs (map_alarm.go)
//
// Every error is a *ParseError with a table 0357 code locating the
// offending segment and field; none carries a field value.
func ToEvent(m *Message) (ingest.Event, error) {
	var msh [19]Value
	m.MSH().Fields(msh[:])
	kind, kerr := kindOf(msh[9].Comp(1), msh[9].Comp(2))
	if kerr != nil {
		return ingest.Event{}, kerr
	}
	ev := ingest.Event{Kind: kind, Trigger: msh[9].Comp(1).String() + "^" + msh[9].Comp(2).String()}

	app, fac := msh[3].Comp(1).String(), msh[4].Comp(1).String()
	if strings.TrimSpace(app+fac) == "" {
		// Validate would accept the bare "^": require a sender explicitly.
		return ingest.Event{}, perr(CodeRequiredMissing, "MSH", 1, 3, 1, "sending application or facility is required")
	}
	ev.Source = app + "^" + fac
	if ev.SourceID = msh[10].String(); ev.SourceID == "" {
		return ingest.Event{}, perr(CodeRequiredMissing, "MSH", 1, 10, 0, "message control id is required")
	}
	ver, ok := versionOf(msh[12].Comp(1))
	if !ok {
		return ingest.Event{}, perr(CodeUnsupportedVersion, "MSH", 1, 12, 1, "only HL7 v2.x is supported")
	}
	var err error
	if ev.OccurredAt, err = occurredAt(m, msh[7]); err != nil {
		return ingest.Event{}, err
	}
	switch {
	case kind.IsADT():
		err = mapADT(m, &ev)
	case kind == ingest.KindResult:
		err = mapResult(m, &ev, ver)
	default: // ORU^R40: an alarm, or a watchdog
		err = mapAlarm(m, &ev, ver)
	}
	if err != nil {
		return ingest.Event{}, err
	}
	if err := ev.Validate(); err != nil {
		var ve *ingest.ValidationError
		if errors.As(err, &ve) {
			return ingest.Event{}, fromValidation(ve)
		}
		return ingest.Event{}, perr(CodeApplicationInternal, "", 0, 0, 0, "event validation failed")
	}
	return ev, nil
}

// adtKind maps an ADT trigger event to its kind.
func adtKind(trig Value) (ingest.Kind, bool) {
	switch string(trig.Raw()) {
	case "A01":
		return ingest.KindAdmit, true
	case "A02":
		return ingest.KindTransfer, true
	case "A03":
		return ingest.KindDischarge, true
	case "A04":
		return ingest.KindRegister, true
	case "A08":
		return ingest.KindUpdate, true
	case "A11":
		return ingest.KindCancelAdmit, true
	case "A12":
		return ingest.KindCancelTransfer, true
	case "A13":
		return ingest.KindCancelDischarge, true
	case "A17":
		return ingest.KindSwap, true
	case "A40":
		return ingest.KindMerge, true
	}
	return "", false
}

// kindOf: ORU^R40 says KindAlarm here; mapAlarm turns a watchdog into
// KindWatchdog.
func kindOf(typ, trig Value) (ingest.Kind, *ParseError) {
	switch {
	case typ.Equal("ADT"):
		if k, ok := adtKind(trig); ok {
			return k, nil
		}
	case typ.Equal("ORU"):
		switch {
		case trig.Equal("R01"):
			return ingest.KindResult, nil
		case trig.Equal("R40"):
			return ingest.KindAlarm, nil
		}
	default:
		return "", perr(CodeUnsupportedType, "MSH", 1, 9, 1, "message type is not supported")
	}
	return "", perr(CodeUnsupportedEvent, "MSH", 1, 9, 2, "trigger event is not supported for this message type")
}

// version is an HL7 v2 minor version: 5 for "2.5.1".
type version int

// versionOf reads MSH-12.1, which must be 2.x.
func versionOf(v Value) (version, bool) {
	b := v.Raw()
	if len(b) < 3 || b[0] != '2' || b[1] != '.' {
		return 0, false
	}
	n := 0
	for _, c := range b[2:] {
		if c < '0' || c > '9' {
			break
		}
		n = min(n*10+int(c-'0'), 1000)
	}
	return version(n), true
}

// occurredAt is EVN-2 when present, else MSH-7.
func occurredAt(m *Message, msh7 Value) (t time.Time, err error) {
	if evn, ok := m.Segment("EVN", 1); ok {
		if v := evn.Field(2).Comp(1).String(); v != "" {
			if t, err = ParseDTM(v); err != nil {
				return t, perr(CodeDataType, "EVN", 1, 2, 1, "recorded date/time is not a valid DTM")
			}
			return t, nil
		}
	}
	v := msh7.Comp(1).String()
	if v == "" {
		return t, perr(CodeRequiredMissing, "MSH", 1, 7, 1, "message date/time is required")
	}
	if t, err = ParseDTM(v); err != nil {
		return t, perr(CodeDataType, "MSH", 1, 7, 1, "message date/time is not a valid DTM")
	}
	return t, nil
}

// fromValidation locates an ingest.ValidationError in HL7 terms.
func fromValidation(ve *ingest.ValidationError) *ParseError {
	e := perr(CodeRequiredMissing, "", 0, 0, 0, ve.Error())
	at := func(seg string, seq, field, comp int) {
		e.Segment, e.SegmentSeq, e.Field, e.Component = seg, seq, field, comp
	}
	switch {
	case ve.Field == "kind":
		at("MSH", 1, 9, 0)
	case ve.Field == "source":
		at("MSH", 1, 3, 0)
	case ve.Field == "source_id":
		at("MSH", 1, 10, 0)
	case ve.Field == "patient.id":
		at("PID", 1, 3, 1)
	case ve.Field == "prior_patient.id":
		at("MRG", 1, 1, 1)
	case ve.Field == "other.patient.id":
		at("PID", 2, 3, 1)
	case strings.HasPrefix(ve.Field, "location."):
		at("PV1", 1, 3, 1)
	case strings.HasPrefix(ve.Field, "alarm."):
		at("OBX", 0, 3, 0)
	case strings.HasPrefix(ve.Field, "observations"):
		e.Segment = "OBX"
	}
	return e
}
