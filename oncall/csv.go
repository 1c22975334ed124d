package oncall

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// CSVHeader is the roster CSV's first line. Every row is one explicit
// entry: kind "shift" (a one-off assignment), or an override "add",
// "remove" or "replace" (replaces_user_id gives way to user_id); exports
// with resolved=true write kind "resolved" rows, the computed holders,
// which import refuses. start and end are RFC 3339, or "YYYY-MM-DDTHH:MM"
// read as wall-clock time in the unit's zone.
var CSVHeader = []string{"kind", "unit_id", "role", "user_id", "replaces_user_id", "start", "end"}

// CSV row kinds.
const (
	CSVShift    = "shift"
	CSVResolved = "resolved"
)

// CSVRow is one parsed line.
type CSVRow struct {
	Line           int
	Kind           string
	UnitID         string
	Role           string
	UserID         string
	ReplacesUserID string
	Start, End     time.Time
}

// LineError is one bad field of one CSV line (the header is line 1).
type LineError struct {
	Line   int    `json:"line"`
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// CSVError lists every bad line of an import; nothing was applied.
type CSVError struct {
	Lines []LineError
}

func (e *CSVError) Error() string {
	if len(e.Lines) == 0 {
		return "csv: invalid"
	}
	l := e.Lines[0]
	return fmt.Sprintf("csv line %d, %s: %s (%d error(s) in all)", l.Line, l.Field, l.Reason, len(e.Lines))
}

// UserError marks the error as safe to show the caller.
func (e *CSVError) UserError() {}

// maxCSVErrors stops a hopeless file early.
const maxCSVErrors = 50

// ParseRosterCSV reads a roster CSV. zones gives each known unit's zone;
// a unit not in it is an error on its line. All errors are collected.
func ParseRosterCSV(r io.Reader, zones map[string]*time.Location) ([]CSVRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var rows []CSVRow
	bad := &CSVError{}
	fail := func(line int, field, reason string) {
		if len(bad.Lines) < maxCSVErrors {
			bad.Lines = append(bad.Lines, LineError{line, field, reason})
		}
	}
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &CSVError{[]LineError{{1, "header", "empty file"}}}
	}
	if err != nil {
		return nil, &CSVError{[]LineError{{1, "header", csvReason(err)}}}
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	if !slices.Equal(header, CSVHeader) {
		return nil, &CSVError{[]LineError{{1, "header", "must be " + strings.Join(CSVHeader, ",")}}}
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			fail(line, "row", csvReason(err))
			if len(bad.Lines) >= maxCSVErrors || !errors.As(err, &pe) {
				break
			}
			continue
		}
		line, _ := cr.FieldPos(0) // only valid after a successful Read
		if len(rec) != len(CSVHeader) {
			fail(line, "row", fmt.Sprintf("has %d fields, want %d", len(rec), len(CSVHeader)))
			continue
		}
		row := CSVRow{Line: line, Kind: rec[0], UnitID: rec[1], Role: rec[2], UserID: rec[3], ReplacesUserID: rec[4]}
		loc, known := zones[row.UnitID]
		switch {
		case row.Kind != CSVShift && row.Kind != OverrideAdd && row.Kind != OverrideRemove && row.Kind != OverrideReplace:
			fail(line, "kind", "must be shift, add, remove or replace")
			continue
		case row.UnitID == "":
			fail(line, "unit_id", "required")
			continue
		case !known:
			fail(line, "unit_id", fmt.Sprintf("unknown unit %q", row.UnitID))
			continue
		case row.Role == "":
			fail(line, "role", "required")
		case row.UserID == "":
			fail(line, "user_id", "required")
		case (row.Kind == OverrideReplace) != (row.ReplacesUserID != ""):
			fail(line, "replaces_user_id", "required for replace, and only for replace")
		}
		var okStart, okEnd bool
		if row.Start, okStart = parseCSVTime(rec[5], loc); !okStart {
			fail(line, "start", "must be RFC 3339 or YYYY-MM-DDTHH:MM")
		}
		if row.End, okEnd = parseCSVTime(rec[6], loc); !okEnd {
			fail(line, "end", "must be RFC 3339 or YYYY-MM-DDTHH:MM")
		}
		if okStart && okEnd && !row.End.After(row.Start) {
			fail(line, "end", "must be after start")
		}
		rows = append(rows, row)
	}
	if len(bad.Lines) > 0 {
		return nil, bad
	}
	return rows, nil
}

func csvReason(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return "unreadable"
}

func parseCSVTime(s string, loc *time.Location) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, true
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04", s, loc); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// WriteRosterCSV writes rows in the import format, times in each unit's
// zone (RFC 3339 with offset, so they read back exactly).
func WriteRosterCSV(w io.Writer, rows []CSVRow, zones map[string]*time.Location) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	for _, r := range rows {
		loc := zones[r.UnitID]
		if loc == nil {
			loc = time.UTC
		}
		if err := cw.Write([]string{r.Kind, r.UnitID, r.Role, r.UserID, r.ReplacesUserID,
			r.Start.In(loc).Format(time.RFC3339), r.End.In(loc).Format(time.RFC3339)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
