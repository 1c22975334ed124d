package oncall

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/clarion-health/clarion/internal/db"
)

// Memo is a Queryer that remembers who holds each role: HoldersAt (and
// ResolveStep, which uses it) given a *Memo read each unit, role and time
// from the database once, and answer again from memory. Routing asks
// whether an alert's target is held, then the escalation's first step
// resolves the same role: with a Memo over their shared transaction the
// roster is read once (eight round trips, not sixteen), and once for all
// the alerts of a batch in one unit.
//
// It remembers escalation policies too (GetPolicy): the alerts of a batch
// mostly share one. PrefetchUnits reads every roster of a batch's units
// at once, instead of one round trip per unit and role.
//
// Use a Memo only for one transaction that edits no roster or policy: it
// does not see an edit made through it after its first read.
type Memo struct {
	Queryer
	mu       sync.Mutex
	holders  map[memoKey][]string
	loaded   map[memoKey]bool // units (role "") whose every roster is in holders
	policies map[string]Policy
}

type memoKey struct {
	unit, role string
	at         int64 // unix microseconds
}

// NewMemo wraps q, normally a transaction.
func NewMemo(q Queryer) *Memo {
	return &Memo{Queryer: q, holders: map[memoKey][]string{}, loaded: map[memoKey]bool{}, policies: map[string]Policy{}}
}

// PrefetchUnits reads every roster of units at t, a query per unit all
// sent at once on p (one round trip on PostgreSQL), so that HoldersAt
// answers for any role of those units at t from memory (nobody, for a role
// without a roster). It returns everyone holding one of those roles at t,
// sorted, for the caller to read what it needs of them at once (their
// devices). p must be a Pipe within the Memo's transaction; whatever else
// is queued on it is sent along.
func (m *Memo) PrefetchUnits(ctx context.Context, p *db.Pipe, units []string, t time.Time) ([]string, error) {
	if len(units) == 0 {
		return nil, p.Flush(ctx) // what others queued on p
	}
	set := newRosterSet()
	for _, u := range units {
		query, args := rosterQuery(rosterFilter{unitID: u, from: t, to: t.Add(time.Microsecond)})
		p.Query(func(rows db.Rows) error {
			for rows.Next() {
				if err := set.add(rows.Scan); err != nil {
					return err
				}
			}
			return rows.Err()
		}, query, args...)
	}
	if err := p.Flush(ctx); err != nil {
		return nil, fmt.Errorf("holders: load rosters: %w", err)
	}
	at := t.UnixMicro()
	seen := map[string]bool{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, r := range set.rosters {
		h := r.HoldersAt(t)
		m.holders[memoKey{k.UnitID, k.Role, at}] = h
		for _, u := range h {
			seen[u] = true
		}
	}
	for _, u := range units {
		m.loaded[memoKey{unit: u, at: at}] = true
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// UnitHolders returns who holds any role of unit at t, sorted, as far as
// the Memo knows (all of them once PrefetchUnits read the unit at t).
func (m *Memo) UnitHolders(unit string, t time.Time) []string {
	at := t.UnixMicro()
	seen := map[string]bool{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, h := range m.holders {
		if k.unit == unit && k.at == at {
			for _, u := range h {
				seen[u] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// QueuePolicies queues, on p, the reads of the escalation policies ids
// (those a batch's rules name, say): once p is flushed, GetPolicy answers
// for them from memory. One that does not exist is read again when asked
// for, and is not found then.
func (m *Memo) QueuePolicies(p *db.Pipe, ids []string) {
	for _, id := range ids {
		p.Query(func(rows db.Rows) error {
			if !rows.Next() {
				return nil
			}
			got, err := scanPolicy(rows, id)
			if err != nil {
				return err
			}
			m.mu.Lock()
			m.policies[id] = got
			m.mu.Unlock()
			return nil
		}, policySQL, id)
	}
}

func (m *Memo) policy(ctx context.Context, id string) (Policy, error) {
	m.mu.Lock()
	p, ok := m.policies[id]
	m.mu.Unlock()
	if ok {
		return p.clone(), nil
	}
	p, err := getPolicy(ctx, m.Queryer, id)
	if err != nil {
		return p, err
	}
	m.mu.Lock()
	m.policies[id] = p
	m.mu.Unlock()
	return p.clone(), nil
}

func (m *Memo) holdersAt(ctx context.Context, unitID, role string, t time.Time) ([]string, error) {
	k := memoKey{unitID, role, t.UnixMicro()}
	m.mu.Lock()
	h, ok := m.holders[k]
	if !ok && m.loaded[memoKey{unit: unitID, at: k.at}] {
		ok = true // the unit's rosters were read, and none is this role's
	}
	m.mu.Unlock()
	if ok {
		return slices.Clone(h), nil
	}
	h, err := holdersAt(ctx, m.Queryer, unitID, role, t)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.holders[k] = h
	m.mu.Unlock()
	return slices.Clone(h), nil
}
