package hl7

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/ingest"
)

// ToEvent maps an ADT^A01/A02/A03 or ORU^R01 message to an ingest.Event.
// Every error is a *ParseError locating the offending field; none carries
// a field value.
func ToEvent(m *Message) (ingest.Event, error) {
	msh := m.MSH()
	typ, trig := msh.Field(9).Comp(1).String(), msh.Field(9).Comp(2).String()
	kind, kerr := kindOf(typ, trig)
	if kerr != nil {
		return ingest.Event{}, kerr
	}
	ev := ingest.Event{Kind: kind, Trigger: typ + "^" + trig}

	app, fac := msh.Field(3).Comp(1).String(), msh.Field(4).Comp(1).String()
	if strings.TrimSpace(app+fac) == "" {
		// Validate would accept the bare "^": require a sender explicitly.
		return ingest.Event{}, perr(CodeRequiredMissing, "MSH", 1, 3, 1, "sending application or facility is required")
	}
	ev.Source = app + "^" + fac
	if ev.SourceID = msh.Field(10).String(); ev.SourceID == "" {
		return ingest.Event{}, perr(CodeRequiredMissing, "MSH", 1, 10, 0, "message control id is required")
	}
	if v := msh.Field(12).Comp(1).String(); !strings.HasPrefix(v, "2.") {
		return ingest.Event{}, perr(CodeUnsupportedVersion, "MSH", 1, 12, 1, "only HL7 v2.x is supported")
	}
	var err error
	if ev.OccurredAt, err = occurredAt(m); err != nil {
		return ingest.Event{}, err
	}
	if ev.Patient, err = patient(m); err != nil {
		return ingest.Event{}, err
	}
	if ev.Location, err = location(m, kind == ingest.KindAdmit || kind == ingest.KindTransfer); err != nil {
		return ingest.Event{}, err
	}
	if kind == ingest.KindResult {
		if ev.Observations, err = observations(m); err != nil {
			return ingest.Event{}, err
		}
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

func kindOf(typ, trig string) (ingest.Kind, *ParseError) {
	switch typ {
	case "ADT":
		switch trig {
		case "A01":
			return ingest.KindAdmit, nil
		case "A02":
			return ingest.KindTransfer, nil
		case "A03":
			return ingest.KindDischarge, nil
		}
	case "ORU":
		if trig == "R01" {
			return ingest.KindResult, nil
		}
	default:
		return "", perr(CodeUnsupportedType, "MSH", 1, 9, 1, "message type is not supported")
	}
	return "", perr(CodeUnsupportedEvent, "MSH", 1, 9, 2, "trigger event is not supported for this message type")
}

// occurredAt is EVN-2 when present, else MSH-7.
func occurredAt(m *Message) (t time.Time, err error) {
	if evn, ok := m.Segment("EVN", 1); ok {
		if v := evn.Field(2).Comp(1).String(); v != "" {
			if t, err = ParseDTM(v); err != nil {
				return t, perr(CodeDataType, "EVN", 1, 2, 1, "recorded date/time is not a valid DTM")
			}
			return t, nil
		}
	}
	v := m.MSH().Field(7).Comp(1).String()
	if v == "" {
		return t, perr(CodeRequiredMissing, "MSH", 1, 7, 1, "message date/time is required")
	}
	if t, err = ParseDTM(v); err != nil {
		return t, perr(CodeDataType, "MSH", 1, 7, 1, "message date/time is not a valid DTM")
	}
	return t, nil
}

func patient(m *Message) (ingest.Patient, error) {
	pid, ok := m.Segment("PID", 1)
	if !ok {
		return ingest.Patient{}, perr(CodeRequiredMissing, "PID", 1, 3, 0, "PID segment with a patient identifier is required")
	}
	cx := pid.Field(3).Rep(1)
	p := ingest.Patient{ID: cx.Comp(1).String(), Authority: cx.Comp(4).Sub(1).String()}
	if strings.TrimSpace(p.ID) == "" {
		return ingest.Patient{}, perr(CodeRequiredMissing, "PID", 1, 3, 1, "patient identifier is required")
	}
	return p, nil
}

func location(m *Message, required bool) (ingest.Location, error) {
	pv1, _ := m.Segment("PV1", 1) // the zero Segment reads as empty
	pl := pv1.Field(3)
	loc := ingest.Location{
		Unit:     pl.Comp(1).Sub(1).String(),
		Room:     pl.Comp(2).Sub(1).String(),
		Bed:      pl.Comp(3).Sub(1).String(),
		Facility: pl.Comp(4).Sub(1).String(),
	}
	if required && loc.Unit == "" {
		return loc, perr(CodeRequiredMissing, "PV1", 1, 3, 1, "point of care is required")
	}
	return loc, nil
}

func observations(m *Message) ([]ingest.Observation, error) {
	n := m.Count("OBX")
	if n == 0 {
		return nil, perr(CodeRequiredMissing, "OBX", 1, 0, 0, "a result needs at least one OBX segment")
	}
	obs := make([]ingest.Observation, 0, n)
	seq := 0
	for i := range m.Len() {
		s := m.SegmentAt(i)
		if !s.is("OBX") {
			continue
		}
		seq++
		o, err := observation(s, seq)
		if err != nil {
			return nil, err
		}
		obs = append(obs, o)
	}
	return obs, nil
}

func observation(s Segment, seq int) (ingest.Observation, error) {
	id := s.Field(3)
	o := ingest.Observation{
		ValueType:      s.Field(2).Comp(1).String(),
		Code:           id.Comp(1).String(),
		Display:        id.Comp(2).String(),
		System:         id.Comp(3).String(),
		Value:          s.Field(5).Rep(1).String(),
		Units:          s.Field(6).Comp(1).String(),
		ReferenceRange: s.Field(7).String(),
		Status:         s.Field(11).Comp(1).String(),
	}
	if o.Code == "" {
		return o, perr(CodeRequiredMissing, "OBX", seq, 3, 1, "observation identifier is required")
	}
	num, ok := numeric(o.ValueType, s.Field(5).Rep(1))
	if !ok {
		return o, perr(CodeDataType, "OBX", seq, 5, 0, "value is not valid for its value type")
	}
	o.Numeric = num
	flags := s.Field(8)
	for r := 1; r <= flags.Reps(); r++ {
		if f := flags.Rep(r).Comp(1).String(); f != "" {
			o.Flags = append(o.Flags, f)
		}
	}
	if v := s.Field(14).Comp(1).String(); v != "" {
		t, err := ParseDTM(v)
		if err != nil {
			return o, perr(CodeDataType, "OBX", seq, 14, 1, "observation date/time is not a valid DTM")
		}
		o.ObservedAt = t
	}
	return o, nil
}

// numeric reads NM and simple SN values (">^10", "^182"); an empty value
// has no number. SN ranges and ratios (a third component) are left as text.
func numeric(valueType string, v Value) (*float64, bool) {
	var text string
	switch valueType {
	case "NM":
		text = strings.TrimSpace(v.String())
	case "SN":
		switch v.Comp(1).String() {
		case "", "=", ">", "<", ">=", "<=", "<>":
		default:
			return nil, false
		}
		if !v.Comp(3).IsEmpty() {
			return nil, true
		}
		text = strings.TrimSpace(v.Comp(2).String())
	default:
		return nil, true
	}
	if text == "" {
		return nil, true
	}
	if !isNM(text) {
		return nil, false
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, false
	}
	return &f, true
}

// isNM: optional sign, digits, optional decimal point (HL7 NM has no
// exponent; ParseFloat alone would accept "Inf", "1e9" and hex).
func isNM(s string) bool {
	if s[0] == '+' || s[0] == '-' {
		s = s[1:]
	}
	seenDigit, seenDot := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			seenDigit = true
		case c == '.' && !seenDot:
			seenDot = true
		default:
			return false
		}
	}
	return seenDigit
}

// fromValidation locates an ingest.ValidationError in HL7 terms.
func fromValidation(ve *ingest.ValidationError) *ParseError {
	e := perr(CodeRequiredMissing, "", 0, 0, 0, ve.Error())
	switch {
	case ve.Field == "kind":
		e.Segment, e.SegmentSeq, e.Field = "MSH", 1, 9
	case ve.Field == "source":
		e.Segment, e.SegmentSeq, e.Field = "MSH", 1, 3
	case ve.Field == "source_id":
		e.Segment, e.SegmentSeq, e.Field = "MSH", 1, 10
	case ve.Field == "patient.id":
		e.Segment, e.SegmentSeq, e.Field, e.Component = "PID", 1, 3, 1
	case strings.HasPrefix(ve.Field, "location."):
		e.Segment, e.SegmentSeq, e.Field, e.Component = "PV1", 1, 3, 1
	case strings.HasPrefix(ve.Field, "observations"):
		e.Segment = "OBX"
	}
	return e
}
