package hl7

// Get returns the decoded value at path, or "" when it is absent or the
// path is malformed. Paths use HL7 1-based numbering:
//
//	PID-3          whole field (all repetitions, components kept)
//	PID-3.1        component 1 of the first repetition
//	PID-3(2).4.1   repetition 2, component 4, subcomponent 1
//	OBX(3)-5       field 5 of the third OBX
func (m *Message) Get(path string) string {
	v, ok := m.Lookup(path)
	if !ok {
		return ""
	}
	return v.String()
}

// Lookup returns the value at path (see Get) and whether the path is well
// formed and its segment exists.
func (m *Message) Lookup(path string) (Value, bool) {
	p, ok := parsePath(path)
	if !ok {
		return Value{}, false
	}
	seg, ok := m.Segment(p.seg, p.occ)
	if !ok {
		return Value{}, false
	}
	v := seg.Field(p.field)
	if p.rep > 0 {
		v = v.Rep(p.rep)
	}
	if p.comp > 0 {
		v = v.Comp(p.comp)
	}
	if p.sub > 0 {
		v = v.Sub(p.sub)
	}
	return v, true
}

type path struct {
	seg                        string
	occ, field, rep, comp, sub int
}

func parsePath(s string) (path, bool) {
	if len(s) < 5 || !validSegmentID([]byte(s[:3]), 0) {
		return path{}, false
	}
	p := path{seg: s[:3], occ: 1}
	s = s[3:]
	var ok bool
	if p.occ, s, ok = paren(s, 1); !ok {
		return path{}, false
	}
	if len(s) == 0 || s[0] != '-' {
		return path{}, false
	}
	if p.field, s, ok = number(s[1:]); !ok {
		return path{}, false
	}
	if p.rep, s, ok = paren(s, 0); !ok {
		return path{}, false
	}
	if len(s) > 0 && s[0] == '.' {
		if p.comp, s, ok = number(s[1:]); !ok {
			return path{}, false
		}
	}
	if len(s) > 0 && s[0] == '.' {
		if p.sub, s, ok = number(s[1:]); !ok {
			return path{}, false
		}
	}
	return p, len(s) == 0
}

// paren reads an optional "(n)"; def when absent.
func paren(s string, def int) (int, string, bool) {
	if len(s) == 0 || s[0] != '(' {
		return def, s, true
	}
	n, rest, ok := number(s[1:])
	if !ok || len(rest) == 0 || rest[0] != ')' {
		return 0, s, false
	}
	return n, rest[1:], true
}

// number reads a positive decimal of at most 6 digits.
func number(s string) (int, string, bool) {
	n, i := 0, 0
	for ; i < len(s) && i < 6 && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
	}
	if i == 0 || n == 0 {
		return 0, s, false
	}
	return n, s[i:], true
}
