package hl7

import (
	"bytes"
	"strings"
)

// Delimiters are a message's encoding characters: MSH-1 and MSH-2.
type Delimiters struct {
	Field, Component, Repetition, Escape, Subcomponent byte
	// Truncation is the v2.7 truncation character (MSH-2 position 5), or 0.
	Truncation byte
}

// DefaultDelimiters returns |^~\&.
func DefaultDelimiters() Delimiters {
	return Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}
}

// EncodingChars returns MSH-2 for d, e.g. `^~\&` or `^~\&#`.
func (d Delimiters) EncodingChars() string {
	b := []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		b = append(b, d.Truncation)
	}
	return string(b)
}

// valid: printable, not alphanumeric or space, all distinct.
func (d Delimiters) valid() bool {
	cs := []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		cs = append(cs, d.Truncation)
	}
	for i, c := range cs {
		if c <= ' ' || c > '~' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			return false
		}
		if bytes.IndexByte(cs[i+1:], c) >= 0 {
			return false
		}
	}
	return true
}

type level uint8

const (
	levelField level = iota
	levelRep
	levelComp
	levelSub
)

// source is the text values are cut from: a parsed message, or one
// segment read on its own.
type source struct {
	raw    []byte // what Raw returns slices of
	text   string // the same bytes as a string: decoded values slice it
	d      Delimiters
	latin1 bool // \Xhh\ escapes name Latin-1 bytes
}

// Value is a field, repetition, component or subcomponent: a span of its
// message, 24 bytes with one pointer. String decodes escapes. The zero
// Value is empty.
type Value struct {
	src        *source
	start, end uint32
	level      level
	lit        bool // MSH-1/MSH-2: the delimiters themselves, never split or decoded
}

// Rep returns repetition n (1-based) of a field.
func (v Value) Rep(n int) Value {
	return v.split(levelRep, n)
}

// Comp returns component n (1-based); on a field, of its first repetition.
func (v Value) Comp(n int) Value {
	return v.split(levelComp, n)
}

// Sub returns subcomponent n (1-based); on a field or repetition, of its
// first component.
func (v Value) Sub(n int) Value {
	return v.split(levelSub, n)
}

// split descends to level at, taking the first piece at each level above it.
func (v Value) split(at level, n int) Value {
	if n < 1 || v.src == nil {
		return Value{}
	}
	if v.lit || v.level >= at { // literal, or already at or below: only piece 1 exists
		if n == 1 {
			return v
		}
		return Value{}
	}
	s := v.src.text[v.start:v.end]
	// Pieces of the levels above at end at their separators too.
	stop := v.src.d.Repetition
	switch at {
	case levelComp:
		if v.level == levelField {
			s = s[:firstOf(s, v.src.d.Repetition)]
		}
		stop = v.src.d.Component
	case levelSub:
		switch v.level {
		case levelField:
			s = s[:firstOf2(s, v.src.d.Repetition, v.src.d.Component)]
		case levelRep:
			s = s[:firstOf(s, v.src.d.Component)]
		}
		stop = v.src.d.Subcomponent
	}
	from := 0
	for ; n > 1; n-- {
		i := firstOf(s[from:], stop)
		if i == len(s)-from {
			return Value{}
		}
		from += i + 1
	}
	to := from + firstOf(s[from:], stop)
	return Value{src: v.src, start: v.start + uint32(from), end: v.start + uint32(to), level: at}
}

// pieces fills out[i] with piece i (1-based) at level at, as split(at, i)
// would, but in one pass: for code that reads several components of one
// field. out[0] is left empty.
func (v Value) pieces(at level, out []Value) {
	clear(out)
	if len(out) < 2 || v.src == nil {
		return
	}
	if v.lit || v.level >= at {
		out[1] = v
		return
	}
	c := v
	if c.level+1 < at { // the first piece of the level above holds them
		c = c.split(at-1, 1)
	}
	s, sep := c.src.text[c.start:c.end], c.src.d.sep(at)
	for i, pos := 1, 0; i < len(out) && pos <= len(s); i++ {
		end := pos + firstOf(s[pos:], sep)
		out[i] = Value{src: c.src, start: c.start + uint32(pos), end: c.start + uint32(end), level: at}
		pos = end + 1
	}
}

