package oncall

import (
	"fmt"
	"time"
)

// Rotation kinds.
const (
	// RotationInterval hands over every Length (hours, days or weeks) at
	// the wall-clock Handoff time, participant after participant.
	RotationInterval = "interval"
	// RotationPattern repeats a cycle of CycleDays days holding the
	// listed Slots (e.g. 07:00-19:00 and 19:00-07:00; or four days on,
	// three off).
	RotationPattern = "pattern"
)

// Length units of an interval rotation.
const (
	UnitHours = "hours"
	UnitDays  = "days"
	UnitWeeks = "weeks"
)

// Assignment orders of a pattern rotation.
const (
	AssignEachSlot  = "each_slot"  // slot occurrences go to participants in turn
	AssignEachCycle = "each_cycle" // a participant holds every slot of one cycle
)

// Rotation computes a unit-role's shifts from a definition; nothing is
// expanded into rows. All times are wall-clock times in the unit's zone,
// so a 19:00-07:00 night over a DST change lasts 11 or 13 hours.
type Rotation struct {
	ID           string   `json:"id"`
	UnitID       string   `json:"unit_id"`
	Role         string   `json:"role"`
	Name         string   `json:"name"`
	Kind         string   `json:"kind"`
	Participants []string `json:"participants"`
	// StartDate is the local date (YYYY-MM-DD) of the first shift.
	StartDate string `json:"start_date"`
	// Interval rotations.
	Length     int    `json:"length,omitempty"`
	LengthUnit string `json:"length_unit,omitempty"`
	Handoff    string `json:"handoff,omitempty"` // HH:MM
	// Pattern rotations.
	CycleDays int    `json:"cycle_days,omitempty"`
	Slots     []Slot `json:"slots,omitempty"`
	Assign    string `json:"assign,omitempty"`
}

// Slot is one shift of a pattern's cycle: it starts on day Day (0-based)
// at Start and ends at End, on the next day when End is not after Start.
type Slot struct {
	Day   int    `json:"day"`
	Start string `json:"start"`
	End   string `json:"end"`
}

// clock is a parsed HH:MM.
type clock struct{ h, m int }

func parseClock(s string) (clock, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return clock{}, fmt.Errorf("must be HH:MM")
	}
	return clock{t.Hour(), t.Minute()}, nil
}

func (c clock) minutes() int { return c.h*60 + c.m }

// Validate checks the rotation; field names are JSON names.
func (r *Rotation) Validate() error {
	switch {
	case r.ID == "" || r.UnitID == "" || r.Role == "":
		return &InvalidError{"rotation", "id, unit_id and role are required"}
	case len(r.Participants) == 0:
		return &InvalidError{"participants", "at least one participant is required"}
	}
	for i, p := range r.Participants {
		if p == "" {
			return &InvalidError{fmt.Sprintf("participants[%d]", i), "empty user id"}
		}
	}
	if _, err := time.Parse(time.DateOnly, r.StartDate); err != nil {
		return &InvalidError{"start_date", "must be YYYY-MM-DD"}
	}
	if r.Name == "" {
		r.Name = r.ID
	}
	switch r.Kind {
	case RotationInterval:
		if r.Length < 1 || r.Length > 1000 {
			return &InvalidError{"length", "must be 1 to 1000"}
		}
		if r.LengthUnit != UnitHours && r.LengthUnit != UnitDays && r.LengthUnit != UnitWeeks {
			return &InvalidError{"length_unit", "must be hours, days or weeks"}
		}
		if _, err := parseClock(r.Handoff); err != nil {
			return &InvalidError{"handoff", err.Error()}
		}
	case RotationPattern:
		if r.CycleDays < 1 || r.CycleDays > 366 {
			return &InvalidError{"cycle_days", "must be 1 to 366"}
		}
		if len(r.Slots) == 0 {
			return &InvalidError{"slots", "a pattern needs at least one slot"}
		}
		if r.Assign == "" {
			r.Assign = AssignEachSlot
		}
		if r.Assign != AssignEachSlot && r.Assign != AssignEachCycle {
			return &InvalidError{"assign", "must be each_slot or each_cycle"}
		}
		prevEnd := -1 // minutes from the cycle's start: slots must be in order and not overlap
		for i, s := range r.Slots {
			f := fmt.Sprintf("slots[%d]", i)
			if s.Day < 0 || s.Day >= r.CycleDays {
				return &InvalidError{f + ".day", "must be within the cycle"}
			}
			st, err := parseClock(s.Start)
			if err != nil {
				return &InvalidError{f + ".start", err.Error()}
			}
			en, err := parseClock(s.End)
			if err != nil {
				return &InvalidError{f + ".end", err.Error()}
			}
			begin, end := s.Day*1440+st.minutes(), s.Day*1440+en.minutes()
			if end <= begin {
				end += 1440
			}
			if begin < prevEnd {
				return &InvalidError{f, "slots must be in time order and must not overlap"}
			}
			if i == len(r.Slots)-1 && end > r.CycleDays*1440+r.Slots[0].Day*1440+mustClock(r.Slots[0].Start).minutes() {
				return &InvalidError{f, "the last slot overlaps the next cycle's first"}
			}
			prevEnd = end
		}
	default:
		return &InvalidError{"kind", "must be interval or pattern"}
	}
	return nil
}

