package db_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func TestMigrateTwiceAndUniqueViolation(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		insert := func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ($1, $2)`, "u1", "Ann")
			return err
		}
		if err := d.InTx(ctx, insert); err != nil {
			t.Fatalf("insert: %v", err)
		}
		err := d.InTx(ctx, insert)
		if !db.IsUniqueViolation(err) {
			t.Fatalf("want unique violation, got %v", err)
		}
	})
}

func TestSQLiteIsDurable(t *testing.T) {
	d := dbtest.SQLite(t)
	var mode string
	if err := d.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	var sync int
	if err := d.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
}
