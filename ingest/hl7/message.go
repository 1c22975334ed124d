// Package hl7 parses HL7 v2 messages, maps ADT and ORU messages to
// ingest.Event, builds ACKs and outbound messages, and serves MLLP over TCP.
//
// Parsing indexes segment boundaries once and keeps byte offsets; fields,
// repetitions and components are located and unescaped only when read.
// Parse copies the message into one string, so a decoded value without
// escapes is a substring of it and costs no allocation. A Message aliases
// the buffer passed to Parse (Raw and Value.Raw return slices of it): the
// caller must not modify it while the Message is in use.
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
	src     source // raw is UTF-8: transcoded when MSH-18 declared Latin-1
	delims  Delimiters
	charset Charset
	segs    []span   // 8 bytes a segment, so a hostile frame of tiny segments stays cheap
	segBuf  [16]span // segs for most messages, without a second allocation
}

// span locates a segment in raw, without its terminator.
type span struct{ start, end uint32 }

// Segment is one segment of a Message.
type Segment struct {
	b   []byte // without its terminator
	d   *Delimiters
	src *source // the message; nil for a segment made from bytes alone
	off uint32  // where b starts in src
}

// Parse indexes raw as one HL7 v2 message. It checks structure only (MSH
// first, delimiters, MSH-18 character set, segment ids, valid text, MSH-9
// and MSH-12); what a message type requires, MSH-10 included, is checked
// by ToEvent, so that a message without a control id can still be parsed
// and answered. Errors are *ParseError.
func Parse(raw []byte) (*Message, error) {
	raw = bytes.TrimPrefix(raw, bom)
	raw = bytes.TrimLeft(raw, "\r\n")
	if isBlank(raw) {
		return nil, perr(CodeSegmentSequence, "MSH", 1, 0, 0, "empty message")
	}
	if !bytes.HasPrefix(raw, []byte("MSH")) {
		return nil, perr(CodeSegmentSequence, "MSH", 1, 0, 0, "first segment is not MSH")
	}
	if uint64(len(raw)) > math.MaxUint32/2 { // Latin-1 may double it
		return nil, perr(CodeApplicationInternal, "", 0, 0, 0, "message too large")
	}
	d, pe := headerDelimiters(raw)
	if pe != nil {
		return nil, pe
	}
	m := &Message{delims: d}
	if m.src.raw, m.charset, pe = decodeCharset(raw, &m.delims); pe != nil {
		return nil, pe
	}
	m.src.text, m.src.d, m.src.latin1 = string(m.src.raw), d, m.charset == CharsetLatin1
	if err := m.index(); err != nil {
		return nil, err
	}
	msh := m.MSH()
	if msh.Field(9).Comp(1).IsEmpty() {
		return nil, perr2(CodeRequiredMissing, "MSH", 1, 9, 1, "message type is required")
	}
	if msh.Field(12).Comp(1).IsEmpty() {
		return nil, perr2(CodeRequiredMissing, "MSH", 1, 12, 1, "version id is required")
	}
	return m, nil
}

// perr2 is perr returned as an error interface (a nil *ParseError must
// never become a non-nil error).
func perr2(code int, seg string, seq, field, comp int, msg string) error {
	return perr(code, seg, seq, field, comp, msg)
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

// isBlank reports whether b holds only white space.
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\v' && c != '\f' {
			return false
		}
	}
	return true
}

// index splits m.raw into segments, accepting CR, LF or CRLF terminators and
// skipping blank lines. It looks for CR and LF separately so that each byte
// is scanned by the fast IndexByte at most once per terminator kind.
func (m *Message) index() error {
	if m.charset != CharsetLatin1 && !utf8.Valid(m.src.raw) {
		return m.utf8Error()
	}
	raw := m.src.raw
	n := len(raw)
	m.segs = m.segBuf[:0]
	cr, lf := -1, -1 // next CR and LF at or after pos; n when none is left
	for pos := 0; pos < n; {
		if cr < pos {
			cr = indexFrom(raw, pos, '\r')
		}
		if lf < pos {
			lf = indexFrom(raw, pos, '\n')
		}
		end := min(cr, lf)
		line := raw[pos:end]
		switch {
		case validSegmentID(line, m.delims.Field):
			m.segs = append(m.segs, span{uint32(pos), uint32(end)})
		case isBlank(line):
		default:
			return perr(CodeSegmentSequence, "", 0, 0, 0, "malformed segment id in segment "+strconv.Itoa(len(m.segs)+1))
		}
		pos = end + 1
	}
	return nil
}

// indexFrom is the index of c in b at or after from, or len(b).
func indexFrom(b []byte, from int, c byte) int {
	if i := bytes.IndexByte(b[from:], c); i >= 0 {
		return from + i
	}
	return len(b)
}

