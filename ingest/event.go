// Package ingest defines the normalized Event that every inbound interface
// (HL7 v2 over MLLP, FHIR R4) produces, and the durable event store that
// commits an event before the sender is acknowledged.
package ingest

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// Kind says what happened. ADT kinds move the patient; results carry
// observations that routing rules evaluate.
type Kind string

const (
	KindAdmit           Kind = "adt.admit"            // A01
	KindTransfer        Kind = "adt.transfer"         // A02
	KindDischarge       Kind = "adt.discharge"        // A03
	KindRegister        Kind = "adt.register"         // A04
	KindUpdate          Kind = "adt.update"           // A08
	KindCancelAdmit     Kind = "adt.cancel_admit"     // A11
	KindCancelTransfer  Kind = "adt.cancel_transfer"  // A12
	KindCancelDischarge Kind = "adt.cancel_discharge" // A13
	KindSwap            Kind = "adt.swap"             // A17: two patients swap beds
	KindMerge           Kind = "adt.merge"            // A40: PriorPatient merged into Patient
	KindResult          Kind = "result"               // ORU^R01, including IHE PCD-01 device observations
	KindAlarm           Kind = "alarm"                // ORU^R40, IHE PCD-04
	KindWatchdog        Kind = "watchdog"             // ORU^R40 keep-alive from an alarm reporter
)

// Known reports whether k is one of the kinds Clarion handles.
func (k Kind) Known() bool {
	switch k {
	case KindAdmit, KindTransfer, KindDischarge, KindRegister, KindUpdate, KindCancelAdmit,
		KindCancelTransfer, KindCancelDischarge, KindSwap, KindMerge, KindResult, KindAlarm, KindWatchdog:
		return true
	}
	return false
}

// IsADT reports whether k changes patient context rather than carrying results.
func (k Kind) IsADT() bool { return strings.HasPrefix(string(k), "adt.") }

// Event is the normalized form of one inbound message. It holds PHI (the
// patient identifier, values), so it is stored sealed and never logged.
type Event struct {
	Kind Kind `json:"kind"`
	// Source names the sending system, e.g. "LAB^GHH" (MSH-3^MSH-4).
	Source string `json:"source"`
	// SourceID is the sender's id for this message (MSH-10); with Source it
	// is the dedup key.
	SourceID string `json:"source_id"`
	// Trigger is the sender's own type, e.g. "ORU^R01" or "ADT^A01".
	Trigger    string    `json:"trigger"`
	OccurredAt time.Time `json:"occurred_at"`
	Patient    Patient   `json:"patient"`
	// Location is where the message says the patient is (PV1-3).
	Location     Location      `json:"location"`
	Visit        Visit         `json:"visit,omitzero"`
	Observations []Observation `json:"observations,omitempty"`
	// PriorPatient is the identifier merged away (A40, MRG-1).
	PriorPatient *Patient `json:"prior_patient,omitempty"`
	// Other is the second patient of a bed swap (A17) and where they go.
	Other *Swapped `json:"other,omitempty"`
	// Alarm is set for KindAlarm and KindWatchdog.
	Alarm *Alarm `json:"alarm,omitempty"`
}

// Visit is the encounter an ADT message is about.
type Visit struct {
	Class     string `json:"class,omitempty"`     // PV1-2: I, O, E, ...
	Attending string `json:"attending,omitempty"` // PV1-7 id (a clinician, not the patient)
	Number    string `json:"number,omitempty"`    // PV1-19
}

// Swapped is the other patient in an A17 bed swap.
type Swapped struct {
	Patient  Patient  `json:"patient"`
	Location Location `json:"location"`
}

// Alarm is an IHE PCD-04 alarm (ORU^R40) or a reporter's watchdog.
type Alarm struct {
	ID                string `json:"id,omitempty"`                 // OBR-3: the alert's identity across its phases
	Reporter          string `json:"reporter,omitempty"`           // the alarm reporter (MSH-3)
	Source            string `json:"source,omitempty"`             // MDC reference id of the event, e.g. MDC_EVT_HI_GT_LIM
	Phase             string `json:"phase,omitempty"`              // start, continue, end, ...
	State             string `json:"state,omitempty"`              // active, inactive, latched, ...
	InactivationState string `json:"inactivation_state,omitempty"` // enabled, audio-paused, ...
	Priority          string `json:"priority,omitempty"`           // PH, PM, PL, PN
	Type              string `json:"type,omitempty"`               // SP, ST, SA
	EquipmentID       string `json:"equipment_id,omitempty"`
}

// Patient identifies the patient as the sender does. Names are not kept:
// nothing downstream needs them.
type Patient struct {
	// ID is the sender's identifier (PID-3.1); Authority its assigning
	// authority (PID-3.4), when given.
	ID        string `json:"id"`
	Authority string `json:"authority,omitempty"`
}

