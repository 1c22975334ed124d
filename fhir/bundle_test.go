package fhir

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func entryStatuses(t *testing.T, r response) []string {
	t.Helper()
	var out []string
	for _, e := range r.json(t)["entry"].([]any) {
		out = append(out, e.(map[string]any)["response"].(map[string]any)["status"].(string))
	}
	return out
}

func TestTransactionIsAllOrNothing(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		bad := f.do("POST", "/fhir", tok, fixtureFile(t, "transaction-one-bad.json"))
		if bad.status != http.StatusUnprocessableEntity || !slices.Contains(bad.expressions(t), "Bundle.entry[1].resource.subject") {
			t.Fatalf("transaction with a bad entry: %d %s", bad.status, bad.body)
		}
		if n := len(f.events()); n != 0 {
			t.Fatalf("a failed transaction stored %d events", n)
		}
		ok := f.do("POST", "/fhir", tok, fixtureFile(t, "transaction-vitals.json"))
		if ok.status != http.StatusOK {
			t.Fatalf("transaction: %d %s", ok.status, ok.body)
		}
		roundTrip(t, ok.body)
		if ok.json(t)["type"] != "transaction-response" || !slices.Equal(entryStatuses(t, ok), []string{"201 Created", "201 Created"}) {
			t.Fatalf("transaction response %s", ok.body)
		}
		if n := len(f.events()); n != 2 || f.kicks.Load() != 1 {
			t.Fatalf("%d events, %d kicks", n, f.kicks.Load())
		}
		// Replayed: every entry answers 200 with its first id.
		again := f.do("POST", "/fhir", tok, fixtureFile(t, "transaction-vitals.json"))
		if !slices.Equal(entryStatuses(t, again), []string{"200 OK", "200 OK"}) || len(f.events()) != 2 {
			t.Fatalf("replayed transaction: %s", again.body)
		}
		// Scopes are checked per entry.
		other := f.token("other", "system/Encounter.write")
		if r := f.do("POST", "/fhir", other, fixtureFile(t, "transaction-vitals.json")); r.status != http.StatusForbidden {
			t.Fatalf("entry without scope: %d %s", r.status, r.body)
		}
	})
}

func TestBatchEntriesStandAlone(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		r := f.do("POST", "/fhir", tok, fixtureFile(t, "batch-one-bad.json"))
		if r.status != http.StatusOK {
			t.Fatalf("batch: %d %s", r.status, r.body)
		}
		roundTrip(t, r.body)
		if got := entryStatuses(t, r); !slices.Equal(got, []string{"201 Created", "422 Unprocessable Entity"}) {
			t.Fatalf("batch statuses %v", got)
		}
		if !strings.Contains(string(r.body), "Bundle.entry[1].resource.subject") {
			t.Fatalf("the failed entry's outcome does not name the element: %s", r.body)
		}
		if n := len(f.events()); n != 1 {
			t.Fatalf("%d events", n)
		}
		mixed := `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Flag"}},
			{"resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
			{"resource":` + string(fixtureFile(t, "potassium-critical.json")) + `,"request":{"method":"POST","url":"Encounter"}}]}`
		r = f.do("POST", "/fhir", tok, []byte(mixed))
		if got := entryStatuses(t, r); !slices.Equal(got, []string{"405 Method Not Allowed", "422 Unprocessable Entity", "400 Bad Request"}) {
			t.Fatalf("batch statuses %v: %s", got, r.body)
		}
		notBatch := f.do("POST", "/fhir", tok, []byte(`{"resourceType":"Bundle","type":"collection"}`))
		if notBatch.status != http.StatusUnprocessableEntity || notBatch.expressions(t)[0] != "Bundle.type" {
			t.Fatalf("collection: %d %s", notBatch.status, notBatch.body)
		}
	})
}

func TestRepeatsWithinOneTransaction(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		obs := string(fixtureFile(t, "heart-rate-rpm.json"))
		crit := "identifier=urn:oid:1.3.6.1.4.1.99999.1|rpm-hr-0001"
		body := `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":` + obs + `,"request":{"method":"POST","url":"Observation"}},
			{"resource":` + obs + `,"request":{"method":"POST","url":"Observation"}},
			{"resource":` + obs + `,"request":{"method":"POST","url":"Observation","ifNoneExist":"` + crit + `"}}]}`
		r := f.do("POST", "/fhir", tok, []byte(body))
		if got := entryStatuses(t, r); !slices.Equal(got, []string{"201 Created", "200 OK", "200 OK"}) {
			t.Fatalf("statuses %v: %s", got, r.body)
		}
		if n := len(f.events()); n != 1 {
			t.Fatalf("%d events", n)
		}
	})
}

func TestConcurrentRetriesCreateOnce(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		tok := f.token("rpm1", writeScopes)
		body := fixtureFile(t, "heart-rate-rpm.json")
		const n = 6
		statuses := make(chan int, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Go(func() { statuses <- f.do("POST", "/fhir/Observation", tok, body).status })
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for s := range statuses {
			counts[s]++
		}
		if counts[201] != 1 || counts[200] != n-1 || len(f.events()) != 1 {
			t.Fatalf("statuses %v, %d events", counts, len(f.events()))
		}
	})
}
