// Package oncall owns units, users, teams, rosters (rotations, explicit
// shifts, overrides, swaps, temporary schedules) and escalation policies,
// and answers "who holds role R in unit U at time T". Rosters are computed
// (schedule.go, pure), indexed in memory (index.go) and stored as
// definitions (store*.go); the database is the source of truth.
package oncall

import (
	"fmt"
	"time"
)

// Unit is a nursing unit or department, with the time zone its shifts are
// written in.
type Unit struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	TimeZone string `json:"time_zone"`
}

// Validate checks the unit's fields.
func (u *Unit) Validate() error {
	if u.ID == "" || u.Name == "" {
		return &InvalidError{"unit", "id and name are required"}
	}
	if u.TimeZone == "" {
		u.TimeZone = "UTC"
	}
	if _, err := time.LoadLocation(u.TimeZone); err != nil {
		return &InvalidError{"time_zone", fmt.Sprintf("unknown time zone %q", u.TimeZone)}
	}
	return nil
}

// User is a member of staff who can hold roles and own devices.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Shift says that a user holds a role in a unit over [Start, End).
type Shift struct {
	ID     string    `json:"id"`
	UnitID string    `json:"unit_id"`
	Role   string    `json:"role"`
	UserID string    `json:"user_id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// Validate checks the shift's fields.
func (s *Shift) Validate() error {
	switch {
	case s.UnitID == "" || s.Role == "" || s.UserID == "":
		return &InvalidError{"shift", "unit_id, role and user_id are required"}
	case !s.End.After(s.Start):
		return &InvalidError{"end", "must be after start"}
	}
	return nil
}

// Covers reports whether the shift is in force at t.
func (s Shift) Covers(t time.Time) bool { return !t.Before(s.Start) && t.Before(s.End) }

// Holders returns the users whose shifts cover t, in shift order, without
// repeats. It is the pure rule the store's query implements.
func Holders(shifts []Shift, t time.Time) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range shifts {
		if s.Covers(t) && !seen[s.UserID] {
			seen[s.UserID] = true
			out = append(out, s.UserID)
		}
	}
	return out
}