func mustClock(s string) clock { c, _ := parseClock(s); return c }

// wallTime is time.Date in loc, except for a wall-clock time that does not
// exist (skipped when DST starts): it is read with the offset in force
// before the change, as RFC 5545 does, so 02:30 on that day is 03:30 (Go's
// time.Date would give 01:30). Overflowing fields normalise as in time.Date.
func wallTime(y int, mo time.Month, d, h, mi int, loc *time.Location) time.Time {
	t := time.Date(y, mo, d, h, mi, 0, 0, loc)
	want := time.Date(y, mo, d, h, mi, 0, 0, time.UTC) // the normalised wall clock
	lt := t.In(loc)
	if lt.Hour() == want.Hour() && lt.Minute() == want.Minute() && lt.Day() == want.Day() {
		return t
	}
	_, before := want.Add(-24 * time.Hour).In(loc).Zone()
	return want.Add(-time.Duration(before) * time.Second)
}

// Occurrence is one computed shift of a rotation.
type Occurrence struct {
	UserID string
	Start  time.Time
	End    time.Time
}

// Occurrences returns the rotation's shifts overlapping [from, to), in
// order. The rotation must be valid.
func (r Rotation) Occurrences(loc *time.Location, from, to time.Time) []Occurrence {
	start, _ := time.ParseInLocation(time.DateOnly, r.StartDate, loc)
	y, m, d := start.Date()
	var out []Occurrence
	emit := func(o Occurrence) bool { // false once past the window
		if !o.Start.Before(to) {
			return false
		}
		if o.End.After(from) && o.End.After(o.Start) {
			out = append(out, o)
		}
		return true
	}
	n := len(r.Participants)
	switch r.Kind {
	case RotationInterval:
		hc := mustClock(r.Handoff)
		// boundary k is a wall-clock time: overflowing days and hours
		// normalise in local terms, then the zone applies.
		boundary := func(k int) time.Time {
			switch r.LengthUnit {
			case UnitHours:
				return wallTime(y, m, d, hc.h+k*r.Length, hc.m, loc)
			case UnitWeeks:
				return wallTime(y, m, d+7*k*r.Length, hc.h, hc.m, loc)
			default:
				return wallTime(y, m, d+k*r.Length, hc.h, hc.m, loc)
			}
		}
		nominal := time.Duration(r.Length) * time.Hour
		switch r.LengthUnit {
		case UnitDays:
			nominal *= 24
		case UnitWeeks:
			nominal *= 24 * 7
		}
		// Start a few turns early: wall-clock and elapsed time differ by
		// at most a few hours (zone offset changes).
		k := max(0, int(from.Sub(boundary(0))/nominal)-3)
		for ; ; k++ {
			if !emit(Occurrence{r.Participants[k%n], boundary(k), boundary(k + 1)}) {
				return out
			}
		}
	case RotationPattern:
		cycle := time.Duration(r.CycleDays) * 24 * time.Hour
		c := max(0, int(from.Sub(start)/cycle)-1)
		for ; ; c++ {
			for i, s := range r.Slots {
				st, en := mustClock(s.Start), mustClock(s.End)
				day := c*r.CycleDays + s.Day
				endDay := day
				if en.minutes() <= st.minutes() {
					endDay++
				}
				who := r.Participants[(c*len(r.Slots)+i)%n]
				if r.Assign == AssignEachCycle {
					who = r.Participants[c%n]
				}
				o := Occurrence{who, wallTime(y, m, d+day, st.h, st.m, loc), wallTime(y, m, d+endDay, en.h, en.m, loc)}
				if !emit(o) {
					return out
				}
			}
		}
	}
	return out
}
