package report_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/report"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
func ptr(s float64) *time.Time {
	t := at(s)
	return &t
}

// The seeded period, [t0, t0+1h), times in seconds from t0. Policy
// "nursing": RN (60 s) → CHARGE_RN (60 s) → user sup1.
//
//	a1 4W  rule k  PH  at 0:   rn1 delivered 2, read 10, accepted 30
//	a2 4W  rule k  PH  at 60:  rn1 delivered 64, read 80, no answer;
//	                           charge1 paged 120, delivered 121, read 130, accepted 150
//	a3 4W  rule hr PM  at 120: rn1 delivered 126, never read; charge1 paged 180, delivered 183;
//	                           sup1 (failsafe) paged 240, delivered 241, read 245; still open
//	a4 ICU rule k  PH  at 180: icu1 delivered 188, read 189, accepted 192
//	a5 4W  rule k  PH  at 7200: outside the period
func fixture() report.Data {
	return report.Data{
		Alerts: []report.Alert{
			{ID: "a1", RuleID: "k", Priority: "PH", Unit: "4W", PolicyID: "nursing", State: "accepted", CreatedAt: at(0), AcceptedAt: ptr(30)},
			{ID: "a2", RuleID: "k", Priority: "PH", Unit: "4W", PolicyID: "nursing", State: "accepted", Step: 1, CreatedAt: at(60), AcceptedAt: ptr(150)},
			{ID: "a3", RuleID: "hr", Priority: "PM", Unit: "4W", PolicyID: "nursing", State: "open", Step: 2, CreatedAt: at(120)},
			{ID: "a4", RuleID: "k", Priority: "PH", Unit: "ICU", PolicyID: "nursing", State: "accepted", CreatedAt: at(180), AcceptedAt: ptr(192)},
			{ID: "a5", RuleID: "k", Priority: "PH", Unit: "4W", PolicyID: "nursing", State: "open", CreatedAt: at(7200)},
		},
		Messages: []report.Message{
			{AlertID: "a1", UserID: "rn1", Step: 0, CreatedAt: at(0), DeliveredAt: ptr(2), ReadAt: ptr(10), Response: "accept", RespondedAt: ptr(30)},
			{AlertID: "a2", UserID: "rn1", Step: 0, CreatedAt: at(60), DeliveredAt: ptr(64), ReadAt: ptr(80)},
			{AlertID: "a2", UserID: "charge1", Step: 1, CreatedAt: at(120), DeliveredAt: ptr(121), ReadAt: ptr(130), Response: "accept", RespondedAt: ptr(150)},
			{AlertID: "a3", UserID: "rn1", Step: 0, CreatedAt: at(120), DeliveredAt: ptr(126)},
			{AlertID: "a3", UserID: "charge1", Step: 1, CreatedAt: at(180), DeliveredAt: ptr(183)},
			{AlertID: "a3", UserID: "sup1", Step: 2, CreatedAt: at(240), DeliveredAt: ptr(241), ReadAt: ptr(245)},
			{AlertID: "a4", UserID: "icu1", Step: 0, CreatedAt: at(180), DeliveredAt: ptr(188), ReadAt: ptr(189), Response: "accept", RespondedAt: ptr(192)},
			{AlertID: "a5", UserID: "rn1", Step: 0, CreatedAt: at(7200)},
		},
		FailsafeRung: map[string]int{"a3": 2},
		Role: func(a report.Alert, rung int) string {
			return []string{"RN", "CHARGE_RN", report.NamedUserRole}[rung]
		},
	}
}

// want is one group's expected figures, worked out by hand (nearest rank:
// p50 of n is the ceil(n/2)-th smallest, p90 the ceil(0.9n)-th).
type want struct {
	samples                   int
	deliver, read, accept     [3]float64 // n, p50, p90
	escalated, failsafe, open int
}

func check(t *testing.T, g report.Group, w want) {
	t.Helper()
	pc := func(name string, p report.Percentiles, w [3]float64) {
		t.Helper()
		if p.N != int(w[0]) || (p.N > 0 && (*p.P50 != w[1] || *p.P90 != w[2])) || (p.N == 0 && p.P50 != nil) {
			t.Errorf("%s %s: n=%d p50=%v p90=%v, want %v", g.Key, name, p.N, deref(p.P50), deref(p.P90), w)
		}
	}
	if g.Samples != w.samples || g.Escalated != w.escalated || g.Failsafe != w.failsafe || g.Open != w.open {
		t.Errorf("%s: samples %d escalated %d failsafe %d open %d, want %+v", g.Key, g.Samples, g.Escalated, g.Failsafe, g.Open, w)
	}
	pc("deliver", g.Deliver, w.deliver)
	pc("read", g.Read, w.read)
	pc("accept", g.Accept, w.accept)
}

