package oncall

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"
)

func csvZones(t testing.TB) map[string]*time.Location {
	return map[string]*time.Location{"4W": mustLoc(t, "America/New_York"), "ICU": time.UTC}
}

func TestParseRosterCSV(t *testing.T) {
	b, err := os.ReadFile("testdata/roster.csv")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ParseRosterCSV(bytes.NewReader(b), csvZones(t))
	if err != nil {
		t.Fatal(err)
	}
	ny := mustLoc(t, "America/New_York")
	if len(rows) != 4 || rows[0].Kind != CSVShift || rows[0].Line != 2 ||
		!rows[0].Start.Equal(time.Date(2026, 3, 5, 19, 0, 0, 0, ny)) || rows[3].ReplacesUserID != "bob" {
		t.Fatalf("rows %+v", rows)
	}
	// A night over DST start, written in local time: 11 hours.
	if d := rows[2].End.Sub(rows[2].Start); d != 11*time.Hour {
		t.Fatalf("DST night lasts %v", d)
	}
	// Export then import gives the same rows.
	var out bytes.Buffer
	if err := WriteRosterCSV(&out, rows, csvZones(t)); err != nil {
		t.Fatal(err)
	}
	again, err := ParseRosterCSV(&out, csvZones(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if !rows[i].Start.Equal(again[i].Start) || !rows[i].End.Equal(again[i].End) || rows[i].UserID != again[i].UserID {
			t.Fatalf("round trip row %d: %+v vs %+v", i, rows[i], again[i])
		}
	}
}

func TestParseRosterCSVErrors(t *testing.T) {
	b, err := os.ReadFile("testdata/roster_bad.csv")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseRosterCSV(bytes.NewReader(b), csvZones(t))
	var bad *CSVError
	if !errors.As(err, &bad) {
		t.Fatalf("error %v", err)
	}
	want := []LineError{
		{2, "end", "must be after start"},
		{3, "kind", "must be shift, add, remove or replace"},
		{4, "unit_id", `unknown unit "5E"`},
		{5, "replaces_user_id", "required for replace, and only for replace"},
		{5, "start", "must be RFC 3339 or YYYY-MM-DDTHH:MM"},
		{6, "row", "has 3 fields, want 7"},
	}
	if !reflect.DeepEqual(bad.Lines, want) {
		t.Fatalf("line errors\n got %+v\nwant %+v", bad.Lines, want)
	}
	cases := []struct{ name, in, field string }{
		{"empty", "", "header"},
		{"wrong header", "a,b,c\n", "header"},
		{"bare quote", "kind,unit_id,role,user_id,replaces_user_id,start,end\nshift,\"4W,RN\n", "row"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRosterCSV(bytes.NewReader([]byte(c.in)), csvZones(t))
			if !errors.As(err, &bad) || bad.Lines[0].Field != c.field {
				t.Fatalf("error %v, want field %s", err, c.field)
			}
		})
	}
}

// FuzzParseRosterCSV: any input parses or fails with line errors, never
// panics; what parses survives an export and a second parse.
func FuzzParseRosterCSV(f *testing.F) {
	for _, name := range []string{"testdata/roster.csv", "testdata/roster_bad.csv"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\ufeffkind,unit_id,role,user_id,replaces_user_id,start,end\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		zones := csvZones(t)
		rows, err := ParseRosterCSV(bytes.NewReader(in), zones)
		if err != nil {
			var bad *CSVError
			if !errors.As(err, &bad) || len(bad.Lines) == 0 {
				t.Fatalf("error without lines: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteRosterCSV(&out, rows, zones); err != nil {
			t.Fatal(err)
		}
		again, err := ParseRosterCSV(&out, zones)
		if err != nil || len(again) != len(rows) {
			t.Fatalf("re-parse: %d rows, %v (had %d)", len(again), err, len(rows))
		}
	})
}
