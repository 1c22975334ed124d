package messaging_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
	"github.com/clarion-health/clarion/oncall"
)

// memBus is an in-process stand-in for NATS wake-ups.
type memBus struct {
	mu   sync.Mutex
	subs map[string]map[int]func()
	next int
}

func (m *memBus) WakeDevices(ids []string) {
	m.mu.Lock()
	var fns []func()
	for _, id := range ids {
		for _, fn := range m.subs[id] {
			fns = append(fns, fn)
		}
	}
	m.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (m *memBus) SubscribeDevice(id string, wake func()) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs == nil {
		m.subs = map[string]map[int]func(){}
	}
	if m.subs[id] == nil {
		m.subs[id] = map[int]func(){}
	}
	m.next++
	n := m.next
	m.subs[id][n] = wake
	return func() { m.mu.Lock(); delete(m.subs[id], n); m.mu.Unlock() }, nil
}

type lifecycleEnv struct {
	d      *db.DB
	srv    *httptest.Server
	admin  string
	nurse  string // clinician token of user "ana"
	gw     *messaging.Gateway
	public string
}

func newLifecycleEnv(t *testing.T, d *db.DB) *lifecycleEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	ctx, now := context.Background(), time.Now()
	keys, err := atrest.Parse("k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus := &memBus{}
	engine := messaging.NewEngine(d, keys, bus, log, time.Now)
	gw := messaging.NewGateway(d, engine, bus, log, 10*time.Second)
	env := &lifecycleEnv{d: d, gw: gw}
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		for _, u := range []string{"ana", "ben"} {
			if err := oncall.PutUser(ctx, tx, oncall.Actor{Type: "system", ID: "test"}, oncall.User{ID: u, Name: u}); err != nil {
				return err
			}
		}
		var err error
		if env.admin, err = auth.Issue(ctx, tx, auth.KindUser, "root", auth.RoleAdmin, now); err != nil {
			return err
		}
		env.nurse, err = auth.Issue(ctx, tx, auth.KindUser, "ana", auth.RoleClinician, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	api := messaging.NewAPI(d, engine, gw)
	api.RegisterPublicRoutes(r)
	api.RegisterRoutes(r.Group("/", auth.Middleware(d)))
	env.srv = httptest.NewServer(r)
	t.Cleanup(func() { gw.Shutdown(); env.srv.Close() })
	return env
}

func (e *lifecycleEnv) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func issueCode(t *testing.T, e *lifecycleEnv, token, user string) string {
	t.Helper()
	ctx := context.Background()
	var code string
	err := e.d.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		code, _, err = messaging.IssueEnrolmentCode(ctx, tx, audit.Entry{ActorType: "user", ActorID: token}, user, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestEnrolmentCodes(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newLifecycleEnv(t, d)
		ctx := context.Background()
		code := issueCode(t, e, "root", "ana")
		id, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, code, "ana's phone", messaging.SuiteXWing)
		if err != nil || id.UserID != "ana" || id.Suite != messaging.SuiteXWing {
			t.Fatalf("enrol with code: %+v %v", id, err)
		}
		if _, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, code, "again", ""); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("a used code enrolled again: %v", err)
		}
		// An expired code is refused.
		var expired string
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			var err error
			expired, _, err = messaging.IssueEnrolmentCode(ctx, tx, audit.Entry{ActorType: "user", ActorID: "root"}, "ana",
				time.Now().Add(-messaging.EnrolmentTTL-time.Minute))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, expired, "late", ""); err == nil {
			t.Fatal("an expired code enrolled")
		}
		// Clinicians issue codes for themselves only; admins for anyone.
		cases := []struct {
			name, token, body string
			want              int
		}{
			{"nurse for herself", e.nurse, `{}`, 201},
			{"nurse for another", e.nurse, `{"user_id":"ben"}`, 403},
			{"admin for ben", e.admin, `{"user_id":"ben"}`, 201},
			{"admin for nobody", e.admin, `{}`, 403},
			{"admin for an unknown user", e.admin, `{"user_id":"zed"}`, 422},
			{"no token", "", `{}`, 401},
		}
		for _, c := range cases {
			if got, body := e.call(t, "POST", "/v1/enrolment-codes", c.token, c.body); got != c.want {
				t.Errorf("%s: %d %s, want %d", c.name, got, body, c.want)
			}
		}
		if got, body := e.call(t, "GET", "/v1/devices", e.nurse, ""); got != 200 || !strings.Contains(body, id.DeviceID) {
			t.Fatalf("device list: %d %s", got, body)
		}
		if _, err := audit.Verify(ctx, d); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRemoteWipe(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newLifecycleEnv(t, d)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		id, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, issueCode(t, e, "root", "ana"), "phone", "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := deviceclient.Dial(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		got := make(chan error, 1)
		go func() { _, err := conn.Next(ctx); got <- err }()

		// Another user may not report ana's phone lost; she may.
		if code, _ := e.call(t, "POST", "/v1/devices/"+id.DeviceID+"/wipe", e.nurse, ""); code != 403 {
			t.Fatalf("a clinician revoked a device: %d", code)
		}
		if code, body := e.call(t, "POST", "/v1/devices/"+id.DeviceID+"/lost", e.nurse, ""); code != 202 {
			t.Fatalf("report lost: %d %s", code, body)
		}
		// It stops receiving at once: nothing is paged to it any more.
		devs, err := messaging.ActiveDevices(ctx, d, "ana")
		if err != nil || len(devs) != 0 {
			t.Fatalf("a device being wiped is still active: %v %v", devs, err)
		}
		// The live connection is told to wipe; it confirms.
		if err := <-got; !errors.Is(err, deviceclient.ErrWiped) {
			t.Fatalf("want a wipe order, got %v", err)
		}
		if err := conn.ConfirmWipe(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			dev, err := messaging.GetDevice(ctx, d, id.DeviceID)
			if err == nil && dev.State == messaging.DeviceWiped {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("device not wiped: %+v %v", dev, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := auth.Lookup(ctx, d, id.Token); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a wiped device's credential still works: %v", err)
		}
		if _, err := deviceclient.Dial(ctx, id); err == nil {
			t.Fatal("a wiped device reconnected")
		}
		if _, err := audit.Verify(ctx, d); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWipeOnNextConnectionAndOffboarding(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newLifecycleEnv(t, d)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var phones []*deviceclient.Identity
		for i := 0; i < 2; i++ {
			id, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, issueCode(t, e, "root", "ben"), "phone", "")
			if err != nil {
				t.Fatal(err)
			}
			phones = append(phones, id)
		}
		code, body := e.call(t, "POST", "/v1/users/ben/offboard", e.admin, "")
		if code != 202 || !strings.Contains(body, phones[0].DeviceID) || !strings.Contains(body, phones[1].DeviceID) {
			t.Fatalf("offboard: %d %s", code, body)
		}
		// Offline when it was wiped: told on its next connection.
		conn, err := deviceclient.Dial(ctx, phones[0])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Next(ctx); !errors.Is(err, deviceclient.ErrWiped) {
			t.Fatalf("want a wipe order on connect, got %v", err)
		}
		// Until it confirms, it may not act.
		if code, _ := e.call(t, "POST", "/v1/messages/msg_x/response", phones[1].Token, `{"response":"accept"}`); code != 403 {
			t.Fatalf("a device being wiped answered a message: %d", code)
		}
	})
}

