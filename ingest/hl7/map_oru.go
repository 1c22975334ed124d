package hl7

import (
	"strconv"
	"strings"

	"github.com/clarion-health/clarion/ingest"
)

// mapResult fills an ORU^R01: the patient, PV1-3, and one observation per
// OBX (lab results and IHE PCD-01 device observations alike).
func mapResult(m *Message, ev *ingest.Event, ver version) error {
	var err error
	if ev.Patient, err = patientOf(m, 1); err != nil {
		return err
	}
	pv1, _ := inGroup(m, 1, "PV1")
	ev.Location = locationOf(pv1)
	if m.Count("OBX") == 0 {
		return perr(CodeSegmentSequence, "OBX", 1, 0, 0, "a result needs at least one OBX segment")
	}
	ev.Observations, err = observations(m, ver)
	return err
}

// obxFields is how many OBX fields are read: up to OBX-18.
const obxFields = 19

// observations maps every OBX. Each carries the OBR-4 code of the order
// group it belongs to. Numbers and flags of all observations share one
// allocation each.
func observations(m *Message, ver version) ([]ingest.Observation, error) {
	n := m.Count("OBX")
	obs := make([]ingest.Observation, 0, n)
	var (
		nums  []float64 // never grows past n: pointers into it stay valid
		flags []string
		order string
		seq   int
		f     [obxFields]Value
	)
	for i := range m.Len() {
		switch {
		case m.nameAt(i, "OBR"):
			order, _, _ = codeOf(m.SegmentAt(i).Field(4))
		case m.nameAt(i, "OBX"):
			seq++
			m.SegmentAt(i).Fields(f[:])
			o, err := observation(&f, seq, ver)
			if err != nil {
				return nil, err
			}
			o.Order = order
			num, has, ok := numeric(o.ValueType, f[5].Rep(1))
			if !ok {
				return nil, perr(CodeDataType, "OBX", seq, 5, 0, "value is not valid for its value type")
			}
			if has {
				if nums == nil {
					nums = make([]float64, 0, n)
				}
				nums = append(nums, num)
				o.Numeric = &nums[len(nums)-1]
			}
			start := len(flags)
			flags = appendFlags(flags, f[8], ver)
			if len(flags) > start {
				o.Flags = flags[start:len(flags):len(flags)]
			}
			obs = append(obs, o)
		}
	}
	return obs, nil
}

// observation maps one OBX's fields (f[i] is OBX-i), except its number and
// flags.
func observation(f *[obxFields]Value, seq int, ver version) (ingest.Observation, error) {
	o := ingest.Observation{
		ValueType:      text(f[2].Comp(1)),
		Value:          text(f[5].Rep(1)),
		ReferenceRange: text(f[7]),
		Status:         text(f[11].Comp(1)),
		EquipmentID:    text(f[18].Rep(1).Comp(1)),
	}
	o.Code, o.Display, o.System = codeOf(f[3])
	if o.Code == "" {
		return o, perr(CodeRequiredMissing, "OBX", seq, 3, 1, "observation identifier is required")
	}
	o.Units = unitsOf(f[6])
	if o.System == "MDC" {
		o.ContainmentPath = text(f[4])
	}
	if v := f[14].Comp(1).String(); v != "" {
		t, err := ParseDTM(v)
		if err != nil {
			return o, perr(CodeDataType, "OBX", seq, 14, 1, "observation date/time is not a valid DTM")
		}
		o.ObservedAt = t
	}
	return o, nil
}

// codeOf reads a coded element (CE/CWE): code, display text and system.
// An MDC code is keyed on its reference id text (MDC_PULS_OXIM_SAT_O2), not
// its number, since vendors' numbers differ.
func codeOf(v Value) (code, display, system string) {
	var c [4]Value
	v.pieces(levelComp, c[:])
	code, display, system = text(c[1]), text(c[2]), text(c[3])
	if system == "MDC" && strings.HasPrefix(display, "MDC_") {
		code = display
	}
	return code, display, system
}

// unitsOf reads OBX-6: its code, or for MDC units the UCUM alternate
// (OBX-6.4 when OBX-6.6 is UCUM) or else the reference id text.
func unitsOf(v Value) string {
	var u [7]Value
	v.pieces(levelComp, u[:])
	code := text(u[1])
	if !u[3].Equal("MDC") {
		return code
	}
	if alt := text(u[4]); alt != "" && u[6].Equal("UCUM") {
		return alt
	}
	if ref := text(u[2]); ref != "" {
		return ref
	}
	return code
}

// appendFlags appends OBX-8's abnormal flags. Up to v2.6 OBX-8 is a
// string (IS) per repetition, which cannot hold a component separator: a
// sender that puts a CWE there anyway has its first component read. From
// v2.7 it is a CWE, whose identifier (or else alternate identifier) is the
// flag.
func appendFlags(dst []string, v Value, ver version) []string {
	for r := 1; r <= v.Reps(); r++ {
		rep := v.Rep(r)
		fl := text(rep.Comp(1))
		if fl == "" && ver >= 7 {
			fl = text(rep.Comp(4))
		}
		if fl != "" {
			dst = append(dst, fl)
		}
	}
	return dst
}

// numeric reads NM and simple SN values (">^10", "^182"): has is false
// for an empty value, and for SN ranges and ratios (a third component),
// which are left as text; ok is false when the value is not valid.
func numeric(valueType string, v Value) (f float64, has, ok bool) {
	var s string
	switch valueType {
	case "NM":
		s = strings.TrimSpace(v.String())
	case "SN":
		switch v.Comp(1).String() {
		case "", "=", ">", "<", ">=", "<=", "<>":
		default:
			return 0, false, false
		}
		if !v.Comp(3).IsEmpty() {
			return 0, false, true
		}
		s = strings.TrimSpace(v.Comp(2).String())
	default:
		return 0, false, true
	}
	if s == "" || v.IsNull() {
		return 0, false, true
	}
	if !isNM(s) {
		return 0, false, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, false
	}
	return f, true, true
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