func deref(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

var period = report.Params{From: t0, To: t0.Add(time.Hour)}

// expected lists, per grouping, each group's hand-computed figures.
var expected = map[string]map[string]want{
	report.ByUnit: {
		// deliver 2,4,6; read 10,20,125; accept 30,90
		"4W":  {3, [3]float64{3, 4, 6}, [3]float64{3, 20, 125}, [3]float64{2, 30, 90}, 2, 1, 1},
		"ICU": {1, [3]float64{1, 8, 8}, [3]float64{1, 9, 9}, [3]float64{1, 12, 12}, 0, 0, 0},
		// deliver 2,4,6,8; read 9,10,20,125; accept 12,30,90
		"total": {4, [3]float64{4, 4, 8}, [3]float64{4, 10, 125}, [3]float64{3, 30, 90}, 2, 1, 1},
	},
	report.ByRule: {
		"hr": {1, [3]float64{1, 6, 6}, [3]float64{1, 125, 125}, [3]float64{0, 0, 0}, 1, 1, 1},
		"k":  {3, [3]float64{3, 4, 8}, [3]float64{3, 10, 20}, [3]float64{3, 30, 90}, 1, 0, 0},
	},
	report.ByPriority: {
		"PH": {3, [3]float64{3, 4, 8}, [3]float64{3, 10, 20}, [3]float64{3, 30, 90}, 1, 0, 0},
		"PM": {1, [3]float64{1, 6, 6}, [3]float64{1, 125, 125}, [3]float64{0, 0, 0}, 1, 1, 1},
	},
	report.ByUser: {
		// rn1: deliver 2,4,6; read 10,20; accept 30; went past rn1 on a2 and a3
		"rn1":     {3, [3]float64{3, 4, 6}, [3]float64{2, 10, 20}, [3]float64{1, 30, 30}, 2, 0, 1},
		"charge1": {2, [3]float64{2, 1, 3}, [3]float64{1, 10, 10}, [3]float64{1, 30, 30}, 1, 0, 1},
		"sup1":    {1, [3]float64{1, 1, 1}, [3]float64{1, 5, 5}, [3]float64{0, 0, 0}, 0, 1, 1},
		"icu1":    {1, [3]float64{1, 8, 8}, [3]float64{1, 9, 9}, [3]float64{1, 12, 12}, 0, 0, 0},
		// deliver 1,1,2,3,4,6,8 (p50 4th, p90 7th); read 5,9,10,10,20 (3rd, 5th);
		// accept 12,30,30; the open alert a3 paged rn1, charge1 and sup1
		"total": {7, [3]float64{7, 3, 8}, [3]float64{5, 10, 20}, [3]float64{3, 30, 30}, 3, 1, 3},
	},
	report.ByRole: {
		// rn1's three pages and icu1's: deliver 2,4,6,8; read 9,10,20; accept 12,30
		"RN":                 {4, [3]float64{4, 4, 8}, [3]float64{3, 10, 20}, [3]float64{2, 12, 30}, 2, 0, 1},
		"CHARGE_RN":          {2, [3]float64{2, 1, 3}, [3]float64{1, 10, 10}, [3]float64{1, 30, 30}, 1, 0, 1},
		report.NamedUserRole: {1, [3]float64{1, 1, 1}, [3]float64{1, 5, 5}, [3]float64{0, 0, 0}, 0, 1, 1},
	},
}

func checkReport(t *testing.T, rep report.Report, groupBy string) {
	t.Helper()
	w := expected[groupBy]
	seen := 0
	for _, g := range append(rep.Groups, rep.Total) {
		if e, ok := w[g.Key]; ok {
			check(t, g, e)
			seen++
		}
	}
	if seen != len(w) {
		t.Errorf("%s: groups %+v, want keys of %v", groupBy, rep.Groups, w)
	}
	if len(rep.OpenAlerts) != 1 || rep.OpenAlerts[0].ID != "a3" || rep.OpenAlerts[0].AgeSeconds != 3600-120 {
		t.Errorf("open alerts: %+v", rep.OpenAlerts)
	}
}

func TestBuildByHand(t *testing.T) {
	for _, g := range report.GroupBys {
		t.Run(g, func(t *testing.T) {
			p := period
			p.GroupBy = g
			checkReport(t, report.Build(p, fixture(), t0.Add(time.Hour)), g)
		})
	}
}

func TestNearestRank(t *testing.T) {
	s := func(xs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range xs {
			out = append(out, time.Duration(x))
		}
		return out
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"one sample", s(7), 50, 7},
		{"p50 of four is the second", s(1, 2, 3, 4), 50, 2},
		{"p90 of four is the fourth", s(1, 2, 3, 4), 90, 4},
		{"p90 of ten is the ninth", s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9},
		{"p90 of eleven is the tenth", s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), 90, 10},
	}
	for _, c := range cases {
		if got := report.NearestRank(c.sorted, c.p); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
}

