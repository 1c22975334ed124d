package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// auditStores are the stores the in-process audit command tests run on.
func auditStores(t *testing.T) map[string]func(t *testing.T) storeFlags {
	out := map[string]func(t *testing.T) storeFlags{
		"sqlite": func(t *testing.T) storeFlags { return storeFlags{dataDir: t.TempDir()} },
	}
	if os.Getenv(dbtest.EnvPostgres) != "" {
		out["postgres"] = func(t *testing.T) storeFlags {
			return storeFlags{dataDir: t.TempDir(), databaseURL: dbtest.PostgresURL(t)}
		}
	}
	return out
}

func (s storeFlags) args(extra ...string) []string {
	a := append([]string{}, extra...)
	a = append(a, "--data-dir", s.dataDir)
	if s.databaseURL != "" {
		a = append(a, "--database-url", s.databaseURL)
	}
	return a
}

// clarionRun runs a subcommand in-process and returns its stdout and exit code.
func clarionRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	var err error
	if args[0] == "audit" { // main.go may not dispatch the new subcommands yet
		err = runAudit(context.Background(), args[1:], &out, &errb)
	} else {
		err = run(context.Background(), args, &out, &errb)
	}
	var ec exitCode
	switch {
	case errors.As(err, &ec):
		return out.String() + errb.String(), int(ec)
	case err != nil:
		t.Fatalf("clarion %v: %v (%s)", args, err, errb.String())
	}
	return out.String(), 0
}

