package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

// The end-to-end tests run the real binary as a subprocess, so that it can
// be stopped, restarted and SIGKILLed, against the embedded default and,
// when CLARION_TEST_DATABASE_URL and CLARION_TEST_NATS_URL are set,
// against PostgreSQL and an external NATS server.

var clarionBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clarion-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clarionBin = filepath.Join(dir, "clarion")
	build := exec.Command("go", "build", "-o", clarionBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build clarion:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	patientName = "TESTPATIENT^ALEX"
	patientMRN  = "MRN77123"
	patientDOB  = "19610214"
	stepDelay   = 2 // seconds before an unaccepted alert escalates
)

// backend is one way of running Clarion: its store and bus settings.
type backend struct {
	name    string
	dbURL   string // "" for embedded SQLite
	natsURL string // "" for embedded NATS
}

// backends lists the configurations to run; PostgreSQL + external NATS
// only when CI (or a developer) switches them on.
func backends() map[string]func(t *testing.T) backend {
	out := map[string]func(t *testing.T) backend{"embedded": func(t *testing.T) backend { return backend{name: "embedded"} }}
	if os.Getenv(dbtest.EnvPostgres) != "" {
		out["postgres"] = func(t *testing.T) backend {
			nats := os.Getenv("CLARION_TEST_NATS_URL")
			if nats == "" {
				t.Fatal("CLARION_TEST_NATS_URL must be set with " + dbtest.EnvPostgres)
			}
			return backend{name: "postgres", dbURL: dbtest.PostgresURL(t), natsURL: nats}
		}
	}
	return out
}

// eachBackend runs fn once per backend, in parallel.
func eachBackend(t *testing.T, fn func(t *testing.T, h *harness)) {
	for name, mk := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, newHarness(t, mk(t)))
		})
	}
}

// harness is one Clarion deployment under test: a data directory (or a
// PostgreSQL schema) that survives restarts of the server process.
type harness struct {
	t        *testing.T
	b        backend
	dataDir  string
	httpAddr string
	mllpAddr string
	proc     *exec.Cmd
	exited   chan error
	logs     *syncBuffer
	admin    string
	started  bool // once: a restart keeps its addresses
}

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

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newHarness(t *testing.T, b backend) *harness {
	h := &harness{t: t, b: b, dataDir: t.TempDir(), httpAddr: freeAddr(t), mllpAddr: freeAddr(t), logs: &syncBuffer{}}
	t.Cleanup(func() {
		if h.proc != nil {
			_ = h.proc.Process.Kill()
			<-h.exited
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", h.logs.String())
		}
	})
	out := h.cli("token", "create", "--role", "admin", "--subject", "e2e-admin")
	h.admin = strings.TrimSpace(out)
	return h
}

func (h *harness) storeArgs() []string {
	args := []string{"--data-dir", h.dataDir}
	if h.b.dbURL != "" {
		args = append(args, "--database-url", h.b.dbURL)
	}
	return args
}

// cli runs a clarion subcommand to completion and returns its stdout.
func (h *harness) cli(args ...string) string {
	h.t.Helper()
	out, code := h.cliCode(args...)
	if code != 0 {
		h.t.Fatalf("clarion %v: exit %d: %s", args, code, out)
	}
	return out
}

func (h *harness) cliCode(args ...string) (string, int) {
	h.t.Helper()
	args = append(args[:len(args):len(args)], h.storeArgs()...)
	cmd := exec.Command(clarionBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return stdout.String() + stderr.String(), ee.ExitCode()
	}
	if err != nil {
		h.t.Fatalf("clarion %v: %v", args, err)
	}
	return stdout.String(), 0
}

// start runs `clarion serve` and waits until /readyz answers 200. A port
// freeAddr found free can be taken by another test before the server binds
// it: a first start then takes other ports (a restart keeps its own).
func (h *harness) start(env ...string) {
	h.t.Helper()
	for attempt := 1; ; attempt++ {
		err := h.launch(env)
		if err == nil {
			h.started = true
			return
		}
		if !h.started && attempt < 3 && strings.Contains(h.logs.String(), "address already in use") {
			h.httpAddr, h.mllpAddr = freeAddr(h.t), freeAddr(h.t)
			continue
		}
		h.t.Fatalf("server exited while starting: %v", err)
	}
}

