package routing_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/routing"
)

// hl7Decoder decodes the dry run's HL7 input (cmd/clarion's decoder also
// reads FHIR).
type hl7Decoder struct{}

func (hl7Decoder) DecodeInput(_ context.Context, format string, body []byte) (*ingest.Event, error) {
	m, err := hl7.Parse(bytes.ReplaceAll(body, []byte("\n"), []byte("\r")))
	if err != nil {
		return nil, &routing.InvalidInputError{Reason: err.Error()}
	}
	ev, err := hl7.ToEvent(m)
	if err != nil {
		return nil, &routing.InvalidInputError{Reason: err.Error()}
	}
	return &ev, nil
}

type apiClient struct {
	t      *testing.T
	srv    http.Handler
	tokens map[string]string
}

func newAPIClient(t *testing.T, h *hospital) *apiClient {
	t.Helper()
	gin.SetMode(gin.TestMode)
	r := gin.New()
	api := routing.NewAPI(h.d, slog.New(slog.DiscardHandler), func() time.Time { return h.now },
		routing.WithDryRun(h.router, keyPseudo{}, hl7Decoder{}))
	api.RegisterRoutes(r.Group("/", auth.Middleware(h.d)))
	c := &apiClient{t: t, srv: r, tokens: map[string]string{}}
	err := h.d.InTx(h.ctx, func(tx *sql.Tx) error {
		for name, role := range map[string]string{"admin": auth.RoleAdmin, "auditor": auth.RoleAuditor, "nurse": auth.RoleClinician} {
			tok, err := auth.Issue(h.ctx, tx, auth.KindUser, name, role, h.now)
			if err != nil {
				return err
			}
			c.tokens[name] = tok
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *apiClient) do(who, method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+c.tokens[who])
	w := httptest.NewRecorder()
	c.srv.ServeHTTP(w, req)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w.Code, out
}

func TestRulesAPI(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		c := newAPIClient(t, h)
		rule := map[string]any{"name": "Critical potassium", "enabled": true, "priority": "PH",
			"match":  map[string]any{"codes": []any{map[string]any{"system": "LN", "code": "2823-3"}}, "flags": []string{"HH", "LL"}},
			"target": map[string]any{"role": "RN"}, "policy_id": "nursing",
			"lock_text": "{priority} alert on {unit}", "body": "Bed {bed}: {test} {value} {units} {trend}"}

		if code, _ := c.do("nurse", "PUT", "/v1/rules/k-crit", rule); code != http.StatusForbidden {
			t.Fatalf("clinician PUT: %d, want 403", code)
		}
		code, out := c.do("admin", "PUT", "/v1/rules/k-crit", rule)
		if code != http.StatusOK || out["version"] != float64(1) || out["changed"] != true {
			t.Fatalf("PUT: %d %v", code, out)
		}
		if code, out = c.do("admin", "PUT", "/v1/rules/k-crit", rule); code != http.StatusOK || out["version"] != float64(1) || out["changed"] != false {
			t.Fatalf("PUT unchanged: %d %v, want version 1 unchanged", code, out)
		}
		rule["body"] = "Bed {bed}: {test} {value}"
		if code, out = c.do("admin", "PUT", "/v1/rules/k-crit", rule); code != http.StatusOK || out["version"] != float64(2) {
			t.Fatalf("PUT changed: %d %v, want version 2", code, out)
		}

		// Every problem at once, with rule, field and reason.
		bad := map[string]any{"name": "Bad", "priority": "URGENT", "target": map[string]any{"role": "RN"}, "policy_id": "nope",
			"match": map[string]any{"codes": []any{map[string]any{"code": "1"}}}, "lock_text": "{value}", "when": "obs.x > 1"}
		code, out = c.do("admin", "PUT", "/v1/rules/bad", bad)
		if code != http.StatusUnprocessableEntity {
			t.Fatalf("PUT invalid: %d %v", code, out)
		}
		var fields []string
		for _, p := range out["problems"].([]any) {
			fields = append(fields, p.(map[string]any)["field"].(string))
		}
		if strings.Join(fields, ",") != "priority,lock_text,when,policy_id" {
			t.Errorf("problems on %v, want priority, lock_text, when and policy_id", fields)
		}
		if code, out = c.do("admin", "PUT", "/v1/rules/bad", `{"name": "x", "colour": "red"}`); code != http.StatusBadRequest ||
			!strings.Contains(out["error"].(string), "colour") {
			t.Errorf("unknown field: %d %v", code, out)
		}

		if code, out = c.do("auditor", "GET", "/v1/rules", nil); code != http.StatusOK || len(out["rules"].([]any)) != 1 {
			t.Fatalf("GET rules: %d %v", code, out)
		}
		if code, out = c.do("auditor", "GET", "/v1/rules/k-crit", nil); code != http.StatusOK || out["version"] != float64(2) {
			t.Fatalf("GET rule: %d %v", code, out)
		}
		if code, _ = c.do("admin", "GET", "/v1/rules/nope", nil); code != http.StatusNotFound {
			t.Fatalf("GET unknown: %d", code)
		}

		// Dry run: nothing is written.
		before := h.count(`SELECT COUNT(*) FROM audit_log`)
		msg := "MSH|^~\\&|LAB|GHH|CLARION|GHH|20260302100000||ORU^R01^ORU_R01|m1|P|2.5.1\n" +
			"PID|1||P1||Doe^Jane\nOBR|1||o1|24323-8\n" +
			"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\n"
		code, out = c.do("admin", "POST", "/v1/rules/dry-run", map[string]any{"hl7": msg})
		if code != http.StatusOK {
			t.Fatalf("dry run: %d %v", code, out)
		}
		matches := out["matches"].([]any)
		if len(matches) != 1 {
			t.Fatalf("dry run matches %v", out)
		}
		m := matches[0].(map[string]any)
		alert := m["alert"].(map[string]any)
		if m["rule_id"] != "k-crit" || m["plan"].(map[string]any)["action"] != "open" || alert["lock_screen"] != "PH alert on 4W" ||
			alert["body"] != "Bed B: Potassium 6.9" || alert["unit"] != "4W" || !equalJSON(m["paged_now"], []string{"rn1"}) {
			t.Errorf("dry run match %v", m)
		}
		if after := h.count(`SELECT COUNT(*) FROM audit_log`); after != before || h.count(`SELECT COUNT(*) FROM alerts`) != 0 {
			t.Fatalf("dry run wrote: audit %d → %d, alerts %d", before, after, h.count(`SELECT COUNT(*) FROM alerts`))
		}
		ev := labK(2.1, "LL")
		if code, out = c.do("admin", "POST", "/v1/rules/dry-run", map[string]any{"event": ev}); code != http.StatusOK ||
			len(out["matches"].([]any)) != 1 {
			t.Fatalf("dry run of an event: %d %v", code, out)
		}
		if code, _ = c.do("admin", "POST", "/v1/rules/dry-run", map[string]any{"hl7": msg, "event": ev}); code != http.StatusUnprocessableEntity {
			t.Fatalf("two inputs: %d, want 422", code)
		}
		if code, _ = c.do("auditor", "POST", "/v1/rules/dry-run", map[string]any{"event": ev}); code != http.StatusForbidden {
			t.Fatalf("auditor dry run: %d, want 403", code)
		}

		// Stats over real routing.
		h.route(labK(6.9, "HH"))
		h.at(time.Minute).route(labK(7.0, "HH"))
		code, out = c.do("auditor", "GET", "/v1/rules/k-crit/stats?from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z", nil)
		if code != http.StatusOK || out["opened"] != float64(1) || out["deduplicated"] != float64(1) || out["fired"] != float64(2) {
			t.Fatalf("stats: %d %v", code, out)
		}
		if code, _ = c.do("auditor", "GET", "/v1/rules/k-crit/stats?from=yesterday", nil); code != http.StatusBadRequest {
			t.Fatalf("bad from: %d", code)
		}

		// Delete keeps the history; a new save continues the numbering.
		if code, out = c.do("admin", "DELETE", "/v1/rules/k-crit", nil); code != http.StatusOK || out["version"] != float64(3) {
			t.Fatalf("DELETE: %d %v", code, out)
		}
		if code, _ = c.do("admin", "GET", "/v1/rules/k-crit", nil); code != http.StatusNotFound {
			t.Fatalf("GET deleted: %d", code)
		}
		if code, out = c.do("admin", "PUT", "/v1/rules/k-crit", rule); code != http.StatusOK || out["version"] != float64(4) {
			t.Fatalf("PUT after delete: %d %v", code, out)
		}
		code, out = c.do("auditor", "GET", "/v1/rules/k-crit/versions", nil)
		vs := out["versions"].([]any)
		if code != http.StatusOK || len(vs) != 4 || vs[2].(map[string]any)["deleted"] != true {
			t.Fatalf("versions: %d %v", code, out)
		}
		for _, action := range []string{"rule.saved", "rule.deleted"} {
			if h.count(`SELECT COUNT(*) FROM audit_log WHERE action = $1 AND object_id = 'k-crit'`, action) == 0 {
				t.Errorf("no %s audit record", action)
			}
		}
	})
}

