package decode

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	dtpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	r4pb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/clarion-health/clarion/ingest"
)

// Code systems Clarion recognises, and the short names routing rules use
// for them (the HL7 v2 coding-system names, so one rule serves HL7 and FHIR).
const (
	SystemLOINC    = "http://loinc.org"
	SystemSNOMED   = "http://snomed.info/sct"
	SystemMDC      = "urn:iso:std:iso:11073:10101"
	SystemUCUM     = "http://unitsofmeasure.org"
	SystemInterp   = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
	SystemV3Interp = "http://hl7.org/fhir/v3/ObservationInterpretation" // pre-R4 spelling, still seen
)

// ShortSystem maps a FHIR code system URI to the name rules use: LN, SCT,
// MDC; any other system keeps its URI.
func ShortSystem(uri string) string {
	switch uri {
	case SystemLOINC:
		return "LN"
	case SystemSNOMED:
		return "SCT"
	case SystemMDC:
		return "MDC"
	}
	return uri
}

// Identifier is a business identifier (system|value).
type Identifier struct {
	System string
	Value  string
}

// Token is the search-token form "system|value".
func (i Identifier) Token() string { return i.System + "|" + i.Value }

// ParseToken reads "system|value", "|value" or "value" (any system).
func ParseToken(s string) (Identifier, bool) {
	if s == "" {
		return Identifier{}, false
	}
	if sys, val, ok := strings.Cut(s, "|"); ok {
		return Identifier{System: sys, Value: val}, val != ""
	}
	return Identifier{Value: s}, true
}

func firstIdentifier(ids []*dtpb.Identifier) *Identifier {
	for _, id := range ids {
		if v := id.GetValue().GetValue(); v != "" {
			return &Identifier{System: id.GetSystem().GetValue(), Value: v}
		}
	}
	return nil
}

// enumCode turns a google/fhir code enum (FINAL, ENTERED_IN_ERROR) into the
// FHIR code (final, entered-in-error).
func enumCode(v fmt.Stringer) string {
	return strings.ReplaceAll(strings.ToLower(v.String()), "_", "-")
}

func dateTime(dt *dtpb.DateTime) time.Time {
	if dt == nil {
		return time.Time{}
	}
	return time.UnixMicro(dt.GetValueUs()).UTC()
}

func instant(in *dtpb.Instant) time.Time {
	if in == nil {
		return time.Time{}
	}
	return time.UnixMicro(in.GetValueUs()).UTC()
}

func periodTime(p *dtpb.Period) time.Time {
	if t := dateTime(p.GetEnd()); !t.IsZero() {
		return t
	}
	return dateTime(p.GetStart())
}

// Ref is a decoded Reference: its target type and id, or a URI or a
// fragment, or a logical identifier, and its display.
type Ref struct {
	Type       string // "Patient", "Location", ... ("" when unknown)
	ID         string
	Base       string // the server base of an absolute reference
	URI        string // an absolute URI that is not a RESTful URL (urn:uuid:...)
	Fragment   string // "#id" of a contained resource, without "#"
	Identifier *Identifier
	Display    string
}

// Literal reports whether the reference points at a resource by id.
func (r Ref) Literal() bool { return r.ID != "" }

// ReadRef decodes a Reference.
func ReadRef(ref *dtpb.Reference) (Ref, bool) {
	if ref == nil {
		return Ref{}, false
	}
	out := Ref{Display: ref.GetDisplay().GetValue(), Type: ref.GetType().GetValue()}
	if id := ref.GetIdentifier(); id != nil && id.GetValue().GetValue() != "" {
		out.Identifier = &Identifier{System: id.GetSystem().GetValue(), Value: id.GetValue().GetValue()}
	}
	m := ref.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("reference")
	if od != nil {
		if fd := m.WhichOneof(od); fd != nil {
			switch name := string(fd.Name()); name {
			case "uri":
				out.URI = ref.GetUri().GetValue()
				if t, id, base, ok := SplitURL(out.URI); ok {
					out.Type, out.ID, out.Base, out.URI = t, id, base, ""
				}
			case "fragment":
				out.Fragment = ref.GetFragment().GetValue()
			default:
				rid, ok := m.Get(fd).Message().Interface().(*dtpb.ReferenceId)
				if ok {
					out.ID = rid.GetValue()
					if t := typeFromField(name); t != "Resource" {
						out.Type = t
					}
				}
			}
		}
	}
	if strings.HasPrefix(out.Type, "http") { // Reference.type is a URI: keep only the type name
		out.Type = out.Type[strings.LastIndex(out.Type, "/")+1:]
	}
	return out, out.ID != "" || out.URI != "" || out.Fragment != "" || out.Identifier != nil || out.Display != ""
}

