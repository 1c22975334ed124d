package messaging_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/messaging"
)

// eachInBubble runs fn in a synctest bubble against each configured store,
// the database opened inside the bubble.
func eachInBubble(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	t.Run("sqlite", func(t *testing.T) { synctest.Test(t, func(t *testing.T) { fn(t, dbtest.SQLite(t)) }) })
	t.Run("postgres", func(t *testing.T) {
		// Migrated outside: goose's lock retries would run on the bubble's
		// clock. The bubble then opens its own connections.
		u := dbtest.PostgresURL(t) // skips when PostgreSQL is not configured
		ctx := context.Background()
		d0, err := db.Open(ctx, u, "")
		if err != nil {
			t.Fatal(err)
		}
		err = d0.Migrate(ctx)
		d0.Close()
		if err != nil {
			t.Fatal(err)
		}
		synctest.Test(t, func(t *testing.T) {
			d, err := db.Open(ctx, u, "")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			fn(t, d)
		})
	})
}

// RunTimers wakes at a timer's due time, not at its next poll: with a
// 10-second poll, timers due at 1.25 s and 2.5 s fire at exactly those
// instants of the bubble's clock.
func TestRunTimersWakesAtDueTime(t *testing.T) {
	eachInBubble(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		alerts := []string{f.openAlert("MRN1").ID, f.openAlert("MRN2").ID}
		var mu sync.Mutex
		var late []time.Duration
		engine := messaging.NewEngine(d, f.keys, f.waker, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now,
			messaging.WithTimerLateness(func(l time.Duration) { mu.Lock(); late = append(late, l); mu.Unlock() }))
		start := time.Now() // the bubble's clock
		dues := []time.Time{start.Add(1250 * time.Millisecond), start.Add(2500 * time.Millisecond)}
		for i, id := range alerts {
			if _, err := d.ExecContext(f.ctx, `UPDATE escalation_timers SET due_at = $1 WHERE alert_id = $2`,
				dues[i].UnixMicro(), id); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { engine.RunTimers(ctx, 10*time.Second); close(done) }()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		for i, id := range alerts {
			var state string
			var fired int64
			if err := d.QueryRowContext(f.ctx, `SELECT state, fired_at FROM escalation_timers WHERE alert_id = $1 AND step = 0`,
				id).Scan(&state, &fired); err != nil {
				t.Fatalf("timer %d: %v", i, err)
			}
			if state != "fired" || fired != dues[i].UnixMicro() {
				t.Fatalf("timer %d is %s at %v, want fired at its due time %v", i, state,
					time.UnixMicro(fired).Sub(start), dues[i].Sub(start))
			}
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(late) != 2 || late[0] != 0 || late[1] != 0 {
			t.Fatalf("lateness observed %v, want two timers on time", late)
		}
	})
}

func TestTimerWaitIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		next      time.Time
		pending   bool
		fullBatch bool
		want      time.Duration
	}{
		{"none pending: poll", time.Time{}, false, false, 100 * time.Millisecond},
		{"due soon: exactly then", now.Add(30 * time.Millisecond), true, false, 30 * time.Millisecond},
		{"due later: poll first", now.Add(time.Hour), true, false, 100 * time.Millisecond},
		{"overdue: at once", now.Add(-time.Second), true, false, 0},
		{"full batch: at once", now.Add(time.Hour), true, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := messaging.TimerWait(now, tc.next, tc.pending, tc.fullBatch, 100*time.Millisecond); got != tc.want {
				t.Fatalf("wait %v, want %v", got, tc.want)
			}
		})
	}
}