func seedAudit(t *testing.T, s storeFlags, n int) *db.DB {
	t.Helper()
	ctx := context.Background()
	d, err := openAuditStore(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for i := 0; i < n; i++ {
		if err := appendOne(ctx, d, audit.Entry{ActorType: audit.ActorUser, ActorID: "rn1", ActorRole: "clinician",
			Action: "alert.accepted", ObjectType: "alert", ObjectID: "alr_1", CorrelationID: "evt_1",
			SourceAddr: "10.0.0.5", DeviceID: "dev_1"}); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestAuditCommands(t *testing.T) {
	for name, mk := range auditStores(t) {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			d := seedAudit(t, s, 4)
			if out, code := clarionRun(t, append([]string{"audit", "checkpoint"}, s.args()...)...); code != 0 ||
				!strings.Contains(out, "checkpoint signed: record 4") {
				t.Fatalf("checkpoint: %d %s", code, out)
			}
			out, code := clarionRun(t, append([]string{"audit", "verify"}, s.args()...)...)
			if code != 0 || !strings.Contains(out, "intact: 5 records, 1 signed checkpoints verified, the last at record 4") {
				t.Fatalf("verify: %d %s", code, out)
			}

			// An auditor elsewhere: the public key, and no signing key of their own.
			pub, _ := clarionRun(t, append([]string{"audit", "public-key"}, s.args()...)...)
			keyFile := filepath.Join(t.TempDir(), "clarion.pub")
			if err := os.WriteFile(keyFile, []byte(pub), 0o644); err != nil {
				t.Fatal(err)
			}
			auditor := storeFlags{dataDir: t.TempDir(), databaseURL: s.databaseURL}
			if auditor.databaseURL == "" {
				auditor.dataDir = s.dataDir // SQLite: the database is the file in the data dir
				t.Setenv(audit.EnvSigningKey, "")
			}
			if out, code := clarionRun(t, append([]string{"audit", "verify", "--public-key", keyFile}, auditor.args()...)...); code != 0 {
				t.Fatalf("offline verify: %d %s", code, out)
			}

			for format, want := range map[string]string{"jsonl": `"device_id":"dev_1"`, "csv": "10.0.0.5,dev_1",
				"fhir": `"resourceType":"AuditEvent"`} {
				out, code := clarionRun(t, append([]string{"audit", "export", "--format", format, "--action", "alert.*"}, s.args()...)...)
				if code != 0 || !strings.Contains(out, want) || strings.Contains(out, "audit.checkpointed") {
					t.Fatalf("export %s: %d %s", format, code, out)
				}
			}
			out, _ = clarionRun(t, append([]string{"audit", "tail", "--after", "5"}, s.args()...)...)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[0], `"seq":6`) {
				t.Fatalf("tail after 5, up to the head when it started (the three exports): %q", lines)
			}

			// Nothing is six years old.
			if out, code := clarionRun(t, append([]string{"audit", "purge"}, s.args()...)...); code != 0 || !strings.Contains(out, "nothing to purge") {
				t.Fatalf("purge: %d %s", code, out)
			}

			// An edit, by someone able to lift the guard, is named.
			if d.Dialect == db.Postgres {
				if _, err := d.Exec(`ALTER TABLE audit_log DISABLE TRIGGER audit_log_guard`); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.Exec(`UPDATE audit_log SET outcome = 'edited' WHERE seq = 3`); err != nil {
				t.Fatal(err)
			}
			out, code = clarionRun(t, append([]string{"audit", "verify"}, s.args()...)...)
			if code != 1 || !strings.Contains(out, "record 3") {
				t.Fatalf("tampered: %d %s", code, out)
			}
		})
	}
}

func TestReportCommand(t *testing.T) {
	s := storeFlags{dataDir: t.TempDir()}
	seedAudit(t, s, 1)
	var out bytes.Buffer
	if err := runReport(context.Background(), s.args("--group-by", "priority", "--json"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		GroupBy string `json:"group_by"`
		Level   string `json:"level"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.GroupBy != "priority" || rep.Level != "alert" {
		t.Fatalf("%v %s", err, out.String())
	}
	out.Reset()
	if err := runReport(context.Background(), s.args(), &out, io.Discard); err != nil || !strings.Contains(out.String(), "total") {
		t.Fatalf("table: %v %s", err, out.String())
	}
	if err := runReport(context.Background(), s.args("--group-by", "ward"), &out, io.Discard); err == nil ||
		!strings.HasPrefix(err.Error(), "group_by") {
		t.Fatalf("bad grouping: %v", err)
	}
}

// TestAuditRuntime runs the server's audit jobs: checkpoints by count, the
// JetStream and JSON-lines outboxes, and the final checkpoint at shutdown.
func TestAuditRuntime(t *testing.T) {
	s := storeFlags{dataDir: t.TempDir()}
	d := seedAudit(t, s, 3)
	ctx := context.Background()
	log := newLogger(io.Discard, "error")
	b, err := bus.Start(ctx, "", s.dataDir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	jsonl := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := auditConfig{checkpointEvery: 2, stream: true, streamMaxAge: time.Hour, jsonlFile: jsonl}
	r, err := openAuditRuntime(ctx, cfg, s.dataDir, d, b, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { r.run(runCtx); close(done) }()
	stream, err := b.JetStream().Stream(ctx, bus.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	// Both sinks are waited for while the runtime runs: shutdown does not
	// drain the stream, so a loaded machine could otherwise stop it first.
	waitFor(t, "a checkpoint and the records in the JSON-lines file and on the stream", func() bool {
		cps, _ := audit.Checkpoints(ctx, d)
		b, _ := os.ReadFile(jsonl)
		info, _ := stream.Info(ctx)
		return len(cps) > 0 && bytes.Count(b, []byte("\n")) >= 4 && info != nil && info.State.Msgs >= 4
	})
	if err := appendOne(ctx, d, audit.Entry{ActorType: audit.ActorSystem, ActorID: "t", Action: "last.one"}); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	r.finish(ctx)
	r.close()
	head, _ := audit.Head(ctx, d)
	res, err := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: r.keys, RequireSignatures: true})
	if err != nil || res.Unanchored() > 1 { // only the final checkpoint's own record
		t.Fatalf("after shutdown: %+v %v (head %d)", res, err, head)
	}
	var wrote int
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM audit_stream_positions WHERE seq > 0`).Scan(&wrote)
	})
	if err != nil || wrote != 2 {
		t.Fatalf("outbox positions: %d %v", wrote, err)
	}
}
