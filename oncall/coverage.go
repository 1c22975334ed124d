package oncall

import (
	"sort"
	"time"
)

// CoverageWindow is how far ahead coverage is checked: by the daily job,
// the coverage API and the gap check on every edit.
const CoverageWindow = 14 * 24 * time.Hour

// DoubleBooking is one person holding roles in two units at once.
type DoubleBooking struct {
	UserID string    `json:"user_id"`
	First  RoleRef   `json:"first"`
	Second RoleRef   `json:"second"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// RoleRef names a unit-role in answers.
type RoleRef struct {
	UnitID string `json:"unit_id"`
	Role   string `json:"role"`
}

// Report is the coverage of a set of unit-roles over a window.
type Report struct {
	From           time.Time       `json:"from"`
	To             time.Time       `json:"to"`
	Gaps           []Gap           `json:"gaps"`
	DoubleBookings []DoubleBooking `json:"double_bookings"`
}

// GapsIn returns the periods of a timeline nobody holds.
func GapsIn(key RoleKey, segs []Segment) []Gap {
	var out []Gap
	for _, s := range segs {
		if len(s.Holders) > 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End.Equal(s.Start) {
			out[n-1].End = s.End
			continue
		}
		out = append(out, Gap{UnitID: key.UnitID, Role: key.Role, Start: s.Start, End: s.End})
	}
	return out
}

// newGaps returns the parts of after's gaps that before's do not cover:
// what an edit opened. Both lists are sorted and non-overlapping.
func newGaps(before, after []Gap) []Gap {
	var out []Gap
	for _, g := range after {
		parts := []Gap{g}
		for _, b := range before {
			var next []Gap
			for _, p := range parts {
				if !b.Start.Before(p.End) || !b.End.After(p.Start) {
					next = append(next, p)
					continue
				}
				if p.Start.Before(b.Start) {
					next = append(next, Gap{p.UnitID, p.Role, p.Start, b.Start})
				}
				if b.End.Before(p.End) {
					next = append(next, Gap{p.UnitID, p.Role, b.End, p.End})
				}
			}
			parts = next
		}
		out = append(out, parts...)
	}
	return out
}

// DoubleBookings finds every overlap between one user's shifts in two
// different units. Two roles in one unit at once (an RN who is also the
// charge RN) is allowed and not reported.
func DoubleBookings(shifts []UserShift) []DoubleBooking {
	byUser := map[string][]UserShift{}
	for _, s := range shifts {
		byUser[s.UserID] = append(byUser[s.UserID], s)
	}
	var out []DoubleBooking
	for user, list := range byUser {
		sort.Slice(list, func(i, j int) bool { return list[i].Start.Before(list[j].Start) })
		for i := range list {
			for j := i + 1; j < len(list) && list[j].Start.Before(list[i].End); j++ {
				a, b := list[i], list[j]
				if a.UnitID == b.UnitID {
					continue
				}
				out = append(out, DoubleBooking{UserID: user, First: RoleRef{a.UnitID, a.Role},
					Second: RoleRef{b.UnitID, b.Role}, Start: b.Start, End: earlier(a.End, b.End)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].UserID < out[j].UserID
	})
	return out
}
