package fhir

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

const writeScopes = "system/Observation.write system/Encounter.write system/DiagnosticReport.write system/CommunicationRequest.write"

func TestCreateObservationRoutesOnceAndAnswersRetries(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		body := fixtureFile(t, "heart-rate-rpm.json")
		first := f.do("POST", "/fhir/Observation", tok, body)
		if first.status != http.StatusCreated {
			t.Fatalf("first POST: %d %s", first.status, first.body)
		}
		loc := first.header.Get("Location")
		if !strings.HasPrefix(loc, "http://clarion.test/fhir/Observation/frs-") || !strings.HasSuffix(loc, "/_history/1") {
			t.Fatalf("Location %q", loc)
		}
		roundTrip(t, first.body)
		res := first.json(t)
		if id := res["id"].(string); !strings.Contains(loc, "/"+id+"/") {
			t.Fatalf("body id %s not in Location %s", id, loc)
		}
		evs := f.events()
		if len(evs) != 1 || f.kicks.Load() != 1 {
			t.Fatalf("want one event and one kick, got %d events, %d kicks", len(evs), f.kicks.Load())
		}
		ev := evs[0].Event
		o := ev.Observations[0]
		if ev.Source != "fhir:rpm1" || ev.Kind != "result" || ev.Patient.ID != "p-100" || o.Code != "8867-4" ||
			o.System != "LN" || *o.Numeric != 150 || o.Units != "/min" || o.EquipmentID != "Device/oximeter-7" {
			t.Fatalf("event %+v obs %+v", ev, o)
		}
		if strings.Contains(ev.SourceID, "rpm-hr-0001") {
			t.Fatalf("the identifier is stored in clear in source_id %q", ev.SourceID)
		}
		// The RPM platform retries: same answer, same id, nothing new.
		f.clock.advance(5e9)
		again := f.do("POST", "/fhir/Observation", tok, body)
		if again.status != http.StatusOK || again.header.Get("Location") != loc {
			t.Fatalf("retry: %d %s (Location %s)", again.status, again.body, again.header.Get("Location"))
		}
		if n := len(f.events()); n != 1 || f.kicks.Load() != 1 {
			t.Fatalf("retry stored %d events, %d kicks", n, f.kicks.Load())
		}
		acts := f.auditActions()
		if count(acts, "ingest.accepted") != 1 || count(acts, "ingest.duplicate") != 1 {
			t.Fatalf("audit %v", acts)
		}
		var detail string
		_ = d.QueryRow(`SELECT detail FROM audit_log WHERE action = 'ingest.accepted'`).Scan(&detail)
		if strings.Contains(detail, "p-100") || !strings.Contains(detail, `"patient_id":"pt_`) {
			t.Fatalf("audit detail must carry the pseudonym only: %s", detail)
		}
		// 150 as a value of its own, not inside a timestamp's fraction.
		if strings.Contains(f.logs.String(), "p-100") || regexp.MustCompile(`(^|[^0-9.])150([^0-9]|$)`).MatchString(f.logs.String()) {
			t.Fatalf("logs carry PHI: %s", f.logs.String())
		}
	})
}

func TestCreatePreferAndFormat(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		min := f.do("POST", "/fhir/Observation?_format=json", tok, fixtureFile(t, "potassium-critical.json"), "Prefer", "return=minimal")
		if min.status != http.StatusCreated || len(min.body) != 0 || min.header.Get("Location") == "" {
			t.Fatalf("return=minimal: %d %q", min.status, min.body)
		}
		oo := f.do("POST", "/fhir/Observation", tok, fixtureFile(t, "blood-pressure-rpm.json"), "Prefer", "return=OperationOutcome",
			"Content-Type", "application/json; charset=utf-8")
		if oo.status != http.StatusCreated || oo.issueCodes(t)[0] != "informational" {
			t.Fatalf("return=OperationOutcome: %d %s", oo.status, oo.body)
		}
		evs := f.events()
		bp := evs[1].Event
		var codes []string
		for _, o := range bp.Observations {
			codes = append(codes, o.Code+":"+strings.Join(o.Flags, ","))
		}
		if !slices.Equal(codes, []string{"8480-6:HH", "8462-4:H"}) || bp.Patient.ID != "MRN-4471" ||
			bp.Patient.Authority != "urn:oid:2.16.840.1.113883.3.999" || bp.Observations[0].EquipmentID != "cuff-22" {
			t.Fatalf("blood pressure event: %v %+v", codes, bp)
		}
	})
}

