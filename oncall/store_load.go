package oncall

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// RoleKey names one unit-role.
type RoleKey struct {
	UnitID string
	Role   string
}

// rosterFilter selects rosters: an empty unit or role means all. Dated
// entries are loaded when they overlap [from, to); rotations always are.
type rosterFilter struct {
	unitID, role string
	from, to     time.Time
}

func (f rosterFilter) where() (string, []any) {
	return ` WHERE ($1 = '' OR unit_id = $1) AND ($2 = '' OR role = $2)`, []any{f.unitID, f.role}
}

// loadRosters reads every roster the filter selects, with each unit's
// zone, in one query per table. Unit-roles that only appear as required
// (no entries yet) are included, so coverage sees them.
func loadRosters(ctx context.Context, q Queryer, f rosterFilter) (map[RoleKey]*Roster, error) {
	zones, err := unitZones(ctx, q, f.unitID)
	if err != nil {
		return nil, err
	}
	out := map[RoleKey]*Roster{}
	get := func(unit, role string) *Roster {
		k := RoleKey{unit, role}
		r := out[k]
		if r == nil {
			r = &Roster{UnitID: unit, Role: role, Loc: zones[unit]}
			if r.Loc == nil {
				r.Loc = time.UTC
			}
			out[k] = r
		}
		return r
	}
	where, args := f.where()
	dated := where + ` AND starts_at < $4 AND ends_at > $3`
	from, to := f.from.UnixMicro(), f.to.UnixMicro()
	type loader struct {
		query string
		args  []any
		scan  func(scan func(...any) error) error
	}
	loaders := []loader{
		{`SELECT unit_id, role FROM unit_roles` + where, args, func(scan func(...any) error) error {
			var unit, role string
			if err := scan(&unit, &role); err != nil {
				return err
			}
			get(unit, role)
			return nil
		}},
		{`SELECT unit_id, role, definition FROM rotations` + where + ` ORDER BY id`, args, func(scan func(...any) error) error {
			var unit, role, def string
			if err := scan(&unit, &role, &def); err != nil {
				return err
			}
			var rot Rotation
			if err := json.Unmarshal([]byte(def), &rot); err != nil {
				return fmt.Errorf("rotation definition: %w", err)
			}
			r := get(unit, role)
			r.Rotations = append(r.Rotations, rot)
			return nil
		}},
		{`SELECT id, unit_id, role, user_id, starts_at, ends_at FROM shifts` + dated + ` ORDER BY starts_at, id`,
			append(args, from, to), func(scan func(...any) error) error {
				var s Shift
				var start, end int64
				if err := scan(&s.ID, &s.UnitID, &s.Role, &s.UserID, &start, &end); err != nil {
					return err
				}
				s.Start, s.End = micros(start), micros(end)
				r := get(s.UnitID, s.Role)
				r.Shifts = append(r.Shifts, s)
				return nil
			}},
		{`SELECT id, unit_id, role, definition FROM temporary_schedules` + dated + ` ORDER BY starts_at, id`,
			append(args, from, to), func(scan func(...any) error) error {
				var id, unit, role, def string
				if err := scan(&id, &unit, &role, &def); err != nil {
					return err
				}
				var ts TemporarySchedule
				if err := json.Unmarshal([]byte(def), &ts); err != nil {
					return fmt.Errorf("temporary schedule definition: %w", err)
				}
				r := get(unit, role)
				r.Temporary = append(r.Temporary, ts)
				return nil
			}},
		{`SELECT id, unit_id, role, user_a, user_b, a_starts_at, a_ends_at, b_starts_at, b_ends_at FROM roster_swaps` +
			where + ` AND ((a_starts_at < $4 AND a_ends_at > $3) OR (b_starts_at < $4 AND b_ends_at > $3)) ORDER BY created_at, id`,
			append(args, from, to), func(scan func(...any) error) error {
				var s Swap
				var as, ae, bs, be int64
				if err := scan(&s.ID, &s.UnitID, &s.Role, &s.UserA, &s.UserB, &as, &ae, &bs, &be); err != nil {
					return err
				}
				s.AStart, s.AEnd, s.BStart, s.BEnd = micros(as), micros(ae), micros(bs), micros(be)
				r := get(s.UnitID, s.Role)
				r.Swaps = append(r.Swaps, s)
				return nil
			}},
		{`SELECT id, unit_id, role, kind, user_id, replaces_user_id, starts_at, ends_at FROM roster_overrides` + dated +
			` ORDER BY created_at, id`, append(args, from, to), func(scan func(...any) error) error {
			var o Override
			var start, end int64
			if err := scan(&o.ID, &o.UnitID, &o.Role, &o.Kind, &o.UserID, &o.ReplacesUserID, &start, &end); err != nil {
				return err
			}
			o.Start, o.End = micros(start), micros(end)
			r := get(o.UnitID, o.Role)
			r.Overrides = append(r.Overrides, o)
			return nil
		}},
	}
	for _, l := range loaders {
		if err := eachRow(ctx, q, l.query, l.args, l.scan); err != nil {
			return nil, fmt.Errorf("load rosters: %w", err)
		}
	}
	return out, nil
}

// loadRoster reads one unit-role's roster for [from, to).
func loadRoster(ctx context.Context, q Queryer, unitID, role string, from, to time.Time) (Roster, error) {
	m, err := loadRosters(ctx, q, rosterFilter{unitID: unitID, role: role, from: from, to: to})
	if err != nil {
		return Roster{}, err
	}
	if r := m[RoleKey{unitID, role}]; r != nil {
		return *r, nil
	}
	zones, err := unitZones(ctx, q, unitID)
	if err != nil {
		return Roster{}, err
	}
	loc := zones[unitID]
	if loc == nil {
		loc = time.UTC
	}
	return Roster{UnitID: unitID, Role: role, Loc: loc}, nil
}

// unitZones returns each unit's location (one unit, or all when empty).
func unitZones(ctx context.Context, q Queryer, unitID string) (map[string]*time.Location, error) {
	out := map[string]*time.Location{}
	err := eachRow(ctx, q, `SELECT id, time_zone FROM units WHERE ($1 = '' OR id = $1)`, []any{unitID},
		func(scan func(...any) error) error {
			var id, tz string
			if err := scan(&id, &tz); err != nil {
				return err
			}
			loc, err := time.LoadLocation(tz)
			if err != nil {
				return fmt.Errorf("unit %s zone: %w", id, err)
			}
			out[id] = loc
			return nil
		})
	return out, err
}

// eachRow runs query and calls fn with each row's Scan.
func eachRow(ctx context.Context, q Queryer, query string, args []any, fn func(scan func(...any) error) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

func micros(us int64) time.Time { return time.UnixMicro(us).UTC() }
