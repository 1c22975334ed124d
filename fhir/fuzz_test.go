package fhir

import (
	"net/http"
	"testing"

	"github.com/clarion-health/clarion/fhir/decode"
)

// FuzzParseNotification: the notification envelope parser (lenient JSON
// around strict R4 decoding) never panics and refuses with a 4xx.
func FuzzParseNotification(f *testing.F) {
	src := &ehr{resources: map[string]string{}, events: map[int64]string{}}
	for _, typ := range []string{"handshake", "heartbeat", "event-notification"} {
		f.Add(src.bundleFor("http://ehr.test/fhir", typ))
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"subscription-notification","entry":[{"resource":{"resourceType":"SubscriptionStatus",
		"type":"event-notification","eventsSinceSubscriptionStart":"3","notificationEvent":[{"eventNumber":"3","focus":{"reference":"Observation/1"}}]}}]}`))
	dec, err := decode.NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, derr := ParseNotification(dec, body)
		if derr != nil {
			if derr.Status != http.StatusBadRequest {
				t.Fatalf("status %d", derr.Status)
			}
			return
		}
		eventRange(n.Status, len(n.Entries))
	})
}

// bundleFor builds a notification without a running server (fuzz seeds).
func (e *ehr) bundleFor(base, typ string) []byte {
	e.resources["Observation/hr-1"] = `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`
	e.events[1] = "Observation/hr-1"
	return e.bundleAt(base, typ, 1, []int64{1}, true)
}
