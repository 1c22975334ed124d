package db_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"sync"
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

func TestPositionalPlaceholders(t *testing.T) {
	args := func(vs ...any) []driver.NamedValue {
		out := make([]driver.NamedValue, len(vs))
		for i, v := range vs {
			out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
		}
		return out
	}
	for _, c := range []struct {
		in, want string
		args     []driver.NamedValue
		wantArgs []any
	}{
		{`SELECT 1`, `SELECT 1`, nil, nil},
		{`VALUES ($1, $2), ($3, $2)`, `VALUES (?, ?), (?, ?)`, args("a", "b", "c"), []any{"a", "b", "c", "b"}},
		{`x = $12 OR y = $1`, `x = ? OR y = ?`, args(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), []any{12, 1}},
		{`SELECT '$1', "$2", $3 WHERE x = 'it''s $4'`, `SELECT '$1', "$2", ? WHERE x = 'it''s $4'`, args(1, 2, 3, 4), []any{3}},
		{`SELECT $$ $0 $a`, `SELECT $$ $0 $a`, nil, nil},
		{`SELECT $2`, `SELECT $2`, args(1), []any{1}}, // an argument it was not given: left to the driver
	} {
		got, gotArgs := db.Positional(c.in, c.args)
		var vals []any
		for i, a := range gotArgs {
			if a.Ordinal != i+1 {
				t.Errorf("%q: argument %d has ordinal %d", c.in, i, a.Ordinal)
			}
			vals = append(vals, a.Value)
		}
		if got != c.want || fmt.Sprint(vals) != fmt.Sprint(c.wantArgs) {
			t.Errorf("positional(%q) = %q %v, want %q %v", c.in, got, vals, c.want, c.wantArgs)
		}
	}
}

// A statement with more parameters than SQLite's named-parameter list
// handles quickly still binds each in its place.
func TestSQLiteManyPlaceholders(t *testing.T) {
	d := dbtest.SQLite(t)
	ctx := context.Background()
	var q strings.Builder
	q.WriteString(`INSERT INTO users (id, name) VALUES `)
	args := []any{"same name"}
	for i := range 500 {
		if i > 0 {
			q.WriteByte(',')
		}
		fmt.Fprintf(&q, "($%d, $%d)", i+2, 1) // out of order, and $1 repeated
		args = append(args, fmt.Sprint("u", i))
	}
	if _, err := d.ExecContext(ctx, q.String(), args...); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := d.QueryRowContext(ctx, `SELECT name FROM users WHERE id = $1`, "u321").Scan(&name); err != nil || name != "same name" {
		t.Fatalf("%q %v", name, err)
	}
}

// Two transactions locking two rows in opposite orders: PostgreSQL rolls
// one back, and IsTransient says it may simply run again; a unique
// violation is not transient.
func TestDeadlockIsTransient(t *testing.T) {
	d := dbtest.Postgres(t)
	ctx := context.Background()
	if _, err := d.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ('a', 'A'), ('b', 'B')`); err != nil {
		t.Fatal(err)
	}
	var locked sync.WaitGroup // both hold their first row
	locked.Add(2)
	lockBoth := func(first, second string) error {
		return d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `UPDATE users SET name = name WHERE id = $1`, first); err != nil {
				return err
			}
			locked.Done()
			locked.Wait()
			_, err := tx.ExecContext(ctx, `UPDATE users SET name = name WHERE id = $1`, second)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- lockBoth("a", "b") }()
	go func() { errs <- lockBoth("b", "a") }()
	var transient int
	for range 2 {
		if err := <-errs; db.IsTransient(err) {
			transient++
		} else if err != nil {
			t.Fatalf("the other error: %v", err)
		}
	}
	if transient != 1 {
		t.Fatalf("%d transactions rolled back as transient, want 1", transient)
	}
	_, err := d.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ('a', 'A')`)
	if !db.IsUniqueViolation(err) || db.IsTransient(err) {
		t.Fatalf("duplicate insert: %v, transient %v", err, db.IsTransient(err))
	}
}
