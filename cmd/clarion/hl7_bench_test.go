package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// BenchmarkMLLPIngest measures durable ingest through the whole server:
// 1 and 16 connections, each sending ORU^R01 messages back to back and
// waiting for each ACK (as an interface engine does). Concurrent messages
// share a transaction (group commit), so throughput grows with the number
// of connections.
func BenchmarkMLLPIngest(b *testing.B) {
	backends := []string{"sqlite"}
	if os.Getenv(dbtest.EnvPostgres) != "" {
		backends = append(backends, "postgres")
	}
	for _, backend := range backends {
		for _, conns := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/conns=%d", backend, conns), func(b *testing.B) {
				url := ""
				if backend == "postgres" {
					url = dbtest.PostgresURL(b)
				}
				addr := benchServer(b, url)
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, conns)
				b.ResetTimer()
				for c := range conns {
					wg.Go(func() {
						if err := sendUntil(addr, c, &next, int64(b.N)); err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	}
}

// sendUntil sends messages on one connection until n have been taken.
func sendUntil(addr string, conn int, next *atomic.Int64, n int64) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	stamp := time.Now().UnixNano()
	for i := next.Add(1); i <= n; i = next.Add(1) {
		id := fmt.Sprintf("B%d-%d-%d", stamp, conn, i)
		if err := hl7.WriteFrame(nc, []byte(strings.ReplaceAll(potassiumMessage(id), "\n", "\r"))); err != nil {
			return err
		}
		ack, err := hl7.ReadFrame(r, 1<<20)
		if err != nil {
			return err
		}
		if !strings.Contains(string(ack), "MSA|AA|"+id) {
			return fmt.Errorf("ack: %q", ack)
		}
	}
	return nil
}