// Key is the patient's identity across messages from any sender that uses
// the same assigning authority.
func (p Patient) Key() string {
	if p.Authority == "" {
		return p.ID
	}
	return p.ID + "^" + p.Authority
}

// RouteParts is how many partitions routing divides patients into. Events
// of one partition are routed one transaction at a time, oldest first, so
// one patient's events keep their order while several patients are routed
// at once (on PostgreSQL, by several workers and nodes). Stored with each
// event: changing it re-partitions only events received afterwards, and
// the pending ones of the old layout would still be claimed in order only
// within their old partitions, so it is a constant.
const RouteParts = 16

// RoutePart is the partition the event is routed in, or -1 for a barrier:
// an event about two patients (a merge, a bed swap), routed alone once
// every event received before it is routed and before any received after
// it. The partition is a hash of the patient's key: four bits, no PHI.
func (e *Event) RoutePart() int {
	if e.Kind == KindMerge || e.Kind == KindSwap {
		return -1
	}
	h := fnv.New32a()
	h.Write([]byte(e.Patient.Key()))
	return int(h.Sum32() % RouteParts)
}

// Location is a point of care (unit), room, bed and facility.
type Location struct {
	Unit     string `json:"unit,omitempty"`
	Room     string `json:"room,omitempty"`
	Bed      string `json:"bed,omitempty"`
	Facility string `json:"facility,omitempty"`
}

// Observation is one result (an OBX, or a FHIR Observation).
type Observation struct {
	Code    string `json:"code"`
	System  string `json:"system,omitempty"` // "LN" for LOINC, "MDC", ...
	Display string `json:"display,omitempty"`
	// ValueType is the HL7 data type (NM, ST, SN, ...).
	ValueType string `json:"value_type,omitempty"`
	Value     string `json:"value,omitempty"`
	// Numeric is set when the value is a number.
	Numeric        *float64  `json:"numeric,omitempty"`
	Units          string    `json:"units,omitempty"`
	ReferenceRange string    `json:"reference_range,omitempty"`
	Flags          []string  `json:"flags,omitempty"`  // OBX-8: H, L, HH, LL, A, AA, ...
	Status         string    `json:"status,omitempty"` // OBX-11: F, C, P, ...
	ObservedAt     time.Time `json:"observed_at,omitzero"`
	// Order is the code of the ordered test or panel (OBR-4) whose results
	// this observation belongs to, e.g. "24323-8"; MDC codes by their text.
	Order string `json:"order,omitempty"`
	// Device observations (IHE PCD-01): OBX-4 containment path and OBX-18
	// equipment instance identifier.
	ContainmentPath string `json:"containment_path,omitempty"`
	EquipmentID     string `json:"equipment_id,omitempty"`
}

// ValidationError is a problem with an event that the sender must fix; its
// text names the field and is safe to return to the sender (no PHI).
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks what every consumer of an event relies on.
func (e *Event) Validate() error {
	switch {
	case !e.Kind.Known():
		return &ValidationError{"kind", fmt.Sprintf("unsupported kind %q", e.Kind)}
	case strings.TrimSpace(e.Source) == "":
		return &ValidationError{"source", "sending application is required"}
	case strings.TrimSpace(e.SourceID) == "":
		return &ValidationError{"source_id", "message control id is required"}
	case strings.TrimSpace(e.Patient.ID) == "" && e.Kind != KindWatchdog:
		return &ValidationError{"patient.id", "patient identifier is required"}
	}
	switch e.Kind {
	case KindMerge:
		if e.PriorPatient == nil || e.PriorPatient.ID == "" {
			return &ValidationError{"prior_patient.id", "the merged-away identifier (MRG-1) is required"}
		}
	case KindSwap:
		if e.Other == nil || e.Other.Patient.ID == "" {
			return &ValidationError{"other.patient.id", "the second patient of a bed swap is required"}
		}
	case KindAlarm:
		if e.Alarm == nil || e.Alarm.Source == "" {
			return &ValidationError{"alarm.source", "the alarm's event code is required"}
		}
	case KindAdmit, KindTransfer:
		if e.Location.Unit == "" {
			return &ValidationError{"location.unit", "point of care is required for " + string(e.Kind)}
		}
	case KindResult:
		if len(e.Observations) == 0 {
			return &ValidationError{"observations", "a result needs at least one observation"}
		}
		for i, o := range e.Observations {
			if o.Code == "" {
				return &ValidationError{fmt.Sprintf("observations[%d].code", i), "observation identifier is required"}
			}
		}
	}
	return nil
}
