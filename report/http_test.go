package report_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/report"
)

func TestResponseAPI(t *testing.T) {
	d := dbtest.SQLite(t)
	seed(t, d)
	ctx := context.Background()
	tokens := map[string]string{}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for _, role := range []string{auth.RoleAuditor, auth.RoleAdmin, auth.RoleClinician, auth.RoleScheduler} {
			tok, err := auth.Issue(ctx, tx, auth.KindUser, role+"1", role, t0)
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
	gin.SetMode(gin.TestMode)
	r := gin.New()
	report.NewAPI(d, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return t0.Add(time.Hour) }).
		RegisterRoutes(r.Group("/", auth.Middleware(d)))
	q := "?from=2026-11-23T08:00:00Z&to=2026-11-23T09:00:00Z&group_by="
	cases := []struct {
		name, role, groupBy string
		want                int
	}{
		{"auditor by user", auth.RoleAuditor, "user", 200},
		{"admin by rule", auth.RoleAdmin, "rule", 200},
		{"a charge nurse by unit", auth.RoleClinician, "unit", 200},
		{"a charge nurse by role", auth.RoleClinician, "role", 200},
		{"not a charge nurse by user", auth.RoleClinician, "user", 403},
		{"not a scheduler", auth.RoleScheduler, "unit", 403},
		{"an unknown grouping names the field", auth.RoleAuditor, "ward", 422},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/reports/response"+q+c.groupBy, nil)
			req.Header.Set("Authorization", "Bearer "+tokens[c.role])
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != c.want {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if c.want != 200 {
				return
			}
			var rep report.Report
			if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil || rep.GroupBy != c.groupBy {
				t.Fatalf("%v %s", err, w.Body)
			}
			checkReport(t, rep, c.groupBy)
			dbtest.ChainAudit(t, d)
			page, _ := audit.Query(ctx, d, audit.Filter{Action: "report.viewed", ActorID: c.role + "1"})
			if len(page.Records) == 0 {
				t.Fatal("report not audited")
			}
		})
	}
}
