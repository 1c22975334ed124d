package oncall

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// TxRunner runs fn in a transaction (a *db.DB).
type TxRunner interface {
	Queryer
	InTx(ctx context.Context, fn func(tx *sql.Tx) error) error
}

// NextDaily returns the first time after now at which the wall clock in
// loc reads at (HH:MM). On a day when that time does not exist (DST
// start) it is an hour later, by the clock in force before the change.
func NextDaily(now time.Time, loc *time.Location, at string) (time.Time, error) {
	c, err := parseClock(at)
	if err != nil {
		return time.Time{}, &InvalidError{"at", err.Error()}
	}
	local := now.In(loc)
	for d := 0; ; d++ {
		t := wallTime(local.Year(), local.Month(), local.Day()+d, c.h, c.m, loc)
		if t.After(now) {
			return t, nil
		}
	}
}

// Notifier runs the roster's periodic work on robfig/cron: the daily
// coverage check of each unit at a wall-clock time in the unit's own zone
// (one CRON_TZ entry per unit), and the "you are on call" notices as shifts
// start.
type Notifier struct {
	db      TxRunner
	now     func() time.Time
	log     *slog.Logger
	dailyAt string // HH:MM in each unit's zone
	// afterCommit, when set, is told of new notices (to push them to
	// devices once messaging delivers notices).
	afterCommit func([]Notice)
}

// NewNotifier wires the jobs; dailyAt is "06:00" when empty.
func NewNotifier(d TxRunner, now func() time.Time, log *slog.Logger, dailyAt string, afterCommit func([]Notice)) (*Notifier, error) {
	if dailyAt == "" {
		dailyAt = "06:00"
	}
	if _, err := parseClock(dailyAt); err != nil {
		return nil, &InvalidError{"daily_at", err.Error()}
	}
	return &Notifier{db: d, now: now, log: log, dailyAt: dailyAt, afterCommit: afterCommit}, nil
}

// CheckUnit runs the coverage check of one unit now, in one transaction.
func (n *Notifier) CheckUnit(ctx context.Context, unitID string) (Report, []Notice, error) {
	var rep Report
	var created []Notice
	err := n.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		rep, created, err = NotifyCoverage(ctx, tx, unitID, n.now())
		return err
	})
	if err == nil && n.afterCommit != nil && len(created) > 0 {
		n.afterCommit(created)
	}
	return rep, created, err
}

// ShiftStarts stores on_call notices for shifts that started in (from, to].
func (n *Notifier) ShiftStarts(ctx context.Context, from, to time.Time) ([]Notice, error) {
	var created []Notice
	err := n.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		created, err = NotifyShiftStarts(ctx, tx, from, to, n.now())
		return err
	})
	if err == nil && n.afterCommit != nil && len(created) > 0 {
		n.afterCommit(created)
	}
	return created, err
}

// Run checks each unit's coverage daily at dailyAt in the unit's zone and
// sends on-call notices every `every`, until ctx ends. Several nodes may run
// it: notices are stored once (dedup key), so a repeat is harmless.
func (n *Notifier) Run(ctx context.Context, every time.Duration) {
	at, err := parseClock(n.dailyAt)
	if err != nil {
		n.log.Error("coverage schedule", "error", err)
		return
	}
	// The scheduler's own zone is explicit (UTC); each unit's entry names
	// the unit's zone, so "06:00" means 06:00 on that unit's wall clock.
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	entries := map[string]cron.EntryID{} // "unit@zone" → its daily check
	syncUnits := func() {
		zones, err := unitZones(ctx, n.db, "")
		if err != nil {
			if ctx.Err() == nil {
				n.log.Error("coverage schedule", "error", err)
			}
			return
		}
		want := map[string]bool{}
		for unit, loc := range zones {
			key := unit + "@" + loc.String()
			want[key] = true
			if _, ok := entries[key]; ok {
				continue
			}
			spec := fmt.Sprintf("CRON_TZ=%s %d %d * * *", loc, at.m, at.h)
			id, err := c.AddFunc(spec, func() {
				if _, _, err := n.CheckUnit(ctx, unit); err != nil && ctx.Err() == nil {
					n.log.Error("coverage check", "unit", unit, "error", err)
				}
			})
			if err != nil {
				n.log.Error("coverage schedule", "unit", unit, "error", err)
				continue
			}
			entries[key] = id
		}
		for key, id := range entries {
			if !want[key] {
				c.Remove(id)
				delete(entries, key)
			}
		}
	}
	var mu sync.Mutex // SkipIfStillRunning already serialises; the mutex documents it
	last := n.now()
	tick := func() {
		mu.Lock()
		defer mu.Unlock()
		now := n.now()
		if _, err := n.ShiftStarts(ctx, last.Add(-every), now); err != nil && ctx.Err() == nil {
			n.log.Error("on-call notices", "error", err)
		}
		last = now
		syncUnits() // units added or re-zoned since get their entry
	}
	syncUnits()
	if _, err := c.AddFunc("@every "+every.String(), tick); err != nil {
		n.log.Error("on-call notices schedule", "error", err)
		return
	}
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
}
