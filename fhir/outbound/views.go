package outbound

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Alert is the part of an alert the FHIR views show. Nothing in it is PHI:
// the patient is a pseudonym and LockText is the lock-screen line.
type Alert struct {
	ID         string
	RuleID     string
	PatientID  string // pt_… pseudonym
	Priority   string // PH, PM, PL, PN
	Unit       string
	State      string // open, accepted, closed
	LockText   string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	AcceptedBy string
	AcceptedAt time.Time
	Recipients []string // users paged so far
	// Reported is the identifier of the CommunicationRequest (ITI-84) the
	// alert came from, when a search by identifier found it.
	Reported *fhir.Identifier
}

// RequestStatus is the CommunicationRequest status of an alert state.
func RequestStatus(state string) fhir.RequestStatus {
	switch state {
	case "open":
		return fhir.RequestStatusActive
	case "accepted", "closed":
		return fhir.RequestStatusCompleted
	}
	return fhir.RequestStatusUnknown
}

// StatesForRequestStatus is the inverse, for searches; nil for a status no
// alert has.
func StatesForRequestStatus(code string) []string {
	switch code {
	case "active":
		return []string{"open"}
	case "completed":
		return []string{"accepted", "closed"}
	}
	return nil
}

func priority(p string) *fhir.RequestPriority {
	v := fhir.RequestPriorityRoutine
	switch p {
	case "PH":
		v = fhir.RequestPriorityStat
	case "PM":
		v = fhir.RequestPriorityUrgent
	}
	return &v
}

func ruleConcept(a Alert) fhir.CodeableConcept {
	return fhir.CodeableConcept{Coding: []fhir.Coding{{System: ptr(SystemRule), Code: ptr(a.RuleID)}}, Text: ptr(a.LockText)}
}

// CommunicationRequest is an alert as a FHIR CommunicationRequest: what
// Clarion was asked to communicate, to whom and how urgently.
func CommunicationRequest(a Alert) fhir.CommunicationRequest {
	cr := fhir.CommunicationRequest{Id: ptr(ID(a.ID)), Meta: meta(a.UpdatedAt),
		Identifier: []fhir.Identifier{{System: ptr(SystemAlert), Value: ptr(a.ID)}},
		Status:     RequestStatus(a.State), Priority: priority(a.Priority),
		Category: []fhir.CodeableConcept{ruleConcept(a)},
		Subject:  PatientRef(a.PatientID), AuthoredOn: ptr(Instant(a.CreatedAt)),
		Sender: &fhir.Reference{Display: ptr("Clarion")},
		Note:   []fhir.Annotation{{Text: a.LockText, Time: ptr(Instant(a.CreatedAt))}},
	}
	if a.Reported != nil {
		cr.Identifier = append(cr.Identifier, *a.Reported)
	}
	for _, u := range a.Recipients {
		cr.Recipient = append(cr.Recipient, *identified("Practitioner", SystemUser, u))
	}
	if a.Unit != "" {
		cr.Note = append(cr.Note, fhir.Annotation{Text: "unit " + a.Unit})
	}
	return cr
}

// Flag is an alert as a FHIR Flag: active while the alert is open.
func Flag(a Alert) fhir.Flag {
	f := fhir.Flag{Id: ptr(ID(a.ID)), Meta: meta(a.UpdatedAt),
		Identifier: []fhir.Identifier{{System: ptr(SystemAlert), Value: ptr(a.ID)}},
		Status:     fhir.FlagStatusActive, Code: ruleConcept(a), Subject: *PatientRef(a.PatientID),
		Period: &fhir.Period{Start: ptr(Instant(a.CreatedAt))}}
	if a.State != "open" {
		f.Status = fhir.FlagStatusInactive
		end := a.UpdatedAt
		if !a.AcceptedAt.IsZero() {
			end = a.AcceptedAt
		}
		f.Period.End = ptr(Instant(end))
	}
	return f
}

// Message is one page of an alert to one device, with its receipts and
// the recipient's answer.
type Message struct {
	ID          string
	AlertID     string
	PatientID   string
	DeviceID    string
	UserID      string
	Step        int
	CreatedAt   time.Time
	DeliveredAt time.Time
	ReadAt      time.Time
	Response    string // accept, decline, or ""
	RespondedAt time.Time
}

// ResponseSuffix marks the Communication id of a response.
const ResponseSuffix = ".response"

