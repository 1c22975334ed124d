package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Rows is what a queued query's scan function reads: *sql.Rows and
// pgx.Rows both are. An alias, so that packages declaring the same
// interface literal accept a *Pipe.
type Rows = interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Pipe is a transaction whose statements are queued and sent together.
// On PostgreSQL each Flush is one round trip: the queued statements go as
// one pgx batch (a pipeline) on the transaction's connection, BEGIN riding
// with the first and COMMIT with the last, so a transaction of two flushes
// costs two round trips instead of one per statement. On SQLite, in
// process, the statements simply run in order when flushed.
//
// A statement's error is reported by the Flush (or the commit) that sends
// it; a scan function runs during that Flush. Statements must not depend
// on each other's results within one Flush, except through the database
// (a later statement may read what an earlier one wrote).
//
// PipeIn gives a Pipe within a transaction InTx has open instead.
type Pipe struct {
	pg    *pgx.Conn // PostgreSQL
	conn  *sql.Conn // PostgreSQL, within InTx: pg is taken from it at each Flush
	tx    *sql.Tx   // SQLite, or a transaction without a known connection
	begun bool
	queue []queued
	err   error // the first failed flush's: the transaction is lost
}

type queued struct {
	query string
	args  []any
	scan  func(Rows) error           // nil for a statement without rows
	check func(affected int64) error // for a statement without rows; may be nil
}

// Exec queues a statement.
func (p *Pipe) Exec(query string, args ...any) {
	p.queue = append(p.queue, queued{query: query, args: args})
}

// ExecChecked queues a statement whose count of affected rows check
// judges when it is sent: an error fails the Flush.
func (p *Pipe) ExecChecked(check func(affected int64) error, query string, args ...any) {
	p.queue = append(p.queue, queued{query: query, args: args, check: check})
}

// Queued reports whether statements wait to be sent.
func (p *Pipe) Queued() bool { return len(p.queue) > 0 }

// Query queues a statement whose rows scan reads when it is sent.
func (p *Pipe) Query(scan func(Rows) error, query string, args ...any) {
	p.queue = append(p.queue, queued{query: query, args: args, scan: scan})
}

// Flush sends the queued statements and runs their scan functions. Once
// a Flush has failed, every later one returns its error: a statement of
// the transaction failed, and nothing after it can be kept.
func (p *Pipe) Flush(ctx context.Context) error {
	if p.err == nil {
		p.err = p.send(ctx, false)
	}
	return p.err
}

// InPipe runs fn in a pipelined transaction and commits it, sending what fn
// left queued with the commit; it rolls back when fn or a statement fails.
func (d *DB) InPipe(ctx context.Context, fn func(p *Pipe) error) error {
	if d.Dialect != Postgres {
		return d.InTx(ctx, func(tx *sql.Tx) error {
			p := &Pipe{tx: tx}
			if err := fn(p); err != nil {
				return err
			}
			return p.Flush(ctx)
		})
	}
	conn, err := d.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("pipe: driver connection is %T, not pgx", dc)
		}
		p := &Pipe{pg: sc.Conn()}
		err := fn(p)
		if err == nil {
			err = p.send(ctx, true)
		}
		if err != nil && p.pg.PgConn().TxStatus() != 'I' {
			// An open or failed transaction: roll it back. Should that fail
			// too, database/sql discards the connection (ResetSession sees
			// the transaction still open).
			_, _ = p.pg.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return err
	})
}

// PipeIn returns a Pipe within tx: on PostgreSQL, when InTx began tx,
// each Flush sends the queued statements in one round trip on tx's
// connection (tx itself must not be used meanwhile); otherwise they run one
// by one in tx. InTx commits.
func (d *DB) PipeIn(tx *sql.Tx) *Pipe {
	if c, ok := txConns.Load(tx); ok {
		return &Pipe{conn: c.(*sql.Conn), begun: true}
	}
	return &Pipe{tx: tx}
}

func (p *Pipe) send(ctx context.Context, commit bool) error {
	if p.conn != nil {
		if len(p.queue) == 0 {
			return nil
		}
		return p.conn.Raw(func(dc any) error {
			sc, ok := dc.(*stdlib.Conn)
			if !ok {
				return fmt.Errorf("pipe: driver connection is %T, not pgx", dc)
			}
			p.pg = sc.Conn()
			defer func() { p.pg = nil }()
			return p.sendPG(ctx, false)
		})
	}
	if p.tx != nil {
		items := p.queue
		p.queue = nil
		return runEach(ctx, p.tx, items)
	}
	return p.sendPG(ctx, commit)
}

// sendPG sends the queue to PostgreSQL as one batch.
func (p *Pipe) sendPG(ctx context.Context, commit bool) error {
	items := p.queue
	p.queue = nil
	if len(items) == 0 && (!commit || !p.begun) {
		return nil
	}
	b := &pgx.Batch{}
	first := !p.begun
	if first {
		b.Queue("BEGIN")
	}
	for _, it := range items {
		b.Queue(it.query, it.args...)
	}
	if commit {
		b.Queue("COMMIT")
	}
	br := p.pg.SendBatch(ctx, b)
	err := readResults(br, first, items, commit)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	p.begun = !commit
	return nil
}

// readResults reads a batch's results in order: BEGIN's when first, each
// item's, then COMMIT's.
func readResults(br pgx.BatchResults, first bool, items []queued, commit bool) error {
	if first {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
	}
	for _, it := range items {
		if it.scan == nil {
			tag, err := br.Exec()
			if err == nil && it.check != nil {
				err = it.check(tag.RowsAffected())
			}
			if err != nil {
				return err
			}
			continue
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		err = it.scan(rows)
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return err
		}
	}
	if commit {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return nil
}

// runEach runs queued statements one by one in tx (SQLite).
func runEach(ctx context.Context, tx *sql.Tx, items []queued) error {
	for _, it := range items {
		if it.scan == nil {
			res, err := tx.ExecContext(ctx, it.query, it.args...)
			if err == nil && it.check != nil {
				var n int64
				if n, err = res.RowsAffected(); err == nil {
					err = it.check(n)
				}
			}
			if err != nil {
				return err
			}
			continue
		}
		rows, err := tx.QueryContext(ctx, it.query, it.args...)
		if err != nil {
			return err
		}
		err = it.scan(rows)
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Behind is a transaction with writes held behind: statements queued on
// its Pipe are sent before any statement run through the transaction
// itself, so that no read misses a queued write, and otherwise together,
// with the Pipe's next Flush. Code that writes a row nobody reads back at
// once (a new alert, say) queues it and spares a round trip; code that
// knows nothing of the Pipe sees every write in order all the same.
type Behind struct {
	*sql.Tx
	Pipe *Pipe
}

// ExecContext sends what is queued, then runs query.
func (b *Behind) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := b.Pipe.Flush(ctx); err != nil {
		return nil, err
	}
	return b.Tx.ExecContext(ctx, query, args...)
}

// QueryContext sends what is queued, then runs query.
func (b *Behind) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := b.Pipe.Flush(ctx); err != nil {
		return nil, err
	}
	return b.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext sends what is queued, then runs query. A *sql.Row
// cannot carry a failed flush's error; the query runs in a transaction
// that is lost either way, and the Pipe's next Flush, which the owner of
// the transaction owes before committing, returns that error.
func (b *Behind) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	_ = b.Pipe.Flush(ctx)
	return b.Tx.QueryRowContext(ctx, query, args...)
}
