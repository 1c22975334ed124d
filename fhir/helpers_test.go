package fhir

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

// clock is a settable test clock.
type clock struct{ t atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.t.Store(t.UnixMicro())
	return c
}
func (c *clock) now() time.Time          { return time.UnixMicro(c.t.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.t.Add(d.Microseconds()) }

// fixture is one FHIR interface under test.
type fixture struct {
	t      testing.TB
	db     *db.DB
	api    *API
	engine *gin.Engine
	keys   *atrest.Keyring
	clock  *clock
	kicks  atomic.Int64
	logs   *bytes.Buffer
}

func testKeys(t testing.TB) *atrest.Keyring {
	k, err := atrest.NewKeyring("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newFixture(t testing.TB, d *db.DB, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{t: t, db: d, keys: testKeys(t), clock: newClock(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)),
		logs: &bytes.Buffer{}}
	log := slog.New(slog.NewJSONHandler(f.logs, nil))
	api, err := New(d, ingest.NewStore(f.keys, d.SkipLocked()), f.keys, log, f.clock.now, func() { f.kicks.Add(1) },
		append([]Option{WithBaseURL("http://clarion.test/fhir")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.api = api
	f.engine = gin.New()
	api.RegisterRoutes(f.engine)
	admin := f.engine.Group("/", auth.Middleware(d))
	api.RegisterAdminRoutes(admin)
	return f
}

// token issues a token with scopes.
func (f *fixture) token(subject, scopes string) string {
	f.t.Helper()
	sc, err := auth.ParseScopes(scopes)
	if err != nil {
		f.t.Fatal(err)
	}
	var tok string
	err = f.db.InTx(context.Background(), func(tx *sql.Tx) error {
		var err error
		tok, err = auth.IssueWithScopes(context.Background(), tx, auth.KindIntegration, subject, auth.RoleIntegration, sc, f.clock.now())
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func (f *fixture) adminToken() string {
	f.t.Helper()
	tok, err := auth.Issue(context.Background(), f.db, auth.KindUser, "admin1", auth.RoleAdmin, f.clock.now())
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// response is an answer, decoded.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %s", r.status, r.body)
	}
	return m
}

// issueCodes lists the codes of an OperationOutcome answer.
func (r response) issueCodes(t testing.TB) []string {
	t.Helper()
	m := r.json(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("want an OperationOutcome, got %s", r.body)
	}
	var out []string
	for _, is := range m["issue"].([]any) {
		out = append(out, is.(map[string]any)["code"].(string))
	}
	return out
}

func (r response) expressions(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, is := range r.json(t)["issue"].([]any) {
		for _, e := range is.(map[string]any)["expression"].([]any) {
			out = append(out, e.(string))
		}
	}
	return out
}

func (f *fixture) do(method, path, token string, body []byte, headers ...string) response {
	f.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	f.engine.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return response{status: w.Code, header: w.Result().Header, body: b}
}

func fixtureFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// events returns the stored events, oldest first.
func (f *fixture) events() []ingest.Stored {
	f.t.Helper()
	rows, err := f.db.Query(`SELECT id FROM events ORDER BY received_at, id`)
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	store := ingest.NewStore(f.keys, "")
	var out []ingest.Stored
	for _, id := range ids {
		var payload []byte
		if err := f.db.QueryRow(`SELECT payload FROM events WHERE id = $1`, id).Scan(&payload); err != nil {
			f.t.Fatal(err)
		}
		plain, err := f.keys.Open(payload, []byte(id))
		if err != nil {
			f.t.Fatal(err)
		}
		st := ingest.Stored{ID: id}
		if err := json.Unmarshal(plain, &st.Event); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, st)
	}
	_ = store
	return out
}

func (f *fixture) auditActions() []string {
	f.t.Helper()
	if err := audit.ChainAll(context.Background(), f.db); err != nil {
		f.t.Fatal(err)
	}
	rows, err := f.db.Query(`SELECT action FROM audit_log ORDER BY seq`)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		out = append(out, a)
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// roundTrip checks that a served body passes the strict decoder.
func roundTrip(t testing.TB, body []byte) {
	t.Helper()
	dec, err := decode.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Decode(body); err != nil {
		t.Fatalf("served resource does not validate: %v\n%s", err.(*decode.Error).Issues, body)
	}
}

func hasAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
