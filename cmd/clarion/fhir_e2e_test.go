package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const fhirPatient = "PT-E2E-555"

// fhirToken issues a scoped token through the CLI's `token create --scopes`
// (run in process: the same code the binary dispatches to).
func (h *harness) fhirToken(subject, scopes string) string {
	h.t.Helper()
	var out, errb bytes.Buffer
	args := append([]string{"--role", "integration", "--kind", "integration", "--subject", subject, "--scopes", scopes}, h.storeArgs()...)
	if err := runTokenCreate(context.Background(), args, &out, &errb); err != nil {
		h.t.Fatalf("token create --scopes: %v: %s", err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func (h *harness) fhir(method, path, token, body string) (int, http.Header, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, "http://"+h.httpAddr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

const fhirAdmit = `{"resourceType":"Encounter",
 "contained":[
  {"resourceType":"Location","id":"unit","identifier":[{"value":"4W"}],"physicalType":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/location-physical-type","code":"wa"}]}},
  {"resourceType":"Location","id":"room","name":"412","partOf":{"reference":"#unit"},"physicalType":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/location-physical-type","code":"ro"}]}},
  {"resourceType":"Location","id":"bed","name":"12","partOf":{"reference":"#room"},"physicalType":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/location-physical-type","code":"bd"}]}}],
 "status":"in-progress","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"IMP"},
 "subject":{"reference":"Patient/` + fhirPatient + `"},
 "location":[{"location":{"reference":"#bed"},"status":"active"}]}`

func fhirHeartRate(at time.Time) string {
	return `{"resourceType":"Observation","identifier":[{"system":"urn:oid:1.3.6.1.4.1.99999.1","value":"rpm-e2e-1"}],
 "status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
 "code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},
 "subject":{"reference":"Patient/` + fhirPatient + `"},"effectiveDateTime":"` + at.UTC().Format(time.RFC3339) + `",
 "valueQuantity":{"value":150,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},
 "device":{"reference":"Device/watch-9"}}`
}

// An RPM platform POSTs a heart rate above the rule's threshold: the RN on
// call gets it end to end; the platform's retry does not page again.
func TestFHIRHeartRateReachesTheOnCallDeviceOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		h.api("PUT", "/v1/rules/heart-rate", map[string]any{"name": "Heart rate", "enabled": true,
			"priority": "PH", "target_role": "RN", "policy_id": "nursing",
			"match":     map[string]any{"codes": []map[string]any{{"system": "LN", "code": "8867-4"}}, "above": 130},
			"lock_text": "{priority} alert on {unit}", "body": "Room {room} bed {bed}: {test} {value} {units}"})
		tok := h.fhirToken("rpm-platform", "system/Observation.write system/Encounter.write")

		if code, _, body := h.fhir("POST", "/fhir/Encounter", tok, fhirAdmit); code != http.StatusCreated {
			t.Fatalf("admit: %d %s", code, body)
		}
		obs := fhirHeartRate(time.Now().Add(-time.Minute))
		code, hdr, body := h.fhir("POST", "/fhir/Observation", tok, obs)
		if code != http.StatusCreated {
			t.Fatalf("observation: %d %s", code, body)
		}
		rec, conn := receive(t, hosp.rn, 30*time.Second)
		defer conn.Close()
		if !strings.Contains(rec.Plain.Body, "150") || !strings.Contains(rec.Plain.Body, "bed 12") ||
			!strings.Contains(rec.Plain.Body, "Heart rate") {
			t.Fatalf("unexpected message: %+v", rec.Plain)
		}
		if strings.Contains(rec.Envelope.LockText, "150") {
			t.Fatalf("lock screen carries a value: %q", rec.Envelope.LockText)
		}
		// The platform never saw the 201 and retries: same resource, no page.
		code2, hdr2, body2 := h.fhir("POST", "/fhir/Observation", tok, obs)
		if code2 != http.StatusOK || hdr2.Get("Location") != hdr.Get("Location") {
			t.Fatalf("retry: %d %s (Location %q, first %q)", code2, body2, hdr2.Get("Location"), hdr.Get("Location"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if again, err := conn.Next(ctx); err == nil {
			t.Fatalf("second page after the retry: %+v", again.Plain)
		}
		d := h.openDB()
		var events, alerts, updates, msgs int
		_ = d.QueryRow(`SELECT COUNT(*) FROM events WHERE source = 'fhir:rpm-platform'`).Scan(&events)
		_ = d.QueryRow(`SELECT COUNT(*), COALESCE(SUM(updates), 0) FROM alerts WHERE rule_id = 'heart-rate'`).Scan(&alerts, &updates)
		_ = d.QueryRow(`SELECT COUNT(*) FROM messages WHERE device_id = $1`, hosp.rn.DeviceID).Scan(&msgs)
		if events != 2 || alerts != 1 || updates != 0 || msgs != 1 {
			t.Fatalf("want 2 events, 1 alert never updated, 1 message; got %d, %d (%d updates), %d", events, alerts, updates, msgs)
		}
		if a := auditActions(t, d); !contains(a, "ingest.duplicate") {
			t.Fatalf("the retry is not audited as a duplicate: %v", a)
		}
		// The alert is readable as FHIR, and the reader's scope is enforced.
		reader := h.fhirToken("ehr-reader", "system/*.read")
		if code, _, body := h.fhir("GET", "/fhir/Flag?status=active", reader, ""); code != 200 || !strings.Contains(body, `"Flag"`) {
			t.Fatalf("Flag search: %d %s", code, body)
		}
		if code, _, _ := h.fhir("GET", "/fhir/Flag", tok, ""); code != http.StatusForbidden {
			t.Fatalf("a write-only token read Flags: %d", code)
		}
		if code, _, _ := h.fhir("GET", "/fhir/metadata", "", ""); code != 200 {
			t.Fatalf("metadata: %d", code)
		}
		h.stop()
		if strings.Contains(h.logs.String(), fhirPatient) {
			t.Fatal("server logs carry the patient id")
		}
	})
}
