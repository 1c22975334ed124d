package oncall

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"
)

// DefaultHorizon is how far ahead the index holds computed timelines.
const DefaultHorizon = 35 * 24 * time.Hour

// indexLookback keeps a day of the past in the index, for "who was on".
const indexLookback = 24 * time.Hour

// Index answers "who holds role R in unit U at T" from timelines computed
// in memory for a rolling horizon, instead of reading the database.
//
// It is kept current three ways: Changed after a local edit commits
// (rebuilds that unit-role now, then calls the publish hook so other nodes
// hear of it); Invalidate when another node says a unit-role changed (the
// next query of it rebuilds it); and Run, which reloads everything daily so
// the horizon rolls forward. The database stays the source of truth: a
// query outside the horizon, or before the first Reload, reads it.
type Index struct {
	q       Queryer
	now     func() time.Time
	horizon time.Duration
	publish func(unitID, role string)
	log     *slog.Logger

	mu      sync.RWMutex
	loaded  bool
	from    time.Time
	to      time.Time
	entries map[RoleKey]*indexEntry
	dirty   map[RoleKey]bool
}

type indexEntry struct {
	segs   []Segment   // the whole horizon, contiguous
	shifts []UserShift // segs per user, by start
}

// IndexOptions configures an Index; zero values take defaults.
type IndexOptions struct {
	Horizon time.Duration             // DefaultHorizon when zero
	Publish func(unitID, role string) // told after every local change (wire a NATS notice here)
	Log     *slog.Logger
}