func TestConditionalCreate(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		a, b := f.token("rpm1", writeScopes), f.token("rpm2", writeScopes)
		body := fixtureFile(t, "heart-rate-rpm.json")
		crit := "identifier=urn:oid:1.3.6.1.4.1.99999.1|rpm-hr-0001"
		cases := []struct {
			name       string
			token      string
			body       []byte
			ifNoneExis string
			want       int
			code       string
		}{
			{"no match creates", a, body, crit, 201, ""},
			{"one match answers 200 with it (another sender too)", b, body, crit, 200, ""},
			{"criteria on another parameter", a, body, "code=8867-4", 400, "not-supported"},
			{"criteria without a system", a, body, "identifier=rpm-hr-0001", 400, "invalid"},
		}
		for _, c := range cases {
			r := f.do("POST", "/fhir/Observation", c.token, c.body, "If-None-Exist", c.ifNoneExis)
			if r.status != c.want {
				t.Fatalf("%s: %d %s", c.name, r.status, r.body)
			}
			if c.code != "" && r.issueCodes(t)[0] != c.code {
				t.Fatalf("%s: %s", c.name, r.body)
			}
		}
		// A corrected copy of the same reading (new status, same identifier)
		// from rpm2 creates a second resource with that identifier: the
		// criteria now match several, which is 412.
		corrected := []byte(strings.Replace(string(body), `"final"`, `"corrected"`, 1))
		if r := f.do("POST", "/fhir/Observation", b, corrected); r.status != 201 {
			t.Fatalf("corrected: %d %s", r.status, r.body)
		}
		r := f.do("POST", "/fhir/Observation", a, body, "If-None-Exist", crit)
		if r.status != http.StatusPreconditionFailed || r.issueCodes(t)[0] != "duplicate" {
			t.Fatalf("several matches: %d %s", r.status, r.body)
		}
	})
}

func TestStaleReadingNeverFires(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		if r := f.do("POST", "/fhir/Observation", tok, fixtureFile(t, "heart-rate-rpm.json")); r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// An older reading arrives late: accepted, but nothing is routed.
		late := f.do("POST", "/fhir/Observation", tok, fixtureFile(t, "heart-rate-older.json"))
		if late.status != http.StatusCreated {
			t.Fatalf("late reading: %d %s", late.status, late.body)
		}
		if n := len(f.events()); n != 1 {
			t.Fatalf("the stale reading was stored as an event (%d events)", n)
		}
		if acts := f.auditActions(); count(acts, "ingest.stale_reading") != 1 || count(acts, "ingest.accepted") != 2 {
			t.Fatalf("audit %v", acts)
		}
		// Its retry is a duplicate like any other.
		if r := f.do("POST", "/fhir/Observation", tok, fixtureFile(t, "heart-rate-older.json")); r.status != 200 {
			t.Fatalf("retry of the stale reading: %d", r.status)
		}
		// A newer one routes again.
		newer := strings.Replace(string(fixtureFile(t, "heart-rate-rpm.json")), "08:15:00", "08:16:00", 1)
		newer = strings.Replace(newer, "rpm-hr-0001", "rpm-hr-0002", 1)
		if r := f.do("POST", "/fhir/Observation", tok, []byte(newer)); r.status != 201 || len(f.events()) != 2 {
			t.Fatalf("newer reading: %d, %d events", r.status, len(f.events()))
		}
	})
}