// utf8Error locates the first invalid byte without quoting it.
func (m *Message) utf8Error() *ParseError {
	raw := m.src.raw
	bad := 0
	for bad < len(raw) {
		r, size := utf8.DecodeRune(raw[bad:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		bad += size
	}
	lineStart := bytes.LastIndexAny(raw[:bad], "\r\n") + 1
	line := raw[lineStart:bad]
	e := perr(CodeDataType, "", 0, 0, 0, "invalid UTF-8")
	if m.charset == CharsetASCII {
		e.Msg = "byte outside the declared character set (MSH-18 ASCII)"
	}
	if validSegmentID(raw[lineStart:], m.delims.Field) {
		e.Segment = string(line[:3])
		e.Field = bytes.Count(line, []byte{m.delims.Field})
		if e.Segment == "MSH" {
			e.Field++
		}
		e.SegmentSeq = 1 + bytes.Count(raw[:lineStart], append([]byte{'\r'}, line[:3]...)) +
			bytes.Count(raw[:lineStart], append([]byte{'\n'}, line[:3]...))
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

// Charset returns the character set MSH-18 declared (the text is UTF-8
// whatever it was).
func (m *Message) Charset() Charset { return m.charset }

// Raw returns the message bytes (BOM and leading blank lines removed;
// transcoded to UTF-8 when MSH-18 declared another character set).
func (m *Message) Raw() []byte { return m.src.raw }

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
	return Segment{b: m.src.raw[sp.start:sp.end], d: &m.delims, src: &m.src, off: sp.start}
}

// nameAt reports whether segment i is named name, without building it.
func (m *Message) nameAt(i int, name string) bool {
	sp := m.segs[i]
	return sp.end-sp.start >= 3 && m.src.text[sp.start:sp.start+3] == name
}

// Segment returns the n-th (1-based) segment named name, and whether it
// exists.
func (m *Message) Segment(name string, n int) (Segment, bool) {
	for i := range m.segs {
		if m.nameAt(i, name) {
			if n--; n == 0 {
				return m.SegmentAt(i), true
			}
		}
	}
	return Segment{}, false
}

// Count returns how many segments are named name.
func (m *Message) Count(name string) int {
	c := 0
	for i := range m.segs {
		if m.nameAt(i, name) {
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
	if s.src != nil {
		return s.src.text[s.off : s.off+3]
	}
	return string(s.b[:3])
}

func (s Segment) is(name string) bool { return len(s.b) >= 3 && string(s.b[:3]) == name }

// header reports whether the segment numbers fields like MSH, where field 1
// is the field separator itself.
func (s Segment) header() bool { return s.is("MSH") || s.is("FHS") || s.is("BHS") }

// Raw returns the segment's encoded bytes, without terminator.
func (s Segment) Raw() []byte { return s.b }

// value wraps b[from:to] of the segment.
func (s *Segment) value(from, to int, lit bool) Value {
	if s.src == nil { // a segment made from bytes alone: give it a source once
		s.src = &source{raw: s.b, text: string(s.b), d: *s.d}
	}
	return Value{src: s.src, start: s.off + uint32(from), end: s.off + uint32(to), lit: lit}
}

// Field returns field i (1-based, HL7 numbering). For MSH, field 1 is the
// field separator and field 2 the encoding characters, returned verbatim.
func (s Segment) Field(i int) Value {
	if i < 1 || s.d == nil || len(s.b) <= 3 {
		return Value{}
	}
	if s.header() {
		switch i {
		case 1:
			return s.value(3, 4, true)
		case 2:
			from, to := piece(s.b, 4, s.d.Field, 0)
			return s.value(from, to, true)
		}
		i--
	}
	from, to := piece(s.b, 4, s.d.Field, i-1)
	if from < 0 {
		return Value{}
	}
	return s.value(from, to, false)
}

// Fields fills out[i] with field i for 1 <= i < len(out), splitting the
// segment once: the fast way to read several fields of one segment.
// out[0] is left empty.
func (s Segment) Fields(out []Value) {
	clear(out)
	if s.d == nil || len(s.b) <= 3 {
		return
	}
	i, pos := 1, 4
	if s.src == nil {
		s.value(0, 0, false) // gives the segment its source
	}
	if s.header() {
		if len(out) > 1 {
			out[1] = s.value(3, 4, true)
		}
		i = 2
	}
	text := s.src.text[s.off : s.off+uint32(len(s.b))]
	for ; i < len(out) && pos <= len(s.b); i++ {
		end := pos + firstOf(text[pos:], s.d.Field)
		out[i] = s.value(pos, end, i == 2 && s.header())
		pos = end + 1
	}
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

// piece locates the n-th (0-based) piece of b[from:] split on sep, as
// offsets into b; from is -1 when there are fewer pieces.
func piece(b []byte, from int, sep byte, n int) (int, int) {
	if from > len(b) {
		return -1, -1
	}
	for ; n > 0; n-- {
		i := bytes.IndexByte(b[from:], sep)
		if i < 0 {
			return -1, -1
		}
		from += i + 1
	}
	return from, indexFrom(b, from, sep)
}
