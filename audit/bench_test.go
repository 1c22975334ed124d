package audit_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// BenchmarkAppend commits one transaction per iteration, each appending one
// audited record, and checks the chain afterwards. The postgres variant
// skips unless CLARION_TEST_DATABASE_URL is set.
func BenchmarkAppend(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchAppend(b, dbtest.SQLite(b)) })
	b.Run("postgres", func(b *testing.B) { benchAppend(b, dbtest.Postgres(b)) })
}

func benchAppend(b *testing.B, d *db.DB) {
	ctx := context.Background()
	e := audit.Entry{ActorType: audit.ActorSystem, ActorID: "routing", Action: "alert.opened",
		ObjectType: "alert", ObjectID: "alr_0123456789", CorrelationID: "evt_0123456789",
		Detail: map[string]any{"rule_id": "k-crit", "priority": "PH", "unit": "4W", "code": "2823-3"}}
	var before int64
	if err := d.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&before); err != nil {
		b.Fatal(err)
	}
	n := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, err := audit.Append(ctx, tx, e)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.StopTimer()
	got, err := audit.Verify(ctx, d)
	if err != nil || got != before+n {
		b.Fatalf("audit.Verify: n=%d err=%v, want %d", got, err, before+n)
	}
}
