package oncall

import (
	"bytes"
	"io"
	"sort"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// exportRows lists rosters' explicit entries overlapping [from, to) as CSV
// rows (or, resolved, the computed holders), sorted by unit, role, start.
func exportRows(rosters map[RoleKey]*Roster, from, to time.Time, resolved bool) []CSVRow {
	var rows []CSVRow
	for k, r := range rosters {
		if resolved {
			for _, s := range ShiftsOf(k.UnitID, k.Role, r.Timeline(from, to)) {
				rows = append(rows, CSVRow{Kind: CSVResolved, UnitID: k.UnitID, Role: k.Role, UserID: s.UserID, Start: s.Start, End: s.End})
			}
			continue
		}
		for _, s := range r.Shifts {
			rows = append(rows, CSVRow{Kind: CSVShift, UnitID: k.UnitID, Role: k.Role, UserID: s.UserID, Start: s.Start, End: s.End})
		}
		for _, o := range r.Overrides {
			rows = append(rows, CSVRow{Kind: o.Kind, UnitID: k.UnitID, Role: k.Role, UserID: o.UserID,
				ReplacesUserID: o.ReplacesUserID, Start: o.Start, End: o.End})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		switch {
		case a.UnitID != b.UnitID:
			return a.UnitID < b.UnitID
		case a.Role != b.Role:
			return a.Role < b.Role
		case !a.Start.Equal(b.Start):
			return a.Start.Before(b.Start)
		default:
			return a.UserID < b.UserID
		}
	})
	return rows
}
