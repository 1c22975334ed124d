package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

var now = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

func issue(t *testing.T, d *db.DB, kind, subject, role string) string {
	t.Helper()
	token, err := auth.Issue(context.Background(), d, kind, subject, role, now)
	if err != nil {
		t.Fatalf("Issue(%s, %s, %s): %v", kind, subject, role, err)
	}
	return token
}

func TestIssueLookupRevoke(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		ana := issue(t, d, auth.KindUser, "ana", auth.RoleScheduler)
		ana2 := issue(t, d, auth.KindUser, "ana", auth.RoleClinician)
		ben := issue(t, d, auth.KindUser, "ben", auth.RoleAdmin)
		anaDevice := issue(t, d, auth.KindDevice, "ana", auth.RoleDevice) // same subject, other kind
		if !strings.HasPrefix(ana, "clr_") || ana == ana2 {
			t.Fatalf("tokens %q, %q", ana, ana2)
		}

		p, err := auth.Lookup(ctx, d, ana)
		if err != nil {
			t.Fatal(err)
		}
		if want := (auth.Principal{Kind: auth.KindUser, Subject: "ana", Role: auth.RoleScheduler}); p != want {
			t.Fatalf("Lookup = %+v, want %+v", p, want)
		}

		// Only the token's hash is stored.
		var n int
		if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_tokens WHERE hash = $1 OR subject = $1`, ana).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatal("a token is stored in clear")
		}

		for _, bad := range []string{"", "clr_unknown", ana + "x", strings.ToUpper(ana)} {
			if _, err := auth.Lookup(ctx, d, bad); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("Lookup(%q) = %v, want ErrUnauthenticated", bad, err)
			}
		}

		if err := auth.RevokeSubject(ctx, d, auth.KindUser, "ana", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		for _, revoked := range []string{ana, ana2} {
			if _, err := auth.Lookup(ctx, d, revoked); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("Lookup of a revoked token = %v, want ErrUnauthenticated", err)
			}
		}
		for _, kept := range []string{ben, anaDevice} {
			if _, err := auth.Lookup(ctx, d, kept); err != nil {
				t.Fatalf("revoking user ana revoked another token: %v", err)
			}
		}
		// Revoking again is harmless; a token issued afterwards works.
		if err := auth.RevokeSubject(ctx, d, auth.KindUser, "ana", now.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.Lookup(ctx, d, issue(t, d, auth.KindUser, "ana", auth.RoleScheduler)); err != nil {
			t.Fatalf("new token after revocation: %v", err)
		}
	})
}

func TestIssueUnknownRole(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		for _, role := range []string{"", "root", "Admin"} {
			if token, err := auth.Issue(ctx, d, auth.KindUser, "ana", role, now); err == nil || token != "" {
				t.Fatalf("Issue with role %q = %q, %v; want an error", role, token, err)
			}
		}
		var n int
		if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_tokens`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d tokens stored after refused issues", n)
		}
	})
}

func TestMiddlewareAndRequire(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		r := gin.New()
		r.Use(auth.Middleware(d))
		r.GET("/v1/roster", auth.Require(auth.RoleAdmin, auth.RoleScheduler), func(c *gin.Context) {
			p := auth.From(c)
			c.String(http.StatusOK, p.Kind+"/"+p.Subject+"/"+p.Role)
		})

		scheduler := issue(t, d, auth.KindUser, "sched", auth.RoleScheduler)
		admin := issue(t, d, auth.KindUser, "boss", auth.RoleAdmin)
		device := issue(t, d, auth.KindDevice, "dev_1", auth.RoleDevice)
		revoked := issue(t, d, auth.KindUser, "gone", auth.RoleAdmin)
		if err := auth.RevokeSubject(context.Background(), d, auth.KindUser, "gone", now); err != nil {
			t.Fatal(err)
		}

		cases := []struct {
			name          string
			authorization string // "" sends no header
			wantCode      int
			wantChallenge string // WWW-Authenticate, "" for none
			wantBody      string // a substring of the body
		}{
			{"no header", "", http.StatusUnauthorized, `Bearer realm="clarion"`, "missing bearer token"},
			{"other scheme", "Basic " + scheduler, http.StatusUnauthorized, `Bearer realm="clarion"`, "missing bearer token"},
			{"empty bearer", "Bearer ", http.StatusUnauthorized, `Bearer realm="clarion"`, "missing bearer token"},
			{"bad token", "Bearer clr_notatoken", http.StatusUnauthorized, `Bearer realm="clarion", error="invalid_token"`, "invalid or revoked"},
			{"revoked token", "Bearer " + revoked, http.StatusUnauthorized, `Bearer realm="clarion", error="invalid_token"`, "invalid or revoked"},
			{"device token", "Bearer " + device, http.StatusForbidden, "", "role not permitted"},
			{"scheduler token", "Bearer " + scheduler, http.StatusOK, "", "user/sched/scheduler"},
			{"admin token", "Bearer " + admin, http.StatusOK, "", "user/boss/admin"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, "/v1/roster", nil)
				if c.authorization != "" {
					req.Header.Set("Authorization", c.authorization)
				}
				rec := httptest.NewRecorder()
				r.ServeHTTP(rec, req)
				if rec.Code != c.wantCode {
					t.Fatalf("status %d, want %d (body %s)", rec.Code, c.wantCode, rec.Body)
				}
				if got := rec.Header().Get("WWW-Authenticate"); got != c.wantChallenge {
					t.Fatalf("WWW-Authenticate %q, want %q", got, c.wantChallenge)
				}
				if !strings.Contains(rec.Body.String(), c.wantBody) {
					t.Fatalf("body %q does not contain %q", rec.Body, c.wantBody)
				}
			})
		}
	})
}