// typeFromField turns "device_metric_id" into "DeviceMetric".
func typeFromField(name string) string {
	name = strings.TrimSuffix(name, "_id")
	var b strings.Builder
	up := true
	for _, r := range name {
		if r == '_' {
			up = true
			continue
		}
		if up {
			r = unicode.ToUpper(r)
			up = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SplitURL reads "https://host/fhir/Patient/123[/_history/2]" into its
// type, id and base.
func SplitURL(u string) (typ, id, base string, ok bool) {
	if !strings.Contains(u, "://") {
		return "", "", "", false
	}
	u = strings.TrimRight(u, "/")
	if i := strings.Index(u, "/_history/"); i >= 0 {
		u = u[:i]
	}
	parts := strings.Split(u, "/")
	if len(parts) < 5 { // scheme, "", host, Type, id
		return "", "", "", false
	}
	typ, id = parts[len(parts)-2], parts[len(parts)-1]
	if typ == "" || id == "" || !unicode.IsUpper(rune(typ[0])) {
		return "", "", "", false
	}
	return typ, id, strings.Join(parts[:len(parts)-2], "/"), true
}

// contained indexes a resource's contained resources by id.
func contained(list []*anypb.Any) map[string]*r4pb.ContainedResource {
	if len(list) == 0 {
		return nil
	}
	out := make(map[string]*r4pb.ContainedResource, len(list))
	for _, a := range list {
		var cr r4pb.ContainedResource
		if err := a.UnmarshalTo(&cr); err != nil {
			continue
		}
		if id := resourceID(&cr); id != "" {
			out[id] = &cr
		}
	}
	return out
}

// resourceID reads the id of any contained resource.
func resourceID(cr *r4pb.ContainedResource) string {
	r := ResourceOf(cr)
	if r == nil {
		return ""
	}
	m := r.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("id")
	if fd == nil || !m.Has(fd) {
		return ""
	}
	if id, ok := m.Get(fd).Message().Interface().(*dtpb.Id); ok {
		return id.GetValue()
	}
	return ""
}

// ResourceOf returns the resource message inside a ContainedResource.
func ResourceOf(cr *r4pb.ContainedResource) proto.Message {
	if cr == nil {
		return nil
	}
	m := cr.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("oneof_resource")
	if od == nil {
		return nil
	}
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message().Interface()
}

// TypeOf returns the FHIR resource type name of a ContainedResource.
func TypeOf(cr *r4pb.ContainedResource) string {
	r := ResourceOf(cr)
	if r == nil {
		return ""
	}
	return string(r.ProtoReflect().Descriptor().Name())
}

// patientOf reads a subject reference into the patient Clarion routes by.
// Patient/<id> gives the id (no authority); an absolute URL gives the id
// with the server base as authority; a logical reference by identifier, or
// a contained Patient with an identifier, gives value and system.
func patientOf(ref *dtpb.Reference, cont map[string]*r4pb.ContainedResource, path string) (ingest.Patient, *Error) {
	r, ok := ReadRef(ref)
	if !ok {
		return ingest.Patient{}, Errorf(http.StatusUnprocessableEntity, CodeRequired, path,
			"a Patient subject is required: Clarion routes alerts for patients")
	}
	if r.Fragment != "" {
		if c := cont[r.Fragment]; c != nil {
			if p := c.GetPatient(); p != nil {
				if id := firstIdentifier(p.GetIdentifier()); id != nil {
					return ingest.Patient{ID: id.Value, Authority: id.System}, nil
				}
			}
		}
		return ingest.Patient{}, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path,
			"a contained subject must be a Patient with an identifier")
	}
	if r.Type != "" && r.Type != "Patient" {
		return ingest.Patient{}, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path,
			"the subject is a %s; Clarion routes alerts for a Patient subject only", r.Type)
	}
	switch {
	case r.ID != "":
		return ingest.Patient{ID: r.ID, Authority: r.Base}, nil
	case r.Identifier != nil:
		return ingest.Patient{ID: r.Identifier.Value, Authority: r.Identifier.System}, nil
	}
	return ingest.Patient{}, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule, path,
		"the subject must reference a Patient by id or by identifier (a %s reference cannot be resolved)", refKind(r))
}

func refKind(r Ref) string {
	switch {
	case r.URI != "":
		return "bundle-local or non-RESTful URI"
	case r.Display != "":
		return "display-only"
	}
	return "empty"
}

// codings lists the codings of a concept from the systems routing knows,
// LOINC first.
type coded struct {
	System, Code, Display string
}

func codingsOf(cc *dtpb.CodeableConcept) (all []coded, loinc int) {
	for _, c := range cc.GetCoding() {
		code := c.GetCode().GetValue()
		if code == "" {
			continue
		}
		sys := c.GetSystem().GetValue()
		switch sys {
		case SystemLOINC, SystemMDC, SystemSNOMED:
		default:
			continue
		}
		if sys == SystemLOINC {
			loinc++
		}
		display := c.GetDisplay().GetValue()
		if display == "" {
			display = cc.GetText().GetValue()
		}
		all = append(all, coded{System: ShortSystem(sys), Code: code, Display: display})
	}
	return all, loinc
}

func firstCoding(ccs ...*dtpb.CodeableConcept) (coded, bool) {
	for _, cc := range ccs {
		for _, c := range cc.GetCoding() {
			if code := c.GetCode().GetValue(); code != "" {
				display := c.GetDisplay().GetValue()
				if display == "" {
					display = cc.GetText().GetValue()
				}
				return coded{System: ShortSystem(c.GetSystem().GetValue()), Code: code, Display: display}, true
			}
		}
	}
	return coded{}, false
}

// Abnormal flags Clarion takes from Observation.interpretation (the HL7 v2
// OBX-8 codes routing rules match).
var knownFlags = map[string]bool{"H": true, "L": true, "HH": true, "LL": true, "A": true, "AA": true}

func flagsOf(ccs []*dtpb.CodeableConcept) []string {
	var out []string
	for _, cc := range ccs {
		for _, c := range cc.GetCoding() {
			sys := c.GetSystem().GetValue()
			if sys != "" && sys != SystemInterp && sys != SystemV3Interp {
				continue
			}
			if code := c.GetCode().GetValue(); knownFlags[code] {
				out = append(out, code)
			}
		}
	}
	return out
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// fieldName is the JSON name of a oneof's set field ("valueQuantity").
func choiceName(prefix string, m protoreflect.Message) string {
	od := m.Descriptor().Oneofs().Get(0)
	fd := m.WhichOneof(od)
	if fd == nil {
		return prefix + "[x]"
	}
	n := fd.JSONName()
	if n == "" {
		n = string(fd.Name())
	}
	n = strings.TrimSuffix(n, "Value")
	return prefix + strings.ToUpper(n[:1]) + n[1:]
}