func TestRotateKey(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newLifecycleEnv(t, d)
		ctx := context.Background()
		id, err := deviceclient.RegisterWithCode(ctx, e.srv.URL, issueCode(t, e, "root", "ana"), "phone", "")
		if err != nil {
			t.Fatal(err)
		}
		old := id.PrivateKey
		if err := deviceclient.RotateKey(ctx, id, messaging.SuiteXWing); err != nil {
			t.Fatal(err)
		}
		dev, err := messaging.GetDevice(ctx, d, id.DeviceID)
		if err != nil || dev.Suite != messaging.SuiteXWing || len(id.PreviousKeys) != 1 || string(id.PreviousKeys[0].PrivateKey) != string(old) {
			t.Fatalf("after rotation: %+v %+v %v", dev, id.PreviousKeys, err)
		}
		// The new public key is the one messages are now sealed to.
		sealed, err := messaging.Seal(dev.Suite, dev.PublicKey, []byte("info"), []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := messaging.Open(id.Suite, id.PrivateKey, []byte("info"), sealed); err != nil || string(pt) != "hello" {
			t.Fatalf("new key cannot open: %v", err)
		}
		if code, _ := e.call(t, "PUT", "/v1/devices/me/key", id.Token, `{"suite":"nope","public_key":"AAAA"}`); code != 422 {
			t.Fatalf("bad key accepted: %d", code)
		}
	})
}
