package oncall

import (
	"errors"
	"testing"
	"time"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// dayNight is the classic nursing pattern: 07:00-19:00 and 19:00-07:00,
// ann on days and bob on nights.
func dayNight(start string) Rotation {
	return Rotation{ID: "rn", UnitID: "4W", Role: "RN", Kind: RotationPattern, Participants: []string{"ann", "bob"},
		StartDate: start, CycleDays: 1, Slots: []Slot{{0, "07:00", "19:00"}, {0, "19:00", "07:00"}}}
}

func TestRotationOccurrences(t *testing.T) {
	type want struct {
		user       string
		start, end string // local wall clock, "2006-01-02 15:04"
		hours      float64
	}
	cases := []struct {
		name     string
		zone     string
		rot      Rotation
		from, to string // local
		want     []want
	}{
		{"New York night as DST starts lasts 11 h", "America/New_York", dayNight("2026-03-01"),
			"2026-03-07 20:00", "2026-03-08 08:00", []want{
				{"bob", "2026-03-07 19:00", "2026-03-08 07:00", 11},
				{"ann", "2026-03-08 07:00", "2026-03-08 19:00", 12}}},
		{"New York night as DST ends lasts 13 h", "America/New_York", dayNight("2026-10-01"),
			"2026-10-31 20:00", "2026-11-01 08:00", []want{
				{"bob", "2026-10-31 19:00", "2026-11-01 07:00", 13},
				{"ann", "2026-11-01 07:00", "2026-11-01 19:00", 12}}},
		{"Berlin night as DST starts lasts 11 h", "Europe/Berlin", dayNight("2026-03-01"),
			"2026-03-28 20:00", "2026-03-29 08:00", []want{
				{"bob", "2026-03-28 19:00", "2026-03-29 07:00", 11},
				{"ann", "2026-03-29 07:00", "2026-03-29 19:00", 12}}},
		{"Berlin night as DST ends lasts 13 h", "Europe/Berlin", dayNight("2026-10-01"),
			"2026-10-24 20:00", "2026-10-25 06:00", []want{
				{"bob", "2026-10-24 19:00", "2026-10-25 07:00", 13}}},
		{"Sydney night as DST ends (April) lasts 13 h", "Australia/Sydney", dayNight("2026-04-01"),
			"2026-04-04 20:00", "2026-04-05 06:00", []want{
				{"bob", "2026-04-04 19:00", "2026-04-05 07:00", 13}}},
		{"12-hour interval equals the pattern across DST", "America/New_York",
			Rotation{ID: "r", UnitID: "u", Role: "RN", Kind: RotationInterval, Participants: []string{"ann", "bob"},
				StartDate: "2026-03-01", Length: 12, LengthUnit: UnitHours, Handoff: "07:00"},
			"2026-03-07 20:00", "2026-03-08 08:00", []want{
				{"bob", "2026-03-07 19:00", "2026-03-08 07:00", 11},
				{"ann", "2026-03-08 07:00", "2026-03-08 19:00", 12}}},
		{"daily 08:00 handoff over DST start lasts 23 h", "America/New_York",
			Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b", "c"},
				StartDate: "2026-03-06", Length: 1, LengthUnit: UnitDays, Handoff: "08:00"},
			"2026-03-07 09:00", "2026-03-08 09:00", []want{
				{"b", "2026-03-07 08:00", "2026-03-08 08:00", 23},
				{"c", "2026-03-08 08:00", "2026-03-09 08:00", 24}}},
		{"weekly Monday 09:00 over DST start lasts 167 h", "America/New_York",
			Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b"},
				StartDate: "2026-03-02", Length: 1, LengthUnit: UnitWeeks, Handoff: "09:00"},
			"2026-03-02 10:00", "2026-03-09 10:00", []want{
				{"a", "2026-03-02 09:00", "2026-03-09 09:00", 167},
				{"b", "2026-03-09 09:00", "2026-03-16 09:00", 168}}},
		{"leap day has its own shift", "Europe/Berlin",
			Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b", "c"},
				StartDate: "2028-02-27", Length: 1, LengthUnit: UnitDays, Handoff: "00:00"},
			"2028-02-28 12:00", "2028-03-01 12:00", []want{
				{"b", "2028-02-28 00:00", "2028-02-29 00:00", 24},
				{"c", "2028-02-29 00:00", "2028-03-01 00:00", 24},
				{"a", "2028-03-01 00:00", "2028-03-02 00:00", 24}}},
		{"month ends roll over (31 Jan, 28 Feb)", "UTC",
			Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b"},
				StartDate: "2026-01-30", Length: 1, LengthUnit: UnitDays, Handoff: "07:00"},
			"2026-01-31 08:00", "2026-02-01 08:00", []want{
				{"b", "2026-01-31 07:00", "2026-02-01 07:00", 24},
				{"a", "2026-02-01 07:00", "2026-02-02 07:00", 24}}},
		{"far from the start date, 28 Feb to 1 Mar", "UTC",
			Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b"},
				StartDate: "2026-01-30", Length: 1, LengthUnit: UnitDays, Handoff: "07:00"},
			"2026-02-28 08:00", "2026-03-01 08:00", []want{
				{"b", "2026-02-28 07:00", "2026-03-01 07:00", 24}, // turn 29 from 30 Jan
				{"a", "2026-03-01 07:00", "2026-03-02 07:00", 24}}},
		{"four on, three off", "America/New_York",
			Rotation{ID: "r", UnitID: "u", Role: "RN", Kind: RotationPattern, Participants: []string{"ann", "bob"},
				StartDate: "2026-03-02", CycleDays: 7, Assign: AssignEachCycle, Slots: []Slot{
					{0, "07:00", "19:00"}, {1, "07:00", "19:00"}, {2, "07:00", "19:00"}, {3, "07:00", "19:00"}}},
			"2026-03-05 00:00", "2026-03-10 00:00", []want{
				{"ann", "2026-03-05 07:00", "2026-03-05 19:00", 12},
				{"bob", "2026-03-09 07:00", "2026-03-09 19:00", 12}}},
		{"nothing before the start date", "UTC", dayNight("2026-03-10"),
			"2026-03-01 00:00", "2026-03-10 08:00", []want{
				{"ann", "2026-03-10 07:00", "2026-03-10 19:00", 12}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			loc := mustLoc(t, c.zone)
			if err := c.rot.Validate(); err != nil {
				t.Fatal(err)
			}
			local := func(s string) time.Time {
				v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			got := c.rot.Occurrences(loc, local(c.from), local(c.to))
			if len(got) != len(c.want) {
				t.Fatalf("got %d occurrences %v, want %d", len(got), got, len(c.want))
			}
			for i, w := range c.want {
				g := got[i]
				if g.UserID != w.user || !g.Start.Equal(local(w.start)) || !g.End.Equal(local(w.end)) ||
					g.End.Sub(g.Start).Hours() != w.hours {
					t.Errorf("occurrence %d = %s %s..%s (%v h), want %s %s..%s (%v h)", i, g.UserID,
						g.Start.In(loc).Format("2006-01-02 15:04 MST"), g.End.In(loc).Format("2006-01-02 15:04 MST"),
						g.End.Sub(g.Start).Hours(), w.user, w.start, w.end, w.hours)
				}
			}
		})
	}
}

