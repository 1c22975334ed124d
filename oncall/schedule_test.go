package oncall

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// base: in UTC, ann holds days (07-19) and bob nights, from 1 March 2026.
func baseRoster() Roster {
	return Roster{UnitID: "4W", Role: "RN", Loc: time.UTC, Rotations: []Rotation{dayNight("2026-03-01")}}
}

func at(day, hour int) time.Time { return time.Date(2026, 3, day, hour, 0, 0, 0, time.UTC) }

func TestRosterLayers(t *testing.T) {
	cases := []struct {
		name string
		edit func(r *Roster)
		at   time.Time
		want []string
	}{
		{"rotation day", func(r *Roster) {}, at(10, 8), []string{"ann"}},
		{"rotation night", func(r *Roster) {}, at(10, 20), []string{"bob"}},
		{"explicit shift adds", func(r *Roster) {
			r.Shifts = []Shift{{UserID: "cat", Start: at(10, 6), End: at(10, 9)}}
		}, at(10, 8), []string{"ann", "cat"}},
		{"override add", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideAdd, UserID: "cat", Start: at(10, 7), End: at(10, 19)}}
		}, at(10, 8), []string{"ann", "cat"}},
		{"override add ends exclusive", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideAdd, UserID: "cat", Start: at(10, 7), End: at(10, 8)}}
		}, at(10, 8), []string{"ann"}},
		{"override remove opens a hole", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideRemove, UserID: "ann", Start: at(10, 7), End: at(10, 19)}}
		}, at(10, 8), []string{}},
		{"override remove of a non-holder changes nothing", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideRemove, UserID: "bob", Start: at(10, 7), End: at(10, 19)}}
		}, at(10, 8), []string{"ann"}},
		{"override replace", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideReplace, UserID: "cat", ReplacesUserID: "ann", Start: at(10, 0), End: at(11, 0)}}
		}, at(10, 8), []string{"cat"}},
		{"override replace only where the replaced holds", func(r *Roster) {
			r.Overrides = []Override{{Kind: OverrideReplace, UserID: "cat", ReplacesUserID: "ann", Start: at(10, 0), End: at(11, 0)}}
		}, at(10, 20), []string{"bob"}},
		{"overrides apply in order: add then remove", func(r *Roster) {
			r.Overrides = []Override{
				{Kind: OverrideAdd, UserID: "cat", Start: at(10, 0), End: at(11, 0)},
				{Kind: OverrideRemove, UserID: "cat", Start: at(10, 6), End: at(10, 9)}}
		}, at(10, 8), []string{"ann"}},
		{"overrides apply in order: remove then add", func(r *Roster) {
			r.Overrides = []Override{
				{Kind: OverrideRemove, UserID: "cat", Start: at(10, 6), End: at(10, 9)},
				{Kind: OverrideAdd, UserID: "cat", Start: at(10, 0), End: at(11, 0)}}
		}, at(10, 8), []string{"ann", "cat"}},
		{"swap: ann's day goes to bob", func(r *Roster) {
			r.Swaps = []Swap{{UserA: "ann", UserB: "bob", AStart: at(10, 7), AEnd: at(10, 19), BStart: at(12, 19), BEnd: at(13, 7)}}
		}, at(10, 8), []string{"bob"}},
		{"swap: bob's night goes to ann", func(r *Roster) {
			r.Swaps = []Swap{{UserA: "ann", UserB: "bob", AStart: at(10, 7), AEnd: at(10, 19), BStart: at(12, 19), BEnd: at(13, 7)}}
		}, at(12, 23), []string{"ann"}},
		{"swap outside its periods changes nothing", func(r *Roster) {
			r.Swaps = []Swap{{UserA: "ann", UserB: "bob", AStart: at(10, 7), AEnd: at(10, 19), BStart: at(12, 19), BEnd: at(13, 7)}}
		}, at(11, 8), []string{"ann"}},
		{"overlapping swap periods do not undo each other", func(r *Roster) {
			r.Swaps = []Swap{{UserA: "ann", UserB: "bob", AStart: at(10, 0), AEnd: at(11, 0), BStart: at(10, 0), BEnd: at(11, 0)}}
		}, at(10, 8), []string{"bob"}},
		{"override applies after a swap", func(r *Roster) {
			r.Swaps = []Swap{{UserA: "ann", UserB: "bob", AStart: at(10, 7), AEnd: at(10, 19), BStart: at(10, 7), BEnd: at(10, 7)}}
			r.Overrides = []Override{{Kind: OverrideReplace, UserID: "cat", ReplacesUserID: "bob", Start: at(10, 0), End: at(11, 0)}}
		}, at(10, 8), []string{"cat"}},
		{"temporary schedule replaces the rotation", func(r *Roster) {
			r.Temporary = []TemporarySchedule{{Start: at(10, 0), End: at(12, 0), Shifts: []TempShift{
				{UserID: "dee", Start: at(10, 0), End: at(11, 0)}}}}
		}, at(10, 8), []string{"dee"}},
		{"temporary schedule with a hole is a hole", func(r *Roster) {
			r.Temporary = []TemporarySchedule{{Start: at(10, 0), End: at(12, 0), Shifts: []TempShift{
				{UserID: "dee", Start: at(10, 0), End: at(11, 0)}}}}
		}, at(11, 8), []string{}},
		{"temporary schedule keeps explicit shifts and overrides", func(r *Roster) {
			r.Temporary = []TemporarySchedule{{Start: at(10, 0), End: at(12, 0)}}
			r.Shifts = []Shift{{UserID: "cat", Start: at(10, 6), End: at(10, 9)}}
			r.Overrides = []Override{{Kind: OverrideAdd, UserID: "eve", Start: at(10, 0), End: at(11, 0)}}
		}, at(10, 8), []string{"cat", "eve"}},
		{"rotation resumes after the temporary schedule", func(r *Roster) {
			r.Temporary = []TemporarySchedule{{Start: at(10, 0), End: at(12, 0)}}
		}, at(12, 8), []string{"ann"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := baseRoster()
			c.edit(&r)
			got := r.HoldersAt(c.at)
			if got == nil {
				got = []string{}
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("holders = %v, want %v", got, c.want)
			}
			if ref := r.reference(c.at); !slices.Equal(ref, c.want) {
				t.Fatalf("reference = %v, want %v", ref, c.want)
			}
		})
	}
}