func TestParams(t *testing.T) {
	now := t0
	cases := []struct {
		name, from, to, groupBy, field string
	}{
		{"defaults", "", "", "", ""},
		{"bad from", "yesterday", "", "", "from"},
		{"bad to", "", "x", "", "to"},
		{"empty period", "2026-11-23T08:00:00Z", "2026-11-23T08:00:00Z", "unit", "to"},
		{"unknown grouping", "", "", "ward", "group_by"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := report.ParseParams(c.from, c.to, c.groupBy, now)
			var ie *report.InvalidError
			switch {
			case c.field == "" && (err != nil || p.GroupBy != report.ByUnit || !p.To.Equal(now) || p.To.Sub(p.From) != report.DefaultPeriod):
				t.Fatalf("defaults: %+v %v", p, err)
			case c.field != "" && (!errors.As(err, &ie) || ie.Field != c.field):
				t.Fatalf("got %v, want an error naming %s", err, c.field)
			}
		})
	}
}

// seed writes the fixture into the tables the report reads.
func seed(t *testing.T, d *db.DB) {
	t.Helper()
	ctx := context.Background()
	f := fixture()
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		err := oncall.PutPolicy(ctx, tx, oncall.Actor{Type: "system", ID: "test"}, oncall.Policy{ID: "nursing", Name: "Nursing",
			Steps: []oncall.Step{
				{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
				{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: 60},
				{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup1"}}},
			}})
		if err != nil {
			return err
		}
		us := func(t *time.Time) any {
			if t == nil {
				return nil
			}
			return t.UnixMicro()
		}
		for _, a := range f.Alerts {
			if _, err := tx.ExecContext(ctx, `INSERT INTO alerts (id, rule_id, event_id, patient_id, dedup_key, priority, unit,
				target_role, policy_id, state, step, lock_text, body, updates, created_at, updated_at, accepted_at)
				VALUES ($1, $2, 'evt', 'pt_x', $1, $3, $4, 'RN', $5, $6, $7, '', $8, 0, $9, $9, $10)`,
				a.ID, a.RuleID, a.Priority, a.Unit, a.PolicyID, a.State, a.Step, []byte{}, a.CreatedAt.UnixMicro(), us(a.AcceptedAt)); err != nil {
				return err
			}
		}
		for i, m := range f.Messages {
			var resp any
			if m.Response != "" {
				resp = m.Response
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO messages (id, device_id, seq, alert_id, user_id, step, priority,
				lock_text, sealed, created_at, delivered_at, read_at, response, responded_at)
				VALUES ($1, $2, $3, $4, $5, $6, 'PH', '', $7, $8, $9, $10, $11, $12)`,
				"msg"+string(rune('a'+i)), "dev_"+m.UserID, i+1, m.AlertID, m.UserID, m.Step, []byte{},
				m.CreatedAt.UnixMicro(), us(m.DeliveredAt), us(m.ReadAt), resp, us(m.RespondedAt)); err != nil {
				return err
			}
		}
		for _, e := range []struct {
			alert    string
			to       int
			failsafe bool
			at       float64
		}{{"a2", 1, false, 120}, {"a3", 1, false, 180}, {"a3", 2, true, 240}} {
			if err := audit.Append(ctx, tx, audit.Entry{At: at(e.at), ActorType: audit.ActorSystem, ActorID: "escalation",
				Action: "alert.escalated", ObjectType: "alert", ObjectID: e.alert,
				Detail: map[string]any{"to_step": e.to, "failsafe": e.failsafe}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ChainAudit(t, d)
}

func TestComputeFromTheDatabase(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		seed(t, d)
		for _, g := range report.GroupBys {
			t.Run(g, func(t *testing.T) {
				p := period
				p.GroupBy = g
				rep, err := report.Compute(context.Background(), d, p, t0.Add(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				checkReport(t, rep, g)
			})
		}
	})
}
