package oncall

import (
	"fmt"
	"maps"
	"slices"
)

// Target kinds of an escalation step.
const (
	TargetRole           = "role"             // the holders of Role in UnitID (the alert's unit when empty)
	TargetUser           = "user"             // a named user
	TargetTeam           = "team"             // every member of TeamID
	TargetEveryoneInRole = "everyone_in_role" // every holder of Role in UnitIDs (every unit when empty)
)

// Target is who one step pages.
type Target struct {
	Kind    string   `json:"kind"`
	Role    string   `json:"role,omitempty"`
	UnitID  string   `json:"unit_id,omitempty"`
	UserID  string   `json:"user_id,omitempty"`
	TeamID  string   `json:"team_id,omitempty"`
	UnitIDs []string `json:"unit_ids,omitempty"`
}

// Step is one rung of an escalation policy: its targets are paged, and after
// DelaySeconds without an accept the next step is.
type Step struct {
	Targets      []Target `json:"targets"`
	DelaySeconds int      `json:"delay_seconds"`
}

// MaxRepeat bounds Policy.Repeat.
const MaxRepeat = 10

// Policy is an ordered escalation. Its last step is the failsafe and must
// name at least one user, so an alert can never page nobody.
//
// Repeat: the steps before the failsafe run Repeat+1 times in all, then the
// failsafe is paged once (and again on every decline of it). With steps
// A, B, F and Repeat 1 the alert pages A, B, A, B, F. The positions along
// that unrolled sequence are "rungs"; alerts, messages and timers record the
// rung, which equals the step index when Repeat is 0.
//
// Handoff: when true, an open unaccepted alert whose current step resolves
// to new holders (a shift changed) is paged to them.
//
// ByPriority names another policy to use for alerts of a priority (the
// alert priority codes, e.g. "PH"); one hop only, never chained.
type Policy struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Steps      []Step            `json:"steps"`
	Repeat     int               `json:"repeat,omitempty"`
	Handoff    bool              `json:"handoff,omitempty"`
	ByPriority map[string]string `json:"by_priority,omitempty"`
	// AcceptsRequired is how many distinct users must accept an alert
	// (at least 1), read with the policy; it is set apart, through the
	// messaging API.
	AcceptsRequired int `json:"-"`
}

// clone copies p deeply, so a caller may edit the copy.
func (p Policy) clone() Policy {
	p.Steps = slices.Clone(p.Steps)
	for i := range p.Steps {
		ts := slices.Clone(p.Steps[i].Targets)
		for j := range ts {
			ts[j].UnitIDs = slices.Clone(ts[j].UnitIDs)
		}
		p.Steps[i].Targets = ts
	}
	p.ByPriority = maps.Clone(p.ByPriority)
	return p
}

// Rungs is the length of the unrolled sequence (see Policy).
func (p Policy) Rungs() int {
	esc := len(p.Steps) - 1
	if esc <= 0 {
		return len(p.Steps)
	}
	return (p.Repeat+1)*esc + 1
}

// StepAt returns the step index paged at a rung; rungs past the end are the
// failsafe.
func (p Policy) StepAt(rung int) int {
	esc := len(p.Steps) - 1
	if esc <= 0 || rung >= p.Rungs()-1 {
		return len(p.Steps) - 1
	}
	return rung % esc
}

// Validate checks the policy, the failsafe rule included.
func (p *Policy) Validate() error {
	if p.ID == "" || p.Name == "" {
		return &InvalidError{"policy", "id and name are required"}
	}
	if len(p.Steps) == 0 {
		return &InvalidError{"steps", "a policy needs at least one step"}
	}
	if p.Repeat < 0 || p.Repeat > MaxRepeat {
		return &InvalidError{"repeat", fmt.Sprintf("must be 0 to %d", MaxRepeat)}
	}
	if p.Repeat > 0 && len(p.Steps) < 2 {
		return &InvalidError{"repeat", "needs a step before the failsafe"}
	}
	for prio, id := range p.ByPriority {
		if prio == "" || id == "" || id == p.ID {
			return &InvalidError{"by_priority." + prio, "must map a priority to another policy's id"}
		}
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
			if err := t.validate(fmt.Sprintf("%s.targets[%d]", field, j)); err != nil {
				return err
			}
		}
	}
	failsafe := slices.ContainsFunc(p.Steps[len(p.Steps)-1].Targets, func(t Target) bool { return t.Kind == TargetUser })
	if !failsafe {
		return &InvalidError{fmt.Sprintf("steps[%d]", len(p.Steps)-1),
			"the last step is the failsafe and must name at least one user"}
	}
	return nil
}

func (t Target) validate(field string) error {
	switch t.Kind {
	case TargetRole, TargetEveryoneInRole:
		if t.Role == "" {
			return &InvalidError{field + ".role", "required for a " + t.Kind + " target"}
		}
	case TargetUser:
		if t.UserID == "" {
			return &InvalidError{field + ".user_id", "required for a user target"}
		}
	case TargetTeam:
		if t.TeamID == "" {
			return &InvalidError{field + ".team_id", "required for a team target"}
		}
	default:
		return &InvalidError{field + ".kind", fmt.Sprintf("must be %q, %q, %q or %q",
			TargetRole, TargetUser, TargetTeam, TargetEveryoneInRole)}
	}
	return nil
}

// HasRosterTargets reports whether the step's users depend on rosters or
// team membership (and so may change at a shift change).
func (s Step) HasRosterTargets() bool {
	return slices.ContainsFunc(s.Targets, func(t Target) bool { return t.Kind != TargetUser })
}
