package oncall

import (
	"slices"
	"sort"
	"time"
)

// Override kinds.
const (
	OverrideAdd     = "add"     // UserID also holds the role over the period
	OverrideRemove  = "remove"  // UserID does not hold it over the period
	OverrideReplace = "replace" // wherever ReplacesUserID holds it, UserID does instead
)

// Override changes who holds a unit-role over [Start, End).
type Override struct {
	ID             string    `json:"id"`
	UnitID         string    `json:"unit_id"`
	Role           string    `json:"role"`
	Kind           string    `json:"kind"`
	UserID         string    `json:"user_id"`
	ReplacesUserID string    `json:"replaces_user_id,omitempty"`
	Start          time.Time `json:"start"`
	End            time.Time `json:"end"`
}

// Swap trades turns between two users of one unit-role: UserA's turns in
// [AStart, AEnd) go to UserB, and UserB's turns in [BStart, BEnd) go to
// UserA. The B period may be empty (a one-way cover).
type Swap struct {
	ID     string    `json:"id"`
	UnitID string    `json:"unit_id"`
	Role   string    `json:"role"`
	UserA  string    `json:"user_a"`
	UserB  string    `json:"user_b"`
	AStart time.Time `json:"a_start"`
	AEnd   time.Time `json:"a_end"`
	BStart time.Time `json:"b_start,omitzero"`
	BEnd   time.Time `json:"b_end,omitzero"`
}

// TemporarySchedule replaces a unit-role's rotations over [Start, End)
// with its own shifts (explicit shifts and overrides still apply).
type TemporarySchedule struct {
	ID     string      `json:"id"`
	UnitID string      `json:"unit_id"`
	Role   string      `json:"role"`
	Start  time.Time   `json:"start"`
	End    time.Time   `json:"end"`
	Shifts []TempShift `json:"shifts"`
}

