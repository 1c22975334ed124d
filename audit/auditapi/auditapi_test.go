package auditapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/audit/auditapi"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

type server struct {
	t      *testing.T
	d      *db.DB
	h      http.Handler
	tokens map[string]string // role → token
}

func newServer(t *testing.T, d *db.DB) *server {
	t.Helper()
	ctx := context.Background()
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	s := &server{t: t, d: d, tokens: map[string]string{}}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for _, role := range []string{auth.RoleAuditor, auth.RoleAdmin, auth.RoleClinician} {
			tok, err := auth.Issue(ctx, tx, auth.KindUser, role+"1", role, t0)
			if err != nil {
				return err
			}
			s.tokens[role] = tok
		}
		for i, action := range []string{"alert.opened", "message.sent", "message.read"} {
			if err := audit.Append(ctx, tx, audit.Entry{At: t0.Add(time.Duration(i) * time.Minute), ActorType: audit.ActorSystem,
				ActorID: "test", Action: action, ObjectType: "alert", ObjectID: "alr_1", CorrelationID: "evt_1"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = audit.ChainAll(ctx, d)
	}
	if err == nil {
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			_, _, err := audit.WriteCheckpoint(ctx, tx, signer, t0)
			return err
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.TestMode)
	r := gin.New()
	api := r.Group("/", auth.Middleware(d))
	auditapi.New(d, []ed25519.PublicKey{signer.Public()}, "clarion-test", slog.New(slog.NewTextHandler(io.Discard, nil)),
		func() time.Time { return t0 }).RegisterRoutes(api)
	s.h = r
	return s
}

func (s *server) get(role, path string) (int, []byte) {
	s.t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "192.0.2.10:4711"
	req.Header.Set("X-Forwarded-For", "203.0.113.99") // spoofable: must not be recorded
	req.Header.Set("Authorization", "Bearer "+s.tokens[role])
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, req)
	return w.Code, w.Body.Bytes()
}

// last returns the newest audit record.
func (s *server) last() audit.Record {
	s.t.Helper()
	if err := audit.ChainAll(context.Background(), s.d); err != nil {
		s.t.Fatal(err)
	}
	head, _ := audit.Head(context.Background(), s.d)
	page, err := audit.Query(context.Background(), s.d, audit.Filter{After: head - 1})
	if err != nil || len(page.Records) != 1 {
		s.t.Fatalf("last record: %v", err)
	}
	return page.Records[0]
}

func TestAuditAPI(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		s := newServer(t, d)
		t.Run("roles", func(t *testing.T) {
			for _, c := range []struct {
				role string
				want int
			}{{auth.RoleClinician, 403}, {auth.RoleAuditor, 200}, {auth.RoleAdmin, 200}} {
				if code, _ := s.get(c.role, "/v1/audit/records"); code != c.want {
					t.Errorf("%s: %d, want %d", c.role, code, c.want)
				}
			}
		})
		t.Run("query is paged and audited", func(t *testing.T) {
			code, body := s.get(auth.RoleAuditor, "/v1/audit/records?correlation_id=evt_1&limit=2")
			var page audit.PageResult
			if code != 200 || json.Unmarshal(body, &page) != nil || len(page.Records) != 2 || page.Next != 2 {
				t.Fatalf("%d %s", code, body)
			}
			r := s.last()
			if r.Action != "audit.queried" || r.ActorID != "auditor1" || r.ActorRole != auth.RoleAuditor ||
				r.SourceAddr != "192.0.2.10" || !strings.Contains(string(r.Detail), `"correlation_id":"evt_1"`) ||
				!strings.Contains(string(r.Detail), `"returned":2`) {
				t.Fatalf("query audit record: %+v %s", r, r.Detail)
			}
		})
		t.Run("a bad filter names the field", func(t *testing.T) {
			code, body := s.get(auth.RoleAuditor, "/v1/audit/records?from=yesterday")
			if code != 422 || !bytes.Contains(body, []byte("from")) {
				t.Fatalf("%d %s", code, body)
			}
		})
		for _, c := range []struct{ format, want string }{
			{"jsonl", `"action":"alert.opened"`},
			{"csv", "seq,at,actor_type"},
			{"fhir", `"resourceType":"Bundle"`},
		} {
			t.Run("export "+c.format, func(t *testing.T) {
				code, body := s.get(auth.RoleAuditor, "/v1/audit/export?format="+c.format+"&action=alert.*")
				if code != 200 || !bytes.Contains(body, []byte(c.want)) {
					t.Fatalf("%d %s", code, body)
				}
				r := s.last()
				if r.Action != "audit.exported" || !strings.Contains(string(r.Detail), `"format":"`+c.format+`"`) {
					t.Fatalf("export audit record: %+v %s", r, r.Detail)
				}
			})
		}
		t.Run("verify, intact then broken", func(t *testing.T) {
			code, body := s.get(auth.RoleAuditor, "/v1/audit/verify")
			if code != 200 || !bytes.Contains(body, []byte(`"ok":true`)) || !bytes.Contains(body, []byte(`"signatures_checked":true`)) {
				t.Fatalf("%d %s", code, body)
			}
			if s.last().Action != "audit.verified" {
				t.Fatal("verification not audited")
			}
			if _, err := d.Exec(`UPDATE audit_log SET outcome = 'edited' WHERE seq = 2`); err != nil {
				t.Fatal(err) // no guard installed here: this test is about the API
			}
			code, body = s.get(auth.RoleAdmin, "/v1/audit/verify")
			if code != 200 || !bytes.Contains(body, []byte(`"ok":false`)) || !bytes.Contains(body, []byte(`"first_bad_record":2`)) {
				t.Fatalf("%d %s", code, body)
			}
		})
		t.Run("checkpoints and keys", func(t *testing.T) {
			code, body := s.get(auth.RoleAuditor, "/v1/audit/checkpoints")
			if code != 200 || !bytes.Contains(body, []byte(`"seq":3`)) {
				t.Fatalf("%d %s", code, body)
			}
			code, body = s.get(auth.RoleAuditor, "/v1/audit/public-keys")
			keys, err := audit.ParsePublicKeys(string(body))
			if code != 200 || err != nil || len(keys) != 1 {
				t.Fatalf("%d %s %v", code, body, err)
			}
		})
	})
}
