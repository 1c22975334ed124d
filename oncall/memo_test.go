package oncall_test

import (
	"context"
	"database/sql"
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