// TempShift is one shift of a temporary schedule.
type TempShift struct {
	UserID string    `json:"user_id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// Roster is everything that decides who holds one unit-role. Holders are
// computed in layers, each applied over the one before:
//
//  1. base: the rotations' occurrences, except where a temporary schedule
//     is in force, where its shifts are used instead; plus explicit shifts;
//  2. swaps, applied together (a swap never undoes another);
//  3. overrides, in the order given (creation order in the store).
type Roster struct {
	UnitID    string
	Role      string
	Loc       *time.Location
	Rotations []Rotation
	Shifts    []Shift
	Temporary []TemporarySchedule
	Swaps     []Swap
	Overrides []Override
}

// Segment is a maximal period over which the set of holders is constant.
// Holders are sorted by user id; an empty set is a coverage hole.
type Segment struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Holders []string  `json:"holders"`
}

// base returns the layer-1 assignments overlapping [from, to).
func (r Roster) base(from, to time.Time) []Occurrence {
	loc := r.Loc
	if loc == nil {
		loc = time.UTC
	}
	var out []Occurrence
	for _, rot := range r.Rotations {
		for _, o := range rot.Occurrences(loc, from, to) {
			out = append(out, cutOut(o, r.Temporary)...)
		}
	}
	for _, ts := range r.Temporary {
		for _, s := range ts.Shifts {
			// a temporary schedule's shifts count only inside its period
			o := Occurrence{s.UserID, later(s.Start, ts.Start), earlier(s.End, ts.End)}
			if o.End.After(o.Start) {
				out = append(out, o)
			}
		}
	}
	for _, s := range r.Shifts {
		out = append(out, Occurrence{s.UserID, s.Start, s.End})
	}
	return out
}

// cutOut removes the temporary schedules' periods from a rotation shift.
func cutOut(o Occurrence, temps []TemporarySchedule) []Occurrence {
	parts := []Occurrence{o}
	for _, ts := range temps {
		var next []Occurrence
		for _, p := range parts {
			if !ts.Start.Before(p.End) || !ts.End.After(p.Start) {
				next = append(next, p)
				continue
			}
			if p.Start.Before(ts.Start) {
				next = append(next, Occurrence{p.UserID, p.Start, ts.Start})
			}
			if ts.End.Before(p.End) {
				next = append(next, Occurrence{p.UserID, ts.End, p.End})
			}
		}
		parts = next
	}
	return parts
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func within(t, start, end time.Time) bool { return !t.Before(start) && t.Before(end) }

// holdersAt applies layers 2 and 3 to the base holders at instant t.
func (r Roster) holdersAt(base []string, t time.Time) []string {
	set := make([]string, 0, len(base)+1)
	for _, u := range base {
		set = addUser(set, r.swapped(u, t))
	}
	for _, o := range r.Overrides {
		if !within(t, o.Start, o.End) {
			continue
		}
		switch o.Kind {
		case OverrideAdd:
			set = addUser(set, o.UserID)
		case OverrideRemove:
			set = slices.DeleteFunc(set, func(u string) bool { return u == o.UserID })
		case OverrideReplace:
			if slices.Contains(set, o.ReplacesUserID) {
				set = slices.DeleteFunc(set, func(u string) bool { return u == o.ReplacesUserID })
				set = addUser(set, o.UserID)
			}
		}
	}
	slices.Sort(set)
	return set
}

// swapped returns who holds u's turn at t: the first swap that covers it
// decides, and swaps are never chained.
func (r Roster) swapped(u string, t time.Time) string {
	for _, s := range r.Swaps {
		if u == s.UserA && within(t, s.AStart, s.AEnd) {
			return s.UserB
		}
		if u == s.UserB && within(t, s.BStart, s.BEnd) {
			return s.UserA
		}
	}
	return u
}

func addUser(set []string, u string) []string {
	if slices.Contains(set, u) {
		return set
	}
	return append(set, u)
}

// Timeline returns who holds the role over [from, to) as consecutive
// segments covering the whole window (empty Holders where nobody does).
func (r Roster) Timeline(from, to time.Time) []Segment {
	if !to.After(from) {
		return nil
	}
	base := r.base(from, to)
	// Every instant where anything may change; within two consecutive
	// cuts every layer is constant.
	cuts := []time.Time{from, to}
	add := func(ts ...time.Time) {
		for _, t := range ts {
			if t.After(from) && t.Before(to) {
				cuts = append(cuts, t)
			}
		}
	}
	for _, o := range base {
		add(o.Start, o.End)
	}
	for _, s := range r.Swaps {
		add(s.AStart, s.AEnd, s.BStart, s.BEnd)
	}
	for _, o := range r.Overrides {
		add(o.Start, o.End)
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].Before(cuts[j]) })
	cuts = slices.CompactFunc(cuts, func(a, b time.Time) bool { return a.Equal(b) })

	// Sweep: base occurrences sorted by start; active ones kept in a list.
	sort.Slice(base, func(i, j int) bool { return base[i].Start.Before(base[j].Start) })
	var out []Segment
	next := 0
	var active []Occurrence
	for i := 0; i+1 < len(cuts); i++ {
		t := cuts[i]
		active = slices.DeleteFunc(active, func(o Occurrence) bool { return !o.End.After(t) })
		for next < len(base) && !base[next].Start.After(t) {
			if base[next].End.After(t) {
				active = append(active, base[next])
			}
			next++
		}
		users := make([]string, 0, len(active))
		for _, o := range active {
			users = append(users, o.UserID)
		}
		holders := r.holdersAt(users, t)
		if n := len(out); n > 0 && slices.Equal(out[n-1].Holders, holders) {
			out[n-1].End = cuts[i+1]
			continue
		}
		out = append(out, Segment{Start: t, End: cuts[i+1], Holders: holders})
	}
	return out
}

// HoldersAt is the roster's answer at one instant.
func (r Roster) HoldersAt(t time.Time) []string {
	segs := r.Timeline(t, t.Add(time.Microsecond))
	if len(segs) == 0 {
		return nil
	}
	return segs[0].Holders
}

// UserShift is a period over which one user holds a unit-role without a
// break, after every layer.
type UserShift struct {
	UnitID string    `json:"unit_id"`
	Role   string    `json:"role"`
	UserID string    `json:"user_id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// ShiftsOf turns a timeline into per-user shifts, ordered by start then
// user. A shift cut by the window's edge ends (or starts) there.
func ShiftsOf(unitID, role string, segs []Segment) []UserShift {
	var out []UserShift
	open := map[string]int{} // user → index in out of the shift still running
	for i, s := range segs {
		for _, u := range s.Holders {
			if j, ok := open[u]; ok && i > 0 && out[j].End.Equal(s.Start) {
				out[j].End = s.End
				continue
			}
			open[u] = len(out)
			out = append(out, UserShift{UnitID: unitID, Role: role, UserID: u, Start: s.Start, End: s.End})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].UserID < out[j].UserID
	})
	return out
}
