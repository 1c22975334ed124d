package hl7

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// clock is the explicit time of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2024, 3, 5, 16, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// intakeEnv is a listener with the real Intake on a test database.
type intakeEnv struct {
	db     *db.DB
	store  *ingest.Store
	intake *Intake
	clock  *clock
	addr   string
	logs   *syncBuffer
}

func testKeys(t testing.TB) *atrest.Keyring {
	t.Helper()
	k, err := atrest.Parse("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newIntakeEnv(t *testing.T, d *db.DB, tweak func(*Server), opts ...IntakeOption) *intakeEnv {
	t.Helper()
	e := &intakeEnv{db: d, store: ingest.NewStore(testKeys(t), d.SkipLocked()), clock: newClock()}
	e.logs = &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.intake = NewIntake(d, e.store, log, e.clock.Now, nil, nil, opts...)
	srv := &Server{Handler: e.intake, Logger: log}
	if tweak != nil {
		tweak(srv)
	}
	e.addr, _ = startServer(t, srv)
	return e
}

func (e *intakeEnv) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *intakeEnv) verifyAudit(t *testing.T) int64 {
	t.Helper()
	dbtest.ChainAudit(t, e.db)
	n, err := audit.Verify(context.Background(), e.db)
	if err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	return n
}

// conn is a test client connection that reads reply frames.
type conn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (e *intakeEnv) dial(t *testing.T, cfg *tls.Config) *conn {
	t.Helper()
	nc := dial(t, e.addr)
	if cfg != nil {
		tc := tls.Client(nc, cfg)
		nc = tc
	}
	return &conn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *conn) send(payload []byte) {
	c.t.Helper()
	if err := WriteFrame(c.nc, payload); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *conn) write(raw []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one reply frame, or returns the read error.
func (c *conn) reply() ([]byte, error) {
	return ReadFrame(c.br, 1<<20)
}

// closedByServer reports whether the server closed the connection (EOF
// or reset, not a timeout) without sending anything more.
func (c *conn) closedByServer() bool {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	if err == nil {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}
