package oncall

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkResolve measures one "who holds role R in unit U at T" query on
// the in-memory index of 200 units x 10 roles, each a 12-hour day/night
// rotation of four people over the 35-day horizon (plus a day back).
func BenchmarkResolve(b *testing.B) {
	loc := mustLoc(b, "America/New_York")
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, loc)
	from, to := now.Add(-indexLookback), now.Add(DefaultHorizon)
	rosters := map[RoleKey]*Roster{}
	var keys []RoleKey
	for u := range 200 {
		for r := range 10 {
			k := RoleKey{fmt.Sprintf("unit%03d", u), fmt.Sprintf("role%d", r)}
			rot := dayNight("2026-02-01")
			rot.Participants = []string{k.UnitID + "a", k.UnitID + "b", k.UnitID + "c", k.UnitID + "d"}
			rosters[k] = &Roster{UnitID: k.UnitID, Role: k.Role, Loc: loc, Rotations: []Rotation{rot},
				Overrides: []Override{{Kind: OverrideAdd, UserID: "float", Start: now.Add(48 * time.Hour), End: now.Add(60 * time.Hour)}}}
			keys = append(keys, k)
		}
	}
	idx := NewIndex(nil, func() time.Time { return now }, IndexOptions{})
	idx.load(rosters, from, to)
	rng := rand.New(rand.NewPCG(1, 2))
	type query struct {
		k  RoleKey
		at time.Time
	}
	qs := make([]query, 4096)
	for i := range qs {
		qs[i] = query{keys[rng.IntN(len(keys))], now.Add(time.Duration(rng.Int64N(int64(34 * 24 * time.Hour))))}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := qs[i%len(qs)]
		h, err := idx.HoldersAt(ctx, q.k.UnitID, q.k.Role, q.at)
		if err != nil || len(h) == 0 {
			b.Fatalf("holders %v, %v", h, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkReload measures rebuilding that whole index from definitions.
func BenchmarkReload(b *testing.B) {
	loc := mustLoc(b, "America/New_York")
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, loc)
	rosters := map[RoleKey]*Roster{}
	for u := range 200 {
		for r := range 10 {
			k := RoleKey{fmt.Sprintf("unit%03d", u), fmt.Sprintf("role%d", r)}
			rosters[k] = &Roster{UnitID: k.UnitID, Role: k.Role, Loc: loc, Rotations: []Rotation{dayNight("2026-02-01")}}
		}
	}
	idx := NewIndex(nil, func() time.Time { return now }, IndexOptions{})
	for b.Loop() {
		idx.load(rosters, now.Add(-indexLookback), now.Add(DefaultHorizon))
	}
}