func TestTimelineAndShifts(t *testing.T) {
	r := baseRoster()
	r.Overrides = []Override{{Kind: OverrideRemove, UserID: "bob", Start: at(10, 19), End: at(11, 1)}}
	segs := r.Timeline(at(10, 0), at(11, 12))
	want := []Segment{
		{at(10, 0), at(10, 7), []string{"bob"}},
		{at(10, 7), at(10, 19), []string{"ann"}},
		{at(10, 19), at(11, 1), []string{}},
		{at(11, 1), at(11, 7), []string{"bob"}},
		{at(11, 7), at(11, 12), []string{"ann"}},
	}
	if len(segs) != len(want) {
		t.Fatalf("segments %v", segs)
	}
	for i := range want {
		if !segs[i].Start.Equal(want[i].Start) || !segs[i].End.Equal(want[i].End) || !slices.Equal(segs[i].Holders, want[i].Holders) {
			t.Fatalf("segment %d = %v, want %v", i, segs[i], want[i])
		}
	}
	gaps := GapsIn(RoleKey{"4W", "RN"}, segs)
	if len(gaps) != 1 || !gaps[0].Start.Equal(at(10, 19)) || !gaps[0].End.Equal(at(11, 1)) {
		t.Fatalf("gaps %v", gaps)
	}
	shifts := ShiftsOf("4W", "RN", segs)
	var users []string
	for _, s := range shifts {
		users = append(users, s.UserID)
	}
	if !slices.Equal(users, []string{"bob", "ann", "bob", "ann"}) {
		t.Fatalf("shifts %v", shifts)
	}
}

