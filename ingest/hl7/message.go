// Package hl7 parses HL7 v2 messages, maps ADT and ORU messages to
// ingest.Event, builds ACKs, and serves MLLP over TCP.
//
// Parsing indexes segment boundaries once and keeps byte offsets into the
// caller's buffer; fields, repetitions and components are located and
// unescaped only when read. A Message aliases the buffer passed to Parse:
// the caller must not modify it while the Message is in use.
package hl7

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"
)

var bom = []byte{0xEF, 0xBB, 0xBF}

// Message is a parsed HL7 v2 message.
type Message struct {
	raw    []byte
	delims Delimiters
	segs   []span // 8 bytes a segment, so a hostile frame of tiny segments stays cheap
}

// span locates a segment in raw, without its terminator.
type span struct{ start, end uint32 }

// Segment is one segment of a Message.
type Segment struct {
	b []byte // without its terminator
	d *Delimiters
}

// Parse indexes raw as one HL7 v2 message. It checks structure only (MSH
// first, delimiters, segment ids, UTF-8, MSH-9 and MSH-12); what a message
// type requires, MSH-10 included, is checked by ToEvent, so that a message
// without a control id can still be parsed and answered. Errors are
// *ParseError.
func Parse(raw []byte) (*Message, error) {
	raw = bytes.TrimPrefix(raw, bom)
	raw = bytes.TrimLeft(raw, "\r\n")
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, perr(CodeSegmentSequence, "MSH", 1, 0, 0, "empty message")
	}
	if !bytes.HasPrefix(raw, []byte("MSH")) {
		return nil, perr(CodeSegmentSequence, "MSH", 1, 0, 0, "first segment is not MSH")
	}
	d, err := headerDelimiters(raw)
	if err != nil {
		return nil, err
	}
	m := &Message{raw: raw, delims: d}
	if err := m.index(); err != nil {
		return nil, err
	}
	msh := m.MSH()
	if msh.Field(9).Comp(1).IsEmpty() {
		return nil, perr(CodeRequiredMissing, "MSH", 1, 9, 1, "message type is required")
	}
	if msh.Field(12).Comp(1).IsEmpty() {
		return nil, perr(CodeRequiredMissing, "MSH", 1, 12, 1, "version id is required")
	}
	return m, nil
}

// headerDelimiters reads MSH-1 and MSH-2 (or the same positions of FHS/BHS).
func headerDelimiters(seg []byte) (Delimiters, *ParseError) {
	name := string(seg[:min(3, len(seg))])
	if len(seg) < 4 || isSegmentEnd(seg[3]) {
		return Delimiters{}, perr(CodeRequiredMissing, name, 1, 1, 0, "field separator is missing")
	}
	d := Delimiters{Field: seg[3]}
	enc := seg[4:]
	if i := bytes.IndexByte(enc, d.Field); i >= 0 {
		enc = enc[:i]
	}
	if i := bytes.IndexAny(enc, "\r\n"); i >= 0 {
		enc = enc[:i]
	}
	switch {
	case len(enc) < 4:
		return Delimiters{}, perr(CodeRequiredMissing, name, 1, 2, 0, "encoding characters are missing")
	case len(enc) > 5:
		return Delimiters{}, perr(CodeDataType, name, 1, 2, 0, "too many encoding characters")
	}
	d.Component, d.Repetition, d.Escape, d.Subcomponent = enc[0], enc[1], enc[2], enc[3]
	if len(enc) == 5 {
		d.Truncation = enc[4]
	}
	if !d.valid() {
		return Delimiters{}, perr(CodeDataType, name, 1, 2, 0, "invalid or repeated encoding characters")
	}
	return d, nil
}

func isSegmentEnd(c byte) bool { return c == '\r' || c == '\n' }

// index splits m.raw into segments, accepting CR, LF or CRLF terminators and
// skipping blank lines.
func (m *Message) index() error {
	if !utf8.Valid(m.raw) {
		return m.utf8Error()
	}
	if uint64(len(m.raw)) > math.MaxUint32 {
		return perr(CodeApplicationInternal, "", 0, 0, 0, "message too large")
	}
	terms := bytes.Count(m.raw, []byte{'\r'}) + bytes.Count(m.raw, []byte{'\n'}) + 1
	m.segs = make([]span, 0, min(terms, len(m.raw)/4+1)) // a segment takes at least 4 bytes
	for pos := 0; pos < len(m.raw); {
		end := len(m.raw)
		if i := bytes.IndexAny(m.raw[pos:], "\r\n"); i >= 0 {
			end = pos + i
		}
		line := m.raw[pos:end]
		if len(bytes.TrimSpace(line)) > 0 {
			if !validSegmentID(line, m.delims.Field) {
				return perr(CodeSegmentSequence, "", 0, 0, 0, "malformed segment id in segment "+strconv.Itoa(len(m.segs)+1))
			}
			m.segs = append(m.segs, span{uint32(pos), uint32(end)})
		}
		pos = end + 1
	}
	return nil
}

