package hl7

import (
	"errors"
	"strconv"
	"strings"
)

// Error codes from HL7 table 0357 (message error condition codes).
const (
	CodeSegmentSequence     = 100
	CodeRequiredMissing     = 101
	CodeDataType            = 102
	CodeTableValue          = 103
	CodeUnsupportedType     = 200
	CodeUnsupportedEvent    = 201
	CodeUnsupportedProcID   = 202
	CodeUnsupportedVersion  = 203
	CodeApplicationInternal = 207
)

// CodeText is the table 0357 description of code, used in ERR-3.2.
func CodeText(code int) string {
	switch code {
	case 0:
		return "Message accepted"
	case CodeSegmentSequence:
		return "Segment sequence error"
	case CodeRequiredMissing:
		return "Required field missing"
	case CodeDataType:
		return "Data type error"
	case CodeTableValue:
		return "Table value not found"
	case CodeUnsupportedType:
		return "Unsupported message type"
	case CodeUnsupportedEvent:
		return "Unsupported event code"
	case CodeUnsupportedProcID:
		return "Unsupported processing id"
	case CodeUnsupportedVersion:
		return "Unsupported version id"
	case CodeApplicationInternal:
		return "Application internal error"
	}
	return "Unknown error"
}

// ErrFrameTooLarge is returned by ReadFrame when a frame's payload exceeds
// the limit.
var ErrFrameTooLarge = errors.New("mllp: frame too large")

// ParseError says where a message is wrong and how, in terms the sender can
// act on. It never carries field values: messages hold PHI, and this text is
// logged and sent back in ACKs.
type ParseError struct {
	Code       int    // HL7 table 0357
	Segment    string // segment id, e.g. "PID"; "" when unknown
	SegmentSeq int    // occurrence of that segment id, 1-based; 0 when unknown
	Field      int    // 1-based field number; 0 for the whole segment
	Component  int    // 1-based component; 0 for the whole field
	Msg        string // fixed description of the problem (no values)
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("hl7: ")
	b.WriteString(strconv.Itoa(e.Code))
	b.WriteByte(' ')
	b.WriteString(strings.ToLower(CodeText(e.Code)))
	if loc := e.Location(); loc != "" {
		b.WriteString(" at ")
		b.WriteString(loc)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Location is the error position in path form, e.g. "OBX(2)-5.1".
func (e *ParseError) Location() string {
	if e.Segment == "" {
		return ""
	}
	s := e.Segment
	if e.SegmentSeq > 1 {
		s += "(" + strconv.Itoa(e.SegmentSeq) + ")"
	}
	if e.Field > 0 {
		s += "-" + strconv.Itoa(e.Field)
		if e.Component > 0 {
			s += "." + strconv.Itoa(e.Component)
		}
	}
	return s
}

func perr(code int, seg string, seq, field, comp int, msg string) *ParseError {
	return &ParseError{Code: code, Segment: seg, SegmentSeq: seq, Field: field, Component: comp, Msg: msg}
}