func TestDoubleBookings(t *testing.T) {
	shifts := []UserShift{
		{UnitID: "4W", Role: "RN", UserID: "ann", Start: at(10, 7), End: at(10, 19)},
		{UnitID: "ICU", Role: "RN", UserID: "ann", Start: at(10, 15), End: at(10, 23)},
		{UnitID: "4W", Role: "CHARGE_RN", UserID: "ann", Start: at(10, 7), End: at(10, 19)}, // same unit: allowed
		{UnitID: "ICU", Role: "RN", UserID: "bob", Start: at(10, 19), End: at(11, 7)},
		{UnitID: "4W", Role: "RN", UserID: "bob", Start: at(11, 7), End: at(11, 19)}, // back to back: fine
	}
	got := DoubleBookings(shifts)
	if len(got) != 2 {
		t.Fatalf("double bookings %v", got)
	}
	for _, d := range got {
		if d.UserID != "ann" || !d.Start.Equal(at(10, 15)) || !d.End.Equal(at(10, 19)) {
			t.Fatalf("double booking %+v", d)
		}
	}
}

func TestNewGaps(t *testing.T) {
	g := func(a, b int) Gap { return Gap{"u", "r", at(10, a), at(10, b)} }
	cases := []struct {
		name          string
		before, after []Gap
		want          []Gap
	}{
		{"none", nil, nil, nil},
		{"a new one", nil, []Gap{g(1, 3)}, []Gap{g(1, 3)}},
		{"unchanged", []Gap{g(1, 3)}, []Gap{g(1, 3)}, nil},
		{"widened", []Gap{g(2, 3)}, []Gap{g(1, 4)}, []Gap{g(1, 2), g(3, 4)}},
		{"narrowed", []Gap{g(1, 4)}, []Gap{g(2, 3)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := newGaps(c.before, c.after); !slices.Equal(got, c.want) {
				t.Fatalf("newGaps = %v, want %v", got, c.want)
			}
		})
	}
}

// reference answers HoldersAt the slow, obvious way: every rotation shift
// from its start date, then each layer checked at the instant.
func (r Roster) reference(t time.Time) []string {
	return r.referenceWith(t, r.allOccurrences(t.Add(time.Minute)))
}

// allOccurrences lists every rotation shift from each start date to `to`.
func (r Roster) allOccurrences(to time.Time) []Occurrence {
	var out []Occurrence
	for _, rot := range r.Rotations {
		start, _ := time.ParseInLocation(time.DateOnly, rot.StartDate, r.Loc)
		out = append(out, rot.Occurrences(r.Loc, start.Add(-48*time.Hour), to)...)
	}
	return out
}

