package oncall_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
)

type apiFixture struct {
	t      *testing.T
	srv    http.Handler
	tokens map[string]string // admin, sched (4W), other (scheduler of nothing), ann (clinician)
}

func newAPIFixture(t *testing.T, d *db.DB) *apiFixture {
	t.Helper()
	seedHospital(t, d)
	ctx := context.Background()
	clock := func() time.Time { return now }
	idx := oncall.NewIndex(d, clock, oncall.IndexOptions{})
	if err := idx.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	api := oncall.NewAPIWithIndex(d, slog.New(slog.DiscardHandler), clock, idx)
	gin.SetMode(gin.TestMode)
	r := gin.New()
	api.RegisterPublicRoutes(r)
	api.RegisterRoutes(r.Group("/", auth.Middleware(d)))
	f := &apiFixture{t: t, srv: r, tokens: map[string]string{}}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for name, role := range map[string]string{"admin": auth.RoleAdmin, "sched": auth.RoleScheduler,
			"other": auth.RoleScheduler, "ann": auth.RoleClinician} {
			tok, err := auth.Issue(ctx, tx, auth.KindUser, name, role, now)
			if err != nil {
				return err
			}
			f.tokens[name] = tok
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// do sends a request as who ("" for none) and returns status and body.
func (f *apiFixture) do(who, method, path string, body any) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+f.tokens[who])
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	return w.Code, w.Body.Bytes()
}

func TestAPIRosterEdits(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newAPIFixture(t, d)
		hole := map[string]any{"unit_id": "4W", "role": "RN", "kind": "remove", "user_id": "bob",
			"start": local(5, 19), "end": local(6, 7)}
		cover := map[string]any{"unit_id": "ICU", "role": "RN", "kind": "add", "user_id": "cat",
			"start": local(5, 19), "end": local(6, 7)}
		withConfirm := map[string]any{"confirm_gap": true}
		for k, v := range hole {
			withConfirm[k] = v
		}
		cases := []struct {
			name         string
			who          string
			method, path string
			body         any
			want         int
			contains     string
		}{
			{"no token", "", "GET", "/v1/oncall?unit=4W&role=RN", nil, 401, ""},
			{"who is on", "ann", "GET", "/v1/oncall?unit=4W&role=RN&at=2026-03-02T10:00:00-05:00", nil, 200, `"holders":["ann"]`},
			{"next shifts", "ann", "GET", "/v1/oncall/next?unit=4W&role=RN&n=2", nil, 200, `"user_id":"bob"`},
			{"a clinician cannot edit", "ann", "POST", "/v1/overrides", cover, 403, ""},
			{"a scheduler outside their units", "sched", "POST", "/v1/overrides", cover, 403, "not assigned"},
			{"a gap is refused", "sched", "POST", "/v1/overrides", hole, 409, `"gaps":[{"unit_id":"4W"`},
			{"a confirmed gap is applied and flagged", "sched", "POST", "/v1/overrides", withConfirm, 201, `"gap_confirmed":true`},
			{"coverage shows it", "sched", "GET", "/v1/coverage?unit=4W", nil, 200, `"start":"2026-03-05T19:00:00-05:00"`},
			{"another scheduler cannot see 4W", "other", "GET", "/v1/coverage?unit=4W", nil, 403, ""},
			{"a bad rotation names the field", "sched", "PUT", "/v1/rotations/x", map[string]any{"unit_id": "4W", "role": "RN",
				"kind": "interval", "participants": []string{"ann"}, "start_date": "2026-03-01", "length": 12, "length_unit": "fortnights",
				"handoff": "07:00"}, 422, "length_unit"},
			{"a clinician sees own shifts", "ann", "GET", "/v1/users/ann/shifts", nil, 200, `"role":"RN"`},
			{"not another's", "ann", "GET", "/v1/users/bob/shifts", nil, 403, ""},
			{"csv with bad lines", "sched", "POST", "/v1/roster/import",
				"kind,unit_id,role,user_id,replaces_user_id,start,end\nshift,4W,RN,cat,,2026-03-05T19:00,nope\n", 422, `"line":2,"field":"end"`},
			{"csv import", "sched", "POST", "/v1/roster/import",
				"kind,unit_id,role,user_id,replaces_user_id,start,end\nadd,4W,RN,cat,,2026-03-05T19:00,2026-03-06T07:00\n", 200, `"applied":1`},
			{"csv export", "sched", "GET", "/v1/roster/export?unit=4W", nil, 200, "add,4W,RN,cat,,2026-03-05T19:00:00-05:00"},
			{"the hole is closed", "sched", "GET", "/v1/coverage?unit=4W", nil, 200, `"gaps":[]`},
			{"admin assigns a scheduler", "admin", "PUT", "/v1/units/ICU/schedulers/cat", nil, 200, ""},
		}
		for _, c := range cases {
			code, body := f.do(c.who, c.method, c.path, c.body)
			if code != c.want || !strings.Contains(string(body), c.contains) {
				t.Fatalf("%s: %s %s = %d %s, want %d containing %s", c.name, c.method, c.path, code, body, c.want, c.contains)
			}
		}
	})
}

