// Package oncall owns units, users, shifts and escalation policies, and
// answers "who holds role R in unit U at time T".
package oncall

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNotFound is returned when a unit, user or policy does not exist.
var ErrNotFound = errors.New("not found")

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

// Target kinds of an escalation step.
const (
	TargetRole = "role" // the holders of Role in Unit (the alert's unit when Unit is empty)
	TargetUser = "user" // a named user
)

// Target is who one step pages.
type Target struct {
	Kind   string `json:"kind"`
	Role   string `json:"role,omitempty"`
	UnitID string `json:"unit_id,omitempty"`
	UserID string `json:"user_id,omitempty"`
}

// Step is one rung of an escalation policy: its targets are paged, and after
// DelaySeconds without an accept the next step is.
type Step struct {
	Targets      []Target `json:"targets"`
	DelaySeconds int      `json:"delay_seconds"`
}

// Policy is an ordered escalation. Its last step is the failsafe and must
// name at least one user, so an alert can never page nobody.
type Policy struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Steps []Step `json:"steps"`
}

// Validate checks the policy, the failsafe rule included.
func (p *Policy) Validate() error {
	if p.ID == "" || p.Name == "" {
		return &InvalidError{"policy", "id and name are required"}
	}
	if len(p.Steps) == 0 {
		return &InvalidError{"steps", "a policy needs at least one step"}
	}
	for i, s := range p.Steps {
		field := fmt.Sprintf("steps[%d]", i)
		if len(s.Targets) == 0 {
			return &InvalidError{field + ".targets", "a step needs at least one target"}
		}
		if s.DelaySeconds < 0 {
			return &InvalidError{field + ".delay_seconds", "must not be negative"}
		}
		if i < len(p.Steps)-1 && s.DelaySeconds == 0 {
			return &InvalidError{field + ".delay_seconds", "a step before the last needs a delay"}
		}
		for j, t := range s.Targets {
			tf := fmt.Sprintf("%s.targets[%d]", field, j)
			switch t.Kind {
			case TargetRole:
				if t.Role == "" {
					return &InvalidError{tf + ".role", "required for a role target"}
				}
			case TargetUser:
				if t.UserID == "" {
					return &InvalidError{tf + ".user_id", "required for a user target"}
				}
			default:
				return &InvalidError{tf + ".kind", fmt.Sprintf("must be %q or %q", TargetRole, TargetUser)}
			}
		}
	}
	failsafe := false
	for _, t := range p.Steps[len(p.Steps)-1].Targets {
		failsafe = failsafe || t.Kind == TargetUser
	}
	if !failsafe {
		return &InvalidError{fmt.Sprintf("steps[%d]", len(p.Steps)-1),
			"the last step is the failsafe and must name at least one user"}
	}
	return nil
}

// InvalidError is a validation failure to show the caller: which field, why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return strings.TrimSpace(e.Field + ": " + e.Reason) }

// UserError marks the error as safe to show the caller.
func (e *InvalidError) UserError() {}