// firstOf is the index of c in s, or len(s). HL7 values are short: a
// plain loop beats the vectorised search's set-up cost below 32 bytes.
func firstOf(s string, c byte) int {
	if len(s) < 32 {
		for i := 0; i < len(s); i++ {
			if s[i] == c {
				return i
			}
		}
		return len(s)
	}
	if i := strings.IndexByte(s, c); i >= 0 {
		return i
	}
	return len(s)
}

// firstOf2 is the index of the first of a or b in s, or len(s).
func firstOf2(s string, a, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == a || s[i] == b {
			return i
		}
	}
	return len(s)
}

func (d *Delimiters) sep(l level) byte {
	switch l {
	case levelRep:
		return d.Repetition
	case levelComp:
		return d.Component
	default:
		return d.Subcomponent
	}
}

// Reps returns the number of repetitions (0 when empty).
func (v Value) Reps() int { return v.count(levelRep) }

// Comps returns the number of components (0 when empty).
func (v Value) Comps() int { return v.count(levelComp) }

// Subs returns the number of subcomponents (0 when empty).
func (v Value) Subs() int { return v.count(levelSub) }

func (v Value) count(at level) int {
	if v.IsEmpty() {
		return 0
	}
	if v.lit || v.level >= at {
		return 1
	}
	if v.level+1 < at {
		v = v.split(at-1, 1)
	}
	return strings.Count(v.src.text[v.start:v.end], string(v.src.d.sep(at))) + 1
}

// IsEmpty reports whether the value is absent or empty.
func (v Value) IsEmpty() bool { return v.end == v.start }

// IsNull reports the explicit HL7 null `""` (delete the stored value).
func (v Value) IsNull() bool { return v.Equal(`""`) }

// Truncated reports whether the sender cut the value short: it ends with
// the v2.7 truncation character (MSH-2 position 5). The character is kept
// in String, so a reader sees the value was cut.
func (v Value) Truncated() bool {
	return !v.lit && !v.IsEmpty() && v.src.d.Truncation != 0 && v.src.text[v.end-1] == v.src.d.Truncation
}

// Raw returns the encoded bytes; they alias the message.
func (v Value) Raw() []byte {
	if v.src == nil {
		return nil
	}
	return v.src.raw[v.start:v.end:v.end]
}

// String returns the decoded text: escape sequences are replaced, delimiters
// inside the value (e.g. components of a whole field) are kept as they are.
// A value without escapes is a substring of the message: no allocation.
func (v Value) String() string {
	if v.src == nil {
		return ""
	}
	s := v.src.text[v.start:v.end]
	if v.lit || strings.IndexByte(s, v.src.d.Escape) < 0 {
		return s
	}
	return v.src.d.decode(s, v.src.latin1)
}

// Equal reports whether the encoded value is exactly s (no escapes decoded,
// no allocation): for codes such as message types and table values.
func (v Value) Equal(s string) bool {
	if v.src == nil {
		return s == ""
	}
	return v.src.text[v.start:v.end] == s
}

// Escape encodes s for use as one value in a message with delimiters d.
// Control characters (CR, LF, MLLP block bytes) become \Xhh\ so they can
// never end a segment or a frame.
func Escape(s string, d Delimiters) string {
	var sb strings.Builder
	sb.Grow(len(s))
	esc := func(seq ...byte) {
		sb.WriteByte(d.Escape)
		sb.Write(seq)
		sb.WriteByte(d.Escape)
	}
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == d.Escape:
			esc('E')
		case c == d.Field:
			esc('F')
		case c == d.Component:
			esc('S')
		case c == d.Repetition:
			esc('R')
		case c == d.Subcomponent:
			esc('T')
		case d.Truncation != 0 && c == d.Truncation:
			esc('P')
		case c < 0x20 || c == 0x7F:
			esc('X', hexDigits[c>>4], hexDigits[c&0xF])
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
