package hl7

import (
	"bytes"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ackHeader holds what an ACK copies from the message it answers. The
// fields are still encoded with d, so they are copied without re-escaping.
type ackHeader struct {
	d                                  Delimiters
	sendApp, sendFac, recvApp, recvFac string // the original's MSH-3..6
	trigger                            string // the original's MSH-9.2
	controlID                          string // the original's MSH-10
	procID, version                    string // the original's MSH-11, MSH-12
}

// BuildACK answers orig with an original-mode ACK: code is AA, AE or AR
// (or CA, CE, CR), controlID is the ACK's own MSH-10. When perr is set the
// ACK carries MSA-3 text and an ERR segment (v2.5 layout) locating it.
func BuildACK(orig *Message, code string, perr *ParseError, now time.Time, controlID string) []byte {
	if orig == nil {
		return recoverHeader(nil).build(code, perr, now, controlID)
	}
	return headerOf(orig.MSH()).build(code, perr, now, controlID)
}

// BuildRejectFor answers input that Parse rejected, with code AR. It reuses
// whatever the MSH segment still gives (delimiters, sender, control id),
// falling back to the default delimiters.
func BuildRejectFor(raw []byte, perr *ParseError, now time.Time, controlID string) []byte {
	return recoverHeader(raw).build("AR", perr, now, controlID)
}

func headerOf(msh Segment) ackHeader {
	raw := func(i int) string { return clean(msh.Field(i).Raw()) }
	h := ackHeader{
		d:       *msh.d,
		sendApp: raw(3), sendFac: raw(4), recvApp: raw(5), recvFac: raw(6),
		trigger:   clean(msh.Field(9).Comp(2).Raw()),
		controlID: raw(10),
		procID:    raw(11),
		version:   raw(12),
	}
	h.version = usableVersion(h.version, h.d)
	return h
}

// usableVersion keeps the ACK parseable: a version that cleaned down to
// nothing, or that starts with a delimiter, is replaced by the default.
func usableVersion(v string, d Delimiters) string {
	if v == "" || v[0] == d.Component || v[0] == d.Repetition || v[0] == d.Subcomponent {
		return Escape(defaultVersion, d)
	}
	return v
}

// recoverHeader finds the first line that starts a readable MSH segment.
func recoverHeader(raw []byte) ackHeader {
	raw = bytes.TrimPrefix(raw, bom)
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexAny(raw, "\r\n"); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if !bytes.HasPrefix(line, []byte("MSH")) {
			continue
		}
		if d, err := headerDelimiters(line); err == nil {
			msh := Segment{b: line, d: &d}
			h := headerOf(msh)
			if msh.Field(12).Comp(1).IsEmpty() { // the ACK must parse
				h.version = Escape(defaultVersion, d)
			}
			h.version = usableVersion(h.version, d)
			return h
		}
	}
	return ackHeader{d: DefaultDelimiters(), version: defaultVersion}
}

// defaultVersion is MSH-12 of a reject when the input gave none: the ERR
// layout written is the v2.5 one.
const defaultVersion = "2.5.1"

// clean makes copied bytes safe to send back: valid UTF-8 and no control
// characters that could end a segment or an MLLP frame.
func clean(b []byte) string {
	ok := utf8.Valid(b)
	for _, c := range b {
		if c < 0x20 || c == 0x7F {
			ok = false
			break
		}
	}
	if ok {
		return string(b)
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7F {
			return -1
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
	return s
}

func (h ackHeader) build(code string, perr *ParseError, now time.Time, controlID string) []byte {
	d := h.d
	var b bytes.Buffer
	b.Grow(256)
	field := func(s string) {
		b.WriteByte(d.Field)
		b.WriteString(s)
	}

	b.WriteString("MSH")
	field(d.EncodingChars())
	field(h.recvApp)
	field(h.recvFac)
	field(h.sendApp)
	field(h.sendFac)
	field(Escape(now.Format("20060102150405-0700"), d)) // '+', '-', '.' may be delimiters
	field("")
	field(joinComps(d, "ACK", h.trigger, "ACK"))
	field(Escape(controlID, d))
	field(h.procID)
	field(h.version)
	b.WriteByte('\r')

	b.WriteString("MSA")
	field(Escape(code, d))
	field(h.controlID)
	if perr != nil {
		field(Escape(shortText(perr), d))
	}
	b.WriteByte('\r')

	if perr != nil {
		b.WriteString("ERR")
		field("")
		field(errLocation(perr, d))
		field(joinComps(d, strconv.Itoa(perr.Code), Escape(CodeText(perr.Code), d), "HL70357"))
		field("E")
		field("") // ERR-5 application error code
		field("") // ERR-6 application error parameter
		field("") // ERR-7 diagnostic information
		field(Escape(perr.Msg, d))
		b.WriteByte('\r')
	}
	return b.Bytes()
}

// errLocation is ERR-2 (ERL): segment^sequence^field^repetition^component.
func errLocation(e *ParseError, d Delimiters) string {
	if e.Segment == "" {
		return ""
	}
	num := func(n int) string {
		if n <= 0 {
			return ""
		}
		return strconv.Itoa(n)
	}
	rep := ""
	if e.Field > 0 {
		rep = "1"
	}
	return joinComps(d, Escape(e.Segment, d), num(max(e.SegmentSeq, 1)), num(e.Field), rep, num(e.Component))
}

// joinComps joins encoded components, dropping trailing empty ones.
func joinComps(d Delimiters, parts ...string) string {
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return strings.Join(parts, string(d.Component))
}

// shortText is MSA-3 for receivers older than v2.5, which read no ERR-2:
// at most 80 characters (the ST length of MSA-3 in v2.3).
func shortText(e *ParseError) string {
	s := strings.TrimPrefix(e.Error(), "hl7: ")
	for len(s) > 80 {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
