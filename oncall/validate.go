package oncall

import (
	"context"
	"fmt"
	"time"
)

// Validate checks the override's fields.
func (o *Override) Validate() error {
	switch {
	case o.UnitID == "" || o.Role == "" || o.UserID == "":
		return &InvalidError{"override", "unit_id, role and user_id are required"}
	case !o.End.After(o.Start):
		return &InvalidError{"end", "must be after start"}
	}
	switch o.Kind {
	case OverrideAdd, OverrideRemove:
		if o.ReplacesUserID != "" {
			return &InvalidError{"replaces_user_id", "only for a replace override"}
		}
	case OverrideReplace:
		if o.ReplacesUserID == "" || o.ReplacesUserID == o.UserID {
			return &InvalidError{"replaces_user_id", "a replace override names another user to replace"}
		}
	default:
		return &InvalidError{"kind", "must be add, remove or replace"}
	}
	return nil
}

// Validate checks the swap's fields.
func (s *Swap) Validate() error {
	switch {
	case s.UnitID == "" || s.Role == "" || s.UserA == "" || s.UserB == "":
		return &InvalidError{"swap", "unit_id, role, user_a and user_b are required"}
	case s.UserA == s.UserB:
		return &InvalidError{"user_b", "must differ from user_a"}
	case !s.AEnd.After(s.AStart):
		return &InvalidError{"a_end", "must be after a_start"}
	case s.BStart.IsZero() != s.BEnd.IsZero():
		return &InvalidError{"b_end", "b_start and b_end go together"}
	case !s.BStart.IsZero() && !s.BEnd.After(s.BStart):
		return &InvalidError{"b_end", "must be after b_start"}
	}
	if s.BStart.IsZero() { // one-way: an empty B period
		s.BStart, s.BEnd = s.AStart, s.AStart
	}
	return nil
}

// Validate checks the temporary schedule's fields.
func (ts *TemporarySchedule) Validate() error {
	switch {
	case ts.ID == "" || ts.UnitID == "" || ts.Role == "":
		return &InvalidError{"temporary_schedule", "id, unit_id and role are required"}
	case !ts.End.After(ts.Start):
		return &InvalidError{"end", "must be after start"}
	}
	for i, s := range ts.Shifts {
		f := fmt.Sprintf("shifts[%d]", i)
		switch {
		case s.UserID == "":
			return &InvalidError{f + ".user_id", "required"}
		case !s.End.After(s.Start):
			return &InvalidError{f + ".end", "must be after start"}
		case s.Start.Before(ts.Start) || s.End.After(ts.End):
			return &InvalidError{f, "must lie within the schedule's period"}
		}
	}
	return nil
}

// checkExists refuses unknown units and users with the field named.
func checkExists(ctx context.Context, q Queryer, unitID string, users map[string]string) error {
	if unitID != "" {
		if ok, err := exists(ctx, q, "units", unitID); err != nil {
			return err
		} else if !ok {
			return &InvalidError{"unit_id", fmt.Sprintf("unknown %q", unitID)}
		}
	}
	for field, id := range users {
		if ok, err := exists(ctx, q, "users", id); err != nil {
			return err
		} else if !ok {
			return &InvalidError{field, fmt.Sprintf("unknown user %q", id)}
		}
	}
	return nil
}

// exists reports whether table (a constant) has a row with id.
func exists(ctx context.Context, q Queryer, table, id string) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE id = $1`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("check %s: %w", table, err)
	}
	return n > 0, nil
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }
