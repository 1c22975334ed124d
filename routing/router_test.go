package routing_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

func testKeys(tb testing.TB) *atrest.Keyring {
	tb.Helper()
	k, err := atrest.Parse("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// testPolicy is the policy the tests' rules name: a charge nurse, then the
// failsafe user "sup".
func testPolicy(id string) oncall.Policy {
	return oncall.Policy{ID: id, Name: "Policy " + id, Steps: []oncall.Step{
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "charge-nurse"}}, DelaySeconds: 60},
		{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}},
	}}
}

// putRules saves rules, creating the policies they name when missing
// (audited as policy.saved before the rules).
func putRules(tb testing.TB, d *db.DB, now time.Time, rules ...routing.Rule) {
	tb.Helper()
	ctx := context.Background()
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for _, r := range rules {
			if r.PolicyID == "" {
				continue
			}
			if _, err := oncall.GetPolicy(ctx, tx, r.PolicyID); errors.Is(err, oncall.ErrNotFound) {
				if err := oncall.PutPolicy(ctx, tx, oncall.Actor{Type: audit.ActorUser, ID: "u-admin", Role: "admin"},
					testPolicy(r.PolicyID)); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
		}
		for _, r := range rules {
			if err := routing.PutRule(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorUser, ActorID: "u-admin",
				ActorRole: "admin"}, r, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("put rules: %v", err)
	}
}

func route(t *testing.T, d *db.DB, r *routing.Router, eventID string, ev *ingest.Event, patientID string, now time.Time) routing.Outcome {
	t.Helper()
	ctx := context.Background()
	var out routing.Outcome
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = r.Route(ctx, tx, eventID, ev, fixedPseudo{ev.Patient.Key(), patientID}, now)
		return err
	})
	if err != nil {
		t.Fatalf("route %s: %v", eventID, err)
	}
	return out
}

// fixedPseudo names the patient whose key is key id, and anyone else
// "pt_" + their key: tests choose the pseudonym of the event's patient.
type fixedPseudo struct{ key, id string }

func (p fixedPseudo) Pseudonym(prefix, value string) string {
	if value == p.key {
		return p.id
	}
	return prefix + "_" + value
}

