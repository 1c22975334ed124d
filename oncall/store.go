package oncall

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
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
	_, err = audit.Append(ctx, tx, by.entry("unit.saved", "unit", u.ID, map[string]any{"time_zone": u.TimeZone}))
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
	_, err = audit.Append(ctx, tx, by.entry("user.saved", "user", u.ID, nil))
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
	_, err = audit.Append(ctx, tx, by.entry("roster.shift_added", "shift", s.ID, map[string]any{
		"unit_id": s.UnitID, "role": s.Role, "user_id": s.UserID,
		"start": s.Start.UTC().Format(time.RFC3339), "end": s.End.UTC().Format(time.RFC3339)}))
	return s, err
}

// HoldersAt returns who holds role in unit at t.
func HoldersAt(ctx context.Context, q Queryer, unitID, role string, t time.Time) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, unit_id, role, user_id, starts_at, ends_at FROM shifts
		WHERE unit_id = $1 AND role = $2 AND starts_at <= $3 AND ends_at > $3 ORDER BY starts_at, id`,
		unitID, role, t.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("holders: %w", err)
	}
	defer rows.Close()
	var shifts []Shift
	for rows.Next() {
		var s Shift
		var start, end int64
		if err := rows.Scan(&s.ID, &s.UnitID, &s.Role, &s.UserID, &start, &end); err != nil {
			return nil, fmt.Errorf("holders: %w", err)
		}
		s.Start, s.End = time.UnixMicro(start), time.UnixMicro(end)
		shifts = append(shifts, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("holders: %w", err)
	}
	return Holders(shifts, t), nil
}

// PutPolicy creates or replaces an escalation policy, audited in tx.
func PutPolicy(ctx context.Context, tx Queryer, by Actor, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	steps, err := json.Marshal(p.Steps)
	if err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO escalation_policies (id, name, steps) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, steps = excluded.steps`, p.ID, p.Name, string(steps))
	if err != nil {
		return fmt.Errorf("put policy: %w", err)
	}
	_, err = audit.Append(ctx, tx, by.entry("policy.saved", "escalation_policy", p.ID,
		map[string]any{"steps": json.RawMessage(steps)}))
	return err
}

// GetPolicy loads a policy by id.
func GetPolicy(ctx context.Context, q Queryer, id string) (Policy, error) {
	p := Policy{ID: id}
	var steps string
	err := q.QueryRowContext(ctx, `SELECT name, steps FROM escalation_policies WHERE id = $1`, id).Scan(&p.Name, &steps)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("policy %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("get policy: %w", err)
	}
	if err := json.Unmarshal([]byte(steps), &p.Steps); err != nil {
		return p, fmt.Errorf("policy %q steps: %w", id, err)
	}
	return p, nil
}

// ResolveStep returns the users a policy step pages for an alert in unitID
// at t, without repeats. An empty answer means nobody holds the roles now.
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
		}
	}
	return out, nil
}
