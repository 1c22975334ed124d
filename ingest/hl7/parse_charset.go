package hl7

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Charset is the character set a message declared in MSH-18 (HL7 table
// 0211). Whatever it is, a parsed Message holds UTF-8.
type Charset string

// The character sets Clarion reads. An empty MSH-18 means UTF-8 here: it is
// what senders without MSH-18 send in practice, and ASCII is a subset.
const (
	CharsetDefault Charset = ""              // MSH-18 empty: read as UTF-8
	CharsetASCII   Charset = "ASCII"         // 7-bit; valid UTF-8 is tolerated
	CharsetLatin1  Charset = "8859/1"        // ISO 8859-1, transcoded to UTF-8
	CharsetUTF8    Charset = "UNICODE UTF-8" // UTF-8
)

// charsetOf maps an MSH-18 value to a supported Charset. Common spellings
// of the same sets are accepted too.
func charsetOf(v string) (Charset, bool) {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "":
		return CharsetDefault, true
	case "ASCII", "US-ASCII":
		return CharsetASCII, true
	case "8859/1", "ISO-8859-1", "ISO8859-1", "ISO_8859-1", "LATIN1", "LATIN-1":
		return CharsetLatin1, true
	case "UNICODE UTF-8", "UTF-8", "UTF8":
		return CharsetUTF8, true
	}
	return "", false
}

// decodeCharset reads MSH-18 (its first repetition: later ones name the
// alternate sets of \C..\ and \M..\ escapes) and returns the message as
// UTF-8. Latin-1 is transcoded into a new buffer; other input is returned
// as it is and checked for valid UTF-8 by the indexer.
func decodeCharset(raw []byte, d *Delimiters) ([]byte, Charset, *ParseError) {
	line := raw
	if i := bytes.IndexAny(raw, "\r\n"); i >= 0 {
		line = raw[:i]
	}
	var msh18 []byte
	if from, to := piece(line, 4, d.Field, 18-2); from >= 0 { // MSH-2 is piece 0
		msh18 = line[from:to]
		if i := bytes.IndexByte(msh18, d.Repetition); i >= 0 {
			msh18 = msh18[:i]
		}
	}
	cs, ok := charsetOf(string(msh18))
	if !ok {
		return nil, "", perr(CodeTableValue, "MSH", 1, 18, 0,
			"character set is not supported (use ASCII, 8859/1 or UNICODE UTF-8)")
	}
	if cs == CharsetLatin1 {
		return latin1ToUTF8(raw), cs, nil
	}
	return raw, cs, nil
}

// latin1ToUTF8 transcodes ISO 8859-1: every byte is the code point of the
// same number.
func latin1ToUTF8(b []byte) []byte {
	high := 0
	for _, c := range b {
		if c >= utf8.RuneSelf {
			high++
		}
	}
	if high == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+high)
	for _, c := range b {
		if c < utf8.RuneSelf {
			out = append(out, c)
		} else {
			out = utf8.AppendRune(out, rune(c))
		}
	}
	return out
}
