package oncall

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clarion-health/clarion/audit"
)

// UnitRole is a role a unit uses; Required means it must be held around
// the clock, and a period nobody holds it is a gap.
type UnitRole struct {
	UnitID   string `json:"unit_id"`
	Role     string `json:"role"`
	Required bool   `json:"required"`
}

// PutUnitRole creates or replaces a unit-role, audited with before and after.
func PutUnitRole(ctx context.Context, tx Queryer, by Actor, ur UnitRole, now time.Time) error {
	if ur.UnitID == "" || ur.Role == "" {
		return &InvalidError{"unit_role", "unit_id and role are required"}
	}
	if err := checkExists(ctx, tx, ur.UnitID, nil); err != nil {
		return err
	}
	before, err := isRequired(ctx, tx, RoleKey{ur.UnitID, ur.Role})
	if err != nil {
		return err
	}
	req := 0
	if ur.Required {
		req = 1
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO unit_roles (unit_id, role, required) VALUES ($1, $2, $3)
		ON CONFLICT (unit_id, role) DO UPDATE SET required = excluded.required`, ur.UnitID, ur.Role, req); err != nil {
		return fmt.Errorf("put unit role: %w", err)
	}
	err = audit.Append(ctx, tx, by.entryAt(now, "unit.role_saved", "unit", ur.UnitID, map[string]any{
		"role": ur.Role, "before": map[string]any{"required": before}, "after": map[string]any{"required": ur.Required}}))
	return err
}

// ListUnitRoles returns a unit's declared roles.
func ListUnitRoles(ctx context.Context, q Queryer, unitID string) ([]UnitRole, error) {
	out := []UnitRole{}
	err := eachRow(ctx, q, `SELECT unit_id, role, required FROM unit_roles WHERE ($1 = '' OR unit_id = $1) ORDER BY unit_id, role`,
		[]any{unitID}, func(scan func(...any) error) error {
			var ur UnitRole
			var req int
			if err := scan(&ur.UnitID, &ur.Role, &req); err != nil {
				return err
			}
			ur.Required = req != 0
			out = append(out, ur)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list unit roles: %w", err)
	}
	return out, nil
}

// Team is a named group of users, paged together by a team target.
type Team struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Members []string `json:"members"`
}

// PutTeam creates or replaces a team and its members, audited with before
// and after.
func PutTeam(ctx context.Context, tx Queryer, by Actor, t Team, now time.Time) error {
	if t.ID == "" || t.Name == "" {
		return &InvalidError{"team", "id and name are required"}
	}
	users := map[string]string{}
	for i, m := range t.Members {
		if slices.Contains(t.Members[:i], m) {
			return &InvalidError{fmt.Sprintf("members[%d]", i), "listed twice"}
		}
		users[fmt.Sprintf("members[%d]", i)] = m
	}
	if err := checkExists(ctx, tx, "", users); err != nil {
		return err
	}
	var prev any
	if before, err := GetTeam(ctx, tx, t.ID); err == nil {
		prev = before
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO teams (id, name) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name`, t.ID, t.Name); err != nil {
		return fmt.Errorf("put team: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM team_members WHERE team_id = $1`, t.ID); err != nil {
		return fmt.Errorf("put team: %w", err)
	}
	for i, m := range t.Members {
		if _, err := tx.ExecContext(ctx, `INSERT INTO team_members (team_id, user_id, position) VALUES ($1, $2, $3)`,
			t.ID, m, i); err != nil {
			return fmt.Errorf("put team: %w", err)
		}
	}
	err := audit.Append(ctx, tx, by.entryAt(now, "team.saved", "team", t.ID, map[string]any{"before": prev, "after": t}))
	return err
}

// GetTeam loads a team with its members in order.
func GetTeam(ctx context.Context, q Queryer, id string) (Team, error) {
	t := Team{ID: id, Members: []string{}}
	err := q.QueryRowContext(ctx, `SELECT name FROM teams WHERE id = $1`, id).Scan(&t.Name)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("team %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("get team: %w", err)
	}
	err = eachRow(ctx, q, `SELECT user_id FROM team_members WHERE team_id = $1 ORDER BY position`, []any{id},
		func(scan func(...any) error) error {
			var u string
			if err := scan(&u); err != nil {
				return err
			}
			t.Members = append(t.Members, u)
			return nil
		})
	if err != nil {
		return t, fmt.Errorf("get team: %w", err)
	}
	return t, nil
}

// AssignScheduler lets a user with the scheduler role edit a unit's rosters.
func AssignScheduler(ctx context.Context, tx Queryer, by Actor, userID, unitID string, now time.Time) error {
	if err := checkExists(ctx, tx, unitID, map[string]string{"user_id": userID}); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO scheduler_units (user_id, unit_id) VALUES ($1, $2)
		ON CONFLICT (user_id, unit_id) DO NOTHING`, userID, unitID); err != nil {
		return fmt.Errorf("assign scheduler: %w", err)
	}
	err := audit.Append(ctx, tx, by.entryAt(now, "scheduler.assigned", "unit", unitID, map[string]any{"user_id": userID}))
	return err
}

// UnassignScheduler removes a scheduler's right to edit a unit.
func UnassignScheduler(ctx context.Context, tx Queryer, by Actor, userID, unitID string, now time.Time) error {
	r, err := tx.ExecContext(ctx, `DELETE FROM scheduler_units WHERE user_id = $1 AND unit_id = $2`, userID, unitID)
	if err != nil {
		return fmt.Errorf("unassign scheduler: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return fmt.Errorf("scheduler %q of unit %q: %w", userID, unitID, ErrNotFound)
	}
	err = audit.Append(ctx, tx, by.entryAt(now, "scheduler.unassigned", "unit", unitID, map[string]any{"user_id": userID}))
	return err
}

// Schedulers returns the users assigned to edit a unit.
func Schedulers(ctx context.Context, q Queryer, unitID string) ([]string, error) {
	var out []string
	err := eachRow(ctx, q, `SELECT user_id FROM scheduler_units WHERE unit_id = $1 ORDER BY user_id`, []any{unitID},
		func(scan func(...any) error) error {
			var u string
			if err := scan(&u); err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("schedulers: %w", err)
	}
	return out, nil
}

// CanEdit returns nil when the actor may edit unitID's rosters: an admin
// always, a scheduler for the units assigned to them, nobody else.
func CanEdit(ctx context.Context, q Queryer, by Actor, unitID string) error {
	switch by.Role {
	case "admin":
		return nil
	case "scheduler":
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM scheduler_units WHERE user_id = $1 AND unit_id = $2`,
			by.ID, unitID).Scan(&n); err != nil {
			return fmt.Errorf("scheduler scope: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
	return ErrForbidden
}