func equalJSON(got any, want []string) bool {
	list, ok := got.([]any)
	if !ok || len(list) != len(want) {
		return false
	}
	for i := range want {
		if list[i] != want[i] {
			return false
		}
	}
	return true
}

func TestApplyRulesPrune(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		h := newHospital(t, d, routing.Options{})
		h.put(kCrit(), hrHigh())
		c := compiler(t)
		var res routing.ApplyResult
		changed := hrHigh()
		changed.Body = "HR {value} {units}"
		err := d.InTx(h.ctx, func(tx *sql.Tx) error {
			var err error
			res, err = routing.ApplyRules(h.ctx, tx, c, actor(), []routing.Rule{changed, spo2Low(nil)}, true, h.now)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(res.Created, ",") != "spo2-low" || strings.Join(res.Updated, ",") != "hr-high" ||
			strings.Join(res.Deleted, ",") != "k-crit" || len(res.Unchanged) != 0 {
			t.Fatalf("apply result %+v", res)
		}
		// A bad file changes nothing, and lists every problem (references too).
		bad := kCrit()
		bad.PolicyID = "missing"
		bad2 := hrHigh()
		bad2.Target = routing.Target{User: "ghost"}
		err = d.InTx(h.ctx, func(tx *sql.Tx) error {
			_, err := routing.ApplyRules(h.ctx, tx, c, actor(), []routing.Rule{bad, bad2}, true, h.now)
			return err
		})
		var re routing.RuleErrors
		if !asRuleErrors(err, &re) || len(re) != 2 || re[0].Field != "policy_id" || re[1].Field != "target.user" {
			t.Fatalf("ApplyRules(bad) = %v", err)
		}
		if n := h.count(`SELECT COUNT(*) FROM rules`); n != 2 {
			t.Fatalf("%d rules after a refused load, want 2", n)
		}
		if n := h.count(`SELECT COUNT(*) FROM audit_log WHERE action = 'rules.loaded'`); n != 2 {
			t.Fatalf("%d rules.loaded records, want 2 (h.put and the prune)", n)
		}
	})
}

func actor() audit.Entry {
	return audit.Entry{ActorType: audit.ActorUser, ActorID: "admin1", ActorRole: "admin"}
}

func asRuleErrors(err error, re *routing.RuleErrors) bool { return errors.As(err, re) }
