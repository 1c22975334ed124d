package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestHL7IngestFromFlags(t *testing.T) {
	dir := t.TempDir()
	senders := filepath.Join(dir, "senders.yaml")
	if err := os.WriteFile(senders, []byte("senders:\n  - identity: lab\n    address: 127.0.0.1\n    allow: [\"LAB^GHH\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := atrest.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := dbtest.SQLite(t)
	store := ingest.NewStore(keys, d.SkipLocked())
	log := slog.New(slog.DiscardHandler)

	tests := []struct {
		name      string
		args      []string
		wantErr   bool
		watchdog  bool
		nIntake   int
		retention time.Duration
	}{
		{"defaults", nil, false, false, 1, 30 * 24 * time.Hour},
		{"senders, watchdogs, windows", []string{"--mllp-senders", senders, "--mllp-watchdogs", "MON=60s@ICU",
			"--mllp-dedup-window", "1h", "--raw-retention", "168h"}, false, true, 3, 168 * time.Hour},
		{"missing senders file", []string{"--mllp-senders", filepath.Join(dir, "nope.json")}, true, false, 0, 0},
		{"bad watchdog", []string{"--mllp-watchdogs", "MON"}, true, false, 0, 0},
		{"certificate without key", []string{"--mllp-tls-cert", filepath.Join(dir, "c.pem")}, true, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("serve", io.Discard)
			var f hl7Flags
			f.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			h, err := newHL7Ingest(f, d, store, log, time.Now, nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if (h.watchdog != nil) != tc.watchdog || len(h.intakeOpts) != tc.nIntake || h.retention.Keep != tc.retention ||
				h.tls != nil || h.api == nil {
				t.Errorf("got %+v", h)
			}
		})
	}
}
