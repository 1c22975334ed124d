package oncall

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/ids"
)

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Actor is who makes an edit, for the audit record.
type Actor struct {
	Type, ID, Role string
}

func (a Actor) entry(action, objType, objID string, detail map[string]any) audit.Entry {
	return audit.Entry{ActorType: a.Type, ActorID: a.ID, ActorRole: a.Role, Action: action,
		ObjectType: objType, ObjectID: objID, CorrelationID: objID, Detail: detail}
}

// entryAt is entry at an explicit time (edits carry their own clock).
func (a Actor) entryAt(at time.Time, action, objType, objID string, detail map[string]any) audit.Entry {
	e := a.entry(action, objType, objID, detail)
	e.At = at
	return e
}

// PutUnit creates or replaces a unit, audited in tx.
func PutUnit(ctx context.Context, tx Queryer, by Actor, u Unit) error {
	if err := u.Validate(); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO units (id, name, time_zone) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, time_zone = excluded.time_zone`, u.ID, u.Name, u.TimeZone)
	if err != nil {
		return fmt.Errorf("put unit: %w", err)
	}
	err = audit.Append(ctx, tx, by.entry("unit.saved", "unit", u.ID, map[string]any{"time_zone": u.TimeZone}))
	return err
}

// PutUser creates or replaces a user, audited in tx.
func PutUser(ctx context.Context, tx Queryer, by Actor, u User) error {
	if u.ID == "" || u.Name == "" {
		return &InvalidError{"user", "id and name are required"}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO users (id, name) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name`, u.ID, u.Name)
	if err != nil {
		return fmt.Errorf("put user: %w", err)
	}
	err = audit.Append(ctx, tx, by.entry("user.saved", "user", u.ID, nil))
	return err
}

// UserExists reports whether the user id is known.
func UserExists(ctx context.Context, q Queryer, id string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE id = $1`, id).Scan(&n)
	return n > 0, err
}

// AddShift records a shift, audited in tx, and returns it with its id.
func AddShift(ctx context.Context, tx Queryer, by Actor, s Shift) (Shift, error) {
	if err := s.Validate(); err != nil {
		return s, err
	}
	for _, check := range []struct{ table, id string }{{"units", s.UnitID}, {"users", s.UserID}} {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+check.table+` WHERE id = $1`, check.id).Scan(&n); err != nil {
			return s, fmt.Errorf("add shift: %w", err)
		}
		if n == 0 {
			return s, &InvalidError{check.table[:len(check.table)-1] + "_id", fmt.Sprintf("unknown %q", check.id)}
		}
	}
	s.ID = ids.New("shf")
	_, err := tx.ExecContext(ctx, `INSERT INTO shifts (id, unit_id, role, user_id, starts_at, ends_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.ID, s.UnitID, s.Role, s.UserID, s.Start.UnixMicro(), s.End.UnixMicro())
	if err != nil {
		return s, fmt.Errorf("add shift: %w", err)
	}
	err = audit.Append(ctx, tx, by.entry("roster.shift_added", "shift", s.ID, map[string]any{
		"unit_id": s.UnitID, "role": s.Role, "user_id": s.UserID,
		"start": s.Start.UTC().Format(time.RFC3339), "end": s.End.UTC().Format(time.RFC3339)}))
	return s, err
}

// HoldersAt returns who holds role in unit at t, every roster layer
// included, read from q: inside a transaction it sees that transaction's
// own edits (unless q is a Memo, which remembers its first answer).
// Holders are sorted by user id.
func HoldersAt(ctx context.Context, q Queryer, unitID, role string, t time.Time) ([]string, error) {
	if m, ok := q.(*Memo); ok {
		return m.holdersAt(ctx, unitID, role, t)
	}
	return holdersAt(ctx, q, unitID, role, t)
}

func holdersAt(ctx context.Context, q Queryer, unitID, role string, t time.Time) ([]string, error) {
	r, err := loadRoster(ctx, q, unitID, role, t, t.Add(time.Microsecond))
	if err != nil {
		return nil, fmt.Errorf("holders: %w", err)
	}
	return r.HoldersAt(t), nil
}

// holdersEverywhere returns who holds role at t in the listed units (in
// every unit when units is empty).
func holdersEverywhere(ctx context.Context, q Queryer, role string, units []string, t time.Time) ([]string, error) {
	rosters, _, err := loadRosters(ctx, q, rosterFilter{role: role, from: t, to: t.Add(time.Microsecond)})
	if err != nil {
		return nil, fmt.Errorf("holders: %w", err)
	}
	keys := make([]RoleKey, 0, len(rosters))
	for k := range rosters {
		if len(units) == 0 || slices.Contains(units, k.UnitID) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b RoleKey) int { return strings.Compare(a.UnitID, b.UnitID) })
	var out []string
	for _, k := range keys {
		for _, u := range rosters[k].HoldersAt(t) {
			out = addUser(out, u)
		}
	}
	return out, nil
}