// countRows runs a COUNT query, after linking pending audit records so
// that audit_log holds every committed one.
func countRows(t *testing.T, d *db.DB, query string, args ...any) int {
	t.Helper()
	dbtest.ChainAudit(t, d)
	var n int
	if err := d.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func auditActions(t *testing.T, d *db.DB) []string {
	t.Helper()
	dbtest.ChainAudit(t, d)
	rows, err := d.QueryContext(context.Background(), `SELECT action FROM audit_log ORDER BY seq`)
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func potassiumRule() routing.Rule {
	return routing.Rule{
		ID: "k-crit", Name: "Critical potassium", Enabled: true,
		Match:    routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH", "LL"}},
		Priority: routing.PriorityHigh, TargetRole: "charge-nurse", PolicyID: "pol-1",
		LockText: "{priority} {rule} on {unit}",
		Body:     "{test} {value} {units} ({flag}) in {unit} {room}/{bed}",
	}
}

func labResult(sourceID string, o ...ingest.Observation) *ingest.Event {
	return &ingest.Event{Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: sourceID, Trigger: "ORU^R01",
		Patient: ingest.Patient{ID: "MRN1"}, Location: ingest.Location{Unit: "ED", Room: "3", Bed: "A"}, // stale PV1
		Observations: o}
}

func TestRouterAlertLifecycle(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		keys := testKeys(t)
		router := routing.NewRouter(keys)
		now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
		const patient = "pat_0123456789abcdef"

		disabled := potassiumRule()
		disabled.ID, disabled.Name, disabled.Enabled = "k-any", "Any potassium (off)", false
		disabled.Match.Flags = nil
		putRules(t, d, now, potassiumRule(), disabled)

		// Admit: the context is set.
		admit := &ingest.Event{Kind: ingest.KindAdmit, Source: "ADT^GHH", SourceID: "a1", Trigger: "ADT^A01",
			Patient: ingest.Patient{ID: "MRN1"}, Location: ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"}}
		out := route(t, d, router, "evt_admit", admit, patient, now)
		if len(out.Opened) != 0 || len(out.Updated) != 0 {
			t.Fatalf("admit outcome = %+v, want nothing", out)
		}
		c, ok, err := routing.GetContext(ctx, d, patient)
		if err != nil || !ok {
			t.Fatalf("GetContext after admit: ok=%v err=%v", ok, err)
		}
		wantLoc := ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"}
		if c.Location != wantLoc || !c.Admitted || c.PatientID != patient {
			t.Fatalf("context after admit = %+v, want %+v admitted", c, wantLoc)
		}
		if _, ok, err := routing.GetContext(ctx, d, "pat_unknown"); ok || err != nil {
			t.Fatalf("GetContext(unknown) ok=%v err=%v, want not found", ok, err)
		}

		// First critical result: one alert, located by ADT, not by the stale PV1.
		now = now.Add(time.Minute)
		first := labResult("r1", ingest.Observation{Code: "2823-3", System: "LN", Display: "Potassium", ValueType: "NM",
			Value: "6.8", Numeric: f64(6.8), Units: "mmol/L", Flags: []string{"HH"}})
		out = route(t, d, router, "evt_r1", first, patient, now)
		if len(out.Opened) != 1 || len(out.Updated) != 0 {
			t.Fatalf("first result outcome: opened %d updated %v, want 1 opened", len(out.Opened), out.Updated)
		}
		opened := out.Opened[0]
		if opened.Unit != "4W" {
			t.Errorf("alert unit = %q, want the ADT unit 4W (not the result's stale ED)", opened.Unit)
		}
		if opened.RuleID != "k-crit" || opened.PatientID != patient || opened.EventID != "evt_r1" ||
			opened.State != routing.StateOpen || opened.Priority != routing.PriorityHigh ||
			opened.TargetRole != "charge-nurse" || opened.PolicyID != "pol-1" || opened.Updates != 0 {
			t.Errorf("opened alert = %+v", opened)
		}
		if want := "PH Critical potassium on 4W"; opened.LockText != want {
			t.Errorf("lock text = %q, want %q", opened.LockText, want)
		}
		wantBody := "Potassium 6.8 mmol/L (HH) in 4W 412/B"
		if opened.Body != wantBody {
			t.Errorf("body = %q, want %q", opened.Body, wantBody)
		}
		stored, err := routing.GetAlert(ctx, d, keys, opened.ID, "")
		if err != nil {
			t.Fatalf("GetAlert: %v", err)
		}
		if stored.Body != wantBody || stored.Unit != "4W" || stored.LockText != opened.LockText ||
			stored.DedupKey != patient+"|k-crit" || !stored.CreatedAt.Equal(now) {
			t.Errorf("stored alert = %+v", stored)
		}

		// The body column is sealed: neither the value nor the test name is readable.
		var raw []byte
		if err := d.QueryRowContext(ctx, `SELECT body FROM alerts WHERE id = $1`, opened.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		for _, phi := range []string{"6.8", "Potassium", "412/B", "mmol"} {
			if bytes.Contains(raw, []byte(phi)) {
				t.Errorf("raw body column contains %q: not sealed", phi)
			}
		}
		if _, err := keys.Open(raw, []byte("some-other-row")); err == nil {
			t.Error("sealed body opens under another row id: aad not bound")
		}

		// Second critical result for the same patient and rule: the open alert absorbs it.
		now = now.Add(time.Minute)
		second := labResult("r2", ingest.Observation{Code: "2823-3", System: "LN", Display: "Potassium", ValueType: "NM",
			Value: "7.1", Numeric: f64(7.1), Units: "mmol/L", Flags: []string{"HH"}})
		out = route(t, d, router, "evt_r2", second, patient, now)
		if len(out.Opened) != 0 || !slices.Equal(out.Updated, []string{opened.ID}) {
			t.Fatalf("second result outcome: opened %d updated %v, want updated [%s]", len(out.Opened), out.Updated, opened.ID)
		}
		if n := countRows(t, d, `SELECT COUNT(*) FROM alerts`); n != 1 {
			t.Fatalf("%d alerts after a duplicate result, want 1", n)
		}
		stored, err = routing.GetAlert(ctx, d, keys, opened.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if stored.Updates != 1 || !stored.UpdatedAt.Equal(now) || stored.State != routing.StateOpen {
			t.Errorf("after update: updates=%d updated_at=%v state=%s", stored.Updates, stored.UpdatedAt, stored.State)
		}
		if want := "Potassium 7.1 mmol/L (HH) in 4W 412/B"; stored.Body != want {
			t.Errorf("updated body = %q, want %q", stored.Body, want)
		}

		// Results that match no enabled rule open nothing.
		now = now.Add(time.Minute)
		for i, o := range []ingest.Observation{
			{Code: "2951-2", System: "LN", Display: "Sodium", Value: "171", Numeric: f64(171), Units: "mmol/L", Flags: []string{"HH"}},
			{Code: "2823-3", System: "LN", Display: "Potassium", Value: "4.1", Numeric: f64(4.1), Units: "mmol/L"}, // would fire the disabled rule
			{Code: "2823-3", System: "LN", Display: "Potassium", Value: "5.5", Numeric: f64(5.5), Units: "mmol/L", Flags: []string{"H"}},
		} {
			out = route(t, d, router, "evt_n"+string(rune('0'+i)), labResult("n", o), patient, now)
			if len(out.Opened) != 0 || len(out.Updated) != 0 {
				t.Errorf("non-matching result %s: outcome %+v, want nothing", o.Code, out)
			}
		}
		if n := countRows(t, d, `SELECT COUNT(*) FROM alerts`); n != 1 {
			t.Fatalf("%d alerts after non-matching results, want 1", n)
		}
		if n := countRows(t, d, `SELECT updates FROM alerts WHERE id = $1`, opened.ID); n != 1 {
			t.Fatalf("updates = %d after non-matching results, want 1", n)
		}

		// Another patient with no ADT: a separate alert, located by the result's PV1.
		out = route(t, d, router, "evt_other", labResult("o1", ingest.Observation{Code: "2823-3", System: "LN",
			Display: "Potassium", Value: "1.9", Numeric: f64(1.9), Units: "mmol/L", Flags: []string{"LL"}}), "pat_other", now)
		if len(out.Opened) != 1 || out.Opened[0].Unit != "ED" || out.Opened[0].ID == opened.ID {
			t.Fatalf("other patient: outcome %+v, want one new alert in ED", out)
		}

		// Discharge without a location keeps the last one, and is no longer admitted.
		now = now.Add(time.Minute)
		discharge := &ingest.Event{Kind: ingest.KindDischarge, Source: "ADT^GHH", SourceID: "a3", Trigger: "ADT^A03",
			Patient: ingest.Patient{ID: "MRN1"}}
		route(t, d, router, "evt_discharge", discharge, patient, now)
		c, ok, err = routing.GetContext(ctx, d, patient)
		if err != nil || !ok {
			t.Fatalf("GetContext after discharge: ok=%v err=%v", ok, err)
		}
		if c.Location != wantLoc || c.Admitted {
			t.Fatalf("context after discharge = %+v, want %+v not admitted", c, wantLoc)
		}

		// Every change was audited, in order, and the chain verifies.
		want := []string{"policy.saved", "rule.saved", "rule.saved", "patient.context_updated", "alert.opened",
			"routing.no_holder", "alert.updated", "alert.opened", "routing.no_holder", "patient.context_updated"}
		if got := auditActions(t, d); !slices.Equal(got, want) {
			t.Errorf("audit actions = %v\nwant %v", got, want)
		}
		n, err := audit.Verify(ctx, d)
		if err != nil || n != int64(len(want)) {
			t.Fatalf("audit.Verify: n=%d err=%v, want %d records", n, err, len(want))
		}
		recs, err := audit.ByCorrelation(ctx, d, "evt_r1")
		// Nobody holds charge-nurse in 4W here: the alert goes to the failsafe, said so.
		if err != nil || len(recs) != 2 || recs[0].ObjectID != opened.ID || recs[0].Action != "alert.opened" ||
			recs[1].Action != "routing.no_holder" || !opened.Failsafe {
			t.Fatalf("audit for evt_r1 = %+v, %v", recs, err)
		}
		// Audit carries ids and codes, never PHI.
		var details []string
		rows, err := d.QueryContext(ctx, `SELECT detail FROM audit_log WHERE action LIKE 'alert.%' OR action LIKE 'patient.%'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			details = append(details, s)
		}
		for _, s := range details {
			for _, phi := range []string{"MRN1", "6.8", "7.1", "1.9", "Potassium"} {
				if strings.Contains(s, phi) {
					t.Errorf("audit detail %s contains %q", s, phi)
				}
			}
		}
	})
}

func TestRouterRejectsUnknownKind(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		router := routing.NewRouter(testKeys(t))
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, err := router.Route(ctx, tx, "evt_x", &ingest.Event{Kind: "order"}, fixedPseudo{}, time.Now())
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "unsupported event kind") {
			t.Fatalf("Route(unknown kind) = %v, want unsupported kind error", err)
		}
		if n := countRows(t, d, `SELECT COUNT(*) FROM audit_log`); n != 0 {
			t.Fatalf("%d audit records after a rejected event, want 0", n)
		}
	})
}

func TestPutRuleRejectsInvalidAndVersions(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
		bad := potassiumRule()
		bad.LockText = "{priority} K {value}"
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			return routing.PutRule(ctx, tx, audit.Entry{ActorType: audit.ActorUser, ActorID: "u1"}, bad, now)
		})
		var ire *routing.InvalidRuleError
		if !errors.As(err, &ire) || ire.Field != "lock_text" {
			t.Fatalf("PutRule(bad) = %v, want *InvalidRuleError on lock_text", err)
		}
		putRules(t, d, now, potassiumRule())
		putRules(t, d, now.Add(time.Second), potassiumRule()) // unchanged: no new version
		if v := countRows(t, d, `SELECT version FROM rules WHERE id = 'k-crit'`); v != 1 {
			t.Fatalf("version = %d after saving the same rule twice, want 1", v)
		}
		changed := potassiumRule()
		changed.Body = "{test} {value}"
		putRules(t, d, now.Add(2*time.Second), changed)
		if v := countRows(t, d, `SELECT version FROM rules WHERE id = 'k-crit'`); v != 2 {
			t.Fatalf("version = %d after a change, want 2", v)
		}
		rules, err := routing.Rules(ctx, d)
		if err != nil || len(rules) != 1 || rules[0].ID != "k-crit" || rules[0].Body != changed.Body {
			t.Fatalf("Rules() = %+v, %v", rules, err)
		}
		vs, err := routing.RuleVersions(ctx, d, "k-crit")
		if err != nil || len(vs) != 2 || vs[0].Rule.Body != potassiumRule().Body || vs[1].Rule.Body != changed.Body {
			t.Fatalf("RuleVersions() = %+v, %v", vs, err)
		}
		// policy.saved, rule.saved (v1), rule.saved (v2)
		if n, err := audit.Verify(ctx, d); err != nil || n != 3 {
			t.Fatalf("audit.Verify: n=%d err=%v, want 3", n, err)
		}
	})
}
