package auth_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestParseScope(t *testing.T) {
	cases := []struct {
		name, scope string
		ok          bool
		resource    string
		access      string
	}{
		{"v1 write", "system/Observation.write", true, "Observation", "cud"},
		{"v1 read", "system/AuditEvent.read", true, "AuditEvent", "rs"},
		{"v1 wildcard type", "system/*.read", true, "*", "rs"},
		{"v1 all", "system/*.*", true, "*", "cruds"},
		{"v2 letters", "system/Flag.rs", true, "Flag", "rs"},
		{"v2 create only", "system/Observation.c", true, "Observation", "c"},
		{"v2 letters out of order", "system/Flag.sr", false, "", ""},
		{"v2 letter twice", "system/Flag.rr", false, "", ""},
		{"user scope", "user/Observation.read", false, "", ""},
		{"patient scope", "patient/*.read", false, "", ""},
		{"no access", "system/Observation", false, "", ""},
		{"bad access", "system/Observation.admin", false, "", ""},
		{"lowercase type", "system/observation.read", false, "", ""},
		{"empty type", "system/.read", false, "", ""},
	}
	for _, c := range cases {
		s, err := auth.ParseScope(c.scope)
		if (err == nil) != c.ok {
			t.Errorf("%s: ParseScope(%q) error %v", c.name, c.scope, err)
			continue
		}
		var ie *auth.InvalidScopeError
		if err != nil && !errors.As(err, &ie) {
			t.Errorf("%s: error %T is not an InvalidScopeError", c.name, err)
		}
		if c.ok && (s.Resource != c.resource || s.Access != c.access || s.String() != c.scope) {
			t.Errorf("%s: %+v", c.name, s)
		}
	}
}

func TestScopesAllow(t *testing.T) {
	ss, err := auth.ParseScopes("system/Observation.write, system/*.read system/Flag.c system/Observation.write")
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 3 || ss.String() != "system/Observation.write system/*.read system/Flag.c" {
		t.Fatalf("parsed %q", ss.String())
	}
	cases := []struct {
		typ    string
		access auth.Access
		want   bool
	}{
		{"Observation", auth.AccessCreate, true},
		{"Observation", auth.AccessRead, true},
		{"Encounter", auth.AccessCreate, false},
		{"AuditEvent", auth.AccessSearch, true},
		{"Flag", auth.AccessCreate, true},
		{"Flag", auth.AccessDelete, false},
	}
	for _, c := range cases {
		if got := ss.Allows(c.typ, c.access); got != c.want {
			t.Errorf("Allows(%s, %c) = %v", c.typ, c.access, got)
		}
	}
	need, _ := auth.ParseScope("system/Observation.write")
	if !ss.Covers(need) {
		t.Error("Covers")
	}
	if (auth.Scopes{}).Allows("Observation", auth.AccessRead) {
		t.Error("no scopes allow nothing")
	}
}

func TestIssueWithScopesAndMiddleware(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		scopes, _ := auth.ParseScopes("system/Observation.write system/Flag.read")
		var tok string
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			var err error
			tok, err = auth.IssueWithScopes(ctx, tx, auth.KindIntegration, "rpm1", auth.RoleIntegration, scopes, now)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		plain := issue(t, d, auth.KindUser, "ana", auth.RoleAdmin)
		p, got, err := auth.LookupWithScopes(ctx, d, tok)
		if err != nil || p.Subject != "rpm1" || got.String() != scopes.String() {
			t.Fatalf("lookup: %+v %q %v", p, got.String(), err)
		}
		if _, got, _ := auth.LookupWithScopes(ctx, d, plain); len(got) != 0 {
			t.Fatalf("a token issued without scopes has %q", got.String())
		}
		if p, err := auth.Lookup(ctx, d, tok); err != nil || p.Role != auth.RoleIntegration {
			t.Fatalf("Lookup still works: %+v %v", p, err)
		}
		denied := map[int]int{}
		deny := func(c *gin.Context, status int, reason string) {
			denied[status]++
			c.String(status, reason)
		}
		r := gin.New()
		g := r.Group("/", auth.ScopeMiddleware(d, deny))
		g.POST("/obs", auth.RequireScope("system/Observation.write", deny), func(c *gin.Context) {
			c.String(200, auth.From(c).Subject)
		})
		g.GET("/audit", auth.RequireScope("system/AuditEvent.read", deny), func(c *gin.Context) { c.Status(200) })
		cases := []struct {
			name, method, path, token string
			want                      int
		}{
			{"scoped write", "POST", "/obs", tok, 200},
			{"missing scope", "GET", "/audit", tok, 403},
			{"token without scopes", "POST", "/obs", plain, 403},
			{"no token", "POST", "/obs", "", 401},
			{"unknown token", "POST", "/obs", "clr_nope", 401},
		}
		for _, c := range cases {
			req := httptest.NewRequest(c.method, c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != c.want {
				t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
			}
		}
		if denied[401] != 2 || denied[403] != 2 {
			t.Fatalf("deny calls %v", denied)
		}
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/obs", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		r.ServeHTTP(w, req)
		if w.Body.String() != "rpm1" {
			t.Fatalf("principal not set: %q", w.Body.String())
		}
	})
}