// launch runs `clarion serve` and returns once /readyz answers 200, or
// with the exit error when the server exits first.
func (h *harness) launch(env []string) error {
	h.t.Helper()
	args := append([]string{"serve", "--http-addr", h.httpAddr, "--mllp-addr", h.mllpAddr}, h.storeArgs()...)
	if h.b.natsURL != "" {
		args = append(args, "--nats-url", h.b.natsURL)
	}
	cmd := exec.Command(clarionBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = h.logs, h.logs
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.proc, h.exited = cmd, make(chan error, 1)
	go func() { h.exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + h.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-h.exited:
			h.proc = nil
			if err == nil {
				err = errors.New("exit status 0")
			}
			return err
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.t.Fatal("server not ready within 60s")
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (h *harness) stop() {
	h.t.Helper()
	_ = h.proc.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		if err != nil {
			h.t.Fatalf("server did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("server did not stop within 30s of SIGTERM")
	}
	h.proc = nil
}

// waitExit waits for the server to die by itself (the fault-injection run).
func (h *harness) waitExit() {
	h.t.Helper()
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.t.Fatal("server still running")
	}
	h.proc = nil
}

func (h *harness) api(method, path string, body any) {
	h.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+h.httpAddr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+h.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		h.t.Fatalf("%s %s: %s: %s", method, path, resp.Status, data)
	}
}

// hospital is the configured unit, with a device per user.
type hospital struct {
	rn, charge, other *deviceclient.Identity
}

// seed configures 4W with an RN, a charge RN and a failsafe supervisor, a
// policy RN → charge RN → supervisor with short delays, and the critical
// potassium rule, all through the admin API.
func (h *harness) seed() hospital {
	h.t.Helper()
	h.api("PUT", "/v1/units/4W", map[string]any{"name": "4 West", "time_zone": "America/New_York"})
	for _, u := range []string{"rn1", "charge1", "sup1", "icu1"} {
		h.api("PUT", "/v1/users/"+u, map[string]any{"name": "User " + u})
	}
	now := time.Now().UTC()
	for user, role := range map[string]string{"rn1": "RN", "charge1": "CHARGE_RN"} {
		h.api("POST", "/v1/shifts", map[string]any{"unit_id": "4W", "role": role, "user_id": user,
			"start": now.Add(-time.Hour), "end": now.Add(3 * time.Hour)})
	}
	h.api("PUT", "/v1/policies/nursing", map[string]any{"name": "Nursing", "steps": []map[string]any{
		{"targets": []map[string]any{{"kind": "role", "role": "RN"}}, "delay_seconds": stepDelay},
		{"targets": []map[string]any{{"kind": "role", "role": "CHARGE_RN"}}, "delay_seconds": stepDelay},
		{"targets": []map[string]any{{"kind": "user", "user_id": "sup1"}}},
	}})
	h.api("PUT", "/v1/rules/critical-potassium", map[string]any{"name": "Critical potassium", "enabled": true,
		"priority": "PH", "target_role": "RN", "policy_id": "nursing",
		"match":     map[string]any{"codes": []map[string]any{{"system": "LN", "code": "2823-3"}}, "flags": []string{"HH", "LL"}},
		"lock_text": "{priority} alert on {unit}", "body": "Bed {bed}: {test} {value} {units} ({flag})"})
	enrol := func(user string) *deviceclient.Identity {
		id, err := deviceclient.Register(context.Background(), "http://"+h.httpAddr, h.admin, user, "test phone", messaging.SuiteX25519)
		if err != nil {
			h.t.Fatal(err)
		}
		return id
	}
	return hospital{rn: enrol("rn1"), charge: enrol("charge1"), other: enrol("icu1")}
}

func (h *harness) send(msg string) string {
	h.t.Helper()
	ack, err := hl7.Send(context.Background(), h.mllpAddr, []byte(strings.ReplaceAll(msg, "\n", "\r")), 30*time.Second)
	if err != nil {
		h.t.Fatalf("mllp send: %v", err)
	}
	return string(ack)
}

func admitMessage(id string) string {
	return "MSH|^~\\&|ADT|GHH|CLARION|GHH|20261123080000||ADT^A01^ADT_A01|" + id + "|P|2.5.1\n" +
		"EVN|A01|20261123080000\n" +
		"PID|1||" + patientMRN + "^^^GHH^MR||" + patientName + "||" + patientDOB + "|F\n" +
		"PV1|1|I|4W^412^12^GHH\n"
}

func potassiumMessage(id string) string {
	return "MSH|^~\\&|LAB|GHH|CLARION|GHH|20261123081500||ORU^R01^ORU_R01|" + id + "|P|2.5.1\n" +
		"PID|1||" + patientMRN + "^^^GHH^MR||" + patientName + "||" + patientDOB + "|F\n" +
		"OBR|1||L123|2823-3^Potassium^LN\n" +
		"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\n"
}

func requireAA(t *testing.T, ack, controlID string) {
	t.Helper()
	if !strings.Contains(ack, "MSA|AA|"+controlID) {
		t.Fatalf("want MSA|AA|%s, got %q", controlID, ack)
	}
}

// receive waits (generously) for the next message on a device.
func receive(t *testing.T, id *deviceclient.Identity, within time.Duration) (deviceclient.Received, *deviceclient.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	conn, err := deviceclient.Dial(ctx, id)
	if err != nil {
		t.Fatalf("device %s: %v", id.UserID, err)
	}
	rec, err := conn.Next(ctx)
	if err != nil {
		conn.Close()
		t.Fatalf("device %s received nothing within %s: %v", id.UserID, within, err)
	}
	return rec, conn
}

// nothingFor asserts that a device receives no message for d.
func nothingFor(t *testing.T, id *deviceclient.Identity, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn, err := deviceclient.Dial(ctx, id)
	if err != nil {
		t.Fatalf("device %s: %v", id.UserID, err)
	}
	defer conn.Close()
	if rec, err := conn.Next(ctx); err == nil {
		t.Fatalf("device %s got an unexpected message: step %d, alert %s", id.UserID, rec.Plain.Step, rec.Plain.AlertID)
	}
}

// openDB opens the deployment's database beside the running server.
func (h *harness) openDB() *db.DB {
	h.t.Helper()
	d, err := db.Open(context.Background(), h.b.dbURL, h.dataDir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { d.Close() })
	return d
}

func auditActions(t *testing.T, d *db.DB) []string {
	t.Helper()
	rows, err := d.Query(`SELECT action FROM audit_log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCriticalPotassiumEscalatesWithoutAccept(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		requireAA(t, h.send(admitMessage("ADT-1")), "ADT-1")
		sentAt := time.Now()
		requireAA(t, h.send(potassiumMessage("LAB-1")), "LAB-1")

		rec, conn := receive(t, hosp.rn, 30*time.Second)
		t.Logf("RN device received the alert %s after the ACK", time.Since(sentAt))
		if rec.Plain.Step != 0 || !strings.Contains(rec.Plain.Body, "6.9") || !strings.Contains(rec.Plain.Body, "Bed 12") {
			t.Fatalf("unexpected message: %+v", rec.Plain)
		}
		if strings.Contains(rec.Envelope.LockText, "6.9") || strings.Contains(rec.Envelope.LockText, "TESTPATIENT") {
			t.Fatalf("lock screen carries PHI: %q", rec.Envelope.LockText)
		}
		if _, err := messaging.Open(hosp.other.Suite, hosp.other.PrivateKey,
			messaging.MessageInfo(rec.Envelope.MessageID, hosp.rn.DeviceID), rec.Envelope.Sealed); err == nil {
			t.Fatal("another device's key opened the RN's message")
		}
		if err := conn.MarkRead(context.Background(), rec.Envelope.MessageID); err != nil {
			t.Fatal(err)
		}
		// No accept: after the step delay the charge RN is paged.
		esc, conn2 := receive(t, hosp.charge, 30*time.Second)
		conn2.Close()
		conn.Close()
		if esc.Plain.Step != 1 || esc.Plain.AlertID != rec.Plain.AlertID {
			t.Fatalf("escalation: got step %d alert %s", esc.Plain.Step, esc.Plain.AlertID)
		}
		d := h.openDB()
		waitFor(t, "delivered, read and escalated in the audit log", func() bool {
			a := auditActions(t, d)
			return contains(a, "message.delivered") && contains(a, "message.read") && contains(a, "alert.escalated")
		})
		assertNoPlaintext(t, d)
		h.stop()
		for _, secret := range []string{patientMRN, "TESTPATIENT", patientDOB} {
			if strings.Contains(h.logs.String(), secret) {
				t.Fatalf("server logs contain PHI %q", secret)
			}
		}

		// The audit chain verifies, and a hand edit is caught and named.
		if out := h.cli("audit", "verify"); !strings.Contains(out, "intact") {
			t.Fatalf("audit verify: %s", out)
		}
		if h.b.dbURL != "" {
			// The guard refuses UPDATE on PostgreSQL: an attacker with the owner's rights lifts it first.
			if _, err := d.Exec(`ALTER TABLE audit_log DISABLE TRIGGER audit_log_guard`); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.Exec(`UPDATE audit_log SET outcome = 'edited' WHERE seq = 7`); err != nil {
			t.Fatal(err)
		}
		out, code := h.cliCode("audit", "verify")
		if code == 0 || !strings.Contains(out, "record 7") {
			t.Fatalf("tampered chain: exit %d: %s", code, out)
		}
	})
}

func TestAcceptStopsEscalationAcrossRestart(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		requireAA(t, h.send(admitMessage("ADT-2")), "ADT-2")
		requireAA(t, h.send(potassiumMessage("LAB-2")), "LAB-2")
		rec, conn := receive(t, hosp.rn, 30*time.Second)
		conn.Close()
		state, err := deviceclient.RespondHTTP(context.Background(), hosp.rn, rec.Envelope.MessageID, messaging.ResponseAccept)
		if err != nil || state != "accepted" {
			t.Fatalf("accept: %q %v", state, err)
		}
		acceptedAt := time.Now()
		h.stop()
		// Stay down past the moment the escalation would have fired.
		for time.Since(acceptedAt) < (stepDelay+1)*time.Second {
			time.Sleep(100 * time.Millisecond)
		}
		h.start()
		nothingFor(t, hosp.charge, 3*time.Second)
		d := h.openDB()
		var escalated, pending int
		if err := d.QueryRow(`SELECT COUNT(*) FROM messages WHERE alert_id = $1 AND step > 0`, rec.Plain.AlertID).Scan(&escalated); err != nil {
			t.Fatal(err)
		}
		if err := d.QueryRow(`SELECT COUNT(*) FROM escalation_timers WHERE alert_id = $1 AND state = 'pending'`, rec.Plain.AlertID).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if escalated != 0 || pending != 0 {
			t.Fatalf("after accept: %d escalated messages, %d pending timers", escalated, pending)
		}
	})
}

func TestKilledAfterAckStillDeliversOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		requireAA(t, h.send(admitMessage("ADT-3")), "ADT-3")
		h.stop()

		// This run SIGKILLs itself the moment its AA is on the wire.
		h.start(EnvFault + "=kill-after-ack")
		requireAA(t, h.send(potassiumMessage("LAB-3")), "LAB-3")
		h.waitExit()

		h.start()
		rec, conn := receive(t, hosp.rn, 30*time.Second)
		defer conn.Close()
		if !strings.Contains(rec.Plain.Body, "6.9") {
			t.Fatalf("unexpected message %+v", rec.Plain)
		}
		// The sender retries (it never knows whether its AA arrived): same answer, no second page.
		requireAA(t, h.send(potassiumMessage("LAB-3")), "LAB-3")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if again, err := conn.Next(ctx); err == nil {
			t.Fatalf("second message after restart: %+v", again.Plain)
		}
		d := h.openDB()
		var alerts, msgs int
		_ = d.QueryRow(`SELECT COUNT(*) FROM alerts`).Scan(&alerts)
		_ = d.QueryRow(`SELECT COUNT(*) FROM messages WHERE device_id = $1`, hosp.rn.DeviceID).Scan(&msgs)
		if alerts != 1 || msgs != 1 {
			t.Fatalf("want one alert and one message, got %d alerts, %d messages", alerts, msgs)
		}
	})
}

// potassiumValue is the test's potassium result as a number of its own
// (sealed bytes or a timestamp's fraction may hold "6.9" by chance).
var potassiumValue = regexp.MustCompile(`(^|[^0-9.])6\.9([^0-9]|$)`)

// assertNoPlaintext checks that no stored body, event or message holds the
// patient's values or identifiers in clear.
func assertNoPlaintext(t *testing.T, d *db.DB) {
	t.Helper()
	for _, q := range []string{`SELECT sealed FROM messages`, `SELECT body FROM alerts`, `SELECT payload FROM events`,
		`SELECT raw FROM events`, `SELECT detail FROM audit_log`} {
		rows, err := d.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				t.Fatal(err)
			}
			// The value as a number of its own, not inside a timestamp
			// ("…:46.95Z") or another number.
			if potassiumValue.Match(b) {
				t.Fatalf("%s: stored in clear: the value 6.9", q)
			}
			for _, secret := range []string{patientMRN, "TESTPATIENT", patientDOB, "Potassium"} {
				if bytes.Contains(b, []byte(secret)) {
					t.Fatalf("%s: stored in clear: %q", q, secret)
				}
			}
		}
		rows.Close()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // generous: CI machines are small and busy
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) status(method, path, token string, body any) int {
	h.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+h.httpAddr+path, bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAPIAuthenticationAndRoles(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		scheduler := strings.TrimSpace(h.cli("token", "create", "--role", "scheduler", "--subject", "sched1"))
		// A scheduler edits only the units assigned to them.
		h.api("PUT", "/v1/users/sched1", map[string]any{"name": "Scheduler"})
		h.api("PUT", "/v1/units/4W/schedulers/sched1", nil)
		shift := map[string]any{"unit_id": "4W", "role": "RN", "user_id": "rn1",
			"start": time.Now().Add(5 * time.Hour), "end": time.Now().Add(17 * time.Hour)}
		cases := []struct {
			name         string
			method, path string
			token        string
			body         any
			want         int
		}{
			{"health needs no token", "GET", "/healthz", "", nil, 200},
			{"readiness needs no token", "GET", "/readyz", "", nil, 200},
			{"metrics need no token", "GET", "/metrics", "", nil, 200},
			{"alerts need a token", "GET", "/v1/alerts", "", nil, 401},
			{"a bad token is refused", "GET", "/v1/alerts", "clr_not_a_token", nil, 401},
			{"a device cannot edit rosters", "POST", "/v1/shifts", hosp.rn.Token, shift, 403},
			{"a device cannot edit rules", "PUT", "/v1/rules/x", hosp.rn.Token, map[string]any{}, 403},
			{"a device cannot read alerts", "GET", "/v1/alerts", hosp.rn.Token, nil, 403},
			{"a scheduler cannot edit rules", "PUT", "/v1/rules/x", scheduler, map[string]any{}, 403},
			{"a scheduler edits rosters", "POST", "/v1/shifts", scheduler, shift, 201},
			{"an invalid shift names the field", "POST", "/v1/shifts", scheduler,
				map[string]any{"unit_id": "4W", "role": "RN", "user_id": "rn1", "start": time.Now(), "end": time.Now().Add(-time.Hour)}, 422},
			{"an admin reads alerts", "GET", "/v1/alerts", h.admin, nil, 200},
		}
		for _, c := range cases {
			if got := h.status(c.method, c.path, c.token, c.body); got != c.want {
				t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
			}
		}
	})
}

func TestMalformedHL7GetsSpecificNAK(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		cases := []struct {
			name, msg, want string
		}{
			{"unsupported message type", "MSH|^~\\&|X|Y|CLARION|GHH|20261123||MDM^T02|M1|P|2.5\nPID|1||123\n", "MSA|AR|M1"},
			{"missing patient id", "MSH|^~\\&|X|Y|CLARION|GHH|20261123||ADT^A01|M2|P|2.5\nPV1|1|I|4W^1^1\n", "MSA|AE|M2"},
			{"non-numeric NM value", "MSH|^~\\&|X|Y|CLARION|GHH|20261123||ORU^R01|M3|P|2.5\nPID|1||123\nOBR|1\nOBX|1|NM|2823-3^K^LN||high|mmol/L|||||F\n", "MSA|AE|M3"},
		}
		for _, c := range cases {
			ack := h.send(c.msg)
			if !strings.Contains(ack, c.want) || !strings.Contains(ack, "ERR|") {
				t.Errorf("%s: got %q, want %s with an ERR segment", c.name, ack, c.want)
			}
		}
		d := h.openDB()
		var kept int
		if err := d.QueryRow(`SELECT COUNT(*) FROM rejected_messages`).Scan(&kept); err != nil || kept != len(cases) {
			t.Fatalf("rejected messages kept: %d (%v), want %d", kept, err, len(cases))
		}
	})
}
