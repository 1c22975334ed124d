package main

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/audit/auditapi"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/report"
)

// auditConfig is the server's audit settings.
type auditConfig struct {
	checkpointEvery    int64
	checkpointInterval time.Duration
	retention          time.Duration
	purgeInterval      time.Duration
	stream             bool
	streamMaxAge       time.Duration
	jsonlFile          string
	publicKeys         keyFiles
}

func (c *auditConfig) register(fs *flag.FlagSet) {
	fs.Int64Var(&c.checkpointEvery, "audit-checkpoint-every", 1000, "sign a checkpoint of the audit chain every N records (0: off)")
	fs.DurationVar(&c.checkpointInterval, "audit-checkpoint-interval", 10*time.Minute,
		"and at least this often while records are written (0: off)")
	fs.DurationVar(&c.retention, "audit-retention", audit.DefaultRetention, "keep audit records this long (default six years)")
	fs.DurationVar(&c.purgeInterval, "audit-purge-interval", 24*time.Hour, "how often to purge past the retention (0: never)")
	fs.BoolVar(&c.stream, "audit-stream", true, "publish every audit record to the JetStream stream "+bus.AuditStream+" for a SIEM")
	fs.DurationVar(&c.streamMaxAge, "audit-stream-max-age", 30*24*time.Hour, "how long the stream keeps records")
	fs.StringVar(&c.jsonlFile, "audit-jsonl-file", os.Getenv("CLARION_AUDIT_JSONL_FILE"),
		"also append every audit record as a JSON line to this file (env CLARION_AUDIT_JSONL_FILE)")
	fs.Var(&c.publicKeys, "audit-public-key", "a file of other nodes' checkpoint public keys, trusted by /v1/audit/verify (repeatable)")
}

// auditRuntime is a node's audit machinery: the guard, the signing key,
// the checkpointer, the SIEM outboxes, the retention purge and the routes.
type auditRuntime struct {
	cfg     auditConfig
	db      *db.DB
	log     *slog.Logger
	now     func() time.Time
	signer  *audit.Signer
	keys    []ed25519.PublicKey
	streams []*audit.Streamer
	jsonl   *os.File
}

// openAuditRuntime installs the append-only guard, loads (or creates) the
// signing key and prepares the streams.
func openAuditRuntime(ctx context.Context, c auditConfig, dataDir string, d *db.DB, b *bus.Bus, log *slog.Logger,
	now func() time.Time) (*auditRuntime, error) {
	r := &auditRuntime{cfg: c, db: d, log: log, now: now}
	if err := audit.InstallGuards(ctx, d.DB, d.Dialect == db.Postgres); err != nil {
		return nil, err
	}
	var err error
	if r.signer, err = audit.LoadSigner(dataDir); err != nil {
		return nil, err
	}
	if r.keys, err = trustedKeys(c.publicKeys, dataDir); err != nil {
		return nil, err
	}
	if c.stream {
		if err := b.EnsureAuditStream(ctx, c.streamMaxAge); err != nil {
			return nil, err
		}
		chain, err := audit.ChainID(ctx, d)
		if err != nil {
			return nil, err
		}
		r.streams = append(r.streams, &audit.Streamer{DB: d, Q: d, Name: "jetstream", Log: log,
			Sink: audit.JetStreamSink{Pub: b, MsgIDPrefix: chain + "."}})
	}
	if c.jsonlFile != "" {
		if r.jsonl, err = os.OpenFile(c.jsonlFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("audit jsonl file: %w", err)
		}
		// The position is per file name: a node writing its own file keeps its own place.
		r.streams = append(r.streams, &audit.Streamer{DB: d, Q: d, Name: "jsonl:" + c.jsonlFile, Log: log,
			Sink: audit.JSONLinesSink{W: r.jsonl}})
	}
	return r, nil
}

// routes registers the audit and report APIs on an authenticated router.
func (r *auditRuntime) routes(api gin.IRouter) {
	host, _ := os.Hostname()
	auditapi.New(r.db, r.keys, host, r.log, r.now).RegisterRoutes(api)
	report.NewAPI(r.db, r.log, r.now).RegisterRoutes(api)
}

// run chains, checkpoints, streams and purges until ctx ends.
func (r *auditRuntime) run(ctx context.Context) {
	var wg sync.WaitGroup
	chainer := &audit.Chainer{DB: r.db, Log: r.log}
	wg.Go(func() { chainer.Run(ctx, chainPoll) })
	cp := &audit.Checkpointer{DB: r.db, Signer: r.signer, Every: r.cfg.checkpointEvery,
		Interval: r.cfg.checkpointInterval, Now: r.now, Log: r.log}
	if r.cfg.checkpointEvery > 0 || r.cfg.checkpointInterval > 0 {
		wg.Go(func() { cp.Run(ctx, time.Second) })
	}
	for _, s := range r.streams {
		wg.Go(func() { s.Run(ctx, 500*time.Millisecond) })
	}
	if r.cfg.purgeInterval > 0 {
		ret := &audit.Retention{DB: r.db, Keep: r.cfg.retention, Postgres: r.db.Dialect == db.Postgres, Keys: r.keys, Now: r.now}
		wg.Go(func() { r.purgeEvery(ctx, ret) })
	}
	wg.Wait()
}

// chainPoll is how long a committed audit record may wait to be linked
// into the chain (and so reach the SIEM stream and verification).
const chainPoll = 20 * time.Millisecond

// finish links every record still pending and signs a last checkpoint, so
// that a stopped node leaves its whole chain linked and anchored. Call it
// once every writer of the node has stopped.
func (r *auditRuntime) finish(ctx context.Context) {
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := audit.ChainAll(final, r.db); err != nil {
		r.log.Warn("final audit chain", "error", err)
	}
	if r.cfg.checkpointEvery == 0 && r.cfg.checkpointInterval == 0 {
		return
	}
	err := r.db.InTx(final, func(tx *sql.Tx) error {
		_, _, err := audit.WriteCheckpoint(final, tx, r.signer, r.now())
		return err
	})
	if err != nil {
		r.log.Warn("final audit checkpoint", "error", err)
	}
}

// close releases the JSON-lines file; call it after run has returned.
func (r *auditRuntime) close() {
	if r.jsonl != nil {
		_ = r.jsonl.Close()
	}
}

func (r *auditRuntime) purgeEvery(ctx context.Context, ret *audit.Retention) {
	t := time.NewTicker(r.cfg.purgeInterval)
	defer t.Stop()
	for {
		if res, err := ret.Tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("audit purge", "error", err)
		} else if res.Deleted > 0 {
			r.log.Info("audit purge", "through_seq", res.ThroughSeq, "deleted", res.Deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
