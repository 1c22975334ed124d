package bus

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

const rosterSubject = "clarion.roster.changed"

// rosterChange says which unit-role's roster changed: ids only.
type rosterChange struct {
	Origin string `json:"origin"`
	Unit   string `json:"unit"`
	Role   string `json:"role"`
}

// RosterNotifier tells every node's on-call index that a unit-role's roster
// changed, so each rebuilds it; origin keeps a node from handling its own.
type RosterNotifier struct {
	b      *Bus
	origin string
}

// Rosters returns a notifier for this node.
func (b *Bus) Rosters(origin string) *RosterNotifier { return &RosterNotifier{b: b, origin: origin} }

// Publish announces a change (a lost notice is repaired by the daily reload).
func (r *RosterNotifier) Publish(unit, role string) {
	data, _ := json.Marshal(rosterChange{Origin: r.origin, Unit: unit, Role: role})
	if err := r.b.nc.Publish(rosterSubject, data); err != nil {
		r.b.log.Warn("roster change notice", "unit", unit, "role", role, "error", err)
	}
}

// Subscribe calls changed for every other node's change.
func (r *RosterNotifier) Subscribe(changed func(unit, role string)) (func(), error) {
	sub, err := r.b.nc.Subscribe(rosterSubject, func(m *nats.Msg) {
		var c rosterChange
		if json.Unmarshal(m.Data, &c) == nil && c.Origin != r.origin {
			changed(c.Unit, c.Role)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe roster changes: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