// Readings of one patient and code posted at once, in no order, from
// separate requests (separate transactions where the committer runs
// several): none fails, the newest always routes, and each is either
// routed or dropped as stale, never both.
func TestConcurrentReadingsRouteTheNewest(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		const n = 24
		var wg sync.WaitGroup
		for _, k := range rand.Perm(n) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// observationJSON(k*500): patient p-0, heart rate, k*500 s after the first
				if r := f.do("POST", "/fhir/Observation", tok, []byte(observationJSON(k*500))); r.status != 201 {
					t.Errorf("reading %d: %d %s", k, r.status, r.body)
				}
			}()
		}
		wg.Wait()
		newest := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).Add((n - 1) * 500 * time.Second)
		routedNewest := false
		for _, e := range f.events() {
			for _, o := range e.Event.Observations {
				routedNewest = routedNewest || o.ObservedAt.Equal(newest)
			}
		}
		acts := f.auditActions()
		if !routedNewest || len(f.events())+count(acts, "ingest.stale_reading") != n {
			t.Fatalf("newest routed %v; %d routed, %d stale of %d", routedNewest, len(f.events()),
				count(acts, "ingest.stale_reading"), n)
		}
		var stored int64
		if err := d.QueryRow(`SELECT effective_at FROM fhir_latest_reading`).Scan(&stored); err != nil ||
			stored != newest.UnixMicro() {
			t.Fatalf("latest reading stored %d (%v), want %d", stored, err, newest.UnixMicro())
		}
	})
}

func TestRejections(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		reader := f.token("reader", "system/*.read")
		cases := []struct {
			name, method, path, token, file string
			headers                         []string
			want                            int
			code, expr                      string
		}{
			{"no token", "POST", "/fhir/Observation", "", "heart-rate-rpm.json", nil, 401, "security", ""},
			{"bad token", "POST", "/fhir/Observation", "clr_nope", "heart-rate-rpm.json", nil, 401, "security", ""},
			{"read scope cannot write", "POST", "/fhir/Observation", reader, "heart-rate-rpm.json", nil, 403, "forbidden", ""},
			{"XML content", "POST", "/fhir/Observation", tok, "heart-rate-rpm.json", []string{"Content-Type", "application/fhir+xml"}, 415, "not-supported", "Content-Type"},
			{"_format=xml", "POST", "/fhir/Observation?_format=xml", tok, "heart-rate-rpm.json", nil, 415, "not-supported", "_format"},
			{"text/plain", "POST", "/fhir/Observation", tok, "heart-rate-rpm.json", []string{"Content-Type", "text/plain"}, 415, "not-supported", "Content-Type"},
			{"missing status", "POST", "/fhir/Observation", tok, "observation-missing-status.json", nil, 400, "required", "Observation.status"},
			{"unknown status code", "POST", "/fhir/Observation", tok, "observation-bad-status.json", nil, 400, "invalid", ""},
			{"bad date", "POST", "/fhir/Observation", tok, "observation-bad-date.json", nil, 400, "invalid", ""},
			{"unknown element", "POST", "/fhir/Observation", tok, "observation-unknown-element.json", nil, 400, "invalid", ""},
			{"resource for another endpoint", "POST", "/fhir/Encounter", tok, "heart-rate-rpm.json", nil, 400, "invalid", "Observation"},
			{"no patient subject", "POST", "/fhir/Observation", tok, "observation-no-subject.json", nil, 422, "required", "Observation.subject"},
			{"device subject", "POST", "/fhir/Observation", tok, "observation-device-subject.json", nil, 422, "business-rule", "Observation.subject"},
			{"vital sign in the wrong unit", "POST", "/fhir/Observation", tok, "heart-rate-wrong-unit.json", nil, 422, "value", "Observation.valueQuantity"},
			{"unsupported type", "POST", "/fhir/Patient", tok, "heart-rate-rpm.json", nil, 404, "not-supported", ""},
			{"no search on Observation", "GET", "/fhir/Observation", tok, "", nil, 405, "not-supported", ""},
			{"no delete", "DELETE", "/fhir/Observation/frs-1", tok, "", nil, 405, "not-supported", ""},
			{"no update", "PUT", "/fhir/Flag/alr-1", tok, "heart-rate-rpm.json", nil, 405, "not-supported", ""},
			{"Flag is read-only", "POST", "/fhir/Flag", tok, "heart-rate-rpm.json", nil, 405, "not-supported", ""},
			{"not a bundle at base", "POST", "/fhir", tok, "heart-rate-rpm.json", nil, 422, "not-supported", "Observation"},
			{"unknown Flag", "GET", "/fhir/Flag/alr-nope", reader, "", nil, 404, "not-found", ""},
		}
		for _, c := range cases {
			var body []byte
			if c.file != "" {
				body = fixtureFile(t, c.file)
			}
			r := f.do(c.method, c.path, c.token, body, c.headers...)
			if r.status != c.want {
				t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.want, r.body)
				continue
			}
			if codes := r.issueCodes(t); codes[0] != c.code {
				t.Errorf("%s: issue code %v, want %s", c.name, codes, c.code)
			}
			if c.expr != "" && !slices.ContainsFunc(r.expressions(t), func(e string) bool { return strings.HasPrefix(e, c.expr) }) {
				t.Errorf("%s: expressions %v, want %s", c.name, r.expressions(t), c.expr)
			}
			roundTrip(t, r.body)
		}
		if len(f.events()) != 0 {
			t.Fatal("a refused resource was stored as an event")
		}
		var kept int
		_ = d.QueryRow(`SELECT COUNT(*) FROM rejected_messages`).Scan(&kept)
		if kept != 9 { // 400s and 422s are kept sealed for analysts; 401/403/404/405/415 never read the body
			t.Fatalf("kept %d rejected resources, want 9", kept)
		}
		if strings.Contains(f.logs.String(), "p-100") {
			t.Fatal("logs carry a patient id")
		}
	})
}