func (r Roster) referenceWith(t time.Time, occurrences []Occurrence) []string {
	var base []string
	inTemp := false
	for _, ts := range r.Temporary {
		if within(t, ts.Start, ts.End) {
			inTemp = true
			for _, s := range ts.Shifts {
				if within(t, s.Start, s.End) {
					base = append(base, s.UserID)
				}
			}
		}
	}
	if !inTemp {
		for _, o := range occurrences {
			if within(t, o.Start, o.End) {
				base = append(base, o.UserID)
			}
		}
	}
	for _, s := range r.Shifts {
		if within(t, s.Start, s.End) {
			base = append(base, s.UserID)
		}
	}
	set := map[string]bool{}
	for _, u := range base {
		for _, s := range r.Swaps {
			if u == s.UserA && within(t, s.AStart, s.AEnd) {
				u = s.UserB
				break
			} else if u == s.UserB && within(t, s.BStart, s.BEnd) {
				u = s.UserA
				break
			}
		}
		set[u] = true
	}
	for _, o := range r.Overrides {
		if !within(t, o.Start, o.End) {
			continue
		}
		switch o.Kind {
		case OverrideAdd:
			set[o.UserID] = true
		case OverrideRemove:
			delete(set, o.UserID)
		case OverrideReplace:
			if set[o.ReplacesUserID] {
				delete(set, o.ReplacesUserID)
				set[o.UserID] = true
			}
		}
	}
	out := []string{}
	for u := range set {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// randomRoster makes a roster over a window in New York spanning the start
// of DST, with every kind of layer on a quarter-hour grid.
func randomRoster(rng *rand.Rand, loc *time.Location, from time.Time, hours int) Roster {
	users := []string{"ann", "bob", "cat", "dee", "eve"}
	pick := func() string { return users[rng.IntN(len(users))] }
	when := func() time.Time { return from.Add(time.Duration(rng.IntN(hours*4)) * 15 * time.Minute) }
	period := func() (time.Time, time.Time) {
		s := when()
		return s, s.Add(time.Duration(1+rng.IntN(48)) * 15 * time.Minute)
	}
	r := Roster{UnitID: "u", Role: "r", Loc: loc}
	for range 1 + rng.IntN(2) {
		parts := []string{pick(), pick(), pick()}
		if rng.IntN(2) == 0 {
			r.Rotations = append(r.Rotations, Rotation{Kind: RotationInterval, Participants: parts, StartDate: "2026-03-01",
				Length: []int{4, 8, 12, 24}[rng.IntN(4)], LengthUnit: UnitHours, Handoff: []string{"07:00", "02:30", "19:15"}[rng.IntN(3)]})
		} else {
			r.Rotations = append(r.Rotations, Rotation{Kind: RotationPattern, Participants: parts, StartDate: "2026-03-02",
				CycleDays: 2, Assign: []string{AssignEachSlot, AssignEachCycle}[rng.IntN(2)],
				Slots: []Slot{{0, "07:00", "19:00"}, {1, "01:30", "06:00"}}})
		}
	}
	for range rng.IntN(3) {
		s, e := period()
		r.Shifts = append(r.Shifts, Shift{UserID: pick(), Start: s, End: e})
	}
	for range rng.IntN(2) {
		s, e := period()
		ts := TemporarySchedule{Start: s, End: e}
		if rng.IntN(2) == 0 {
			ts.Shifts = append(ts.Shifts, TempShift{UserID: pick(), Start: s, End: s.Add(e.Sub(s) / 2)})
		}
		r.Temporary = append(r.Temporary, ts)
	}
	for range rng.IntN(3) {
		as, ae := period()
		bs, be := period()
		r.Swaps = append(r.Swaps, Swap{UserA: pick(), UserB: pick(), AStart: as, AEnd: ae, BStart: bs, BEnd: be})
	}
	for range rng.IntN(6) {
		s, e := period()
		o := Override{Kind: []string{OverrideAdd, OverrideRemove, OverrideReplace}[rng.IntN(3)], UserID: pick(), Start: s, End: e}
		if o.Kind == OverrideReplace {
			o.ReplacesUserID = pick()
		}
		r.Overrides = append(r.Overrides, o)
	}
	return r
}

// TestTimelineMatchesReference is the property test: for random rosters,
// the sweep's timeline agrees with the brute-force reference at every
// minute of a window spanning a DST change.
func TestTimelineMatchesReference(t *testing.T) {
	loc := mustLoc(t, "America/New_York")
	from := time.Date(2026, 3, 7, 0, 0, 0, 0, loc)
	const hours = 60
	to := from.Add(hours * time.Hour)
	rng := rand.New(rand.NewPCG(6, 2026))
	for i := range 60 {
		r := randomRoster(rng, loc, from, hours)
		segs := r.Timeline(from, to)
		occurrences := r.allOccurrences(to)
		j := 0
		for m := from; m.Before(to); m = m.Add(time.Minute) {
			for !segs[j].End.After(m) {
				j++
			}
			if want := r.referenceWith(m, occurrences); !slices.Equal(segs[j].Holders, want) {
				t.Fatalf("roster %d at %s: timeline says %v, reference %v\nroster: %+v", i, m, segs[j].Holders, want, r)
			}
		}
	}
}
