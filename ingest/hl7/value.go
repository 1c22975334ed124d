package hl7

import (
	"bytes"
	"strings"
	"unicode/utf8"
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

// Value is a field, repetition, component or subcomponent. Its bytes alias
// the message; String decodes escapes. The zero Value is empty.
type Value struct {
	b     []byte
	d     *Delimiters
	level level
	lit   bool // MSH-1/MSH-2: the delimiters themselves, never split or decoded
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
	if n < 1 {
		return Value{}
	}
	if v.lit || v.d == nil {
		if n == 1 {
			return v
		}
		return Value{}
	}
	for v.level+1 < at && v.d != nil {
		v = v.split(v.level+1, 1)
	}
	if v.level >= at { // already at or below: only piece 1 exists
		if n == 1 {
			return v
		}
		return Value{}
	}
	b, ok := nth(v.b, v.d.sep(at), n-1)
	if !ok {
		return Value{}
	}
	return Value{b: b, d: v.d, level: at}
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

func (v Value) count(at level) int {
	if len(v.b) == 0 {
		return 0
	}
	if v.lit || v.d == nil || v.level >= at {
		return 1
	}
	if v.level+1 < at {
		v = v.split(at-1, 1)
	}
	return bytes.Count(v.b, []byte{v.d.sep(at)}) + 1
}

// IsEmpty reports whether the value is absent or empty.
func (v Value) IsEmpty() bool { return len(v.b) == 0 }

// IsNull reports the explicit HL7 null `""` (delete the stored value).
func (v Value) IsNull() bool { return string(v.b) == `""` }

// Raw returns the encoded bytes; they alias the message.
func (v Value) Raw() []byte { return v.b }

// String returns the decoded text: escape sequences are replaced, delimiters
// inside the value (e.g. components of a whole field) are kept as they are.
func (v Value) String() string {
	if v.lit || v.d == nil {
		return string(v.b)
	}
	return v.d.decode(v.b)
}

// decode replaces HL7 escape sequences. Unknown or unterminated sequences
// are kept verbatim, so no text is lost.
func (d *Delimiters) decode(b []byte) string {
	if bytes.IndexByte(b, d.Escape) < 0 {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b))
	hex := false
	for len(b) > 0 {
		i := bytes.IndexByte(b, d.Escape)
		if i < 0 {
			sb.Write(b)
			break
		}
		sb.Write(b[:i])
		b = b[i+1:]
		j := bytes.IndexByte(b, d.Escape)
		if j < 0 {
			sb.WriteByte(d.Escape)
			sb.Write(b)
			break
		}
		seq := b[:j]
		b = b[j+1:]
		switch {
		case len(seq) == 1 && d.single(seq[0]) != 0:
			sb.WriteByte(d.single(seq[0]))
		case len(seq) == 1 && (seq[0] == 'H' || seq[0] == 'N'):
			// highlighting on/off: no meaning in plain text
		case string(seq) == ".br":
			sb.WriteByte('\n')
		case len(seq) > 1 && seq[0] == 'X' && writeHex(&sb, seq[1:]):
			hex = true
		default:
			sb.WriteByte(d.Escape)
			sb.Write(seq)
			sb.WriteByte(d.Escape)
		}
	}
	if hex { // \Xhh\ may spell invalid UTF-8
		return strings.ToValidUTF8(sb.String(), string(utf8.RuneError))
	}
	return sb.String()
}

// single maps one-letter escapes to the delimiter they stand for.
func (d *Delimiters) single(c byte) byte {
	switch c {
	case 'F':
		return d.Field
	case 'S':
		return d.Component
	case 'T':
		return d.Subcomponent
	case 'R':
		return d.Repetition
	case 'E':
		return d.Escape
	case 'P':
		return d.Truncation // 0 when the message declares none
	}
	return 0
}

func writeHex(sb *strings.Builder, h []byte) bool {
	if len(h)%2 != 0 {
		return false
	}
	for i := 0; i < len(h); i += 2 {
		if unhex(h[i]) < 0 || unhex(h[i+1]) < 0 {
			return false
		}
	}
	for i := 0; i < len(h); i += 2 {
		sb.WriteByte(byte(unhex(h[i])<<4 | unhex(h[i+1])))
	}
	return true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
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
