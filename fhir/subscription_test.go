package fhir

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// ehr plays the EHR's FHIR server: it serves resources by id (checking
// Clarion's credentials) and replays events with $events.
type ehr struct {
	*httptest.Server
	mu        sync.Mutex
	resources map[string]string // "Observation/1" → JSON
	events    map[int64]string  // event number → focus "Observation/1"
	requests  []string
	token     string
	noReplay  bool
}

func newEHR(t *testing.T) *ehr {
	e := &ehr{resources: map[string]string{}, events: map[int64]string{}, token: "ehr-secret"}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests = append(e.requests, r.Method+" "+r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer "+e.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		path := strings.TrimPrefix(r.URL.Path, "/fhir/")
		if strings.HasSuffix(path, "/$events") {
			if e.noReplay {
				w.WriteHeader(http.StatusNotImplemented)
				return
			}
			var from, to int64
			fmt.Sscan(r.URL.Query().Get("eventsSinceNumber"), &from)
			fmt.Sscan(r.URL.Query().Get("eventsUntilNumber"), &to)
			var evs []int64
			for n := from; n <= to; n++ {
				if _, ok := e.events[n]; ok {
					evs = append(evs, n)
				}
			}
			w.Header().Set("Content-Type", "application/fhir+json")
			_, _ = w.Write(e.bundle("query-event", to, evs, true))
			return
		}
		res, ok := e.resources[path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write([]byte(res))
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *ehr) base() string { return e.URL + "/fhir" }

// bundle builds an R4 backport notification.
func (e *ehr) bundle(typ string, since int64, events []int64, full bool) []byte {
	return e.bundleAt(e.base(), typ, since, events, full)
}

func (e *ehr) bundleAt(base, typ string, since int64, events []int64, full bool) []byte {
	params := []map[string]any{
		{"name": "subscription", "valueReference": map[string]any{"reference": base + "/Subscription/sub-1"}},
		{"name": "topic", "valueCanonical": "http://example.org/topics/vitals"},
		{"name": "status", "valueCode": "active"},
		{"name": "type", "valueCode": typ},
		{"name": "events-since-subscription-start", "valueString": fmt.Sprint(since)},
	}
	entries := []map[string]any{{"fullUrl": "urn:uuid:5e0b6c7e-3b0b-4c58-9a2b-000000000001",
		"resource": map[string]any{"resourceType": "Parameters", "parameter": &params},
		"request":  map[string]any{"method": "GET", "url": base + "/Subscription/sub-1/$status"},
		"response": map[string]any{"status": "200"}}}
	for _, n := range events {
		focus := e.events[n]
		params = append(params, map[string]any{"name": "notification-event", "part": []map[string]any{
			{"name": "event-number", "valueString": fmt.Sprint(n)},
			{"name": "focus", "valueReference": map[string]any{"reference": base + "/" + focus}},
		}})
		entry := map[string]any{"fullUrl": base + "/" + focus,
			"request": map[string]any{"method": "POST", "url": strings.Split(focus, "/")[0]}, "response": map[string]any{"status": "201"}}
		if full {
			entry["resource"] = json.RawMessage(e.resources[focus])
		}
		entries = append(entries, entry)
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "history", "timestamp": "2026-11-23T09:00:00Z", "entry": entries})
	return b
}

// observation adds a heart-rate reading as event n.
func (e *ehr) observation(n int64, minute int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := fmt.Sprintf("Observation/hr-%d", n)
	e.resources[id] = fmt.Sprintf(`{"resourceType":"Observation","id":"hr-%d","identifier":[{"system":"urn:ehr","value":"hr-%d"}],
		"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p-9"},
		"effectiveDateTime":"2026-11-23T08:%02d:00Z","valueQuantity":{"value":%d,"system":"http://unitsofmeasure.org","code":"/min"}}`,
		n, n, minute, 100+n)
	e.events[n] = id
}

func (e *ehr) fetched() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.requests)
}

func (f *fixture) subscribe(t *testing.T, id, base, token string) {
	t.Helper()
	admin := f.adminToken()
	body, _ := json.Marshal(map[string]any{"source_base_url": base, "remote_id": "sub-1", "token": token})
	r := f.do("PUT", "/v1/fhir/subscriptions/"+id, admin, body, "Content-Type", "application/json")
	if r.status != 200 || strings.Contains(string(r.body), token) {
		t.Fatalf("subscribe: %d %s", r.status, r.body)
	}
}

