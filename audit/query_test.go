package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// seedQueryLog appends six records an hour apart from t0.
func seedQueryLog(t *testing.T, d *db.DB) {
	t.Helper()
	ctx := context.Background()
	entries := []audit.Entry{
		{ActorType: audit.ActorSystem, ActorID: "routing", Action: "alert.opened", ObjectType: "alert", ObjectID: "alr_1", CorrelationID: "evt_1"},
		{ActorType: audit.ActorSystem, ActorID: "messaging", Action: "message.sent", ObjectType: "message", ObjectID: "msg_1", CorrelationID: "evt_1", DeviceID: "dev_1"},
		{ActorType: audit.ActorDevice, ActorID: "dev_1", ActorRole: "device", Action: "message.read", ObjectType: "message", ObjectID: "msg_1", CorrelationID: "evt_1", DeviceID: "dev_1", SourceAddr: "10.0.0.7"},
		{ActorType: audit.ActorDevice, ActorID: "dev_1", ActorRole: "device", Action: "alert.accepted", ObjectType: "alert", ObjectID: "alr_1", CorrelationID: "evt_1", DeviceID: "dev_1"},
		{ActorType: audit.ActorUser, ActorID: "admin1", ActorRole: "admin", Action: "rule_saved", ObjectType: "rule", ObjectID: "k-crit", CorrelationID: "k-crit"},
		{ActorType: audit.ActorUser, ActorID: "admin1", ActorRole: "admin", Action: "alert_x", ObjectType: "rule", ObjectID: "k-crit", Outcome: "failure"},
	}
	for i, e := range entries {
		e.At = t0.Add(time.Duration(i) * time.Hour)
		if err := d.InTx(ctx, func(tx *sql.Tx) error { return audit.Append(ctx, tx, e) }); err != nil {
			t.Fatal(err)
		}
	}
	chainAll(t, d)
}

func TestQueryFilters(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		seedQueryLog(t, d)
		cases := []struct {
			name  string
			query string
			want  []int64
		}{
			{"everything", "", []int64{1, 2, 3, 4, 5, 6}},
			{"time range is [from, to)", "from=2026-11-23T09:00:00Z&to=2026-11-23T11:00:00Z", []int64{2, 3}},
			{"actor", "actor_id=dev_1", []int64{3, 4}},
			{"actor type", "actor_type=user", []int64{5, 6}},
			{"action", "action=message.read", []int64{3}},
			{"action prefix", "action=alert.*", []int64{1, 4}},
			{"prefix does not treat _ as a wildcard", "action=alert_*", []int64{6}},
			{"object", "object_type=alert&object_id=alr_1", []int64{1, 4}},
			{"correlation id", "correlation_id=evt_1", []int64{1, 2, 3, 4}},
			{"cursor", "after=4", []int64{5, 6}},
			{"combined", "correlation_id=evt_1&actor_type=device&from=2026-11-23T11:00:00Z", []int64{4}},
			{"no match", "actor_id=nobody", nil},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				v, _ := url.ParseQuery(c.query)
				f, err := audit.ParseFilter(v)
				if err != nil {
					t.Fatal(err)
				}
				page, err := audit.Query(context.Background(), d, f)
				if err != nil {
					t.Fatal(err)
				}
				var got []int64
				for _, r := range page.Records {
					got = append(got, r.Seq)
				}
				if len(got) != len(c.want) {
					t.Fatalf("got %v, want %v", got, c.want)
				}
				for i := range got {
					if got[i] != c.want[i] {
						t.Fatalf("got %v, want %v", got, c.want)
					}
				}
			})
		}
		t.Run("paging by cursor", func(t *testing.T) {
			ctx := context.Background()
			f := audit.Filter{Limit: 4}
			p1, err := audit.Query(ctx, d, f)
			if err != nil || len(p1.Records) != 4 || p1.Next != 4 {
				t.Fatalf("page 1: %d records, next %d, %v", len(p1.Records), p1.Next, err)
			}
			f.After = p1.Next
			p2, err := audit.Query(ctx, d, f)
			if err != nil || len(p2.Records) != 2 || p2.Next != 0 || p2.Records[0].Seq != 5 {
				t.Fatalf("page 2: %+v %v", p2, err)
			}
			var n int
			if err := audit.Each(ctx, d, audit.Filter{Limit: 1}, func(audit.Record) error { n++; return nil }); err != nil || n != 6 {
				t.Fatalf("Each: %d %v", n, err)
			}
		})
	})
}

func TestParseFilterNamesTheField(t *testing.T) {
	cases := []struct{ query, field string }{
		{"from=yesterday", "from"},
		{"to=2026-13-01T00:00:00Z", "to"},
		{"from=2026-11-23T10:00:00Z&to=2026-11-23T09:00:00Z", "to"},
		{"after=x", "after"},
		{"after=-1", "after"},
		{"limit=5000", "limit"},
		{"limit=-3", "limit"},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			v, _ := url.ParseQuery(c.query)
			_, err := audit.ParseFilter(v)
			var ie *audit.InvalidError
			if !errors.As(err, &ie) || ie.Field != c.field {
				t.Fatalf("got %v, want an error naming %s", err, c.field)
			}
		})
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "from=2026-11-23T09:00:00Z&to=2026-11-23T11:00:00Z", "action=alert.*&after=4&limit=10",
		"correlation_id=evt_1&actor_type=device", "limit=5000", "from=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		fl, err := audit.ParseFilter(v)
		if err != nil {
			var ie *audit.InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("not a validation error: %v", err)
			}
			return
		}
		if fl.Limit < 1 || fl.Limit > audit.MaxPage || fl.After < 0 {
			t.Fatalf("accepted filter out of bounds: %+v", fl)
		}
		if !fl.From.IsZero() && !fl.To.IsZero() && !fl.To.After(fl.From) {
			t.Fatalf("accepted an empty range: %+v", fl)
		}
	})
}
