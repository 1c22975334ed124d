package db

import (
	"context"
	"database/sql"
	"errors"
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
		p.err = p.send(ctx, false, false)
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
			err = p.err // a failed flush fn let pass
		}
		if err == nil {
			err = p.send(ctx, true, false)
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

// send sends what is queued, with BEGIN first when the transaction has
// not begun (and begin asks for it even with nothing queued) and COMMIT
// last when commit.
func (p *Pipe) send(ctx context.Context, commit, begin bool) error {
	if p.tx != nil {
		items := p.queue
		p.queue = nil
		return runEach(ctx, p.tx, items)
	}
	if !p.due(commit, begin) {
		return nil
	}
	if p.conn == nil {
		return p.sendPG(ctx, commit)
	}
	return p.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("pipe: driver connection is %T, not pgx", dc)
		}
		p.pg = sc.Conn()
		defer func() { p.pg = nil }()
		return p.sendPG(ctx, commit)
	})
}

// due reports whether send has anything to send: queued statements, a
// BEGIN asked for, or the COMMIT of a transaction that has begun.
func (p *Pipe) due(commit, begin bool) bool {
	return len(p.queue) > 0 || (begin && !p.begun) || (commit && p.begun)
}

// sendPG sends the queue to PostgreSQL as one batch (send checked that
// there is something to send).
func (p *Pipe) sendPG(ctx context.Context, commit bool) error {
	items := p.queue
	p.queue = nil
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
		tag, err := br.Exec()
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if tag.String() == "ROLLBACK" {
			// A statement of the transaction failed and its error went
			// unheeded: PostgreSQL rolled everything back.
			return errors.New("commit: the transaction had failed, and was rolled back")
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
	q    Queryer // the transaction, or (InBehind) its connection
	Pipe *Pipe
}

// Queryer runs statements: a *sql.Tx, a *sql.Conn, a Behind.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// BehindTx returns tx with writes held behind on p, a Pipe within tx.
func BehindTx(tx *sql.Tx, p *Pipe) *Behind { return &Behind{q: tx, Pipe: p} }

// InBehind runs fn in a transaction and commits it, or rolls it back when
// fn or a statement fails. On PostgreSQL its BEGIN rides with the first
// statements sent and its COMMIT with the last queued ones: two round
// trips fewer than InTx. fn runs statements through b, or queues them on
// b.Pipe (sent at b's next statement or Flush, or with the COMMIT).
func (d *DB) InBehind(ctx context.Context, fn func(b *Behind) error) error {
	if d.Dialect != Postgres {
		return d.InTx(ctx, func(tx *sql.Tx) error {
			b := BehindTx(tx, d.PipeIn(tx))
			if err := fn(b); err != nil {
				return err
			}
			return b.Pipe.Flush(ctx)
		})
	}
	conn, err := d.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer conn.Close()
	p := &Pipe{conn: conn}
	err = fn(&Behind{q: conn, Pipe: p})
	if err == nil {
		err = p.err
	}
	if err == nil {
		err = p.send(ctx, true, false)
	}
	if err != nil {
		// An open or failed transaction is rolled back; should that fail
		// too, database/sql discards the connection (pgx's ResetSession
		// refuses one with a transaction open).
		_ = conn.Raw(func(dc any) error {
			if sc, ok := dc.(*stdlib.Conn); ok && sc.Conn().PgConn().TxStatus() != 'I' {
				_, _ = sc.Conn().Exec(context.WithoutCancel(ctx), "ROLLBACK")
			}
			return nil
		})
	}
	return err
}

// ready sends what waits on the pipe, and BEGIN if the transaction has
// not begun: what runs next through the connection runs in it.
func (b *Behind) ready(ctx context.Context) error {
	if b.Pipe.err == nil {
		b.Pipe.err = b.Pipe.send(ctx, false, true)
	}
	return b.Pipe.err
}

// ExecContext sends what is queued, then runs query.
func (b *Behind) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := b.ready(ctx); err != nil {
		return nil, err
	}
	return b.q.ExecContext(ctx, query, args...)
}

// QueryContext sends what is queued, then runs query.
func (b *Behind) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := b.ready(ctx); err != nil {
		return nil, err
	}
	return b.q.QueryContext(ctx, query, args...)
}

// QueryRowContext sends what is queued, then runs query. After a failed
// flush it runs nothing: a *sql.Row cannot carry the flush's error, so
// the query is given a cancelled context and its Scan fails; the Pipe's
// next Flush, or the commit, returns the flush's own error.
func (b *Behind) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if b.ready(ctx) != nil {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		ctx = cancelled
	}
	return b.q.QueryRowContext(ctx, query, args...)
}
