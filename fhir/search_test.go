package fhir

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// seedAlerts writes alerts and messages as routing and messaging would:
// three alerts of patient pt_a (open, accepted, open) and one of pt_b.
func seedAlerts(t *testing.T, f *fixture) (base time.Time) {
	t.Helper()
	base = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	ctx := context.Background()
	err := f.db.InTx(ctx, func(tx *sql.Tx) error {
		alerts := []struct {
			id, patient, state string
			created            time.Duration
		}{
			{"alr_01", "pt_a", "open", 0},
			{"alr_02", "pt_a", "accepted", time.Hour},
			{"alr_03", "pt_b", "open", 2 * time.Hour},
			{"alr_04", "pt_a", "open", 3 * time.Hour},
		}
		for _, a := range alerts {
			at := base.Add(a.created).UnixMicro()
			var acceptedBy, acceptedAt any
			if a.state == "accepted" {
				acceptedBy, acceptedAt = "rn1", at+60e6
			}
			if _, err := tx.Exec(`INSERT INTO alerts (id, rule_id, event_id, patient_id, dedup_key, priority, unit,
				target_role, policy_id, state, step, lock_text, body, updates, created_at, updated_at, accepted_by, accepted_at)
				VALUES ($1, 'heart-rate', $2, $3, $4, 'PH', '4W', 'RN', 'nursing', $5, 0, 'PH alert on 4W', $6, 0, $7, $8, $9, $10)`,
				a.id, "evt_"+a.id, a.patient, a.patient+a.id, a.state, []byte("sealed"), at, at+60e6, acceptedBy, acceptedAt); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO messages (id, device_id, seq, alert_id, user_id, step, priority, lock_text,
				sealed, created_at, delivered_at, read_at, response, responded_at)
				VALUES ($1, 'dev_1', $2, $3, 'rn1', 0, 'PH', 'PH alert on 4W', $4, $5, $6, NULL, $7, $8)`,
				"msg_"+strings.TrimPrefix(a.id, "alr_"), a.created.Microseconds(), a.id, []byte("sealed"), at, map[bool]any{true: at + 1e6, false: nil}[a.id != "alr_04"],
				map[bool]any{true: "accept", false: nil}[a.state == "accepted"], map[bool]any{true: at + 60e6, false: nil}[a.state == "accepted"]); err != nil {
				return err
			}
		}
		for i := 0; i < 3; i++ {
			if err := audit.Append(ctx, tx, audit.Entry{At: base.Add(time.Duration(i) * time.Minute), ActorType: audit.ActorSystem,
				ActorID: "routing", Action: "alert.opened", ObjectType: "alert", ObjectID: fmt.Sprintf("alr_0%d", i+1),
				CorrelationID: "evt_1", Detail: map[string]any{"patient_id": []string{"pt_a", "pt_a", "pt_b"}[i]}}); err != nil {
				return err
			}
		}
		err := audit.Append(ctx, tx, audit.Entry{At: base.Add(time.Hour), ActorType: audit.ActorIntegration, ActorID: "lab",
			Action: "ingest.rejected", ObjectType: "rejected_message", ObjectID: "rej_1", Outcome: "failure"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func resultIDs(t *testing.T, r response) []string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("search: %d %s", r.status, r.body)
	}
	roundTrip(t, r.body)
	var out []string
	m := r.json(t)
	if m["type"] != "searchset" {
		t.Fatalf("not a searchset: %s", r.body)
	}
	entries, _ := m["entry"].([]any)
	for _, e := range entries {
		res := e.(map[string]any)["resource"].(map[string]any)
		roundTrip(t, []byte(mustJSON(res)))
		out = append(out, res["id"].(string))
	}
	return out
}

func nextLink(t *testing.T, r response) string {
	t.Helper()
	for _, l := range r.json(t)["link"].([]any) {
		if l.(map[string]any)["relation"] == "next" {
			return l.(map[string]any)["url"].(string)
		}
	}
	return ""
}

func TestSearchAndRead(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		seedAlerts(t, f)
		reader := f.token("ehr-reader", "system/*.read")
		flagsOnly := f.token("flags", "system/Flag.rs")
		cases := []struct {
			name, path string
			want       []string
		}{
			{"all alerts as CommunicationRequest, newest first", "/fhir/CommunicationRequest", []string{"alr-04", "alr-03", "alr-02", "alr-01"}},
			{"by patient pseudonym", "/fhir/CommunicationRequest?patient=pt_a", []string{"alr-04", "alr-02", "alr-01"}},
			{"by subject reference", "/fhir/CommunicationRequest?subject=Patient/pt_b", []string{"alr-03"}},
			{"by subject token", "/fhir/CommunicationRequest?subject=urn:clarion:patient-pseudonym|pt_b", []string{"alr-03"}},
			{"completed", "/fhir/CommunicationRequest?status=completed", []string{"alr-02"}},
			{"alert identifier", "/fhir/CommunicationRequest?identifier=urn:clarion:alert|alr_03", []string{"alr-03"}},
			{"last updated after", "/fhir/CommunicationRequest?_lastUpdated=gt2026-11-23T09:30:00Z", []string{"alr-04", "alr-03"}},
			{"last updated window", "/fhir/CommunicationRequest?_lastUpdated=ge2026-11-23T09:00:00Z&_lastUpdated=lt2026-11-23T10:30:00Z", []string{"alr-03", "alr-02"}},
			{"that day", "/fhir/Flag?_lastUpdated=2026-11-23", []string{"alr-04", "alr-03", "alr-02", "alr-01"}},
			{"open alerts as active Flags", "/fhir/Flag?status=active&patient=pt_a", []string{"alr-04", "alr-01"}},
			{"inactive Flags", "/fhir/Flag?status=inactive", []string{"alr-02"}},
			{"deliveries and the response", "/fhir/Communication?patient=pt_a", []string{"msg-04", "msg-02", "msg-02.response", "msg-01"}},
			{"undelivered", "/fhir/Communication?status=in-progress", []string{"msg-04"}},
			{"based on an alert", "/fhir/Communication?based-on=CommunicationRequest/alr-02", []string{"msg-02", "msg-02.response"}},
			{"audit by patient", "/fhir/AuditEvent?patient=pt_a", []string{"2", "1"}},
			{"failed audit events", "/fhir/AuditEvent?outcome=8", []string{"4"}},
			{"audit by action and date", "/fhir/AuditEvent?action=alert.opened&date=ge2026-11-23T08:01:00Z", []string{"3", "2"}},
			{"unknown parameters are ignored", "/fhir/Flag?status=inactive&color=red", []string{"alr-02"}},
		}
		for _, c := range cases {
			got := resultIDs(t, f.do("GET", c.path, reader, nil))
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
		// Paging: _count=1 walks the pages by their next links.
		var walked []string
		next := "/fhir/CommunicationRequest?patient=pt_a&_count=1"
		for next != "" && len(walked) < 10 {
			r := f.do("GET", next, reader, nil)
			walked = append(walked, resultIDs(t, r)...)
			next = nextLink(t, r)
			if next != "" {
				u, _ := url.Parse(next)
				next = u.RequestURI()
			}
		}
		if !slices.Equal(walked, []string{"alr-04", "alr-02", "alr-01"}) {
			t.Fatalf("paged: %v", walked)
		}
		reads := []struct{ path, wantType string }{
			{"/fhir/CommunicationRequest/alr-02", "CommunicationRequest"},
			{"/fhir/Flag/alr-01", "Flag"},
			{"/fhir/Communication/msg-02", "Communication"},
			{"/fhir/Communication/msg-02.response", "Communication"},
			{"/fhir/AuditEvent/4", "AuditEvent"},
		}
		for _, rd := range reads {
			r := f.do("GET", rd.path, reader, nil)
			if r.status != 200 || r.json(t)["resourceType"] != rd.wantType {
				t.Fatalf("read %s: %d %s", rd.path, r.status, r.body)
			}
			roundTrip(t, r.body)
		}
		resp := f.do("GET", "/fhir/Communication/msg-02.response", reader, nil).json(t)
		if resp["inResponseTo"].([]any)[0].(map[string]any)["reference"] != "Communication/msg-02" {
			t.Fatalf("response: %v", resp)
		}
		for _, c := range []struct {
			path, token string
			want        int
		}{
			{"/fhir/Flag", flagsOnly, 200},
			{"/fhir/AuditEvent", flagsOnly, 403},
			{"/fhir/Flag?patient=MRN123", reader, 400},
			{"/fhir/Flag?_lastUpdated=yesterday", reader, 400},
			{"/fhir/Flag?_count=-1", reader, 400},
			{"/fhir/Communication/msg-01.response", reader, 404},
			{"/fhir/AuditEvent/x", reader, 404},
		} {
			if r := f.do("GET", c.path, c.token, nil); r.status != c.want {
				t.Errorf("GET %s: %d, want %d: %s", c.path, r.status, c.want, r.body)
			}
		}
		if r := f.do("GET", "/fhir/Flag?color=red", reader, nil, "Prefer", "handling=strict"); r.status != 400 {
			t.Errorf("strict handling of an unknown parameter: %d", r.status)
		}
	})
}

// ITI-84 then ITI-85: a reported alert is found by its identifier once
// routing opened an alert for its event.
func TestReportedAlertStatusByIdentifier(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("reporter", "system/CommunicationRequest.write system/CommunicationRequest.read")
		r := f.do("POST", "/fhir/CommunicationRequest", tok, fixtureFile(t, "communicationrequest-macm.json"))
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		evs := f.events()
		if _, err := d.Exec(`INSERT INTO alerts (id, rule_id, event_id, patient_id, dedup_key, priority, unit,
			target_role, policy_id, state, step, lock_text, body, updates, created_at, updated_at)
			VALUES ('alr_77', 'falls', $1, 'pt_x', 'k', 'PH', '4W', 'RN', 'nursing', 'open', 0, 'PH alert on 4W', $2, 0, 1, 1)`,
			evs[0].ID, []byte("x")); err != nil {
			t.Fatal(err)
		}
		q := "/fhir/CommunicationRequest?identifier=" + url.QueryEscape("urn:oid:1.2.3.4.5.6|alert-77")
		s := f.do("GET", q, tok, nil)
		if got := resultIDs(t, s); !slices.Equal(got, []string{"alr-77"}) {
			t.Fatalf("ITI-85: %v", got)
		}
		if !strings.Contains(string(s.body), `"value":"alert-77"`) || !strings.Contains(string(s.body), `"status":"active"`) {
			t.Fatalf("ITI-85 answer lacks the reported identifier or status: %s", s.body)
		}
		if got := resultIDs(t, f.do("GET", "/fhir/CommunicationRequest?identifier=urn:oid:1.2.3.4.5.6|other", tok, nil)); len(got) != 0 {
			t.Fatalf("unknown identifier matched %v", got)
		}
	})
}

func TestMetadataIsPublicAndExact(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		r := f.do("GET", "/fhir/metadata", "", nil)
		if r.status != 200 || r.header.Get("Content-Type") != "application/fhir+json; charset=utf-8" {
			t.Fatalf("metadata: %d %v", r.status, r.header)
		}
		roundTrip(t, r.body)
		if x := f.do("GET", "/fhir/metadata?_format=xml", "", nil); x.status != 415 {
			t.Fatalf("metadata as XML: %d", x.status)
		}
		// Every interaction the statement lists is served, and nothing else.
		tok := f.token("all", "system/*.*")
		rest := r.json(t)["rest"].([]any)[0].(map[string]any)
		listed := map[string]bool{}
		for _, res := range rest["resource"].([]any) {
			res := res.(map[string]any)
			typ := res["type"].(string)
			for _, in := range res["interaction"].([]any) {
				listed[typ+" "+in.(map[string]any)["code"].(string)] = true
			}
		}
		for _, typ := range []string{"Observation", "Encounter", "DiagnosticReport", "CommunicationRequest", "Communication", "Flag", "AuditEvent"} {
			for _, in := range []struct{ code, method, path string }{
				{"create", "POST", "/fhir/" + typ},
				{"search-type", "GET", "/fhir/" + typ},
				{"read", "GET", "/fhir/" + typ + "/x"},
			} {
				var body []byte
				if in.method == "POST" {
					body = []byte(`{}`)
				}
				got := f.do(in.method, in.path, tok, body).status
				served := got != 405 && got != 404 || (in.code == "read" && got == 404)
				if in.code == "read" && got == 404 && !listed[typ+" read"] {
					served = false
				}
				if served != listed[typ+" "+in.code] {
					t.Errorf("%s %s: answered %d but listed=%v", typ, in.code, got, listed[typ+" "+in.code])
				}
			}
		}
	})
}

func mustJSON(v any) string {
	b, err := jsonMarshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
