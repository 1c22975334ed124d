// Package dbtest opens migrated test databases: SQLite in a temporary
// directory always, and PostgreSQL when CLARION_TEST_DATABASE_URL is set, each
// test in a schema of its own. When the variable is set and the server is
// unreachable the test fails: CI must never pass by skipping.
package dbtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// EnvPostgres names the variable that switches the PostgreSQL tests on.
const EnvPostgres = "CLARION_TEST_DATABASE_URL"

// Each runs fn as a subtest against every configured store: the shared
// conformance suite for both dialects.
func Each(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	if os.Getenv(EnvPostgres) != "" {
		t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
	}
}

// SQLite returns a migrated SQLite database in a temporary directory.
func SQLite(t testing.TB) *db.DB {
	t.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, "", t.TempDir())
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate sqlite: %v", err)
	}
	return d
}

// Postgres returns a migrated PostgreSQL database in a fresh schema; it skips
// when CLARION_TEST_DATABASE_URL is unset.
func Postgres(t testing.TB) *db.DB {
	t.Helper()
	u := PostgresURL(t)
	ctx := context.Background()
	d, err := db.Open(ctx, u, "")
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate postgres: %v", err)
	}
	return d
}

// PostgresURL creates an empty schema for this test and returns a URL whose
// search_path points at it; the schema is dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skip(EnvPostgres + " not set")
	}
	ctx := context.Background()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	defer admin.Close()
	schema := "t_" + strings.ReplaceAll(ids.Secret(10), "-", "")
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("postgres at %s unreachable or unusable: %v", EnvPostgres, err)
	}
	t.Cleanup(func() {
		c, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// ChainAudit links the audit records committed so far into the chain, as
// a node's Chainer does within a poll: tests that read audit_log call it
// first.
func ChainAudit(t testing.TB, d *db.DB) {
	t.Helper()
	if err := audit.ChainAll(context.Background(), d); err != nil {
		t.Fatalf("chain audit records: %v", err)
	}
}

// Strings runs query, whose rows are one text column, and returns them.
func Strings(t testing.TB, d *db.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := d.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
