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

// Edit says when a roster edit is made and whether the editor accepts that
// it opens a coverage gap.
type Edit struct {
	Now        time.Time
	ConfirmGap bool
}

// Result tells the caller which unit-role an edit touched (to refresh the
// index after the commit) and whether it was applied over a gap.
type Result struct {
	Key     RoleKey `json:"-"`
	ID      string  `json:"id"`
	Flagged bool    `json:"gap_confirmed"`
	Gaps    []Gap   `json:"gaps,omitempty"`
}

// guarded applies an edit of one unit-role and checks that it opens no gap
// in a required role over the next CoverageWindow. A gap refuses the edit
// with *GapError unless e.ConfirmGap; then it is applied, stored in
// roster_gap_confirmations and audited as roster.gap_confirmed.
func guarded(ctx context.Context, tx Queryer, by Actor, key RoleKey, e Edit, objType string,
	apply func() (string, error)) (Result, error) {
	res := Result{Key: key}
	required, err := isRequired(ctx, tx, key)
	if err != nil {
		return res, err
	}
	from, to := e.Now, e.Now.Add(CoverageWindow)
	var before []Gap
	if required {
		r, err := loadRoster(ctx, tx, key.UnitID, key.Role, from, to)
		if err != nil {
			return res, err
		}
		before = GapsIn(key, r.Timeline(from, to))
	}
	if res.ID, err = apply(); err != nil || !required {
		return res, err
	}
	r, err := loadRoster(ctx, tx, key.UnitID, key.Role, from, to)
	if err != nil {
		return res, err
	}
	opened := newGaps(before, GapsIn(key, r.Timeline(from, to)))
	if len(opened) == 0 {
		return res, nil
	}
	if !e.ConfirmGap {
		return res, &GapError{Gaps: opened}
	}
	res.Flagged, res.Gaps = true, opened
	gaps, _ := json.Marshal(opened)
	if _, err := tx.ExecContext(ctx, `INSERT INTO roster_gap_confirmations (id, unit_id, role, object_type, object_id,
		gaps, confirmed_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, ids.New("gap"), key.UnitID, key.Role,
		objType, res.ID, string(gaps), by.ID, e.Now.UnixMicro()); err != nil {
		return res, fmt.Errorf("flag gap: %w", err)
	}
	err = audit.Append(ctx, tx, by.entryAt(e.Now, "roster.gap_confirmed", objType, res.ID, map[string]any{
		"unit_id": key.UnitID, "role": key.Role, "gaps": opened}))
	return res, err
}

func isRequired(ctx context.Context, q Queryer, key RoleKey) (bool, error) {
	var req int
	err := q.QueryRowContext(ctx, `SELECT required FROM unit_roles WHERE unit_id = $1 AND role = $2`,
		key.UnitID, key.Role).Scan(&req)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("unit role: %w", err)
	}
	return req != 0, nil
}

// PutRotation creates or replaces a rotation, audited with its before and
// after. A rotation keeps its unit and role; to move it, delete it and
// create another.
func PutRotation(ctx context.Context, tx Queryer, by Actor, rot Rotation, e Edit) (Result, error) {
	if err := rot.Validate(); err != nil {
		return Result{}, err
	}
	users := map[string]string{}
	for i, p := range rot.Participants {
		users[fmt.Sprintf("participants[%d]", i)] = p
	}
	if err := checkExists(ctx, tx, rot.UnitID, users); err != nil {
		return Result{}, err
	}
	before, err := GetRotation(ctx, tx, rot.ID)
	var prev any
	switch {
	case err == nil:
		if before.UnitID != rot.UnitID || before.Role != rot.Role {
			return Result{}, &InvalidError{"unit_id", "a rotation keeps its unit and role; delete it and create another"}
		}
		prev = before
	case !errors.Is(err, ErrNotFound):
		return Result{}, err
	}
	return guarded(ctx, tx, by, RoleKey{rot.UnitID, rot.Role}, e, "rotation", func() (string, error) {
		def, err := json.Marshal(rot)
		if err != nil {
			return "", fmt.Errorf("put rotation: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rotations (id, unit_id, role, name, definition, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET name = excluded.name,
			definition = excluded.definition, updated_at = excluded.updated_at`,
			rot.ID, rot.UnitID, rot.Role, rot.Name, string(def), e.Now.UnixMicro()); err != nil {
			return "", fmt.Errorf("put rotation: %w", err)
		}
		err = audit.Append(ctx, tx, by.entryAt(e.Now, "roster.rotation_saved", "rotation", rot.ID,
			map[string]any{"before": prev, "after": rot}))
		return rot.ID, err
	})
}

