package oncall

import (
	"context"
	"slices"
	"sync"
	"time"
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
// mostly share one.
//
// Use a Memo only for one transaction that edits no roster or policy: it
// does not see an edit made through it after its first read.
type Memo struct {
	Queryer
	mu       sync.Mutex
	holders  map[memoKey][]string
	policies map[string]Policy
}

type memoKey struct {
	unit, role string
	at         int64 // unix microseconds
}

// NewMemo wraps q, normally a transaction.
func NewMemo(q Queryer) *Memo {
	return &Memo{Queryer: q, holders: map[memoKey][]string{}, policies: map[string]Policy{}}
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
