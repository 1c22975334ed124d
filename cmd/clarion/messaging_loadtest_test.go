package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/internal/dbtest"
)

// TestLoadtestSmoke runs `clarion loadtest` small, on each store, so the
// command keeps working; it asserts nothing about speed. The full run is
//
//	CLARION_LOADTEST="--mode both" go test -run TestLoadtestFull -v ./cmd/clarion/
func TestLoadtestSmoke(t *testing.T) {
	args := []string{"--devices", "5", "--rate", "20", "--duration", "1s", "--timers", "500", "--firing", "50", "--timer-window", "1s"}
	stores := map[string]string{"sqlite": ""}
	if u := os.Getenv(dbtest.EnvPostgres); u != "" {
		stores["postgres"] = u
	}
	for name, u := range stores {
		t.Run(name, func(t *testing.T) {
			var out strings.Builder
			a := append([]string{}, args...)
			if u != "" {
				a = append(a, "--database-url", u)
			}
			if err := runLoadtest(context.Background(), a, &out, io.Discard); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "delivery") || !strings.Contains(out.String(), "timers") ||
				!strings.Contains(out.String(), "20 received") || !strings.Contains(out.String(), "50 fired") {
				t.Fatalf("loadtest output:\n%s", out.String())
			}
		})
	}
}

// TestLoadtestFull runs the benchmark with the flags in CLARION_LOADTEST.
func TestLoadtestFull(t *testing.T) {
	spec := os.Getenv("CLARION_LOADTEST")
	if spec == "" {
		t.Skip("CLARION_LOADTEST not set")
	}
	if err := runLoadtest(context.Background(), strings.Fields(spec), t.Output(), t.Output()); err != nil {
		t.Fatal(err)
	}
}
