package hl7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"
)

// ackHandler parses, maps and acknowledges, as the real listener does
// minus the durable commit.
func ackHandler() Handler {
	return HandlerFunc(func(ctx context.Context, payload []byte, peer Peer) [][]byte {
		now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		m, err := Parse(payload)
		if err != nil {
			var pe *ParseError
			errors.As(err, &pe)
			return [][]byte{BuildRejectFor(payload, pe, now, "ACK")}
		}
		if _, err := ToEvent(m); err != nil {
			var pe *ParseError
			errors.As(err, &pe)
			return [][]byte{BuildACK(m, "AE", pe, now, "ACK")}
		}
		return [][]byte{BuildACK(m, "AA", nil, now, "ACK")}
	})
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer serves srv on a loopback listener; cleanup shuts it down and
// checks Serve returned nil.
func startServer(t *testing.T, srv *Server) (addr string, logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	if srv.Logger == nil {
		srv.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	})
	return ln.Addr().String(), logs
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func adtMsg(ctrl, name string) []byte {
	return msg(`MSH|^~\&|EPIC|GHH|CLARION|GHH|20240101120000||ADT^A01|`+ctrl+`|P|2.5`,
		"PID|1||MRN1||"+name, "PV1|1|I|4W^1^A")
}

func TestServerPipelinedMessages(t *testing.T) {
	addr, _ := startServer(t, &Server{Handler: ackHandler()})
	c := dial(t, addr)
	var out bytes.Buffer
	ctrls := []string{"C1", "C2", "C3", "BAD"}
	for _, id := range ctrls[:3] {
		WriteFrame(&out, adtMsg(id, "X"))
	}
	WriteFrame(&out, []byte("not hl7"))
	if _, err := c.Write(out.Bytes()); err != nil { // all at once: replies must come in order
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, id := range ctrls {
		reply, err := ReadFrame(br, 0)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		m := mustParse(t, reply)
		wantCode, wantID := "AA", id
		if id == "BAD" {
			wantCode, wantID = "AR", ""
		}
		if m.Get("MSA-1") != wantCode || m.Get("MSA-2") != wantID {
			t.Errorf("reply %d: MSA = %s/%s, want %s/%s", i, m.Get("MSA-1"), m.Get("MSA-2"), wantCode, wantID)
		}
	}
}

func TestServerBadConnectionIsolated(t *testing.T) {
	addr, logs := startServer(t, &Server{Handler: ackHandler(), MaxFrame: 1024})

	tests := []struct {
		name string
		send []byte
	}{
		{"oversize frame", append([]byte{0x0b}, bytes.Repeat([]byte("A"), 4096)...)},
		{"unclosed frame then close", []byte("\x0bMSH|^~\\&|partial")},
		{"garbage only", []byte("GET / HTTP/1.1\r\n\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := dial(t, addr)
			bad := dial(t, addr)
			if _, err := bad.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.name != "oversize frame" {
				bad.(*net.TCPConn).CloseWrite()
			}
			// The bad connection gets no reply and is closed by the server.
			if n, err := bad.Read(make([]byte, 16)); err == nil {
				t.Errorf("bad connection got %d bytes, want close", n)
			}
			if err := WriteFrame(good, adtMsg("G1", "X")); err != nil {
				t.Fatal(err)
			}
			reply, err := ReadFrame(bufio.NewReader(good), 0)
			if err != nil || mustParse(t, reply).Get("MSA-1") != "AA" {
				t.Fatalf("good connection: %q, %v", reply, err)
			}
		})
	}
	if !waitFor(func() bool { return bytes.Contains([]byte(logs.String()), []byte("frame too large")) }) {
		t.Error("oversize frame not logged")
	}
}

func TestServerMaxConns(t *testing.T) {
	addr, logs := startServer(t, &Server{Handler: ackHandler(), MaxConns: 1})
	first := dial(t, addr)
	if err := WriteFrame(first, adtMsg("F1", "X")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFrame(bufio.NewReader(first), 0); err != nil {
		t.Fatal(err)
	}
	second := dial(t, addr)
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Error("second connection was served, want it closed")
	}
	if !waitFor(func() bool { return bytes.Contains([]byte(logs.String()), []byte(`"max_conns":1`)) }) {
		t.Error("refusal not logged")
	}
	first.Close()
	// The slot frees once the first connection is gone.
	if !waitFor(func() bool {
		_, err := Send(context.Background(), addr, adtMsg("T", "X"), time.Second)
		return err == nil
	}) {
		t.Error("slot not freed")
	}
}

func TestServerShutdownWaitsForInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	inner := ackHandler()
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, p []byte, peer Peer) [][]byte {
		close(entered)
		<-release
		return inner.HandleMLLP(ctx, p, peer)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	addr := ln.Addr().String()

	idle := dial(t, addr) // an idle connection must not hold Shutdown up
	busy := dial(t, addr)
	if err := WriteFrame(busy, adtMsg("INFLIGHT", "X")); err != nil {
		t.Fatal(err)
	}
	<-entered

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	if !waitFor(func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}) {
		t.Fatal("still accepting after Shutdown")
	}
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a handler was running", err)
	default:
	}
	close(release)
	reply, err := ReadFrame(bufio.NewReader(busy), 0)
	if err != nil {
		t.Fatalf("in-flight reply lost: %v", err)
	}
	if got := mustParse(t, reply).Get("MSA-2"); got != "INFLIGHT" {
		t.Errorf("MSA-2 = %q", got)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if _, err := busy.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("busy connection after reply: %v, want EOF", err)
	}
}

