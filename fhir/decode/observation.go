package decode

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	dtpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

// Vital signs Clarion knows by LOINC code, with the UCUM units it accepts
// for each. A vital sign in any other unit is refused (422) rather than
// compared against a threshold written for another unit.
var vitalUnits = map[string][]string{
	"8867-4":  {"/min"},          // heart rate
	"2708-6":  {"%"},             // oxygen saturation in arterial blood
	"59408-5": {"%"},             // oxygen saturation by pulse oximetry
	"8480-6":  {"mm[Hg]"},        // systolic blood pressure (component of 85354-9)
	"8462-4":  {"mm[Hg]"},        // diastolic blood pressure (component of 85354-9)
	"9279-1":  {"/min"},          // respiratory rate
	"8310-5":  {"Cel", "[degF]"}, // body temperature
}

// observationStatus maps the Observation statuses Clarion routes to the
// HL7 v2 result status (OBX-11) its rules and templates already know.
var observationStatus = map[string]string{"preliminary": "P", "final": "F", "amended": "C", "corrected": "C"}

func mapObservation(o *obspb.Observation, path string, subject *ingest.Patient) (*Mapped, *Error) {
	status := enumCode(o.GetStatus().GetValue())
	m := &Mapped{ResourceType: "Observation", Identifier: firstIdentifier(o.GetIdentifier()), Status: status}
	obsStatus, ok := observationStatus[status]
	if !ok {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".status",
			"status %q is not routed: Clarion routes preliminary, final, amended and corrected results", status)
	}
	cont := contained(o.GetContained())
	if subject != nil {
		m.Event.Patient = *subject
	} else {
		p, perr := patientOf(o.GetSubject(), cont, path+".subject")
		if perr != nil {
			return nil, perr
		}
		m.Event.Patient = p
	}
	at := observedAt(o)
	m.Event.Kind, m.Event.Trigger, m.Event.OccurredAt = ingest.KindResult, "Observation", at
	equipment := ""
	if r, ok := ReadRef(o.GetDevice()); ok {
		equipment = refLabel(r)
	}
	flags := flagsOf(o.GetInterpretation())
	base := ingest.Observation{Status: obsStatus, ObservedAt: at, EquipmentID: equipment,
		ReferenceRange: rangeOf(o.GetReferenceRange())}

	codes, loinc := codingsOf(o.GetCode())
	if o.GetValue() != nil {
		if v, ok := valueOf(o.GetValue().ProtoReflect()); ok {
			v.Flags = flags
			if err := addCoded(&m.Event, base, v, codes, path+"."+choiceName("value", o.GetValue().ProtoReflect())); err != nil {
				return nil, err
			}
		}
	}
	for i, c := range o.GetComponent() {
		cpath := fmt.Sprintf("%s.component[%d]", path, i)
		ccodes, cl := codingsOf(c.GetCode())
		loinc += cl
		if c.GetValue() == nil {
			continue
		}
		v, ok := valueOf(c.GetValue().ProtoReflect())
		if !ok {
			continue
		}
		// A panel's interpretation applies to its components that have none.
		if v.Flags = flagsOf(c.GetInterpretation()); len(v.Flags) == 0 {
			v.Flags = flags
		}
		if rr := rangeOf(c.GetReferenceRange()); rr != "" {
			v.ReferenceRange = rr
		}
		if err := addCoded(&m.Event, base, v, ccodes, cpath+"."+choiceName("value", c.GetValue().ProtoReflect())); err != nil {
			return nil, err
		}
	}
	switch {
	case loinc == 0:
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".code",
			"no LOINC coding (system %s) in Observation.code or its components: Clarion routes results by LOINC code", SystemLOINC)
	case len(m.Event.Observations) == 0:
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path+".value[x]",
			"no value Clarion can route: neither value[x] nor a component holds a Quantity, CodeableConcept, string, boolean or integer")
	}
	return m, nil
}

func observedAt(o *obspb.Observation) time.Time {
	switch e := o.GetEffective().GetChoice().(type) {
	case *obspb.Observation_EffectiveX_DateTime:
		return dateTime(e.DateTime)
	case *obspb.Observation_EffectiveX_Instant:
		return instant(e.Instant)
	case *obspb.Observation_EffectiveX_Period:
		return periodTime(e.Period)
	}
	return instant(o.GetIssued())
}

