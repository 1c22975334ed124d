package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/bus"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// streamBuses starts an embedded NATS and, with CLARION_TEST_NATS_URL, connects
// to the external one too (Debian's nats-server 2.9.10 in CI).
func streamBuses(t *testing.T) map[string]*bus.Bus {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	out := map[string]*bus.Bus{}
	b, err := bus.Start(context.Background(), "", t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	out["embedded"] = b
	if url := os.Getenv("CLARION_TEST_NATS_URL"); url != "" {
		x, err := bus.Start(context.Background(), url, "", log)
		if err != nil {
			t.Fatalf("external NATS unreachable: %v", err)
		}
		t.Cleanup(x.Close)
		out["external"] = x
	}
	return out
}

func TestStreamerPublishesEachRecordOnce(t *testing.T) {
	for name, b := range streamBuses(t) {
		t.Run(name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				ctx := context.Background()
				if err := b.EnsureAuditStream(ctx, time.Hour); err != nil {
					t.Fatal(err)
				}
				chain, err := audit.ChainID(ctx, d)
				if again, _ := audit.ChainID(ctx, d); err != nil || len(chain) != 16 || again != chain {
					t.Fatalf("chain id %q then %q: %v", chain, again, err)
				}
				prefix := chain + "."
				seedQueryLog(t, d)
				s := &audit.Streamer{DB: d, Q: d, Name: "jetstream", Batch: 4,
					Sink: audit.JetStreamSink{Pub: b, MsgIDPrefix: prefix}}
				stream, err := b.JetStream().Stream(ctx, bus.AuditStream)
				if err != nil {
					t.Fatal(err)
				}
				info, _ := stream.Info(ctx)
				before := info.State.LastSeq

				for _, want := range []int{4, 2, 0} {
					if n, err := s.Step(ctx); err != nil || n != want {
						t.Fatalf("step: sent %d (%v), want %d", n, err, want)
					}
				}
				// A crash after publishing but before the position moved: the
				// outbox sends again, the stream keeps one copy.
				if _, err := d.ExecContext(ctx, `UPDATE audit_stream_positions SET seq = 2 WHERE name = 'jetstream'`); err != nil {
					t.Fatal(err)
				}
				if n, err := s.Step(ctx); err != nil || n != 4 {
					t.Fatalf("replay: %d %v", n, err)
				}
				// Count our own messages only: other deployments may share the stream.
				info, _ = stream.Info(ctx)
				ours := 0
				for seq := before + 1; seq <= info.State.LastSeq; seq++ {
					if m, err := stream.GetMsg(ctx, seq); err == nil && strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), prefix) {
						ours++
					}
				}
				if ours != 6 {
					t.Fatalf("stream holds %d of our messages, want 6 (one per record)", ours)
				}
				// The record is there, under its action's subject, as JSON.
				m, err := stream.GetLastMsgForSubject(ctx, "clarion.audit.message.read")
				if err != nil {
					t.Fatal(err)
				}
				var r audit.Record
				if err := json.Unmarshal(m.Data, &r); err != nil || r.Action != "message.read" || r.Hash == "" {
					t.Fatalf("published record: %+v %v", r, err)
				}
				if id := m.Header.Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, prefix) {
					t.Fatalf("message id %q", id)
				}
			})
		})
	}
}

func TestJSONLinesSinkAndTail(t *testing.T) {
	d := dbtest.SQLite(t)
	ctx := context.Background()
	seedQueryLog(t, d)
	var buf bytes.Buffer
	s := &audit.Streamer{DB: d, Q: d, Name: "jsonl", Sink: audit.JSONLinesSink{W: &buf}}
	if n, err := s.Step(ctx); err != nil || n != 6 {
		t.Fatalf("step: %d %v", n, err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 6 {
		t.Fatalf("%d lines", n)
	}
	var tail bytes.Buffer
	if err := audit.Tail(ctx, d, &tail, audit.Filter{After: 4, Limit: 1}, false, 0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(tail.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"seq":5`) {
		t.Fatalf("tail: %q", lines)
	}
}

func TestSubject(t *testing.T) {
	cases := map[string]string{
		"alert.opened":                "clarion.audit.alert.opened",
		"escalation.step_unreachable": "clarion.audit.escalation.step_unreachable",
		"bad action>*":                "clarion.audit.bad_action__",
		"..":                          "clarion.audit.unknown",
	}
	for in, want := range cases {
		if got := audit.Subject(in); got != want {
			t.Errorf("Subject(%q) = %q, want %q", in, got, want)
		}
	}
}
