package hl7

import (
	"strings"
	"unicode/utf8"
)

// maxFormatRepeat bounds what one formatting escape (\.sp99999\) may
// expand to, so a few bytes of input cannot become megabytes of text.
const maxFormatRepeat = 100

// decode replaces HL7 escape sequences (v2.9 section 2.7). Plain text is the
// target, so formatting commands become line breaks and spaces or are
// dropped:
//
//	\F\ \S\ \T\ \R\ \E\ \P\   the delimiter they name (\P\: truncation character)
//	\H\ \N\                   highlighting on/off: removed
//	\.br\ \.ce\               a line break (.ce: centring is dropped)
//	\.sp n\                   n line breaks (n absent: 1)
//	\.sk n\ \.ti n\           n spaces (.ti: only a positive indent)
//	\.in n\ \.fi\ \.nf\       dropped (indent, fill and no-fill modes)
//	\Xhhhh..\                 the bytes, in the message's character set
//	\Cxxyy\ \Mxxyyzz\ \Zxx\   kept verbatim: Clarion does not switch character
//	                          sets inside a value, and local escapes mean nothing here
//
// Unknown, malformed or unterminated sequences are kept verbatim, so no
// text is lost.
func (d *Delimiters) decode(b string, latin1 bool) string {
	var sb strings.Builder
	sb.Grow(len(b))
	hex := false
	for len(b) > 0 {
		i := strings.IndexByte(b, d.Escape)
		if i < 0 {
			sb.WriteString(b)
			break
		}
		sb.WriteString(b[:i])
		b = b[i+1:]
		j := strings.IndexByte(b, d.Escape)
		if j < 0 {
			sb.WriteByte(d.Escape)
			sb.WriteString(b)
			break
		}
		seq := b[:j]
		b = b[j+1:]
		switch {
		case len(seq) == 1 && d.single(seq[0]) != 0:
			sb.WriteByte(d.single(seq[0]))
		case len(seq) == 1 && (seq[0] == 'H' || seq[0] == 'N'):
			// highlighting on/off: no meaning in plain text
		case len(seq) > 1 && seq[0] == 'X' && writeHex(&sb, seq[1:], latin1):
			hex = hex || !latin1
		case len(seq) >= 3 && seq[0] == '.' && formatting(&sb, seq[1:]):
		default:
			sb.WriteByte(d.Escape)
			sb.WriteString(seq)
			sb.WriteByte(d.Escape)
		}
	}
	if hex { // \Xhh\ may spell invalid UTF-8
		return strings.ToValidUTF8(sb.String(), string(utf8.RuneError))
	}
	return sb.String()
}

// formatting writes the plain-text form of a formatted-text command (the
// sequence after its dot, e.g. "sp 2"); false when it is not one.
func formatting(sb *strings.Builder, seq string) bool {
	cmd, arg := seq[:2], seq[2:]
	n, signed, ok := formatArg(arg)
	if !ok {
		return false
	}
	switch cmd {
	case "br", "ce", "fi", "nf":
		if len(arg) != 0 {
			return false
		}
		if cmd == "br" || cmd == "ce" {
			sb.WriteByte('\n')
		}
	case "sp":
		if signed {
			return false
		}
		sb.WriteString(strings.Repeat("\n", repeatCount(n, 1)))
	case "sk", "ti":
		if signed && cmd == "sk" {
			return false
		}
		sb.WriteString(strings.Repeat(" ", repeatCount(n, 1)))
	case "in":
	default:
		return false
	}
	return true
}

// formatArg reads the optional " [+|-]digits" argument of a command;
// n is -1 when absent, 0 when negative (nothing to write).
func formatArg(arg string) (n int, signed, ok bool) {
	arg = strings.TrimLeft(arg, " ")
	if len(arg) == 0 {
		return -1, false, true
	}
	neg := false
	if arg[0] == '+' || arg[0] == '-' {
		signed, neg = true, arg[0] == '-'
		arg = arg[1:]
	}
	if len(arg) == 0 || len(arg) > 6 || !digits(arg) {
		return 0, false, false
	}
	if neg {
		return 0, true, true
	}
	return atoi(arg), signed, true
}

func repeatCount(n, def int) int {
	if n < 0 {
		n = def
	}
	return min(n, maxFormatRepeat)
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

// writeHex writes the bytes spelled by h; Latin-1 bytes become UTF-8.
func writeHex(sb *strings.Builder, h string, latin1 bool) bool {
	if len(h)%2 != 0 {
		return false
	}
	for i := 0; i < len(h); i += 2 {
		if unhex(h[i]) < 0 || unhex(h[i+1]) < 0 {
			return false
		}
	}
	for i := 0; i < len(h); i += 2 {
		c := byte(unhex(h[i])<<4 | unhex(h[i+1]))
		if latin1 {
			sb.WriteRune(rune(c))
		} else {
			sb.WriteByte(c)
		}
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