// addCoded adds one observation per known coding of the value's concept,
// after checking a vital sign's unit.
func addCoded(ev *ingest.Event, base, v ingest.Observation, codes []coded, valuePath string) *Error {
	for _, c := range codes {
		if units, ok := vitalUnits[c.Code]; ok && c.System == "LN" {
			if v.ValueType != "NM" || !slices.Contains(units, v.Units) {
				return Errorf(http.StatusUnprocessableEntity, CodeValue, valuePath,
					"LOINC %s is a vital sign: it needs a Quantity in UCUM (%s) %v", c.Code, SystemUCUM, units)
			}
		}
		o := base
		o.Code, o.System, o.Display = c.Code, c.System, c.Display
		o.ValueType, o.Value, o.Numeric, o.Units, o.Flags = v.ValueType, v.Value, v.Numeric, v.Units, v.Flags
		if v.ReferenceRange != "" {
			o.ReferenceRange = v.ReferenceRange
		}
		ev.Observations = append(ev.Observations, o)
	}
	return nil
}

// valueOf reads a value[x] choice into an observation's value fields.
func valueOf(choice protoreflect.Message) (ingest.Observation, bool) {
	var o ingest.Observation
	od := choice.Descriptor().Oneofs().Get(0)
	fd := choice.WhichOneof(od)
	if fd == nil {
		return o, false
	}
	switch v := choice.Get(fd).Message().Interface().(type) {
	case *dtpb.Quantity:
		s := v.GetValue().GetValue()
		if s == "" {
			return o, false
		}
		o.ValueType, o.Value = "NM", s
		if v.GetSystem().GetValue() == SystemUCUM && v.GetCode().GetValue() != "" {
			o.Units = v.GetCode().GetValue()
		} else {
			o.Units = v.GetUnit().GetValue()
		}
		if cmp := v.GetComparator(); cmp != nil {
			o.ValueType = "SN"
			o.Value = comparator(cmp.GetValue().String()) + s
			return o, true
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			o.Numeric = &f
		}
	case *dtpb.Integer:
		f := float64(v.GetValue())
		o.ValueType, o.Value, o.Numeric = "NM", strconv.Itoa(int(v.GetValue())), &f
	case *dtpb.CodeableConcept:
		c, ok := firstCoding(v)
		if !ok {
			if t := v.GetText().GetValue(); t != "" {
				o.ValueType, o.Value = "ST", t
				return o, true
			}
			return o, false
		}
		o.ValueType, o.Value = "CWE", c.Code
	case *dtpb.String:
		o.ValueType, o.Value = "ST", v.GetValue()
	case *dtpb.Boolean:
		o.ValueType, o.Value = "ST", strconv.FormatBool(v.GetValue())
	default:
		return o, false // Range, Ratio, SampledData, times: nothing a threshold can use
	}
	return o, true
}

func comparator(enum string) string {
	switch enum {
	case "LESS_THAN":
		return "<"
	case "LESS_THAN_OR_EQUAL_TO":
		return "<="
	case "GREATER_THAN_OR_EQUAL_TO":
		return ">="
	case "GREATER_THAN":
		return ">"
	}
	return ""
}

func rangeOf(rr []*obspb.Observation_ReferenceRange) string {
	for _, r := range rr {
		lo, hi := r.GetLow().GetValue().GetValue(), r.GetHigh().GetValue().GetValue()
		switch {
		case lo != "" && hi != "":
			return lo + "-" + hi
		case lo != "":
			return ">" + lo
		case hi != "":
			return "<" + hi
		}
		if t := r.GetText().GetValue(); t != "" {
			return t
		}
	}
	return ""
}

// refLabel is how a reference is shown in an event: Type/id, else its
// identifier's value, else its display.
func refLabel(r Ref) string {
	switch {
	case r.ID != "" && r.Type != "":
		return r.Type + "/" + r.ID
	case r.ID != "":
		return r.ID
	case r.Identifier != nil:
		return r.Identifier.Value
	case r.Fragment != "":
		return "#" + r.Fragment
	}
	return r.Display
}

// observationFromContained maps a contained Observation of a report.
func observationFromContained(cr *r4pb.ContainedResource, path string, subject *ingest.Patient) (*Mapped, *Error) {
	o := cr.GetObservation()
	if o == nil {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path, "the reference does not point at an Observation")
	}
	return mapObservation(o, path, subject)
}