// utf8Error locates the first invalid byte without quoting it.
func (m *Message) utf8Error() *ParseError {
	bad := 0
	for bad < len(m.raw) {
		r, size := utf8.DecodeRune(m.raw[bad:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		bad += size
	}
	lineStart := bytes.LastIndexAny(m.raw[:bad], "\r\n") + 1
	line := m.raw[lineStart:bad]
	e := perr(CodeDataType, "", 0, 0, 0, "invalid UTF-8")
	if validSegmentID(m.raw[lineStart:], m.delims.Field) {
		e.Segment = string(line[:3])
		e.Field = bytes.Count(line, []byte{m.delims.Field})
		if e.Segment == "MSH" {
			e.Field++
		}
		e.SegmentSeq = 1 + bytes.Count(m.raw[:lineStart], append([]byte{'\r'}, line[:3]...)) +
			bytes.Count(m.raw[:lineStart], append([]byte{'\n'}, line[:3]...))
	}
	return e
}

// validSegmentID reports whether line starts with three upper-case letters
// or digits followed by the field separator or the end of the segment.
func validSegmentID(line []byte, sep byte) bool {
	if len(line) < 3 || (len(line) > 3 && line[3] != sep) {
		return false
	}
	for _, c := range line[:3] {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Delimiters returns the message's encoding characters.
func (m *Message) Delimiters() Delimiters { return m.delims }

// Raw returns the message bytes (BOM and leading blank lines removed).
func (m *Message) Raw() []byte { return m.raw }

// Segments returns all segments in order, in a new slice.
func (m *Message) Segments() []Segment {
	out := make([]Segment, len(m.segs))
	for i := range m.segs {
		out[i] = m.SegmentAt(i)
	}
	return out
}

// Len returns the number of segments.
func (m *Message) Len() int { return len(m.segs) }

// SegmentAt returns segment i (0-based position in the message).
func (m *Message) SegmentAt(i int) Segment {
	sp := m.segs[i]
	return Segment{b: m.raw[sp.start:sp.end], d: &m.delims}
}

// Segment returns the n-th (1-based) segment named name, and whether it
// exists.
func (m *Message) Segment(name string, n int) (Segment, bool) {
	for i := range m.segs {
		if s := m.SegmentAt(i); s.is(name) {
			if n--; n == 0 {
				return s, true
			}
		}
	}
	return Segment{}, false
}

// Count returns how many segments are named name.
func (m *Message) Count(name string) int {
	c := 0
	for i := range m.segs {
		if m.SegmentAt(i).is(name) {
			c++
		}
	}
	return c
}

// MSH returns the header segment.
func (m *Message) MSH() Segment { return m.SegmentAt(0) }

// Name returns the segment id, e.g. "PID".
func (s Segment) Name() string {
	if len(s.b) < 3 {
		return ""
	}
	return string(s.b[:3])
}

func (s Segment) is(name string) bool { return len(s.b) >= 3 && string(s.b[:3]) == name }

// header reports whether the segment numbers fields like MSH, where field 1
// is the field separator itself.
func (s Segment) header() bool { return s.is("MSH") || s.is("FHS") || s.is("BHS") }

// Raw returns the segment's encoded bytes, without terminator.
func (s Segment) Raw() []byte { return s.b }

// Field returns field i (1-based, HL7 numbering). For MSH, field 1 is the
// field separator and field 2 the encoding characters, returned verbatim.
func (s Segment) Field(i int) Value {
	if i < 1 || s.d == nil || len(s.b) <= 3 {
		return Value{}
	}
	if s.header() {
		switch i {
		case 1:
			return Value{b: s.b[3:4], d: s.d, lit: true}
		case 2:
			enc, _ := nth(s.b[4:], s.d.Field, 0)
			return Value{b: enc, d: s.d, lit: true}
		}
		i--
	}
	b, _ := nth(s.b[4:], s.d.Field, i-1)
	return Value{b: b, d: s.d}
}

// FieldCount returns the number of the last field present.
func (s Segment) FieldCount() int {
	if len(s.b) <= 3 {
		return 0
	}
	n := bytes.Count(s.b, []byte{s.d.Field})
	if s.header() {
		n++
	}
	return n
}

// nth returns the n-th (0-based) piece of b split on sep.
func nth(b []byte, sep byte, n int) ([]byte, bool) {
	for ; n > 0; n-- {
		i := bytes.IndexByte(b, sep)
		if i < 0 {
			return nil, false
		}
		b = b[i+1:]
	}
	if i := bytes.IndexByte(b, sep); i >= 0 {
		b = b[:i]
	}
	return b, true
}
