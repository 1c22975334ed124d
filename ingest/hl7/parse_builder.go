package hl7

import (
	"strings"
)

// Builder writes an outbound HL7 v2 message segment by segment. Text given
// to Set, SetReps and SetSubs is escaped for the builder's delimiters, so a
// value can never break the message's structure; SetEncoded takes text that
// is already encoded. Fields may be set in any order; unset fields are
// empty and trailing empty fields are not written.
//
//	b := NewBuilder(DefaultDelimiters())
//	b.Segment("MSH").Set(3, "CLARION").Set(9, "ACK", "A01", "ACK").Set(10, id).Set(12, "2.5.1")
//	b.Segment("MSA").Set(1, "AA").Set(2, controlID)
//	out := b.Bytes() // segments end with CR
type Builder struct {
	d      Delimiters
	out    []byte
	name   string
	fields []string // encoded fields of the current segment; fields[i] is field i
}

// NewBuilder starts a message with delimiters d (use DefaultDelimiters for
// |^~\&).
func NewBuilder(d Delimiters) *Builder { return &Builder{d: d} }

// Segment ends the current segment and starts one named id (three upper-
// case letters or digits). For MSH, BHS and FHS, fields 1 and 2 are the
// delimiters and are written by the builder; numbering follows HL7, so the
// first field set is 3.
func (b *Builder) Segment(id string) *Builder {
	b.flush()
	b.name = id
	return b
}

// Set sets field i to the given components, each escaped.
func (b *Builder) Set(i int, comps ...string) *Builder {
	return b.SetEncoded(i, b.components(comps))
}

// SetReps sets field i to repetitions, each a list of components.
func (b *Builder) SetReps(i int, reps ...[]string) *Builder {
	enc := make([]string, len(reps))
	for r, comps := range reps {
		enc[r] = b.components(comps)
	}
	return b.SetEncoded(i, strings.Join(enc, string(b.d.Repetition)))
}

// SetSubs sets component c of field i (both 1-based; other components
// empty) to subcomponents, each escaped: e.g. PID-3.4 "GHH&1.2.3&ISO".
func (b *Builder) SetSubs(i, c int, subs ...string) *Builder {
	enc := make([]string, len(subs))
	for s, v := range subs {
		enc[s] = Escape(v, b.d)
	}
	return b.SetEncoded(i, strings.Repeat(string(b.d.Component), max(c-1, 0))+
		trimJoin(enc, b.d.Subcomponent))
}

// SetEncoded sets field i to text already encoded with the builder's
// delimiters. Field numbers below the first settable one are ignored.
func (b *Builder) SetEncoded(i int, encoded string) *Builder {
	if i < b.first() || b.name == "" {
		return b
	}
	for len(b.fields) <= i {
		b.fields = append(b.fields, "")
	}
	b.fields[i] = encoded
	return b
}

// Bytes ends the current segment and returns the message so far; the
// builder may go on with more segments.
func (b *Builder) Bytes() []byte {
	b.flush()
	return b.out
}

// first is the first field number a caller sets in the current segment.
func (b *Builder) first() int {
	if b.header() {
		return 3
	}
	return 1
}

func (b *Builder) header() bool { return b.name == "MSH" || b.name == "BHS" || b.name == "FHS" }

func (b *Builder) components(comps []string) string {
	enc := make([]string, len(comps))
	for c, v := range comps {
		enc[c] = Escape(v, b.d)
	}
	return trimJoin(enc, b.d.Component)
}

// trimJoin joins parts with sep, dropping trailing empty ones.
func trimJoin(parts []string, sep byte) string {
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return strings.Join(parts, string(sep))
}

func (b *Builder) flush() {
	if b.name == "" {
		return
	}
	b.out = append(b.out, b.name...)
	from := 1
	if b.header() {
		b.out = append(b.out, b.d.Field)
		b.out = append(b.out, b.d.EncodingChars()...)
		from = 3
	}
	last := len(b.fields) - 1
	for last >= from && b.fields[last] == "" {
		last--
	}
	for i := from; i <= last; i++ {
		b.out = append(b.out, b.d.Field)
		b.out = append(b.out, b.fields[i]...)
	}
	b.out = append(b.out, '\r')
	b.name, b.fields = "", b.fields[:0]
}
