package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
)

// Queries are written once with PostgreSQL's $n placeholders, which SQLite
// also accepts, but as *named* parameters, and both its parser and the
// driver's binding look each up in a list of the names seen so far: a
// multi-row INSERT of n parameters costs O(n²) to prepare and bind (for
// 1,400 parameters, milliseconds per statement). Anonymous ? parameters are
// numbered in order of appearance with no lookup at all. sqliteConnector
// opens modernc's driver with each statement's $n rewritten to ? and its
// arguments reordered (and repeated) to match.

// sqliteConnector opens connections of the "sqlite" driver with numbered
// placeholders.
type sqliteConnector struct {
	dsn string
	drv driver.Driver
}

func (c sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return numberedConn{conn}, nil
}

func (c sqliteConnector) Driver() driver.Driver { return c.drv }

// openSQLiteDB is sql.Open("sqlite", dsn) with numbered placeholders.
func openSQLiteDB(dsn string) (*sql.DB, error) {
	probe, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	drv := probe.Driver()
	if err := probe.Close(); err != nil {
		return nil, err
	}
	return sql.OpenDB(sqliteConnector{dsn: dsn, drv: drv}), nil
}

// numberedConn forwards to the driver's connection, rewriting the queries
// of ExecContext and QueryContext (database/sql runs every statement with
// arguments through them).
type numberedConn struct{ driver.Conn }

var (
	_ driver.ExecerContext   = numberedConn{}
	_ driver.QueryerContext  = numberedConn{}
	_ driver.ConnBeginTx     = numberedConn{}
	_ driver.Pinger          = numberedConn{}
	_ driver.SessionResetter = numberedConn{}
	_ driver.Validator       = numberedConn{}
)

func (c numberedConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(query) // not used: statements run through ExecContext and QueryContext
}

func (c numberedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	query, args = positional(query, args)
	return e.ExecContext(ctx, query, args)
}

func (c numberedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	query, args = positional(query, args)
	return q.QueryContext(ctx, query, args)
}

func (c numberedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	b, ok := c.Conn.(driver.ConnBeginTx)
	if !ok {
		return nil, fmt.Errorf("sqlite driver: BeginTx not supported")
	}
	return b.BeginTx(ctx, opts)
}

func (c numberedConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c numberedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c numberedConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// positional rewrites each $n outside quoted text to ? and returns the
// arguments in the order the ?s take them: args[n-1] for each $n, as often
// as it appears. A query that names an argument it was not given is left
// alone, for the driver to refuse.
func positional(query string, args []driver.NamedValue) (string, []driver.NamedValue) {
	if !strings.Contains(query, "$") {
		return query, args
	}
	var b strings.Builder
	b.Grow(len(query))
	var out []driver.NamedValue
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '$' && i+1 < len(query) && query[i+1] >= '1' && query[i+1] <= '9':
			j := i + 1
			n := 0
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				n = n*10 + int(query[j]-'0')
				j++
			}
			if n > len(args) {
				return query, args
			}
			v := args[n-1]
			v.Ordinal, v.Name = len(out)+1, ""
			out = append(out, v)
			b.WriteByte('?')
			i = j - 1
			continue
		}
		b.WriteByte(c)
	}
	return b.String(), out
}
