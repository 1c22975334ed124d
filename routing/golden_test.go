package routing_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/routing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/templates")

// TestTemplatesGolden renders each rule's lock screen and body and compares
// them with testdata/templates/<case>.golden (go test -run Golden -update
// rewrites them). The lock screen never shows a value, a bed or a test.
func TestTemplatesGolden(t *testing.T) {
	loc := ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"}
	k := vital("2823-3", 6.9, "mmol/L", "HH")
	k.Display = "Potassium"
	spo2 := vital("59408-5", 84, "%")
	spo2.Display = "SpO2"
	cases := []struct {
		name     string
		lock     string
		body     string
		obs      *ingest.Observation
		loc      ingest.Location
		trend    string
		event    string
		class    string
		priority string
	}{
		{"critical-potassium", "{priority} alert on {unit}: open Clarion",
			"Room {room} bed {bed}: critical {test} {value} {units} ({flag}) {trend}", &k, loc, "↑ from 5.9", "Result", "I", "PH"},
		{"spo2-sustained", "{priority} alert on {unit}", "Room {room} bed {bed}: SpO2 {value}{units} for over 60 s {trend}",
			&spo2, loc, "↓ from 87", "Result", "I", "PH"},
		{"admit-notice", "{priority} notice for {unit}", "{event}: room {room} bed {bed}, class {class}", nil, loc, "",
			"Admission", "I", "PL"},
		{"vent-alarm", "{priority} {rule} on {unit}", "Bed {bed}: {test} ({flag})",
			&ingest.Observation{Code: "MDC_EVT_VENT_DISCONN", System: "MDC", Display: "Ventilator disconnected", Flags: []string{"PH"}},
			ingest.Location{Unit: "ICU", Room: "2", Bed: "1"}, "", "Alarm", "I", "PH"},
		{"minimum-body-names-only-the-bed", "{priority} alert on {unit}", "Check bed {bed}", &k, loc, "↑ from 5.9", "Result", "I", "PM"},
		{"no-trend-yet", "{priority} alert on {unit}", "{test} {value} {units} {trend}", &k, loc, "", "Result", "I", "PH"},
		{"unknown-location", "{priority} alert on {unit}", "Room {room} bed {bed}: {test} {value}", &k, ingest.Location{}, "", "Result", "", "PH"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := baseRule("golden")
			r.Name, r.Priority, r.LockText, r.Body = "Golden rule", c.priority, c.lock, c.body
			if err := r.Validate(); err != nil {
				t.Fatalf("template rejected: %v", err)
			}
			f := routing.FieldsFor(&r, c.obs, c.loc)
			f.Trend, f.Event, f.Class = c.trend, c.event, c.class
			lock, body := routing.RenderMessage(&r, f)
			got := "lock: " + lock + "\nbody: " + body + "\n"
			path := filepath.Join("testdata", "templates", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendered:\n%s\nwant (%s):\n%s", got, path, want)
			}
		})
	}
}
