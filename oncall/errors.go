package oncall

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNotFound is returned when a unit, user, policy or roster entry does
// not exist.
var ErrNotFound = errors.New("not found")

// ErrForbidden is returned when a scheduler edits a unit not assigned to
// them.
var ErrForbidden = errors.New("unit not assigned to this scheduler")

// InvalidError is a validation failure to show the caller: which field, why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return strings.TrimSpace(e.Field + ": " + e.Reason) }

// UserError marks the error as safe to show the caller.
func (e *InvalidError) UserError() {}

// Gap is a period in which a required unit-role has no holder.
type Gap struct {
	UnitID string    `json:"unit_id"`
	Role   string    `json:"role"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// GapError refuses an edit that would open coverage gaps; the caller may
// repeat it with confirm_gap to apply it anyway (it is then flagged).
type GapError struct {
	Gaps []Gap
}

func (e *GapError) Error() string {
	return fmt.Sprintf("the edit would leave a required role uncovered in %d period(s); repeat with confirm_gap: true to apply it", len(e.Gaps))
}

// UserError marks the error as safe to show the caller.
func (e *GapError) UserError() {}
