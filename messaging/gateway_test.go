package messaging_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

// testClock is a clock the test moves while gateways read it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// gwEnv is the engine fixture served by a gateway on httptest, with its own
// engine on a clock the test moves (the fixture's engine opens alerts).
type gwEnv struct {
	*fixture
	srv    *httptest.Server
	gw     *messaging.Gateway
	clock  *testClock
	tokens map[string]string // device token by user
}

func newGatewayEnv(t *testing.T, d *db.DB, opts seedOpts, gwOpts ...messaging.GatewayOption) *gwEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	f := newFixture(t, d, opts)
	e := &gwEnv{fixture: f, clock: &testClock{t: t0.Add(time.Second)}, tokens: map[string]string{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine := messaging.NewEngine(d, f.keys, f.bus, log, e.clock.Now, opts.engineOpts...)
	gw := messaging.NewGateway(d, engine, f.bus, log, 10*time.Second, gwOpts...)
	err := d.InTx(f.ctx, func(tx *sql.Tx) error {
		for u, dev := range f.devs {
			tok, err := auth.Issue(f.ctx, tx, auth.KindDevice, dev.id, auth.RoleDevice, time.Now())
			if err != nil {
				return err
			}
			e.tokens[u] = tok
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	messaging.NewAPI(d, engine, gw).RegisterRoutes(r.Group("/", auth.Middleware(d)))
	e.srv, e.gw = httptest.NewServer(r), gw
	t.Cleanup(func() { gw.Shutdown(); e.srv.Close() })
	return e
}

func (e *gwEnv) identity(user string) *deviceclient.Identity {
	return &deviceclient.Identity{Server: e.srv.URL, DeviceID: e.devs[user].id, UserID: user, Token: e.tokens[user],
		Suite: messaging.SuiteX25519, PrivateKey: e.devs[user].priv}
}

// A device that stops reading is cut off by the write timeout, and the
// others receive their messages meanwhile.
func TestSlowDeviceDoesNotSlowOthers(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{}, messaging.WithWriteTimeout(2*time.Second), messaging.WithBatch(16))
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()

		// 48 messages of 1 MiB (64 MiB of frames) for the charge RN's
		// device: more than loopback socket buffers hold, autotuned ones
		// included.
		const big = 48
		slow := e.devs["charge"].id
		blob := make([]byte, 1<<20)
		for i := 1; i <= big; i++ {
			if _, err := d.ExecContext(ctx, `INSERT INTO messages (id, device_id, seq, alert_id, user_id, step, priority, lock_text, sealed, created_at)
				VALUES ($1, $2, $3, 'alr_big', 'charge', 0, 'PL', 'PL alert', $4, $5)`, ids.New("msg"), slow, i, blob, t0.UnixMicro()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.ExecContext(ctx, `UPDATE devices SET next_seq = $1 WHERE id = $2`, big, slow); err != nil {
			t.Fatal(err)
		}
		ws, _, err := websocket.Dial(ctx, strings.Replace(e.srv.URL, "http", "ws", 1)+"/v1/devices/stream?after=0",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens["charge"]}}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		ws.SetReadLimit(2 << 20)
		// It reads nothing for now.

		conn, err := deviceclient.Dial(ctx, e.identity("rn"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const burst = 100
		errs := make(chan error, 1)
		go func() {
			for i := range burst {
				if _, err := e.openAlertErr(fmt.Sprintf("MRN%d", i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		for i := range burst {
			rec, err := conn.Next(ctx)
			if err != nil {
				t.Fatalf("RN's device after %d messages: %v", i, err)
			}
			if rec.Envelope.Seq != int64(i+1) {
				t.Fatalf("RN got seq %d, want %d", rec.Envelope.Seq, i+1)
			}
		}
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		// The stalled device, still not reading, is disconnected by the
		// write timeout: only the RN's connection is left.
		for e.gw.Connections() != 1 {
			if ctx.Err() != nil {
				t.Fatalf("the stalled device was never disconnected (%d connections)", e.gw.Connections())
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Reading now drains what the sockets held, then fails, short of
		// everything.
		frames := 0
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				if ctx.Err() != nil {
					t.Fatal("the stalled device was never disconnected")
				}
				break
			}
			frames++
		}
		if frames >= big+1 {
			t.Fatalf("the stalled device got all %d frames; it should have been cut off", frames)
		}
	})
}

// A burst of 200 messages, the connection dropped in the middle: after
// reconnecting from its last sequence the device has every message, in
// order, once.
func TestBurstSurvivesDroppedConnection(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{}, messaging.WithBatch(32))
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		id := e.identity("rn")
		conn, err := deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		const burst, dropAt = 200, 80
		errs := make(chan error, 1)
		go func() {
			for i := range burst {
				if _, err := e.openAlertErr(fmt.Sprintf("MRN%d", i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		var seqs []int64
		seen := map[string]bool{}
		for len(seqs) < burst {
			rec, err := conn.Next(ctx)
			if err != nil {
				t.Fatalf("after %d messages: %v", len(seqs), err)
			}
			if seen[rec.Envelope.MessageID] {
				t.Fatalf("message %s received twice", rec.Envelope.MessageID)
			}
			seen[rec.Envelope.MessageID] = true
			seqs = append(seqs, rec.Envelope.Seq)
			if len(seqs) == dropAt {
				conn.Drop()
				if conn, err = deviceclient.Dial(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
		}
		defer conn.Close()
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Fatalf("message %d has seq %d: %v", i, s, seqs)
			}
		}
		// Every delivery is recorded.
		for {
			var n int
			if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM messages WHERE device_id = $1 AND delivered_at IS NOT NULL`,
				id.DeviceID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == burst {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%d of %d deliveries recorded", n, burst)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// Expired messages: a connected device is told when they expire, a
// device that was away is told when it connects; the reference client
// forgets them and confirms, and the server records it.
func TestExpireNotices(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{}, messaging.WithExpiryCheck(50*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		a1 := e.openAlert("MRN1")
		expiry := messaging.DefaultExpiry().For("PH")

		id := e.identity("rn")
		conn, err := deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		expired := make(chan []string, 4)
		conn.OnExpire(func(ids []string) { expired <- ids })
		first, err := conn.Next(ctx)
		if err != nil || first.Envelope.AlertID != a1.ID {
			t.Fatalf("first message: %+v %v", first.Envelope, err)
		}
		go conn.Next(ctx) // keeps reading: expire frames are handled inside Next
		// While connected: the clock passes the expiry.
		e.clock.Set(t0.Add(expiry + time.Second))
		select {
		case got := <-expired:
			if !slices.Equal(got, []string{first.Envelope.MessageID}) {
				t.Fatalf("expire %v, want %s", got, first.Envelope.MessageID)
			}
		case <-ctx.Done():
			t.Fatal("no expire notice while connected")
		}
		waitDeleted(ctx, t, d, first.Envelope.MessageID)
		if slices.Contains(id.Held, first.Envelope.MessageID) {
			t.Fatalf("the client still holds %s", first.Envelope.MessageID)
		}
		conn.Drop()

		// Away when it expired: told on connect. The message is made
		// unexpired again, delivered, then expired while the device is off.
		e.clock.Set(t0.Add(time.Second))
		a2 := e.openAlert("MRN2")
		conn, err = deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		second, err := conn.Next(ctx)
		if err != nil || second.Envelope.AlertID != a2.ID {
			t.Fatalf("second message: %+v %v", second.Envelope, err)
		}
		conn.Drop()
		e.clock.Set(t0.Add(expiry + time.Minute))
		conn, err = deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A channel of its own: the first connection may have been told
		// twice (a second check before its confirmation was recorded).
		onConnect := make(chan []string, 4)
		conn.OnExpire(func(ids []string) { onConnect <- ids })
		go conn.Next(ctx)
		select {
		case got := <-onConnect:
			if !slices.Equal(got, []string{second.Envelope.MessageID}) {
				t.Fatalf("expire on connect %v, want %s", got, second.Envelope.MessageID)
			}
		case <-ctx.Done():
			t.Fatal("no expire notice on connect")
		}
		waitDeleted(ctx, t, d, second.Envelope.MessageID)
		if recs := e.auditRecords("message.deleted_on_device", second.Envelope.MessageID); len(recs) != 1 {
			t.Fatalf("deleted_on_device audit: %v", recs)
		}
	})
}

func waitDeleted(ctx context.Context, t *testing.T, d *db.DB, messageID string) {
	t.Helper()
	for {
		var at sql.NullInt64
		if err := d.QueryRowContext(ctx, `SELECT device_deleted_at FROM messages WHERE id = $1`, messageID).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if at.Valid {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("deletion of %s never recorded", messageID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Legal holds over HTTP: admins and auditors place, list and release them.
func TestLegalHoldAPI(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{})
		a := e.openAlert("MRN1")
		tokens := map[string]string{}
		err := d.InTx(e.ctx, func(tx *sql.Tx) error {
			for _, role := range []string{auth.RoleAdmin, auth.RoleAuditor, auth.RoleClinician} {
				tok, err := auth.Issue(e.ctx, tx, auth.KindUser, role+"-1", role, time.Now())
				if err != nil {
					return err
				}
				tokens[role] = tok
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		call := func(method, path, token, body string) (int, string) {
			req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		cases := []struct {
			name, method, path, role, body string
			want                           int
		}{
			{"clinician may not place", "POST", "/v1/legal-holds", auth.RoleClinician, `{"alert_id":"` + a.ID + `","reason":"r"}`, 403},
			{"auditor places on an alert", "POST", "/v1/legal-holds", auth.RoleAuditor, `{"alert_id":"` + a.ID + `","reason":"matter 7"}`, 201},
			{"admin places on a user", "POST", "/v1/legal-holds", auth.RoleAdmin, `{"user_id":"rn","reason":"matter 8"}`, 201},
			{"no reason", "POST", "/v1/legal-holds", auth.RoleAdmin, `{"user_id":"rn"}`, 422},
			{"both scopes", "POST", "/v1/legal-holds", auth.RoleAdmin, `{"user_id":"rn","alert_id":"` + a.ID + `","reason":"r"}`, 422},
			{"auditor lists", "GET", "/v1/legal-holds?active=true", auth.RoleAuditor, "", 200},
			{"clinician may not list", "GET", "/v1/legal-holds", auth.RoleClinician, "", 403},
			{"unknown hold", "POST", "/v1/legal-holds/hold_nope/release", auth.RoleAdmin, "", 404},
		}
		for _, c := range cases {
			if got, body := call(c.method, c.path, tokens[c.role], c.body); got != c.want {
				t.Errorf("%s: %d %s, want %d", c.name, got, body, c.want)
			}
		}
		holds, err := messaging.ListHolds(e.ctx, d, true)
		if err != nil || len(holds) != 2 {
			t.Fatalf("holds: %v %v", holds, err)
		}
		if code, body := call("POST", "/v1/legal-holds/"+holds[0].ID+"/release", tokens[auth.RoleAuditor], ""); code != 200 ||
			!strings.Contains(body, `"released_by":"auditor-1"`) {
			t.Fatalf("release: %d %s", code, body)
		}
		if code, _ := call("POST", "/v1/legal-holds/"+holds[0].ID+"/release", tokens[auth.RoleAdmin], ""); code != 422 {
			t.Fatalf("second release: %d", code)
		}
		if recs := e.auditRecords("legal_hold.released", holds[0].ID); len(recs) != 1 {
			t.Fatalf("legal_hold.released audit: %v", recs)
		}
		if code, body := call("PUT", "/v1/policies/"+policyID+"/accepts-required", tokens[auth.RoleAdmin], `{"accepts_required":2}`); code != 200 {
			t.Fatalf("accepts-required: %d %s", code, body)
		}
	})
}