func TestEncounterAndOtherResources(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("ehr1", writeScopes)
		for _, file := range []string{"encounter-admit-4w.json", "encounter-transfer-contained.json", "encounter-discharge.json",
			"communicationrequest-macm.json", "diagnosticreport-contained.json"} {
			typ := strings.Split(file, "-")[0]
			typ = map[string]string{"encounter": "Encounter", "communicationrequest": "CommunicationRequest",
				"diagnosticreport": "DiagnosticReport"}[typ]
			if r := f.do("POST", "/fhir/"+typ, tok, fixtureFile(t, file)); r.status != 201 {
				t.Fatalf("%s: %d %s", file, r.status, r.body)
			}
		}
		evs := f.events()
		got := []string{}
		for _, e := range evs {
			got = append(got, string(e.Event.Kind)+" "+e.Event.Location.Unit+"/"+e.Event.Location.Room+"/"+e.Event.Location.Bed)
		}
		want := []string{"adt.admit 4W//", "adt.transfer ICU/7/7B", "adt.discharge //", "result //", "result //"}
		if !slices.Equal(got, want) {
			t.Fatalf("kinds %v, want %v", got, want)
		}
		cr := evs[3].Event.Observations[0]
		if cr.Code != "FALL" || cr.Value != "Bed exit alarm, room 412" || !slices.Equal(cr.Flags, []string{"stat"}) {
			t.Fatalf("reported alert %+v", cr)
		}
		dr := evs[4].Event.Observations[0]
		if dr.Code != "2823-3" || *dr.Numeric != 6.8 || !slices.Equal(dr.Flags, []string{"HH"}) || evs[4].Event.Patient.ID != "p-100" {
			t.Fatalf("report result %+v", dr)
		}
	})
}