func TestSubscriptionNotifications(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		src := newEHR(t)
		f.subscribe(t, "ehr-vitals", src.base(), src.token)
		hook := f.token("ehr", "system/Observation.write system/Encounter.write")
		post := func(body []byte) response {
			t.Helper()
			r := f.do("POST", "/fhir/subscription-notification/ehr-vitals", hook, body)
			if r.status != 200 {
				t.Fatalf("notification: %d %s", r.status, r.body)
			}
			roundTrip(t, r.body)
			return r
		}
		post(src.bundle("handshake", 0, nil, false))
		var status string
		_ = d.QueryRow(`SELECT status FROM fhir_subscriptions WHERE id = 'ehr-vitals'`).Scan(&status)
		if status != "active" {
			t.Fatalf("after the handshake: %s", status)
		}
		// Event 1, full resource: processed like a POST.
		src.observation(1, 1)
		post(src.bundle("event-notification", 1, []int64{1}, true))
		if n := len(f.events()); n != 1 {
			t.Fatalf("full-resource: %d events", n)
		}
		// Event 2, id-only: Clarion fetches it with its credentials.
		src.observation(2, 2)
		post(src.bundle("event-notification", 2, []int64{2}, false))
		if n := len(f.events()); n != 2 || !slices.Contains(src.fetched(), "GET /fhir/Observation/hr-2") {
			t.Fatalf("id-only: %d events, requests %v", n, src.fetched())
		}
		// Events 3 and 4 are lost; event 5 arrives: the gap is detected and
		// replayed with $events.
		src.observation(3, 3)
		src.observation(4, 4)
		src.observation(5, 5)
		post(src.bundle("event-notification", 5, []int64{5}, true))
		evs := f.events()
		if len(evs) != 5 || !slices.ContainsFunc(src.fetched(), func(s string) bool { return strings.HasSuffix(s, "/$events") }) {
			t.Fatalf("gap: %d events, requests %v", len(evs), src.fetched())
		}
		var values []string
		for _, e := range evs {
			values = append(values, e.Event.Observations[0].Value)
		}
		if !slices.Equal(values, []string{"101", "102", "103", "104", "105"}) {
			t.Fatalf("values %v", values)
		}
		if acts := f.auditActions(); count(acts, "fhir.subscription_gap") != 1 || count(acts, "fhir.subscription_handshake") != 1 {
			t.Fatalf("audit %v", acts)
		}
		if !strings.Contains(f.logs.String(), `"fhir subscription gap"`) || strings.Contains(f.logs.String(), "p-9") {
			t.Fatalf("gap not logged, or PHI logged: %s", f.logs.String())
		}
		// A repeated notification is idempotent.
		post(src.bundle("event-notification", 5, []int64{5}, true))
		if n := len(f.events()); n != 5 {
			t.Fatalf("repeat: %d events", n)
		}
		// A heartbeat announcing event 6 that never came: fetched.
		src.observation(6, 6)
		post(src.bundle("heartbeat", 6, nil, false))
		if n := len(f.events()); n != 6 {
			t.Fatalf("heartbeat gap: %d events", n)
		}
		var last int64
		_ = d.QueryRow(`SELECT last_event_number FROM fhir_subscriptions WHERE id = 'ehr-vitals'`).Scan(&last)
		if last != 6 {
			t.Fatalf("last event number %d", last)
		}
	})
}

func TestSubscriptionR5AndFailures(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d)
		src := newEHR(t)
		src.noReplay = true
		f.subscribe(t, "ehr-r5", src.base(), src.token)
		hook := f.token("ehr", "system/Observation.write")
		src.observation(7, 7)
		r5 := fmt.Sprintf(`{"resourceType":"Bundle","type":"subscription-notification","entry":[
			{"resource":{"resourceType":"SubscriptionStatus","status":"active","type":"event-notification",
			  "eventsSinceSubscriptionStart":"7","notificationEvent":[{"eventNumber":"7","focus":{"reference":"Observation/hr-7"}}],
			  "subscription":{"reference":"Subscription/sub-1"}}},
			{"fullUrl":"%s/Observation/hr-7"}]}`, src.base())
		r := f.do("POST", "/fhir/subscription-notification/ehr-r5", hook, []byte(r5))
		if r.status != 200 || len(f.events()) != 1 {
			t.Fatalf("R5 id-only: %d %s, %d events", r.status, r.body, len(f.events()))
		}
		// Events 1-6 were missed and this source cannot replay: warned, audited, moved on.
		if !slices.Contains(r.issueCodes(t), "incomplete") {
			t.Fatalf("unrecoverable gap not reported: %s", r.body)
		}
		var last int64
		_ = d.QueryRow(`SELECT last_event_number FROM fhir_subscriptions WHERE id = 'ehr-r5'`).Scan(&last)
		if last != 7 {
			t.Fatalf("last %d", last)
		}
		cases := []struct {
			name, sub, token, body string
			want                   int
		}{
			{"unknown subscription", "nope", hook, r5, 404},
			{"no token", "ehr-r5", "", r5, 401},
			{"not a notification", "ehr-r5", hook, `{"resourceType":"Bundle","type":"batch","entry":[{}]}`, 400},
			{"status type unknown", "ehr-r5", hook, `{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"Parameters","parameter":[{"name":"type","valueCode":"bogus"}]}}]}`, 400},
			{"a focus elsewhere is never fetched with the token", "ehr-r5", hook, `{"resourceType":"Bundle","type":"history","entry":[
				{"resource":{"resourceType":"Parameters","parameter":[{"name":"type","valueCode":"event-notification"},
				{"name":"events-since-subscription-start","valueString":"8"},
				{"name":"notification-event","part":[{"name":"event-number","valueString":"8"},
				{"name":"focus","valueReference":{"reference":"https://evil.example/fhir/Observation/1"}}]}]}}]}`, 503},
		}
		for _, c := range cases {
			if r := f.do("POST", "/fhir/subscription-notification/"+c.sub, c.token, []byte(c.body)); r.status != c.want {
				t.Errorf("%s: %d, want %d: %s", c.name, r.status, c.want, r.body)
			}
		}
	})
}

func TestEventRange(t *testing.T) {
	cases := []struct {
		name      string
		st        Status
		resources int
		low, high int64
	}{
		{"numbered events", Status{Type: NotifyEvent, Since: 9, Events: []Event{{Number: 8}, {Number: 9}}}, 2, 8, 9},
		{"count only", Status{Type: NotifyEvent, Since: 9}, 3, 7, 9},
		{"heartbeat", Status{Type: NotifyHeartbeat, Since: 4}, 0, 5, 4},
		{"nothing said", Status{Type: NotifyEvent, Since: -1}, 1, -1, -1},
	}
	for _, c := range cases {
		if lo, hi := eventRange(c.st, c.resources); lo != c.low || hi != c.high {
			t.Errorf("%s: %d..%d, want %d..%d", c.name, lo, hi, c.low, c.high)
		}
	}
}
