package hl7

import (
	"strings"

	"github.com/clarion-health/clarion/ingest"
)

// mapADT fills the patient, location and visit of an ADT message. PID and
// PV1 are read from the message's first patient group; A17 reads a second
// group into Event.Other, A40 reads MRG-1 into Event.PriorPatient (only the
// first PID/MRG pair of an A40 is used).
func mapADT(m *Message, ev *ingest.Event) error {
	var err error
	if ev.Patient, err = patientOf(m, 1); err != nil {
		return err
	}
	pv1, _ := inGroup(m, 1, "PV1") // the zero Segment reads as empty
	ev.Location, ev.Visit = locationOf(pv1), visitOf(pv1)
	switch ev.Kind {
	case ingest.KindAdmit, ingest.KindTransfer:
		if ev.Location.Unit == "" {
			return perr(CodeRequiredMissing, "PV1", 1, 3, 1, "point of care is required")
		}
	case ingest.KindSwap:
		return mapSwap(m, ev)
	case ingest.KindMerge:
		return mapMerge(m, ev)
	}
	return nil
}

// mapSwap reads the second PID/PV1 group of an A17: each PV1-3 is where
// that patient goes.
func mapSwap(m *Message, ev *ingest.Event) error {
	if _, ok := inGroup(m, 1, "PV1"); !ok {
		return perr(CodeSegmentSequence, "PV1", 1, 0, 0, "a bed swap needs a PV1 segment for each patient")
	}
	other, err := patientOf(m, 2)
	if err != nil {
		return err
	}
	pv1, ok := inGroup(m, 2, "PV1")
	if !ok {
		return perr(CodeSegmentSequence, "PV1", 2, 0, 0, "a bed swap needs a PV1 segment for each patient")
	}
	ev.Other = &ingest.Swapped{Patient: other, Location: locationOf(pv1)}
	return nil
}

// mapMerge reads MRG-1, the identifier merged into PID-3.
func mapMerge(m *Message, ev *ingest.Event) error {
	mrg, ok := m.Segment("MRG", 1)
	if !ok {
		return perr(CodeSegmentSequence, "MRG", 1, 0, 0, "a merge needs an MRG segment")
	}
	prior := cxPatient(mrg.Field(1))
	if strings.TrimSpace(prior.ID) == "" {
		return perr(CodeRequiredMissing, "MRG", 1, 1, 1, "prior patient identifier is required")
	}
	ev.PriorPatient = &prior
	return nil
}

// inGroup returns the first segment named name after the n-th PID and
// before the next one: the n-th patient group's PV1, for instance.
func inGroup(m *Message, n int, name string) (Segment, bool) {
	for i := range m.Len() {
		if m.nameAt(i, "PID") {
			n--
			continue
		}
		if n == 0 && m.nameAt(i, name) {
			return m.SegmentAt(i), true
		}
		if n < 0 {
			break
		}
	}
	return Segment{}, false
}

// patientOf reads PID-3 of the n-th PID segment.
func patientOf(m *Message, n int) (ingest.Patient, error) {
	pid, ok := m.Segment("PID", n)
	if !ok {
		return ingest.Patient{}, perr(CodeSegmentSequence, "PID", n, 0, 0, "PID segment is required")
	}
	p := cxPatient(pid.Field(3))
	if strings.TrimSpace(p.ID) == "" {
		return ingest.Patient{}, perr(CodeRequiredMissing, "PID", n, 3, 1, "patient identifier is required")
	}
	return p, nil
}

// cxPatient reads the first repetition of a CX field: ID and assigning
// authority (CX-4.1).
func cxPatient(f Value) ingest.Patient {
	cx := f.Rep(1)
	return ingest.Patient{ID: text(cx.Comp(1)), Authority: text(cx.Comp(4).Sub(1))}
}

// locationOf reads PV1-3 (PL): point of care, room, bed, facility.
func locationOf(pv1 Segment) ingest.Location {
	var pl [5]Value
	pv1.Field(3).pieces(levelComp, pl[:])
	return ingest.Location{
		Unit:     text(pl[1].Sub(1)),
		Room:     text(pl[2].Sub(1)),
		Bed:      text(pl[3].Sub(1)),
		Facility: text(pl[4].Sub(1)),
	}
}

// visitOf reads PV1-2 patient class, PV1-7 attending doctor (its id) and
// PV1-19 visit number (its id).
func visitOf(pv1 Segment) ingest.Visit {
	var f [20]Value
	pv1.Fields(f[:])
	return ingest.Visit{
		Class:     text(f[2].Comp(1)),
		Attending: text(f[7].Rep(1).Comp(1)),
		Number:    text(f[19].Rep(1).Comp(1)),
	}
}

// text is the decoded value, with the HL7 null `""` read as empty.
func text(v Value) string {
	if v.IsNull() {
		return ""
	}
	return v.String()
}