func TestRotationValidate(t *testing.T) {
	ok := dayNight("2026-03-01")
	cases := []struct {
		name  string
		edit  func(r *Rotation)
		field string
	}{
		{"valid", func(r *Rotation) {}, ""},
		{"no participants", func(r *Rotation) { r.Participants = nil }, "participants"},
		{"bad start date", func(r *Rotation) { r.StartDate = "03/01/2026" }, "start_date"},
		{"bad kind", func(r *Rotation) { r.Kind = "weekly" }, "kind"},
		{"slot out of cycle", func(r *Rotation) { r.Slots[1].Day = 1 }, "slots[1].day"},
		{"bad clock", func(r *Rotation) { r.Slots[0].Start = "7am" }, "slots[0].start"},
		{"overlapping slots", func(r *Rotation) { r.Slots[1].Start = "18:00" }, "slots[1]"},
		{"last slot runs into next cycle", func(r *Rotation) { r.Slots[1].End = "08:00" }, "slots[1]"},
		{"interval without unit", func(r *Rotation) { r.Kind, r.Length, r.Handoff = RotationInterval, 12, "07:00" }, "length_unit"},
		{"bad assign", func(r *Rotation) { r.Assign = "random" }, "assign"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ok
			r.Slots = append([]Slot(nil), ok.Slots...)
			c.edit(&r)
			err := r.Validate()
			var inv *InvalidError
			switch {
			case c.field == "" && err != nil:
				t.Fatalf("unexpected %v", err)
			case c.field != "" && (!errors.As(err, &inv) || inv.Field != c.field):
				t.Fatalf("error %v, want field %s", err, c.field)
			}
		})
	}
}

// TestSkippedHandoff: a 02:30 handoff on the day DST starts happens at
// 03:30 (RFC 5545's reading), and the shift before it is an hour shorter.
func TestSkippedHandoff(t *testing.T) {
	loc := mustLoc(t, "America/New_York")
	rot := Rotation{ID: "r", UnitID: "u", Role: "MD", Kind: RotationInterval, Participants: []string{"a", "b"},
		StartDate: "2026-03-06", Length: 1, LengthUnit: UnitDays, Handoff: "02:30"}
	occ := rot.Occurrences(loc, time.Date(2026, 3, 7, 12, 0, 0, 0, loc), time.Date(2026, 3, 8, 12, 0, 0, 0, loc))
	if len(occ) != 2 || !occ[1].Start.Equal(time.Date(2026, 3, 8, 3, 30, 0, 0, loc)) || occ[0].End.Sub(occ[0].Start) != 24*time.Hour {
		t.Fatalf("occurrences %v", occ)
	}
}