// NewIndex makes an empty index over q (a *sql.DB); call Reload to fill it.
func NewIndex(q Queryer, now func() time.Time, opt IndexOptions) *Index {
	if opt.Horizon <= 0 {
		opt.Horizon = DefaultHorizon
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Index{q: q, now: now, horizon: opt.Horizon, publish: opt.Publish, log: opt.Log,
		entries: map[RoleKey]*indexEntry{}, dirty: map[RoleKey]bool{}}
}

func build(r *Roster, from, to time.Time) *indexEntry {
	segs := r.Timeline(from, to)
	return &indexEntry{segs: segs, shifts: ShiftsOf(r.UnitID, r.Role, segs)}
}

// Reload recomputes every unit-role for a horizon starting now.
func (x *Index) Reload(ctx context.Context) error {
	now := x.now()
	from, to := now.Add(-indexLookback), now.Add(x.horizon)
	rosters, _, err := loadRosters(ctx, x.q, rosterFilter{from: from, to: to})
	if err != nil {
		return fmt.Errorf("index reload: %w", err)
	}
	x.load(rosters, from, to)
	return nil
}

// load replaces the index's contents with timelines of rosters.
func (x *Index) load(rosters map[RoleKey]*Roster, from, to time.Time) {
	entries := make(map[RoleKey]*indexEntry, len(rosters))
	for k, r := range rosters {
		entries[k] = build(r, from, to)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.entries, x.from, x.to, x.loaded = entries, from, to, true
	clear(x.dirty)
}

// Refresh rebuilds one unit-role from the database now.
func (x *Index) Refresh(ctx context.Context, unitID, role string) error {
	x.mu.RLock()
	loaded, from, to := x.loaded, x.from, x.to
	x.mu.RUnlock()
	if !loaded {
		return nil // the first Reload will read it
	}
	r, err := loadRoster(ctx, x.q, unitID, role, from, to)
	if err != nil {
		return fmt.Errorf("index refresh: %w", err)
	}
	e := build(&r, from, to)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.from.Equal(from) { // a Reload in between already read newer data
		x.entries[RoleKey{unitID, role}] = e
	}
	delete(x.dirty, RoleKey{unitID, role})
	return nil
}

// Changed is called after a local edit of unitID/role commits: it rebuilds
// that unit-role and tells the other nodes through the publish hook.
func (x *Index) Changed(ctx context.Context, unitID, role string) {
	if err := x.Refresh(ctx, unitID, role); err != nil {
		x.log.Error("on-call index refresh", "unit_id", unitID, "role", role, "error", err)
		x.Invalidate(unitID, role)
	}
	if x.publish != nil {
		x.publish(unitID, role)
	}
}

// Invalidate marks a unit-role stale (another node edited it); the next
// query of it rebuilds it from the database.
func (x *Index) Invalidate(unitID, role string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dirty[RoleKey{unitID, role}] = true
}

// Run reloads the index at start and then every `every` (a day keeps the
// 35-day horizon at least 34 days ahead) until ctx ends.
func (x *Index) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := x.Reload(ctx); err != nil && ctx.Err() == nil {
			x.log.Error("on-call index reload", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// entry returns the unit-role's entry if t is inside the horizon, after
// rebuilding it when it is stale; ok is false when the database must answer.
func (x *Index) entry(ctx context.Context, key RoleKey, t time.Time) (*indexEntry, bool, error) {
	x.mu.RLock()
	e, dirty := x.entries[key], x.dirty[key]
	ok := x.loaded && !t.Before(x.from) && t.Before(x.to)
	x.mu.RUnlock()
	if !ok || !dirty {
		return e, ok, nil
	}
	if err := x.Refresh(ctx, key.UnitID, key.Role); err != nil {
		return nil, false, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.entries[key], true, nil
}

// HoldersAt returns who holds role in unit at t, sorted by user id.
func (x *Index) HoldersAt(ctx context.Context, unitID, role string, t time.Time) ([]string, error) {
	e, ok, err := x.entry(ctx, RoleKey{unitID, role}, t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return HoldersAt(ctx, x.q, unitID, role, t)
	}
	if e == nil {
		return nil, nil
	}
	i := sort.Search(len(e.segs), func(i int) bool { return e.segs[i].End.After(t) })
	if i == len(e.segs) || e.segs[i].Start.After(t) {
		return nil, nil
	}
	return slices.Clone(e.segs[i].Holders), nil
}

// NextShifts returns up to n shifts of a unit-role that end after t (the
// one in progress first), within the horizon.
func (x *Index) NextShifts(ctx context.Context, unitID, role string, t time.Time, n int) ([]UserShift, error) {
	e, ok, err := x.entry(ctx, RoleKey{unitID, role}, t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return x.shiftsFromDB(ctx, unitID, role, t, n)
	}
	out := []UserShift{}
	if e == nil {
		return out, nil
	}
	for _, s := range e.shifts {
		if s.End.After(t) && len(out) < n {
			out = append(out, s)
		}
	}
	return out, nil
}

func (x *Index) shiftsFromDB(ctx context.Context, unitID, role string, t time.Time, n int) ([]UserShift, error) {
	// A day back, so the shift in progress shows its real start.
	from, to := t.Add(-indexLookback), t.Add(x.horizon)
	r, err := loadRoster(ctx, x.q, unitID, role, from, to)
	if err != nil {
		return nil, err
	}
	out := []UserShift{}
	for _, s := range ShiftsOf(unitID, role, r.Timeline(from, to)) {
		if s.End.After(t) && len(out) < n {
			out = append(out, s)
		}
	}
	return out, nil
}

// UserShifts returns a user's shifts in every unit-role overlapping
// [from, to), by start (from the database when outside the horizon).
func (x *Index) UserShifts(ctx context.Context, userID string, from, to time.Time) ([]UserShift, error) {
	x.mu.RLock()
	var stale []RoleKey
	for k := range x.dirty {
		stale = append(stale, k)
	}
	x.mu.RUnlock()
	for _, k := range stale {
		if err := x.Refresh(ctx, k.UnitID, k.Role); err != nil {
			return nil, err
		}
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if !x.loaded || from.Before(x.from) || to.After(x.to) {
		return userShiftsFromDB(ctx, x.q, userID, from, to)
	}
	out := []UserShift{}
	for _, e := range x.entries {
		for _, s := range e.shifts {
			if s.UserID == userID && s.End.After(from) && s.Start.Before(to) {
				out = append(out, s)
			}
		}
	}
	sortShifts(out)
	return out, nil
}

// sortShifts orders shifts by start, then unit, role and user.
func sortShifts(out []UserShift) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case !a.Start.Equal(b.Start):
			return a.Start.Before(b.Start)
		case a.UnitID != b.UnitID:
			return a.UnitID < b.UnitID
		case a.Role != b.Role:
			return a.Role < b.Role
		default:
			return a.UserID < b.UserID
		}
	})
}

// Horizon returns the window the index holds.
func (x *Index) Horizon() (from, to time.Time) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.from, x.to
}

// userShiftsFromDB reads a user's shifts in every unit-role overlapping
// [from, to) from q.
func userShiftsFromDB(ctx context.Context, q Queryer, userID string, from, to time.Time) ([]UserShift, error) {
	rosters, _, err := loadRosters(ctx, q, rosterFilter{from: from, to: to})
	if err != nil {
		return nil, err
	}
	out := []UserShift{}
	for k, r := range rosters {
		for _, s := range ShiftsOf(k.UnitID, k.Role, r.Timeline(from, to)) {
			if s.UserID == userID {
				out = append(out, s)
			}
		}
	}
	sortShifts(out)
	return out, nil
}
