package oncall

import (
	"testing"
	"time"
)

func TestNextDaily(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	syd := mustLoc(t, "Australia/Sydney")
	cases := []struct {
		name string
		now  time.Time
		loc  *time.Location
		at   string
		want time.Time
	}{
		{"later today", time.Date(2026, 3, 2, 5, 0, 0, 0, ny), ny, "06:00", time.Date(2026, 3, 2, 6, 0, 0, 0, ny)},
		{"exactly now is tomorrow", time.Date(2026, 3, 2, 6, 0, 0, 0, ny), ny, "06:00", time.Date(2026, 3, 3, 6, 0, 0, 0, ny)},
		{"across DST start keeps wall clock", time.Date(2026, 3, 7, 7, 0, 0, 0, ny), ny, "06:00", time.Date(2026, 3, 8, 6, 0, 0, 0, ny)},
		{"in the unit's zone, not the server's", time.Date(2026, 3, 2, 18, 0, 0, 0, time.UTC), syd, "06:00",
			time.Date(2026, 3, 3, 6, 0, 0, 0, syd)},
		{"a time DST skips runs an hour later", time.Date(2026, 3, 7, 12, 0, 0, 0, ny), ny, "02:30",
			time.Date(2026, 3, 8, 3, 30, 0, 0, ny)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := NextDaily(c.now, c.loc, c.at)
			if err != nil || !got.Equal(c.want) {
				t.Fatalf("NextDaily = %v, %v; want %v", got, err, c.want)
			}
		})
	}
	if _, err := NextDaily(time.Now(), ny, "6am"); err == nil {
		t.Fatal("a bad time of day was accepted")
	}
}
