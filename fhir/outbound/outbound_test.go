package outbound

import (
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/clarion-health/clarion/fhir/decode"
)

// Every resource Clarion serves must pass the strict google/fhir decoder.
func TestOutboundRoundTripsThroughStrictDecoder(t *testing.T) {
	dec, err := decode.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 8, 15, 0, 123456000, time.UTC)
	alert := Alert{ID: "alr_0abc", RuleID: "heart-rate", PatientID: "pt_0123456789ab", Priority: "PH", Unit: "4W",
		State: "open", LockText: "PH alert on 4W", CreatedAt: at, UpdatedAt: at, Recipients: []string{"rn1"}}
	accepted := alert
	accepted.State, accepted.AcceptedBy, accepted.AcceptedAt = "accepted", "rn1", at.Add(time.Minute)
	accepted.Reported = &fhir.Identifier{System: ptr("urn:oid:1.2.3"), Value: ptr("R-1")}
	msg := Message{ID: "msg_0abc", AlertID: "alr_0abc", PatientID: "pt_0123456789ab", DeviceID: "dev_1", UserID: "rn1",
		CreatedAt: at, DeliveredAt: at.Add(time.Second), ReadAt: at.Add(2 * time.Second), Response: "accept",
		RespondedAt: at.Add(3 * time.Second)}
	resp, ok := Response(msg)
	if !ok {
		t.Fatal("no response")
	}
	pending := msg
	pending.DeliveredAt, pending.Response = time.Time{}, ""
	rec := AuditRecord{Seq: 7, At: at, ActorType: "integration", ActorID: "fhir:rpm1", ActorRole: "integration",
		Action: "ingest.accepted", ObjectType: "event", ObjectID: "evt_1", Outcome: "success", CorrelationID: "evt_1",
		Detail: []byte(`{"patient_id":"pt_0123456789ab"}`)}
	failed := rec
	failed.Outcome, failed.Detail, failed.ActorType, failed.ActorRole = "failure", []byte(`{}`), "system", ""
	entries := []Entry{{FullURL: "http://x/fhir/Flag/alr-0abc", Resource: Marshal(Flag(alert))}}
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"open alert as CommunicationRequest", CommunicationRequest(alert), "CommunicationRequest"},
		{"accepted reported alert as CommunicationRequest", CommunicationRequest(accepted), "CommunicationRequest"},
		{"open alert as Flag", Flag(alert), "Flag"},
		{"accepted alert as Flag", Flag(accepted), "Flag"},
		{"delivered message as Communication", Delivery(msg), "Communication"},
		{"pending message as Communication", Delivery(pending), "Communication"},
		{"response as Communication", resp, "Communication"},
		{"audit record as AuditEvent", AuditEvent(rec), "AuditEvent"},
		{"failed system audit record as AuditEvent", AuditEvent(failed), "AuditEvent"},
		{"OperationOutcome", OperationOutcome(decode.Issue{Severity: "error", Code: "required", Expression: "Observation.subject",
			Diagnostics: "a Patient subject is required"}, decode.Issue{Severity: "warning", Code: "business-rule"}), "OperationOutcome"},
		{"informational OperationOutcome", Information("created"), "OperationOutcome"},
		{"CapabilityStatement", CapabilityStatement("http://clarion.example/fhir", "dev", at), "CapabilityStatement"},
		{"searchset Bundle", SearchSet(entries, "http://x/fhir/Flag?_count=1", "http://x/fhir/Flag?_count=1&_cursor=a", at), "Bundle"},
		{"empty searchset Bundle", SearchSet(nil, "http://x/fhir/Flag", "", at), "Bundle"},
		{"transaction-response Bundle", ResponseBundle(true, []Entry{{Status: "201 Created", Location: "Observation/frs-1/_history/1",
			LastModified: at}}, at), "Bundle"},
		{"batch-response Bundle", ResponseBundle(false, []Entry{{Status: "201 Created", Location: "Observation/frs-1/_history/1"},
			{Status: "422 Unprocessable Entity", Outcome: Marshal(OperationOutcome(decode.Issue{Code: "business-rule", Expression: "Bundle.entry[1].resource.code"}))}}, at), "Bundle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Marshal(c.v)
			res, err := dec.Decode(b)
			if err != nil {
				t.Fatalf("%v\n%s", err.(*decode.Error).Issues, b)
			}
			if got := decode.TypeOf(res); got != c.want {
				t.Fatalf("decoded as %s, want %s", got, c.want)
			}
		})
	}
}

func TestIDMapping(t *testing.T) {
	for _, id := range []string{"alr_0abc", "msg_zz9", "frs_01h"} {
		if ClarionID(ID(id)) != id {
			t.Errorf("%s does not round-trip: %s", id, ID(id))
		}
	}
}
