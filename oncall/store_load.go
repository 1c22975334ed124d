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

// rosterQuery returns the statement that reads the units' zones and every
// roster table the filter selects, with its arguments: one round trip
// instead of seven, as routing reads a roster for each alert it opens.
// Each table's rows are cast to one shape, told apart by the first column
// (rowZone... rowOverride) and sorted within a table as its own query
// would be: by ord, then id. The text differs with the filter's shape,
// rather than testing for an empty unit or role in SQL, so that
// PostgreSQL plans each shape once and keeps the plan: planning a
// seven-way UNION for every alert costs more than running it.
func rosterQuery(f rosterFilter) (string, []any) {
	var args []any
	param := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	zone, where := "", " WHERE TRUE"
	if f.unitID != "" {
		u := param(f.unitID)
		zone, where = " WHERE id = "+u, where+" AND unit_id = "+u
	}
	if f.role != "" {
		where += " AND role = " + param(f.role)
	}
	from, to := param(f.from.UnixMicro()), param(f.to.UnixMicro())
	dated := where + " AND starts_at < " + to + " AND ends_at > " + from
	return `
SELECT 0 AS tbl, id, '' AS unit_id, '' AS role, time_zone AS s1, '' AS s2, '' AS s3,
	0 AS t1, 0 AS t2, 0 AS t3, 0 AS t4, 0 AS ord FROM units` + zone + `
UNION ALL SELECT 1, '', unit_id, role, '', '', '', 0, 0, 0, 0, 0 FROM unit_roles` + where + `
UNION ALL SELECT 2, id, unit_id, role, definition, '', '', 0, 0, 0, 0, 0 FROM rotations` + where + `
UNION ALL SELECT 3, id, unit_id, role, user_id, '', '', starts_at, ends_at, 0, 0, starts_at FROM shifts` + dated + `
UNION ALL SELECT 4, id, unit_id, role, definition, '', '', 0, 0, 0, 0, starts_at FROM temporary_schedules` + dated + `
UNION ALL SELECT 5, id, unit_id, role, user_a, user_b, '', a_starts_at, a_ends_at, b_starts_at, b_ends_at, created_at
	FROM roster_swaps` + where + ` AND ((a_starts_at < ` + to + ` AND a_ends_at > ` + from + `) OR (b_starts_at < ` + to +
		` AND b_ends_at > ` + from + `))
UNION ALL SELECT 6, id, unit_id, role, kind, user_id, replaces_user_id, starts_at, ends_at, 0, 0, created_at
	FROM roster_overrides` + dated + `
ORDER BY 1, 12, 2`, args
}

// The tables rosterQuery reads, in the order it returns them.
const (
	rowZone = iota
	rowUnitRole
	rowRotation
	rowShift
	rowTemporary
	rowSwap
	rowOverride
)

// rosterRow is one row of rosterQuery.
type rosterRow struct {
	tbl                int
	id, unit, role     string
	s1, s2, s3         string
	t1, t2, t3, t4, or int64
}

// loadRosters reads every roster the filter selects, and the zone of each
// unit it selects. Unit-roles that only appear as required (no entries
// yet) are included, so coverage sees them.
func loadRosters(ctx context.Context, q Queryer, f rosterFilter) (map[RoleKey]*Roster, map[string]*time.Location, error) {
	set := newRosterSet()
	query, args := rosterQuery(f)
	if err := eachRow(ctx, q, query, args, set.add); err != nil {
		return nil, nil, fmt.Errorf("load rosters: %w", err)
	}
	return set.rosters, set.zones, nil
}

// rosterSet gathers rosters from the rows of rosterQuery, of one query or
// several.
type rosterSet struct {
	rosters map[RoleKey]*Roster
	zones   map[string]*time.Location
}

func newRosterSet() *rosterSet {
	return &rosterSet{rosters: map[RoleKey]*Roster{}, zones: map[string]*time.Location{}}
}

func (set *rosterSet) get(unit, role string) *Roster {
	k := RoleKey{unit, role}
	r := set.rosters[k]
	if r == nil {
		r = &Roster{UnitID: unit, Role: role, Loc: set.zones[unit]}
		if r.Loc == nil {
			r.Loc = time.UTC
		}
		set.rosters[k] = r
	}
	return r
}

// add takes in one row (scan reads it). A query's zone rows come first,
// so every roster of its units finds its zone.
func (set *rosterSet) add(scan func(...any) error) error {
	var w rosterRow
	if err := scan(&w.tbl, &w.id, &w.unit, &w.role, &w.s1, &w.s2, &w.s3, &w.t1, &w.t2, &w.t3, &w.t4, &w.or); err != nil {
		return err
	}
	switch w.tbl {
	case rowZone:
		loc, err := time.LoadLocation(w.s1)
		if err != nil {
			return fmt.Errorf("unit %s zone: %w", w.id, err)
		}
		set.zones[w.id] = loc
	case rowUnitRole:
		set.get(w.unit, w.role)
	case rowRotation:
		var rot Rotation
		if err := json.Unmarshal([]byte(w.s1), &rot); err != nil {
			return fmt.Errorf("rotation definition: %w", err)
		}
		r := set.get(w.unit, w.role)
		r.Rotations = append(r.Rotations, rot)
	case rowShift:
		r := set.get(w.unit, w.role)
		r.Shifts = append(r.Shifts, Shift{ID: w.id, UnitID: w.unit, Role: w.role, UserID: w.s1,
			Start: micros(w.t1), End: micros(w.t2)})
	case rowTemporary:
		var ts TemporarySchedule
		if err := json.Unmarshal([]byte(w.s1), &ts); err != nil {
			return fmt.Errorf("temporary schedule definition: %w", err)
		}
		r := set.get(w.unit, w.role)
		r.Temporary = append(r.Temporary, ts)
	case rowSwap:
		r := set.get(w.unit, w.role)
		r.Swaps = append(r.Swaps, Swap{ID: w.id, UnitID: w.unit, Role: w.role, UserA: w.s1, UserB: w.s2,
			AStart: micros(w.t1), AEnd: micros(w.t2), BStart: micros(w.t3), BEnd: micros(w.t4)})
	case rowOverride:
		r := set.get(w.unit, w.role)
		r.Overrides = append(r.Overrides, Override{ID: w.id, UnitID: w.unit, Role: w.role, Kind: w.s1,
			UserID: w.s2, ReplacesUserID: w.s3, Start: micros(w.t1), End: micros(w.t2)})
	}
	return nil
}

// loadRoster reads one unit-role's roster for [from, to).
func loadRoster(ctx context.Context, q Queryer, unitID, role string, from, to time.Time) (Roster, error) {
	m, zones, err := loadRosters(ctx, q, rosterFilter{unitID: unitID, role: role, from: from, to: to})
	if err != nil {
		return Roster{}, err
	}
	if r := m[RoleKey{unitID, role}]; r != nil {
		return *r, nil
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
