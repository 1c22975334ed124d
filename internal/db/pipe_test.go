package db_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func users(t *testing.T, d *db.DB) int {
	t.Helper()
	var n int
	if err := d.QueryRow(`SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A pipelined transaction commits what every flush sent, reads its own
// writes, and rolls back all of it when any statement, or the function,
// fails; the connection serves the next transaction either way.
func TestPipe(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		var names []string
		err := d.InPipe(ctx, func(p *db.Pipe) error {
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u1", "Ann")
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u2", "Bob")
			p.Query(func(rows db.Rows) error {
				for rows.Next() {
					var s string
					if err := rows.Scan(&s); err != nil {
						return err
					}
					names = append(names, s)
				}
				return nil
			}, `SELECT name FROM users ORDER BY id`)
			if err := p.Flush(ctx); err != nil {
				return err
			}
			if len(names) != 2 {
				t.Errorf("the flush read %v", names)
			}
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u3", "Cat")
			return nil // queued: sent with the commit
		})
		if err != nil || users(t, d) != 3 {
			t.Fatalf("commit: %v, %d users", err, users(t, d))
		}

		// A failing statement in the second flush undoes the first.
		err = d.InPipe(ctx, func(p *db.Pipe) error {
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u4", "Dan")
			if err := p.Flush(ctx); err != nil {
				return err
			}
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u1", "Ann again")
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u5", "Eve")
			return nil
		})
		if !db.IsUniqueViolation(err) || users(t, d) != 3 {
			t.Fatalf("failed statement: %v, %d users", err, users(t, d))
		}

		// The function's own error rolls back what was flushed.
		stop := errors.New("stop")
		err = d.InPipe(ctx, func(p *db.Pipe) error {
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u6", "Fay")
			if err := p.Flush(ctx); err != nil {
				return err
			}
			return stop
		})
		if !errors.Is(err, stop) || users(t, d) != 3 {
			t.Fatalf("function error: %v, %d users", err, users(t, d))
		}

		// An empty pipe commits nothing and fails nothing.
		if err := d.InPipe(ctx, func(*db.Pipe) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
}

// A Pipe within an InTx transaction (PipeIn) sends its statements in that
// transaction: the transaction reads what a flush wrote and the flush
// what the transaction wrote, the commit keeps both, and a failed
// statement rolls back the whole transaction. On PostgreSQL its flushes
// are pipelined on the transaction's connection.
func TestPipeIn(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		count := func(q interface {
			QueryRowContext(context.Context, string, ...any) *sql.Row
		}) int {
			var n int
			if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ('u1', 'Ann')`); err != nil {
				return err
			}
			p := d.PipeIn(tx)
			if got, want := db.Pipelined(p), d.Dialect == db.Postgres; got != want {
				t.Errorf("pipelined %v on %s", got, d.Dialect)
			}
			var seen int
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u2", "Bob")
			p.Query(func(rows db.Rows) error {
				if !rows.Next() {
					return errors.New("no count")
				}
				return rows.Scan(&seen)
			}, `SELECT COUNT(*) FROM users`)
			if err := p.Flush(ctx); err != nil {
				return err
			}
			if seen != 2 || count(tx) != 2 {
				t.Errorf("the flush counted %d users, the transaction %d; want 2", seen, count(tx))
			}
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u3", "Cat")
			return p.Flush(ctx)
		})
		if err != nil || users(t, d) != 3 {
			t.Fatalf("commit: %v, %d users", err, users(t, d))
		}

		err = d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ('u4', 'Dan')`); err != nil {
				return err
			}
			p := d.PipeIn(tx)
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u5", "Eve")
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u1", "Ann again")
			return p.Flush(ctx)
		})
		if !db.IsUniqueViolation(err) || users(t, d) != 3 {
			t.Fatalf("failed statement: %v, %d users", err, users(t, d))
		}

		// A checked statement reports the rows it affected; one its check
		// refuses fails the flush, and every flush after it: the
		// transaction is lost.
		refused := errors.New("refused")
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			p := d.PipeIn(tx)
			affected := int64(-1)
			p.ExecChecked(func(n int64) error { affected = n; return nil }, `UPDATE users SET name = 'Ann B' WHERE id = 'u1'`)
			if err := p.Flush(ctx); err != nil || affected != 1 {
				t.Errorf("checked update: %v, %d rows", err, affected)
			}
			p.ExecChecked(func(int64) error { return refused }, `UPDATE users SET name = 'X' WHERE id = 'nobody'`)
			if err := p.Flush(ctx); !errors.Is(err, refused) {
				t.Errorf("refused check: flush %v", err)
			}
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u9", "Ian")
			return p.Flush(ctx)
		})
		if !errors.Is(err, refused) || users(t, d) != 3 {
			t.Fatalf("after a refused check: %v, %d users", err, users(t, d))
		}

		// Behind: a statement run on the transaction sends what waits on
		// the pipe first.
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			p := d.PipeIn(tx)
			b := db.BehindTx(tx, p)
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u7", "Gus")
			if n := count(b); n != 4 || p.Queued() {
				t.Errorf("behind: counted %d users, queued %v; want 4, false", n, p.Queued())
			}
			p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u8", "Hal")
			if _, err := b.ExecContext(ctx, `UPDATE users SET name = 'Hal B' WHERE id = 'u8'`); err != nil {
				return err
			}
			return p.Flush(ctx)
		})
		if err != nil || users(t, d) != 5 {
			t.Fatalf("behind: %v, %d users", err, users(t, d))
		}
		var name string
		if err := d.QueryRowContext(ctx, `SELECT name FROM users WHERE id = 'u8'`).Scan(&name); err != nil || name != "Hal B" {
			t.Fatalf("behind: u8 is %q %v, want the update after the queued insert", name, err)
		}

		// A transaction InTx did not begin: the statements run one by one.
		tx, err := d.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := d.PipeIn(tx)
		if db.Pipelined(p) {
			t.Error("a transaction InTx did not begin is pipelined")
		}
		p.Exec(`INSERT INTO users (id, name) VALUES ($1, $2)`, "u6", "Fay")
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil || users(t, d) != 6 {
			t.Fatalf("commit: %v, %d users", err, users(t, d))
		}
	})
}

// InBehind: a transaction whose BEGIN rides with the first statements and
// whose COMMIT with the last queued ones. What runs through it and what
// waits on its pipe commit together, or roll back together: when fn
// fails (even if its first statement ran before anything was queued: it
// ran inside the transaction), when a queued statement fails, when a
// check refuses; the connection serves the next transaction either way.
func TestInBehind(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		insert := `INSERT INTO users (id, name) VALUES ($1, $2)`
		err := d.InBehind(ctx, func(b *db.Behind) error {
			if _, err := b.ExecContext(ctx, insert, "u1", "Ann"); err != nil {
				return err
			}
			b.Pipe.Exec(insert, "u2", "Bob")
			var n int
			if err := b.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil || n != 2 {
				t.Errorf("counted %d users (%v) within the transaction, want 2", n, err)
			}
			b.Pipe.Exec(insert, "u3", "Cat") // sent with the COMMIT
			return nil
		})
		if err != nil || users(t, d) != 3 {
			t.Fatalf("commit: %v, %d users", err, users(t, d))
		}

		boom := errors.New("boom")
		err = d.InBehind(ctx, func(b *db.Behind) error {
			if _, err := b.ExecContext(ctx, insert, "u4", "Dan"); err != nil {
				return err
			}
			b.Pipe.Exec(insert, "u5", "Eve")
			return boom
		})
		if !errors.Is(err, boom) || users(t, d) != 3 {
			t.Fatalf("fn failed: %v, %d users; want boom and the first statement rolled back", err, users(t, d))
		}

		err = d.InBehind(ctx, func(b *db.Behind) error {
			b.Pipe.Exec(insert, "u6", "Fay")
			b.Pipe.Exec(insert, "u1", "Ann again")
			return nil
		})
		if !db.IsUniqueViolation(err) || users(t, d) != 3 {
			t.Fatalf("failed queued statement: %v, %d users", err, users(t, d))
		}

		refused := errors.New("refused")
		err = d.InBehind(ctx, func(b *db.Behind) error {
			b.Pipe.ExecChecked(func(int64) error { return refused }, insert, "u7", "Gus")
			var n int
			if err := b.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err == nil {
				t.Error("a query ran after a failed flush")
			}
			return nil
		})
		if !errors.Is(err, refused) || users(t, d) != 3 {
			t.Fatalf("refused check: %v, %d users", err, users(t, d))
		}

		if err := d.InBehind(ctx, func(b *db.Behind) error {
			b.Pipe.Exec(insert, "u8", "Hal")
			return nil
		}); err != nil || users(t, d) != 4 {
			t.Fatalf("after the failures: %v, %d users", err, users(t, d))
		}
	})
}
