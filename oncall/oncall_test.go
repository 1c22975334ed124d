package oncall_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
)

var admin = oncall.Actor{Type: "user", ID: "admin", Role: "admin"}

func TestHolders(t *testing.T) {
	t0 := time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)
	shifts := []oncall.Shift{
		{UserID: "ann", Start: t0, End: t0.Add(12 * time.Hour)},
		{UserID: "bob", Start: t0.Add(12 * time.Hour), End: t0.Add(24 * time.Hour)},
		{UserID: "ann", Start: t0.Add(6 * time.Hour), End: t0.Add(8 * time.Hour)},
	}
	cases := []struct {
		name string
		at   time.Time
		want []string
	}{
		{"before any shift", t0.Add(-time.Second), nil},
		{"at start is covered", t0, []string{"ann"}},
		{"overlap counts once", t0.Add(7 * time.Hour), []string{"ann"}},
		{"end is exclusive", t0.Add(12 * time.Hour), []string{"bob"}},
		{"after all", t0.Add(24 * time.Hour), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := oncall.Holders(shifts, c.at); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Holders = %v, want %v", got, c.want)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	role := oncall.Target{Kind: oncall.TargetRole, Role: "RN"}
	user := oncall.Target{Kind: oncall.TargetUser, UserID: "sup"}
	cases := []struct {
		name    string
		steps   []oncall.Step
		wantErr string
	}{
		{"valid", []oncall.Step{{Targets: []oncall.Target{role}, DelaySeconds: 60}, {Targets: []oncall.Target{user}}}, ""},
		{"no steps", nil, "steps"},
		{"failsafe without a user", []oncall.Step{{Targets: []oncall.Target{role}, DelaySeconds: 60}}, "steps[0]"},
		{"early step without delay", []oncall.Step{{Targets: []oncall.Target{role}}, {Targets: []oncall.Target{user}}}, "steps[0].delay_seconds"},
		{"bad kind", []oncall.Step{{Targets: []oncall.Target{{Kind: "pager"}}}}, "steps[0].targets[0].kind"},
		{"team without id", []oncall.Step{{Targets: []oncall.Target{{Kind: oncall.TargetTeam}}}}, "steps[0].targets[0].team_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := oncall.Policy{ID: "p", Name: "p", Steps: c.steps}
			err := p.Validate()
			var inv *oncall.InvalidError
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case c.wantErr != "" && (!errors.As(err, &inv) || inv.Field != c.wantErr):
				t.Fatalf("error %v, want field %s", err, c.wantErr)
			}
		})
	}
}

func TestStoreResolve(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if err := oncall.PutUnit(ctx, tx, admin, oncall.Unit{ID: "4W", Name: "4 West", TimeZone: "America/New_York"}); err != nil {
				return err
			}
			for _, u := range []string{"ann", "bob", "sup"} {
				if err := oncall.PutUser(ctx, tx, admin, oncall.User{ID: u, Name: u}); err != nil {
					return err
				}
			}
			if _, err := oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "4W", Role: "RN", UserID: "ann",
				Start: now.Add(-time.Hour), End: now.Add(time.Hour)}); err != nil {
				return err
			}
			_, err := oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "4W", Role: "RN", UserID: "bob",
				Start: now.Add(time.Hour), End: now.Add(13 * time.Hour)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		step := oncall.Step{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}, {Kind: oncall.TargetUser, UserID: "sup"}}}
		got, err := oncall.ResolveStep(ctx, d, step, "4W", now)
		if err != nil || !reflect.DeepEqual(got, []string{"ann", "sup"}) {
			t.Fatalf("now: %v %v", got, err)
		}
		got, _ = oncall.ResolveStep(ctx, d, step, "4W", now.Add(2*time.Hour))
		if !reflect.DeepEqual(got, []string{"bob", "sup"}) {
			t.Fatalf("later: %v", got)
		}
		got, _ = oncall.ResolveStep(ctx, d, step, "ICU", now)
		if !reflect.DeepEqual(got, []string{"sup"}) {
			t.Fatalf("other unit: %v", got)
		}
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			_, err := oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "4W", Role: "RN", UserID: "nobody",
				Start: now, End: now.Add(time.Hour)})
			return err
		})
		var inv *oncall.InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("unknown user accepted: %v", err)
		}
	})
}
