package fhir

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
// sealed event + audit record committed): one per POST, and 100 per
// transaction Bundle. SQLite always, PostgreSQL when
// CLARION_TEST_DATABASE_URL is set.
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
		b.Run(name+"/per-POST", func(b *testing.B) {
			f := newFixture(b, open(b))
			tok := f.token("bench", "system/Observation.write")
			bodies := make([][]byte, b.N)
			for i := range bodies {
				bodies[i] = []byte(observationJSON(i))
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if r := f.do("POST", "/fhir/Observation", tok, bodies[i], "Prefer", "return=minimal"); r.status != 201 {
					b.Fatalf("%d %s", r.status, r.body)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "obs/s")
		})
		b.Run(name+"/transaction-100", func(b *testing.B) {
			f := newFixture(b, open(b))
			tok := f.token("bench", "system/Observation.write")
			bodies := make([][]byte, b.N)
			for i := range bodies {
				bodies[i] = transactionJSON(i*100, 100)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if r := f.do("POST", "/fhir", tok, bodies[i]); r.status != 200 {
					b.Fatalf("%d %s", r.status, r.body)
				}
			}
			b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "obs/s")
		})
	}
}
