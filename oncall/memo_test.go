package oncall_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
)

// countingQueryer counts the queries sent through it.
type countingQueryer struct {
	oncall.Queryer
	n atomic.Int64
}

func (c *countingQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	c.n.Add(1)
	return c.Queryer.QueryContext(ctx, query, args...)
}

func (c *countingQueryer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.n.Add(1)
	return c.Queryer.QueryRowContext(ctx, query, args...)
}

// A Memo answers what the database answers, and reads each unit, role
// and time once: ResolveStep after HoldersAt costs no query.
func TestMemoReadsARosterOnce(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		seedHospital(t, d)
		ctx := context.Background()
		for _, at := range []struct {
			name string
			day  int
			hour int
		}{{"day", 2, 9}, {"night", 2, 23}} {
			when := local(at.day, at.hour)
			want, err := oncall.HoldersAt(ctx, d, "4W", "RN", when)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				t.Fatalf("%s: nobody holds RN on 4W; the seed changed?", at.name)
			}
			c := &countingQueryer{Queryer: d}
			m := oncall.NewMemo(c)
			got, err := oncall.HoldersAt(ctx, m, "4W", "RN", when)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("%s: memo holders %v (%v), want %v", at.name, got, err, want)
			}
			reads := c.n.Load()
			if reads == 0 {
				t.Fatalf("%s: the first read went nowhere", at.name)
			}
			got[0] = "mallory" // the caller's copy: the memo keeps its own
			users, err := oncall.ResolveStep(ctx, m, oncall.Step{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}},
				"4W", when)
			if err != nil || !slices.Equal(users, want) {
				t.Fatalf("%s: step resolves to %v (%v), want %v", at.name, users, err, want)
			}
			if c.n.Load() != reads {
				t.Fatalf("%s: resolving the step again sent %d more queries", at.name, c.n.Load()-reads)
			}
		}
	})
}

// After PrefetchUnits a Memo answers every role of those units, held or
// not, as the database does, with no further query, and names everyone
// who holds one of them.
func TestMemoPrefetchUnits(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		seedHospital(t, d)
		ctx := context.Background()
		when := local(2, 9)
		// ICU: cat holds charge by a shift; 4W: ann holds RN by rotation,
		// and sup is added to it by an override.
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "ICU", Role: "charge", UserID: "cat",
				Start: local(2, 7), End: local(2, 19)}); err != nil {
				return err
			}
			_, _, err := oncall.AddOverride(ctx, tx, admin, oncall.Override{UnitID: "4W", Role: "RN", Kind: oncall.OverrideAdd,
				UserID: "sup", Start: local(2, 8), End: local(2, 10)}, oncall.Edit{Now: now})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			c := &countingQueryer{Queryer: tx}
			m := oncall.NewMemo(c)
			users, err := m.PrefetchUnits(ctx, d.PipeIn(tx), []string{"4W", "ICU"}, when)
			if err != nil {
				return err
			}
			if want := []string{"ann", "cat", "sup"}; !slices.Equal(users, want) {
				t.Errorf("prefetched holders %v, want %v", users, want)
			}
			for _, k := range []oncall.RoleKey{{UnitID: "4W", Role: "RN"}, {UnitID: "ICU", Role: "charge"},
				{UnitID: "ICU", Role: "RN"}, {UnitID: "4W", Role: "charge"}} {
				want, err := oncall.HoldersAt(ctx, tx, k.UnitID, k.Role, when)
				if err != nil {
					return err
				}
				got, err := oncall.HoldersAt(ctx, m, k.UnitID, k.Role, when)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("%v: memo holders %v (%v), want %v", k, got, err, want)
				}
			}
			if c.n.Load() != 0 {
				t.Errorf("the prefetched units sent %d queries", c.n.Load())
			}
			// Another time, or a unit not prefetched, is read as before.
			if _, err := oncall.HoldersAt(ctx, m, "4W", "RN", local(2, 23)); err != nil {
				return err
			}
			if _, err := oncall.HoldersAt(ctx, m, "5E", "RN", when); err != nil {
				return err
			}
			if c.n.Load() != 2 {
				t.Errorf("reads outside the prefetch: %d queries, want 2", c.n.Load())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// After QueuePolicies a Memo answers for those policies from what the
// pipe read, the same as the database; a policy that does not exist is
// read when asked for, and not found.
func TestMemoQueuePolicies(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		seedHospital(t, d)
		ctx := context.Background()
		policy := oncall.Policy{ID: "nursing", Name: "Nursing", Repeat: 1, AcceptsRequired: 2, Steps: []oncall.Step{
			{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
			{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}}}}
		if err := d.InTx(ctx, func(tx *sql.Tx) error { return oncall.PutPolicy(ctx, tx, admin, policy) }); err != nil {
			t.Fatal(err)
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			want, err := oncall.GetPolicy(ctx, tx, "nursing")
			if err != nil {
				return err
			}
			c := &countingQueryer{Queryer: tx}
			m := oncall.NewMemo(c)
			p := d.PipeIn(tx)
			m.QueuePolicies(p, []string{"nursing", "gone"})
			if err := p.Flush(ctx); err != nil {
				return err
			}
			got, err := oncall.GetPolicy(ctx, m, "nursing")
			if err != nil || !reflect.DeepEqual(got, want) || c.n.Load() != 0 {
				t.Errorf("memo policy %+v (%v, %d queries), want %+v from memory", got, err, c.n.Load(), want)
			}
			if _, err := oncall.GetPolicy(ctx, m, "gone"); !errors.Is(err, oncall.ErrNotFound) || c.n.Load() != 1 {
				t.Errorf("missing policy: %v after %d queries, want ErrNotFound after 1", err, c.n.Load())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
