package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/db"
)

// hl7Flags are the MLLP listener options of serve and demo.
type hl7Flags struct {
	tlsCert, tlsKey, clientCA string
	sendersFile               string
	watchdogs                 string
	dedupWindow, rawRetention time.Duration
}

func (f *hl7Flags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tlsCert, "mllp-tls-cert", envOr("CLARION_MLLP_TLS_CERT", ""), "PEM certificate chain: serve MLLP over TLS")
	fs.StringVar(&f.tlsKey, "mllp-tls-key", envOr("CLARION_MLLP_TLS_KEY", ""), "PEM private key of --mllp-tls-cert")
	fs.StringVar(&f.clientCA, "mllp-client-ca", envOr("CLARION_MLLP_CLIENT_CA", ""),
		"PEM CA certificates: require client certificates they issued (mutual TLS)")
	fs.StringVar(&f.sendersFile, "mllp-senders", envOr("CLARION_MLLP_SENDERS", ""),
		"JSON or YAML file binding sender identities to MSH-3^MSH-4 values; empty lets any peer send as anyone")
	fs.StringVar(&f.watchdogs, "mllp-watchdogs", envOr("CLARION_MLLP_WATCHDOGS", ""),
		`supervised alarm reporters, "MSH3=INTERVAL[@UNIT],…": a silent one raises a technical alarm`)
	fs.DurationVar(&f.dedupWindow, "mllp-dedup-window", hl7.DefaultDedupWindow,
		"a repeated sender + MSH-10 within this window is answered as the first and not stored again")
	fs.DurationVar(&f.rawRetention, "raw-retention", hl7.DefaultRawRetention,
		"how long raw HL7 messages are kept (sealed) for analysts")
}

// hl7Ingest is the MLLP side of a node as the flags configure it.
type hl7Ingest struct {
	intakeOpts []hl7.IntakeOption // for hl7.NewIntake
	tls        *tls.Config        // for hl7.Server.TLSConfig; nil for plain TCP
	watchdog   *hl7.Watchdog      // nil when no reporter is supervised
	retention  *hl7.Retention
	api        *hl7.API
}

// newHL7Ingest loads the TLS files and sender bindings and builds the
// intake's options, the watchdog, the retention job and the analyst API.
// kick wakes the router when a technical alarm is stored.
func newHL7Ingest(f hl7Flags, d *db.DB, store *ingest.Store, log *slog.Logger, now func() time.Time, kick func()) (*hl7Ingest, error) {
	h := &hl7Ingest{
		retention: &hl7.Retention{DB: d, Store: store, Log: log, Now: now, Keep: f.rawRetention, DedupWindow: f.dedupWindow},
		api:       hl7.NewAPI(d, store, log, now),
	}
	if f.tlsCert != "" || f.tlsKey != "" || f.clientCA != "" {
		var err error
		if h.tls, err = hl7.LoadTLSConfig(hl7.TLSFiles{CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.clientCA}); err != nil {
			return nil, err
		}
	}
	h.intakeOpts = append(h.intakeOpts, hl7.WithDedupWindow(f.dedupWindow))
	if f.sendersFile != "" {
		s, err := hl7.LoadSenders(f.sendersFile)
		if err != nil {
			return nil, err
		}
		h.intakeOpts = append(h.intakeOpts, hl7.WithSenders(s))
	}
	reporters, err := hl7.ParseWatchedReporters(f.watchdogs)
	if err != nil {
		return nil, fmt.Errorf("--mllp-watchdogs: %w", err)
	}
	if len(reporters) > 0 {
		if h.watchdog, err = hl7.NewWatchdog(d, store, log, now, kick, reporters...); err != nil {
			return nil, err
		}
		h.intakeOpts = append(h.intakeOpts, hl7.WithWatchdogs(h.watchdog))
	}
	return h, nil
}

// run purges raw messages hourly and checks watchdogs every 5 seconds
// until ctx ends.
func (h *hl7Ingest) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { h.retention.Run(ctx, time.Hour) })
	if h.watchdog != nil {
		wg.Go(func() { h.watchdog.Run(ctx, 5*time.Second) })
	}
	wg.Wait()
}