func TestServerShutdownDeadline(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	srv := &Server{Logger: slog.New(slog.DiscardHandler), Handler: HandlerFunc(func(ctx context.Context, p []byte, _ Peer) [][]byte {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return nil
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	c := dial(t, ln.Addr().String())
	WriteFrame(c, adtMsg("X", "X"))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("handler context not cancelled")
	}
}

func TestServerHandlerPanic(t *testing.T) {
	inner := ackHandler()
	addr, logs := startServer(t, &Server{Handler: HandlerFunc(func(ctx context.Context, p []byte, peer Peer) [][]byte {
		if bytes.Contains(p, []byte("PANIC")) {
			panic("handler bug with SECRETNAME")
		}
		return inner.HandleMLLP(ctx, p, peer)
	})})
	if _, err := Send(context.Background(), addr, adtMsg("PANIC", "X"), 5*time.Second); err == nil {
		t.Error("want no reply after a handler panic")
	}
	if _, err := Send(context.Background(), addr, adtMsg("OK", "X"), 5*time.Second); err != nil {
		t.Errorf("server unusable after panic: %v", err)
	}
	if bytes.Contains([]byte(logs.String()), []byte("SECRETNAME")) {
		t.Error("panic value logged")
	}
}

// Logs carry addresses, sizes and codes only: never message contents.
func TestServerLogsHaveNoPHI(t *testing.T) {
	addr, logs := startServer(t, &Server{Handler: ackHandler(), MaxFrame: 512})
	const secret = "ZEBRAPATIENT"
	for _, m := range [][]byte{adtMsg("P1", secret), []byte(secret), adtMsg(secret, secret)} {
		if _, err := Send(context.Background(), addr, m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, addr)
	WriteFrame(c, bytes.Repeat([]byte(secret), 100))
	c.Read(make([]byte, 1))
	if !waitFor(func() bool { return bytes.Contains([]byte(logs.String()), []byte("frame too large")) }) {
		t.Fatal("expected log lines missing")
	}
	out := logs.String()
	if bytes.Contains([]byte(out), []byte(secret)) {
		t.Errorf("logs contain message content:\n%s", out)
	}
	// Every key is snake_case.
	for _, k := range regexp.MustCompile(`"([^"]+)":`).FindAllStringSubmatch(out, -1) {
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(k[1]) {
			t.Errorf("log key %q is not snake_case", k[1])
		}
	}
}

func TestSendErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	// A peer that accepts but never answers: Send must give up on time.
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	start := time.Now()
	if _, err := Send(context.Background(), addr, []byte("x"), 100*time.Millisecond); err == nil {
		t.Error("want timeout error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Send took %v", d)
	}
	ln.Close()
	if _, err := Send(context.Background(), addr, []byte("x"), time.Second); err == nil {
		t.Error("want dial error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Send(ctx, addr, []byte("x"), 0); err == nil {
		t.Error("want context error")
	}
}

func TestServeWithoutHandler(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := (&Server{}).Serve(ln); err == nil {
		t.Error("want error for nil Handler")
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
