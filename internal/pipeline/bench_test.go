package pipeline_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

// BenchmarkRouteBatch routes, on PostgreSQL, a batch of five critical
// results of five patients already admitted (three in 4W, two in ICU):
// each opens an alert and pages the unit's RN, in one transaction. An
// op is one batch; its round trips, more than its CPU, set the figure.
// Admitting the next five patients is not timed.
func BenchmarkRouteBatch(b *testing.B) {
	f := newFixture(b, dbtest.Postgres(b))
	routing.VerifyPrefetch(false) // as in production: no second read of each dedup answer
	defer routing.VerifyPrefetch(true)
	ctx := context.Background()
	const perBatch = 5
	next := 0
	process := func(want int) {
		if n, err := f.worker.ProcessBatch(ctx, 32); err != nil || n != want {
			b.Fatalf("ProcessBatch: %d %v, want %d", n, err, want)
		}
	}
	for b.Loop() {
		b.StopTimer()
		patients := make([]ingest.Patient, perBatch)
		for i := range patients {
			next++
			patients[i] = ingest.Patient{ID: fmt.Sprint("MRN", next)}
			unit := []string{"4W", "ICU"}[i%2]
			f.store1(&ingest.Event{Kind: ingest.KindAdmit, Patient: patients[i], Location: ingest.Location{Unit: unit, Bed: fmt.Sprint(next)}})
		}
		process(perBatch)
		for _, p := range patients {
			f.store1(&ingest.Event{Kind: ingest.KindResult, Patient: p, Observations: []ingest.Observation{obs("2823-3", 7, "HH")}})
		}
		b.StartTimer()
		process(perBatch)
	}
}