// GetRotation loads a rotation by id.
func GetRotation(ctx context.Context, q Queryer, id string) (Rotation, error) {
	var def string
	err := q.QueryRowContext(ctx, `SELECT definition FROM rotations WHERE id = $1`, id).Scan(&def)
	if errors.Is(err, sql.ErrNoRows) {
		return Rotation{}, fmt.Errorf("rotation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("get rotation: %w", err)
	}
	var rot Rotation
	if err := json.Unmarshal([]byte(def), &rot); err != nil {
		return rot, fmt.Errorf("rotation %q: %w", id, err)
	}
	return rot, nil
}

// ListRotations returns a unit's rotations (every unit's when empty).
func ListRotations(ctx context.Context, q Queryer, unitID string) ([]Rotation, error) {
	out := []Rotation{}
	err := eachRow(ctx, q, `SELECT definition FROM rotations WHERE ($1 = '' OR unit_id = $1) ORDER BY unit_id, role, id`,
		[]any{unitID}, func(scan func(...any) error) error {
			var def string
			if err := scan(&def); err != nil {
				return err
			}
			var rot Rotation
			if err := json.Unmarshal([]byte(def), &rot); err != nil {
				return err
			}
			out = append(out, rot)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list rotations: %w", err)
	}
	return out, nil
}

// DeleteRotation removes a rotation, audited with what it was.
func DeleteRotation(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error) {
	before, err := GetRotation(ctx, tx, id)
	if err != nil {
		return Result{}, err
	}
	return guarded(ctx, tx, by, RoleKey{before.UnitID, before.Role}, e, "rotation", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM rotations WHERE id = $1`, id); err != nil {
			return "", fmt.Errorf("delete rotation: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.rotation_deleted", "rotation", id,
			map[string]any{"before": before, "after": nil}))
		return id, err
	})
}

// AddOverride records an override and returns it with its id.
func AddOverride(ctx context.Context, tx Queryer, by Actor, o Override, e Edit) (Override, Result, error) {
	if err := o.Validate(); err != nil {
		return o, Result{}, err
	}
	users := map[string]string{"user_id": o.UserID}
	if o.ReplacesUserID != "" {
		users["replaces_user_id"] = o.ReplacesUserID
	}
	if err := checkExists(ctx, tx, o.UnitID, users); err != nil {
		return o, Result{}, err
	}
	o.ID = ids.New("ovr")
	res, err := guarded(ctx, tx, by, RoleKey{o.UnitID, o.Role}, e, "override", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO roster_overrides (id, unit_id, role, kind, user_id, replaces_user_id,
			starts_at, ends_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, o.ID, o.UnitID, o.Role, o.Kind,
			o.UserID, o.ReplacesUserID, o.Start.UnixMicro(), o.End.UnixMicro(), e.Now.UnixMicro()); err != nil {
			return "", fmt.Errorf("add override: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.override_added", "override", o.ID,
			map[string]any{"before": nil, "after": o}))
		return o.ID, err
	})
	return o, res, err
}

// DeleteOverride removes an override, audited with what it was.
func DeleteOverride(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error) {
	var o Override
	var start, end int64
	err := tx.QueryRowContext(ctx, `SELECT id, unit_id, role, kind, user_id, replaces_user_id, starts_at, ends_at
		FROM roster_overrides WHERE id = $1`, id).Scan(&o.ID, &o.UnitID, &o.Role, &o.Kind, &o.UserID, &o.ReplacesUserID, &start, &end)
	if errors.Is(err, sql.ErrNoRows) {
		return Result{}, fmt.Errorf("override %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Result{}, fmt.Errorf("delete override: %w", err)
	}
	o.Start, o.End = micros(start), micros(end)
	return guarded(ctx, tx, by, RoleKey{o.UnitID, o.Role}, e, "override", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM roster_overrides WHERE id = $1`, id); err != nil {
			return "", fmt.Errorf("delete override: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.override_deleted", "override", id,
			map[string]any{"before": o, "after": nil}))
		return id, err
	})
}

// AddSwap records a swap between two users and returns it with its id.
func AddSwap(ctx context.Context, tx Queryer, by Actor, s Swap, e Edit) (Swap, Result, error) {
	if err := s.Validate(); err != nil {
		return s, Result{}, err
	}
	if err := checkExists(ctx, tx, s.UnitID, map[string]string{"user_a": s.UserA, "user_b": s.UserB}); err != nil {
		return s, Result{}, err
	}
	s.ID = ids.New("swp")
	res, err := guarded(ctx, tx, by, RoleKey{s.UnitID, s.Role}, e, "swap", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO roster_swaps (id, unit_id, role, user_a, user_b, a_starts_at, a_ends_at,
			b_starts_at, b_ends_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, s.ID, s.UnitID, s.Role,
			s.UserA, s.UserB, s.AStart.UnixMicro(), s.AEnd.UnixMicro(), s.BStart.UnixMicro(), s.BEnd.UnixMicro(),
			e.Now.UnixMicro()); err != nil {
			return "", fmt.Errorf("add swap: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.swap_added", "swap", s.ID,
			map[string]any{"before": nil, "after": s}))
		return s.ID, err
	})
	return s, res, err
}

