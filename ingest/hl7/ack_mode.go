package hl7

import (
	"time"

	"github.com/clarion-health/clarion/internal/ids"
)

// AckMode is how a message asks to be acknowledged. Original mode (MSH-15
// and MSH-16 both empty) gets one ACK, AA/AE/AR. Enhanced mode (either
// valued) gets an accept ACK CA/CE/CR as MSH-15 asks, then, when the
// message was accepted and MSH-16 asks, an application ACK AA.
type AckMode struct {
	Enhanced bool
	Accept   string // MSH-15: AL, NE, ER or SU; "" in enhanced mode means AL
	App      string // MSH-16: AL, NE, ER or SU; "" in enhanced mode means NE
}

// AckModeOf reads MSH-15 and MSH-16.
func AckModeOf(m *Message) AckMode {
	msh := m.MSH()
	a := AckMode{Accept: msh.Field(15).Comp(1).String(), App: msh.Field(16).Comp(1).String()}
	a.Enhanced = a.Accept != "" || a.App != ""
	return a
}

// letter is the first letter of the accept ACK code: A (original) or C.
func (a AckMode) letter() byte {
	if a.Enhanced {
		return 'C'
	}
	return 'A'
}

// Outcome is what became of a message, as its ACK reports it.
type Outcome byte

const (
	Accepted Outcome = 'A' // committed (or a duplicate of a committed one): AA / CA
	Errored  Outcome = 'E' // content error or storage failure; fix or resend: AE / CE
	Refused  Outcome = 'R' // unsupported or not authorised; do not resend: AR / CR
)

// wants applies an AL/NE/ER/SU condition (HL7 table 0155) to an outcome;
// an unknown value is taken as AL, so a sender is never left waiting.
func wants(cond string, o Outcome) bool {
	switch cond {
	case "NE":
		return false
	case "ER":
		return o != Accepted
	case "SU":
		return o == Accepted
	}
	return true
}

// Replies builds the acknowledgements for orig's outcome, in the order they
// are written: original mode one ACK; enhanced mode the accept ACK (when
// MSH-15 asks) then the application ACK AA (when accepted and MSH-16 asks
// for AL or SU). perr, when set, goes into MSA-3 and ERR. Each ACK has an
// MSH-10 of its own.
func Replies(orig *Message, mode AckMode, o Outcome, perr *ParseError, now time.Time) [][]byte {
	if !mode.Enhanced {
		return [][]byte{BuildACK(orig, "A"+string(o), perr, now, ids.New("ack"))}
	}
	var out [][]byte
	if wants(orDefaultCond(mode.Accept, "AL"), o) {
		out = append(out, BuildACK(orig, "C"+string(o), perr, now, ids.New("ack")))
	}
	if o == Accepted && wants(orDefaultCond(mode.App, "NE"), o) {
		out = append(out, BuildACK(orig, "AA", nil, now, ids.New("ack")))
	}
	return out
}

func orDefaultCond(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
