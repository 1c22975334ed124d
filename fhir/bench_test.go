package fhir

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// observationJSON is an RPM heart-rate reading with its own identifier and
// time, so that every one is new and none is stale.
func observationJSON(i int) string {
	at := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format(time.RFC3339)
	return fmt.Sprintf(`{"resourceType":"Observation","identifier":[{"system":"urn:oid:1.3.6.1.4.1.99999.1","value":"bench-%d"}],
"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"subject":{"reference":"Patient/p-%d"},
"effectiveDateTime":"%s","valueQuantity":{"value":%d,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},
"device":{"reference":"Device/watch-%d"}}`, i, i%500, at, 60+i%100, i%500)
}

func transactionJSON(from, n int) []byte {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"resource":` + observationJSON(from+i) + `,"request":{"method":"POST","url":"Observation"}}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkIngestObservations measures Observations ingested per second
// through the HTTP handler (decode, validate, map, dedup, stale check,
// sealed event + audit record committed), with the audit chainer running
// alongside as it does in a node: one per POST from 1 and from 16
// concurrent clients, and 100 per transaction Bundle from 1 and from 4.
// SQLite always, PostgreSQL when CLARION_TEST_DATABASE_URL is set.
func BenchmarkIngestObservations(b *testing.B) {
	stores := map[string]func(testing.TB) *db.DB{"sqlite": func(tb testing.TB) *db.DB { return dbtest.SQLite(tb) }}
	if os.Getenv(dbtest.EnvPostgres) != "" {
		stores["postgres"] = func(tb testing.TB) *db.DB { return dbtest.Postgres(tb) }
	}
	for _, name := range []string{"sqlite", "postgres"} {
		open, ok := stores[name]
		if !ok {
			continue
		}
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/per-POST/clients-%d", name, clients), func(b *testing.B) {
				benchIngest(b, open, clients, 1, func(i int) []byte { return []byte(observationJSON(i)) },
					func(f *fixture, tok string, body []byte) response {
						return f.do("POST", "/fhir/Observation", tok, body, "Prefer", "return=minimal")
					}, http.StatusCreated)
			})
		}
		for _, clients := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/transaction-100/clients-%d", name, clients), func(b *testing.B) {
				benchIngest(b, open, clients, 100, func(i int) []byte { return transactionJSON(i*100, 100) },
					func(f *fixture, tok string, body []byte) response { return f.do("POST", "/fhir", tok, body) },
					http.StatusOK)
			})
		}
	}
}

// benchIngest posts b.N bodies from clients concurrent clients, each body
// holding per Observations, with an audit chainer running alongside.
func benchIngest(b *testing.B, open func(testing.TB) *db.DB, clients, per int, body func(int) []byte,
	post func(*fixture, string, []byte) response, want int) {
	d := open(b)
	f := newFixture(b, d)
	tok := f.token("bench", "system/Observation.write")
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = body(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	chained := make(chan struct{})
	go func() {
		defer close(chained)
		(&audit.Chainer{DB: d}).Run(ctx, 20*time.Millisecond)
	}()
	defer func() { cancel(); <-chained }()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if r := post(f, tok, bodies[i]); r.status != want {
					b.Errorf("%d %s", r.status, r.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*per)/time.Since(start).Seconds(), "obs/s")
}
