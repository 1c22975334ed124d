package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// benchServer runs one in-process node (no seed, so results route to no
// rule) and returns its MLLP address.
func benchServer(b *testing.B, dbURL string) string {
	b.Helper()
	cfg := serveConfig{httpAddr: freeAddrB(b), mllpAddr: freeAddrB(b), mllpMaxSize: 1 << 20}
	cfg.dataDir, cfg.databaseURL = b.TempDir(), dbURL
	log := newLogger(io.Discard, "error")
	ctx, cancel := context.WithCancel(context.Background())
	a, err := openApp(ctx, cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, cfg) }()
	b.Cleanup(func() { cancel(); <-done; a.close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get("http://" + cfg.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cfg.mllpAddr
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("bench server not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddrB(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// BenchmarkMLLPDurableAck measures one connection sending ORU^R01 messages
// back to back: each is parsed, committed (fsync'd) with its audit record,
// and acknowledged before the next is sent.
func BenchmarkMLLPDurableAck(b *testing.B) {
	backendsB := map[string]string{"sqlite": ""}
	if os.Getenv(dbtest.EnvPostgres) != "" {
		backendsB["postgres"] = "set"
	}
	for name, url := range backendsB {
		b.Run(name, func(b *testing.B) {
			if url != "" {
				url = dbtest.PostgresURL(b)
			}
			addr := benchServer(b, url)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("B%d-%d", time.Now().UnixNano(), i)
				msg := strings.ReplaceAll(potassiumMessage(id), "\n", "\r")
				if err := hl7.WriteFrame(conn, []byte(msg)); err != nil {
					b.Fatal(err)
				}
				ack, err := hl7.ReadFrame(r, 1<<20)
				if err != nil {
					b.Fatal(err)
				}
				if !strings.Contains(string(ack), "MSA|AA|"+id) {
					b.Fatalf("ack: %q", ack)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