// DeleteSwap removes a swap, audited with what it was.
func DeleteSwap(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error) {
	var s Swap
	var as, ae, bs, be int64
	err := tx.QueryRowContext(ctx, `SELECT id, unit_id, role, user_a, user_b, a_starts_at, a_ends_at, b_starts_at, b_ends_at
		FROM roster_swaps WHERE id = $1`, id).Scan(&s.ID, &s.UnitID, &s.Role, &s.UserA, &s.UserB, &as, &ae, &bs, &be)
	if errors.Is(err, sql.ErrNoRows) {
		return Result{}, fmt.Errorf("swap %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Result{}, fmt.Errorf("delete swap: %w", err)
	}
	s.AStart, s.AEnd, s.BStart, s.BEnd = micros(as), micros(ae), micros(bs), micros(be)
	return guarded(ctx, tx, by, RoleKey{s.UnitID, s.Role}, e, "swap", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM roster_swaps WHERE id = $1`, id); err != nil {
			return "", fmt.Errorf("delete swap: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.swap_deleted", "swap", id,
			map[string]any{"before": s, "after": nil}))
		return id, err
	})
}

// PutTemporarySchedule creates or replaces a temporary schedule.
func PutTemporarySchedule(ctx context.Context, tx Queryer, by Actor, ts TemporarySchedule, e Edit) (Result, error) {
	if err := ts.Validate(); err != nil {
		return Result{}, err
	}
	users := map[string]string{}
	for i, s := range ts.Shifts {
		users[fmt.Sprintf("shifts[%d].user_id", i)] = s.UserID
	}
	if err := checkExists(ctx, tx, ts.UnitID, users); err != nil {
		return Result{}, err
	}
	before, err := getTemporary(ctx, tx, ts.ID)
	var prev any
	switch {
	case err == nil:
		if before.UnitID != ts.UnitID || before.Role != ts.Role {
			return Result{}, &InvalidError{"unit_id", "a temporary schedule keeps its unit and role"}
		}
		prev = before
	case !errors.Is(err, ErrNotFound):
		return Result{}, err
	}
	return guarded(ctx, tx, by, RoleKey{ts.UnitID, ts.Role}, e, "temporary_schedule", func() (string, error) {
		def, err := json.Marshal(ts)
		if err != nil {
			return "", fmt.Errorf("put temporary schedule: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO temporary_schedules (id, unit_id, role, starts_at, ends_at, definition,
			updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET starts_at = excluded.starts_at,
			ends_at = excluded.ends_at, definition = excluded.definition, updated_at = excluded.updated_at`,
			ts.ID, ts.UnitID, ts.Role, ts.Start.UnixMicro(), ts.End.UnixMicro(), string(def), e.Now.UnixMicro()); err != nil {
			return "", fmt.Errorf("put temporary schedule: %w", err)
		}
		err = audit.Append(ctx, tx, by.entryAt(e.Now, "roster.temporary_saved", "temporary_schedule", ts.ID,
			map[string]any{"before": prev, "after": ts}))
		return ts.ID, err
	})
}

func getTemporary(ctx context.Context, q Queryer, id string) (TemporarySchedule, error) {
	var def string
	err := q.QueryRowContext(ctx, `SELECT definition FROM temporary_schedules WHERE id = $1`, id).Scan(&def)
	if errors.Is(err, sql.ErrNoRows) {
		return TemporarySchedule{}, fmt.Errorf("temporary schedule %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return TemporarySchedule{}, fmt.Errorf("get temporary schedule: %w", err)
	}
	var ts TemporarySchedule
	err = json.Unmarshal([]byte(def), &ts)
	return ts, err
}

// DeleteTemporarySchedule removes a temporary schedule.
func DeleteTemporarySchedule(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error) {
	before, err := getTemporary(ctx, tx, id)
	if err != nil {
		return Result{}, err
	}
	return guarded(ctx, tx, by, RoleKey{before.UnitID, before.Role}, e, "temporary_schedule", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM temporary_schedules WHERE id = $1`, id); err != nil {
			return "", fmt.Errorf("delete temporary schedule: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.temporary_deleted", "temporary_schedule", id,
			map[string]any{"before": before, "after": nil}))
		return id, err
	})
}

// GetShift loads an explicit shift by id.
func GetShift(ctx context.Context, q Queryer, id string) (Shift, error) {
	var s Shift
	var start, end int64
	err := q.QueryRowContext(ctx, `SELECT id, unit_id, role, user_id, starts_at, ends_at FROM shifts WHERE id = $1`, id).
		Scan(&s.ID, &s.UnitID, &s.Role, &s.UserID, &start, &end)
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("shift %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("get shift: %w", err)
	}
	s.Start, s.End = micros(start), micros(end)
	return s, nil
}

// DeleteShift removes an explicit shift, audited with what it was.
func DeleteShift(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error) {
	before, err := GetShift(ctx, tx, id)
	if err != nil {
		return Result{}, err
	}
	return guarded(ctx, tx, by, RoleKey{before.UnitID, before.Role}, e, "shift", func() (string, error) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM shifts WHERE id = $1`, id); err != nil {
			return "", fmt.Errorf("delete shift: %w", err)
		}
		err := audit.Append(ctx, tx, by.entryAt(e.Now, "roster.shift_deleted", "shift", id,
			map[string]any{"before": before, "after": nil}))
		return id, err
	})
}
