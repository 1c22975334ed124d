// Package db is the shared database plumbing: opening SQLite (the embedded
// default) or PostgreSQL (through pgx), the embedded migrations, and a
// transaction helper. SQL itself lives with the package that owns the tables.
package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Dialect says which database is underneath. Queries are written once, with
// $n placeholders that both drivers bind; only a few clauses differ.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is a database handle that knows its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
}

// txConns maps each PostgreSQL transaction InTx has open to its
// connection (PipeIn).
var txConns sync.Map // *sql.Tx → *sql.Conn

//go:embed migrations/*.sql
var migrations embed.FS

// Open connects to url when it is a postgres:// URL, else to SQLite in
// dataDir/clarion.db (WAL, synchronous=FULL, so a commit survives power loss).
func Open(ctx context.Context, url, dataDir string) (*DB, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		sqldb, err := sql.Open("pgx", url)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		sqldb.SetMaxOpenConns(32)
		sqldb.SetMaxIdleConns(32)
		if err := sqldb.PingContext(ctx); err != nil {
			sqldb.Close()
			return nil, fmt.Errorf("connect postgres: %w", err)
		}
		return &DB{DB: sqldb, Dialect: Postgres}, nil
	}
	if url != "" {
		return nil, fmt.Errorf("database url must start with postgres://")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	return OpenSQLite(ctx, filepath.Join(dataDir, "clarion.db"))
}

// OpenSQLite opens (creating if needed) the SQLite database at path.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
	sqldb, err := openSQLiteDB(dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	// SQLite has one writer; one connection serializes writers without
	// SQLITE_BUSY and keeps every reader on committed data.
	sqldb.SetMaxOpenConns(1)
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return &DB{DB: sqldb, Dialect: SQLite}, nil
}

// Migrate applies the embedded migrations that have not run yet. On
// PostgreSQL a session advisory lock keeps two nodes from racing.
func (d *DB) Migrate(ctx context.Context) error {
	fsys, err := fsSub()
	if err != nil {
		return err
	}
	dialect := goose.DialectSQLite3
	// Migrations are numbered per feature; a database that ran a later one
	// before an earlier one appeared still gets the earlier one.
	opts := []goose.ProviderOption{goose.WithAllowOutofOrder(true)}
	if d.Dialect == Postgres {
		dialect = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, d.DB, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction and commits it, or rolls back when fn fails.
// On PostgreSQL the transaction runs on a connection taken for it and
// remembered, so that PipeIn can send several of its statements at once.
func (d *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var tx *sql.Tx
	var err error
	if d.Dialect == Postgres {
		conn, cerr := d.Conn(ctx)
		if cerr != nil {
			return fmt.Errorf("begin: %w", cerr)
		}
		defer conn.Close()
		if tx, err = conn.BeginTx(ctx, nil); err == nil {
			txConns.Store(tx, conn)
			defer txConns.Delete(tx)
		}
	} else {
		tx, err = d.BeginTx(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// SkipLocked is the row-claiming clause: PostgreSQL lets several nodes claim
// disjoint rows; SQLite's single writer makes it unnecessary.
func (d *DB) SkipLocked() string {
	if d.Dialect == Postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// ForUpdate locks the selected rows on PostgreSQL.
func (d *DB) ForUpdate() string {
	if d.Dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// sqlState is the SQLSTATE of a PostgreSQL error in err's chain, or "".
func sqlState(err error) string {
	var coder interface{ SQLState() string }
	if errors.As(err, &coder) {
		return coder.SQLState()
	}
	return ""
}

// IsUniqueViolation reports whether err is a unique-constraint failure.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	if state := sqlState(err); state != "" {
		return state == "23505"
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// IsTransient reports whether err is a PostgreSQL deadlock or
// serialization failure: the transaction was rolled back and can simply
// be run again.
func IsTransient(err error) bool {
	state := sqlState(err)
	return state == "40P01" || state == "40001"
}