// LastUpdated is the latest change of a message.
func (m Message) LastUpdated() time.Time {
	t := m.CreatedAt
	for _, u := range []time.Time{m.DeliveredAt, m.ReadAt, m.RespondedAt} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// Delivery is a message as a FHIR Communication from Clarion to the
// recipient: in-progress until the device acknowledged it, then completed
// (received = the delivery receipt).
func Delivery(m Message) fhir.Communication {
	c := fhir.Communication{Id: ptr(ID(m.ID)), Meta: meta(m.LastUpdated()),
		Identifier: []fhir.Identifier{{System: ptr(SystemAlert), Value: ptr(m.ID)}},
		BasedOn:    []fhir.Reference{{Reference: ptr("CommunicationRequest/" + ID(m.AlertID))}},
		Status:     fhir.EventStatusInProgress, Subject: PatientRef(m.PatientID),
		Sent:      ptr(Instant(m.CreatedAt)),
		Recipient: []fhir.Reference{*identified("Practitioner", SystemUser, m.UserID), *identified("Device", SystemDevice, m.DeviceID)},
		Sender:    &fhir.Reference{Display: ptr("Clarion")},
		Category:  []fhir.CodeableConcept{{Text: ptr("escalation step " + strconv.Itoa(m.Step))}},
	}
	if !m.DeliveredAt.IsZero() {
		c.Status, c.Received = fhir.EventStatusCompleted, ptr(Instant(m.DeliveredAt))
	}
	return c
}

// Response is the recipient's answer as a FHIR Communication in response
// to the delivery; its topic is the answer (urn:clarion:response accept or
// decline). ok is false when the message has no answer.
func Response(m Message) (fhir.Communication, bool) {
	if m.Response == "" {
		return fhir.Communication{}, false
	}
	return fhir.Communication{Id: ptr(ID(m.ID) + ResponseSuffix), Meta: meta(m.RespondedAt),
		BasedOn:      []fhir.Reference{{Reference: ptr("CommunicationRequest/" + ID(m.AlertID))}},
		InResponseTo: []fhir.Reference{{Reference: ptr("Communication/" + ID(m.ID))}},
		Status:       fhir.EventStatusCompleted, Subject: PatientRef(m.PatientID),
		Sent: ptr(Instant(m.RespondedAt)), Received: ptr(Instant(m.RespondedAt)),
		Sender:    identified("Practitioner", SystemUser, m.UserID),
		Recipient: []fhir.Reference{{Display: ptr("Clarion")}},
		Topic:     &fhir.CodeableConcept{Coding: []fhir.Coding{{System: ptr(SystemResponse), Code: ptr(m.Response)}}, Text: ptr(m.Response)},
	}, true
}

// AuditRecord is one audit_log row (the columns of the first migration).
type AuditRecord struct {
	Seq           int64
	At            time.Time
	ActorType     string
	ActorID       string
	ActorRole     string
	Action        string
	ObjectType    string
	ObjectID      string
	Outcome       string
	CorrelationID string
	Detail        []byte
}

// AuditEvent is an audit record as a FHIR AuditEvent. Its detail is not
// copied, except the patient pseudonym when there is one.
func AuditEvent(r AuditRecord) fhir.AuditEvent {
	outcome := fhir.AuditEventOutcome0
	if r.Outcome != "success" {
		outcome = fhir.AuditEventOutcome8
	}
	ev := fhir.AuditEvent{Id: ptr(strconv.FormatInt(r.Seq, 10)), Meta: meta(r.At),
		Type:     fhir.Coding{System: ptr(SystemAction), Code: ptr(r.Action)},
		Recorded: Instant(r.At), Outcome: &outcome,
		Agent: []fhir.AuditEventAgent{{
			Type:      &fhir.CodeableConcept{Coding: []fhir.Coding{{System: ptr(SystemActor), Code: ptr(r.ActorType)}}},
			Who:       &fhir.Reference{Identifier: &fhir.Identifier{System: ptr(SystemActor + ":" + r.ActorType), Value: ptr(r.ActorID)}},
			Requestor: r.ActorType != "system",
		}},
		Source: fhir.AuditEventSource{Observer: fhir.Reference{Display: ptr("Clarion")}},
		Entity: []fhir.AuditEventEntity{{
			What: &fhir.Reference{Identifier: &fhir.Identifier{System: ptr(SystemObject + ":" + r.ObjectType), Value: ptr(r.ObjectID)}},
			Type: &fhir.Coding{System: ptr(SystemObject), Code: ptr(r.ObjectType)},
		}},
	}
	if r.ActorRole != "" {
		ev.Agent[0].Role = []fhir.CodeableConcept{{Text: ptr(r.ActorRole)}}
	}
	if r.Outcome != "success" && r.Outcome != "" {
		ev.OutcomeDesc = ptr(r.Outcome)
	}
	if r.CorrelationID != "" {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{Name: ptr("correlation"),
			What: &fhir.Reference{Identifier: &fhir.Identifier{System: ptr("urn:clarion:correlation"), Value: ptr(r.CorrelationID)}}})
	}
	var detail struct {
		PatientID string `json:"patient_id"`
	}
	if json.Unmarshal(r.Detail, &detail) == nil && detail.PatientID != "" {
		ev.Entity = append(ev.Entity, fhir.AuditEventEntity{What: PatientRef(detail.PatientID), Name: ptr("patient")})
	} else if r.ObjectType == "patient" {
		ev.Entity[0].What = PatientRef(r.ObjectID)
	}
	return ev
}