func TestICalFeed(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newAPIFixture(t, d)
		code, body := f.do("sched", "POST", "/v1/ical-tokens", map[string]any{"kind": "unit_role", "unit_id": "4W", "role": "RN"})
		if code != 201 {
			t.Fatalf("create token: %d %s", code, body)
		}
		var created struct {
			Token oncall.FeedToken `json:"token"`
			Path  string           `json:"path"`
		}
		if err := json.Unmarshal(body, &created); err != nil {
			t.Fatal(err)
		}
		if code, _ := f.do("other", "POST", "/v1/ical-tokens", map[string]any{"kind": "unit_role", "unit_id": "4W", "role": "RN"}); code != 403 {
			t.Fatalf("a scheduler of other units made a 4W feed: %d", code)
		}
		if code, _ := f.do("ann", "POST", "/v1/ical-tokens", map[string]any{"kind": "user", "user_id": "ann"}); code != 201 {
			t.Fatalf("a clinician's own feed: %d", code)
		}

		code, feed := f.do("", "GET", created.Path, nil) // no bearer: the URL is the credential
		if code != 200 || !bytes.HasPrefix(feed, []byte("BEGIN:VCALENDAR\r\n")) {
			t.Fatalf("feed: %d %s", code, feed)
		}
		events := parseWithICalJS(t, feed)
		if events != nil {
			// From 1 March (the rotation's start) to 35 days ahead of 2 March, two shifts a day.
			if len(events.Events) < 70 || events.Name != "On call: RN 4W" {
				t.Fatalf("ical.js read %d events named %q", len(events.Events), events.Name)
			}
			seen, dstNight := map[string]bool{}, false
			for _, e := range events.Events {
				if seen[e.UID] || e.Stamp != "2026-03-02T14:00:00.000Z" {
					t.Fatalf("event %+v (uid repeated or wrong DTSTAMP)", e)
				}
				seen[e.UID] = true
				// The night as DST starts, read back by a real parser: 11 hours.
				if e.Start == "2026-03-08T00:00:00.000Z" {
					dstNight = true
					if e.End != "2026-03-08T11:00:00.000Z" || e.Summary != "RN 4W: User bob" {
						t.Fatalf("DST night read as %+v", e)
					}
				}
			}
			if !dstNight {
				t.Fatal("no event for the night DST starts")
			}
		}

		if code, _ := f.do("sched", "DELETE", "/v1/ical-tokens/"+created.Token.ID, nil); code != 204 {
			t.Fatalf("revoke: %d", code)
		}
		if code, _ := f.do("", "GET", created.Path, nil); code != 404 {
			t.Fatalf("revoked feed answered %d", code)
		}
	})
}

type icalJSResult struct {
	Name   string `json:"name"`
	Events []struct {
		UID     string `json:"uid"`
		Summary string `json:"summary"`
		Start   string `json:"start"`
		End     string `json:"end"`
		Stamp   string `json:"stamp"`
	} `json:"events"`
}

// parseWithICalJS parses a feed with the ical.js library (npm), installed
// once into the user cache directory. It skips the check, saying why, when
// node or npm is missing or the npm registry cannot be reached; it returns
// nil then.
func parseWithICalJS(t *testing.T, feed []byte) *icalJSResult {
	t.Helper()
	const version = "2.2.1"
	if _, err := exec.LookPath("node"); err != nil {
		skipICal(t, "SKIPPED the ical.js check: node is not installed")
		return nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "clarion-test", "icaljs-"+version)
	lib := filepath.Join(dir, "node_modules", "ical.js")
	if _, err := os.Stat(filepath.Join(lib, "package.json")); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			skipICal(t, "SKIPPED the ical.js check: npm is not installed")
			return nil
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "ical.js@"+version).CombinedOutput()
		if err != nil {
			skipICal(t, fmt.Sprintf("SKIPPED the ical.js check: npm install ical.js@%s failed: %v\n%s", version, err, out))
			return nil
		}
	}
	file := filepath.Join(t.TempDir(), "feed.ics")
	if err := os.WriteFile(file, feed, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("node", "testdata/icalparse.cjs", lib, file).CombinedOutput()
	if err != nil {
		t.Fatalf("ical.js rejected the feed: %v\n%s", err, out)
	}
	var res icalJSResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ical.js output: %v\n%s", err, out)
	}
	return &res
}

// skipICal lets a developer without Node run the suite, but CI (CI=true),
// which installs Node, must not pass without the real parser's check.
func skipICal(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Log(why)
}