// policyOptions is what escalation_policies.options holds (steps have
// their own column, from before repeat, handoff and by_priority existed).
type policyOptions struct {
	Repeat     int               `json:"repeat,omitempty"`
	Handoff    bool              `json:"handoff,omitempty"`
	ByPriority map[string]string `json:"by_priority,omitempty"`
}

// PutPolicy creates or replaces an escalation policy, audited in tx with
// its before and after. Policies named in by_priority must exist.
func PutPolicy(ctx context.Context, tx Queryer, by Actor, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	for prio, id := range p.ByPriority {
		if _, err := GetPolicy(ctx, tx, id); errors.Is(err, ErrNotFound) {
			return &InvalidError{"by_priority." + prio, fmt.Sprintf("unknown policy %q", id)}
		} else if err != nil {
			return err
		}
	}
	before, err := GetPolicy(ctx, tx, p.ID)
	var prev any
	switch {
	case err == nil:
		prev = before
	case !errors.Is(err, ErrNotFound):
		return err
	}
	steps, err := json.Marshal(p.Steps)
	if err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	opts, err := json.Marshal(policyOptions{Repeat: p.Repeat, Handoff: p.Handoff, ByPriority: p.ByPriority})
	if err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO escalation_policies (id, name, steps, options) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, steps = excluded.steps, options = excluded.options`,
		p.ID, p.Name, string(steps), string(opts))
	if err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	err = audit.Append(ctx, tx, by.entry("policy.saved", "escalation_policy", p.ID,
		map[string]any{"steps": json.RawMessage(steps), "before": prev, "after": p}))
	return err
}

// GetPolicy loads a policy by id.
func GetPolicy(ctx context.Context, q Queryer, id string) (Policy, error) {
	if m, ok := q.(*Memo); ok {
		return m.policy(ctx, id)
	}
	return getPolicy(ctx, q, id)
}

func getPolicy(ctx context.Context, q Queryer, id string) (Policy, error) {
	p, err := scanPolicy(q.QueryRowContext(ctx, policySQL, id), id)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("policy %q: %w", id, ErrNotFound)
	}
	return p, err
}

// policySQL reads one escalation policy by id.
const policySQL = `SELECT name, steps, options, accepts_required FROM escalation_policies WHERE id = $1`

// scanPolicy reads policy id from policySQL's row.
func scanPolicy(row interface{ Scan(...any) error }, id string) (Policy, error) {
	p := Policy{ID: id}
	var steps, opts string
	err := row.Scan(&p.Name, &steps, &opts, &p.AcceptsRequired)
	if errors.Is(err, sql.ErrNoRows) {
		return p, err
	}
	if err != nil {
		return p, fmt.Errorf("get policy: %w", err)
	}
	if err := json.Unmarshal([]byte(steps), &p.Steps); err != nil {
		return p, fmt.Errorf("policy %q steps: %w", id, err)
	}
	var o policyOptions
	if err := json.Unmarshal([]byte(opts), &o); err != nil {
		return p, fmt.Errorf("policy %q options: %w", id, err)
	}
	p.Repeat, p.Handoff, p.ByPriority = o.Repeat, o.Handoff, o.ByPriority
	p.AcceptsRequired = max(p.AcceptsRequired, 1)
	return p, nil
}

// PolicyFor returns the policy that escalates an alert of priority under
// policy id: the one its by_priority names for that priority, else itself.
func PolicyFor(ctx context.Context, q Queryer, id, priority string) (Policy, error) {
	p, err := GetPolicy(ctx, q, id)
	if err != nil {
		return p, err
	}
	if alt := p.ByPriority[priority]; alt != "" {
		return GetPolicy(ctx, q, alt)
	}
	return p, nil
}

// ResolveStep returns the users a policy step pages for an alert in unitID
// at t, without repeats, in target order. An empty answer means nobody
// holds the roles now.
func ResolveStep(ctx context.Context, q Queryer, step Step, unitID string, t time.Time) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, tg := range step.Targets {
		switch tg.Kind {
		case TargetUser:
			add(tg.UserID)
		case TargetRole:
			unit := tg.UnitID
			if unit == "" {
				unit = unitID
			}
			if unit == "" {
				continue
			}
			holders, err := HoldersAt(ctx, q, unit, tg.Role, t)
			if err != nil {
				return nil, err
			}
			for _, h := range holders {
				add(h)
			}
		case TargetEveryoneInRole:
			holders, err := holdersEverywhere(ctx, q, tg.Role, tg.UnitIDs, t)
			if err != nil {
				return nil, err
			}
			for _, h := range holders {
				add(h)
			}
		case TargetTeam:
			team, err := GetTeam(ctx, q, tg.TeamID)
			if errors.Is(err, ErrNotFound) {
				continue // a deleted team pages nobody; the step is then skipped and audited
			}
			if err != nil {
				return nil, err
			}
			for _, m := range team.Members {
				add(m)
			}
		}
	}
	return out, nil
}
