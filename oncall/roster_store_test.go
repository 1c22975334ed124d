package oncall_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/oncall"
)

// now is a Monday morning in New York; the nights below are local.
var (
	ny, _ = time.LoadLocation("America/New_York")
	now   = time.Date(2026, 3, 2, 9, 0, 0, 0, ny)
)

func local(day, hour int) time.Time { return time.Date(2026, 3, day, hour, 0, 0, 0, ny) }

// seedHospital makes 4W (RN required; ann days, bob nights by rotation),
// ICU, users, a team and a scheduler assigned to 4W.
func seedHospital(t *testing.T, d *db.DB) {
	t.Helper()
	ctx := context.Background()
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for _, u := range []oncall.Unit{{ID: "4W", Name: "4 West", TimeZone: "America/New_York"},
			{ID: "ICU", Name: "ICU", TimeZone: "America/New_York"}} {
			if err := oncall.PutUnit(ctx, tx, admin, u); err != nil {
				return err
			}
		}
		for _, u := range []string{"ann", "bob", "cat", "sched", "sup"} {
			if err := oncall.PutUser(ctx, tx, admin, oncall.User{ID: u, Name: "User " + u}); err != nil {
				return err
			}
		}
		if err := oncall.PutUnitRole(ctx, tx, admin, oncall.UnitRole{UnitID: "4W", Role: "RN", Required: true}, now); err != nil {
			return err
		}
		if err := oncall.AssignScheduler(ctx, tx, admin, "sched", "4W", now); err != nil {
			return err
		}
		if err := oncall.PutTeam(ctx, tx, admin, oncall.Team{ID: "rapid", Name: "Rapid response", Members: []string{"cat", "sup"}}, now); err != nil {
			return err
		}
		_, err := oncall.PutRotation(ctx, tx, admin, oncall.Rotation{ID: "4w-rn", UnitID: "4W", Role: "RN", Kind: oncall.RotationPattern,
			Participants: []string{"ann", "bob"}, StartDate: "2026-03-01", CycleDays: 1,
			Slots: []oncall.Slot{{Day: 0, Start: "07:00", End: "19:00"}, {Day: 0, Start: "19:00", End: "07:00"}}}, oncall.Edit{Now: now})
		return err
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	t.Cleanup(func() {
		if n, err := audit.Verify(context.Background(), d); err != nil {
			t.Errorf("audit.Verify after %d records: %v", n, err)
		}
	})
}

func inTx[T any](t *testing.T, d *db.DB, fn func(tx *sql.Tx) (T, error)) (T, error) {
	t.Helper()
	var out T
	err := d.InTx(context.Background(), func(tx *sql.Tx) (err error) {
		out, err = fn(tx)
		return err
	})
	return out, err
}

// count runs a COUNT query, after linking pending audit records so that
// audit_log holds every committed one.
func count(t *testing.T, d *db.DB, query string, args ...any) int {
	t.Helper()
	dbtest.ChainAudit(t, d)
	var n int
	if err := d.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGapReportAndNotice: a hole on a future night is refused, applied
// when confirmed (and flagged), reported, notified to the unit's scheduler
// once; closing the hole clears the report and resolves the notice.
func TestGapReportAndNotice(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		notifier, err := oncall.NewNotifier(d, func() time.Time { return now }, slog.New(slog.DiscardHandler), "06:00", nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, _, err := notifier.CheckUnit(ctx, "4W")
		if err != nil || len(rep.Gaps) != 0 {
			t.Fatalf("full roster: gaps %v, %v", rep.Gaps, err)
		}

		hole := oncall.Override{UnitID: "4W", Role: "RN", Kind: oncall.OverrideRemove, UserID: "bob",
			Start: local(5, 19), End: local(6, 7)} // Thursday night
		_, err = inTx(t, d, func(tx *sql.Tx) (oncall.Result, error) {
			_, res, err := oncall.AddOverride(ctx, tx, admin, hole, oncall.Edit{Now: now})
			return res, err
		})
		var gapErr *oncall.GapError
		if !errors.As(err, &gapErr) || len(gapErr.Gaps) != 1 || !gapErr.Gaps[0].Start.Equal(local(5, 19)) {
			t.Fatalf("opening a gap: %v", err)
		}
		if n := count(t, d, `SELECT COUNT(*) FROM roster_overrides`); n != 0 {
			t.Fatalf("refused edit stored %d overrides", n)
		}
		res, err := inTx(t, d, func(tx *sql.Tx) (oncall.Result, error) {
			_, res, err := oncall.AddOverride(ctx, tx, admin, hole, oncall.Edit{Now: now, ConfirmGap: true})
			return res, err
		})
		if err != nil || !res.Flagged || len(res.Gaps) != 1 {
			t.Fatalf("confirmed gap: %+v, %v", res, err)
		}
		if n := count(t, d, `SELECT COUNT(*) FROM roster_gap_confirmations WHERE object_id = $1`, res.ID); n != 1 {
			t.Fatalf("%d gap flags stored", n)
		}
		if n := count(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'roster.gap_confirmed' AND object_id = $1`, res.ID); n != 1 {
			t.Fatalf("%d roster.gap_confirmed records", n)
		}

		rep, created, err := notifier.CheckUnit(ctx, "4W")
		if err != nil {
			t.Fatal(err)
		}
		want := []oncall.Gap{{UnitID: "4W", Role: "RN", Start: local(5, 19), End: local(6, 7)}}
		if len(rep.Gaps) != 1 || !rep.Gaps[0].Start.Equal(want[0].Start) || !rep.Gaps[0].End.Equal(want[0].End) {
			t.Fatalf("gaps %v, want %v", rep.Gaps, want)
		}
		if len(created) != 1 || created[0].RecipientID != "sched" || created[0].Kind != oncall.NoticeGap {
			t.Fatalf("notices %+v", created)
		}
		if _, again, _ := notifier.CheckUnit(ctx, "4W"); len(again) != 0 {
			t.Fatalf("the same gap notified twice: %+v", again)
		}
		mine, err := oncall.ListNotices(ctx, d, oncall.NoticeFilter{RecipientID: "sched", OpenOnly: true})
		if err != nil || len(mine) != 1 {
			t.Fatalf("scheduler's open notices %v, %v", mine, err)
		}

		// Close the hole: cat covers that night.
		_, err = inTx(t, d, func(tx *sql.Tx) (oncall.Override, error) {
			o, _, err := oncall.AddOverride(ctx, tx, admin, oncall.Override{UnitID: "4W", Role: "RN", Kind: oncall.OverrideAdd,
				UserID: "cat", Start: local(5, 19), End: local(6, 7)}, oncall.Edit{Now: now})
			return o, err
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, _, err = notifier.CheckUnit(ctx, "4W")
		if err != nil || len(rep.Gaps) != 0 {
			t.Fatalf("after closing: gaps %v, %v", rep.Gaps, err)
		}
		open, _ := oncall.ListNotices(ctx, d, oncall.NoticeFilter{UnitID: "4W", OpenOnly: true})
		if len(open) != 0 {
			t.Fatalf("open notices after closing the hole: %+v", open)
		}
		if n := count(t, d, `SELECT COUNT(*) FROM audit_log WHERE action = 'oncall.notice_resolved'`); n != 1 {
			t.Fatalf("%d oncall.notice_resolved records", n)
		}
	})
}

func TestDoubleBookingReport(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		_, err := inTx(t, d, func(tx *sql.Tx) (oncall.Shift, error) {
			return oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "ICU", Role: "RN", UserID: "bob",
				Start: local(4, 23), End: local(5, 3)})
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := oncall.CoverageReport(ctx, d, "4W", now, now.Add(oncall.CoverageWindow))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.DoubleBookings) != 1 || rep.DoubleBookings[0].UserID != "bob" ||
			!rep.DoubleBookings[0].Start.Equal(local(4, 23)) || !rep.DoubleBookings[0].End.Equal(local(5, 3)) {
			t.Fatalf("double bookings %+v", rep.DoubleBookings)
		}
	})
}

func TestEditsAuditBeforeAndAfter(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		rot, err := oncall.GetRotation(ctx, d, "4w-rn")
		if err != nil {
			t.Fatal(err)
		}
		rot.Participants = []string{"ann", "bob", "cat"}
		if _, err := inTx(t, d, func(tx *sql.Tx) (oncall.Result, error) {
			return oncall.PutRotation(ctx, tx, admin, rot, oncall.Edit{Now: now, ConfirmGap: true})
		}); err != nil {
			t.Fatal(err)
		}
		var detail string
		dbtest.ChainAudit(t, d)
		if err := d.QueryRowContext(ctx, `SELECT detail FROM audit_log WHERE action = 'roster.rotation_saved' ORDER BY seq DESC LIMIT 1`).
			Scan(&detail); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{`"before":{`, `"participants":["ann","bob"]`, `"participants":["ann","bob","cat"]`} {
			if !strings.Contains(detail, s) {
				t.Fatalf("audit detail %s lacks %s", detail, s)
			}
		}
		// A scheduler edits only the units assigned to them.
		sched := oncall.Actor{Type: "user", ID: "sched", Role: "scheduler"}
		if err := oncall.CanEdit(ctx, d, sched, "4W"); err != nil {
			t.Fatalf("scheduler on 4W: %v", err)
		}
		if err := oncall.CanEdit(ctx, d, sched, "ICU"); !errors.Is(err, oncall.ErrForbidden) {
			t.Fatalf("scheduler on ICU: %v", err)
		}
	})
}

func TestResolveTargets(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		_, err := inTx(t, d, func(tx *sql.Tx) (oncall.Shift, error) {
			return oncall.AddShift(ctx, tx, admin, oncall.Shift{UnitID: "ICU", Role: "RN", UserID: "cat",
				Start: local(2, 7), End: local(2, 19)})
		})
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			target oncall.Target
			want   []string
		}{
			{"role in the alert's unit", oncall.Target{Kind: oncall.TargetRole, Role: "RN"}, []string{"ann"}},
			{"role in a named unit", oncall.Target{Kind: oncall.TargetRole, Role: "RN", UnitID: "ICU"}, []string{"cat"}},
			{"team", oncall.Target{Kind: oncall.TargetTeam, TeamID: "rapid"}, []string{"cat", "sup"}},
			{"unknown team pages nobody", oncall.Target{Kind: oncall.TargetTeam, TeamID: "gone"}, nil},
			{"everyone in role", oncall.Target{Kind: oncall.TargetEveryoneInRole, Role: "RN"}, []string{"ann", "cat"}},
			{"everyone in role, listed units", oncall.Target{Kind: oncall.TargetEveryoneInRole, Role: "RN", UnitIDs: []string{"ICU"}}, []string{"cat"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				got, err := oncall.ResolveStep(ctx, d, oncall.Step{Targets: []oncall.Target{c.target}}, "4W", now)
				if err != nil || !reflect.DeepEqual(got, c.want) {
					t.Fatalf("ResolveStep = %v, %v; want %v", got, err, c.want)
				}
			})
		}
	})
}

// TestIndexAgreesWithDatabase: the index answers as HoldersAt does, and
// stays current after Changed (local edit) and Invalidate (remote edit).
func TestIndexAgreesWithDatabase(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		var published []string
		idx := oncall.NewIndex(d, func() time.Time { return now }, oncall.IndexOptions{
			Publish: func(unit, role string) { published = append(published, unit+"/"+role) }})
		if err := idx.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		check := func(label string) {
			t.Helper()
			for h := 0; h < 24*10; h += 5 { // every 5 hours: both shifts of each day, at varying times
				at := now.Add(time.Duration(h) * time.Hour)
				got, err := idx.HoldersAt(ctx, "4W", "RN", at)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := oncall.HoldersAt(ctx, d, "4W", "RN", at)
				if !slices.Equal(got, want) {
					t.Fatalf("%s at %s: index %v, database %v", label, at, got, want)
				}
			}
		}
		check("loaded")
		edit := func() {
			if _, err := inTx(t, d, func(tx *sql.Tx) (oncall.Swap, error) {
				s, _, err := oncall.AddSwap(ctx, tx, admin, oncall.Swap{UnitID: "4W", Role: "RN", UserA: "ann", UserB: "bob",
					AStart: local(3, 7), AEnd: local(3, 19), BStart: local(3, 19), BEnd: local(4, 7)}, oncall.Edit{Now: now})
				return s, err
			}); err != nil {
				t.Fatal(err)
			}
		}
		edit()
		idx.Changed(ctx, "4W", "RN")
		check("after a local edit")
		if got, _ := idx.HoldersAt(ctx, "4W", "RN", local(3, 8)); !slices.Equal(got, []string{"bob"}) {
			t.Fatalf("swapped day: %v", got)
		}
		if !slices.Equal(published, []string{"4W/RN"}) {
			t.Fatalf("published %v", published)
		}
		// Another node's edit: the database changes, then the notice comes.
		if _, err := inTx(t, d, func(tx *sql.Tx) (oncall.Override, error) {
			o, _, err := oncall.AddOverride(ctx, tx, admin, oncall.Override{UnitID: "4W", Role: "RN", Kind: oncall.OverrideAdd,
				UserID: "cat", Start: local(4, 7), End: local(4, 19)}, oncall.Edit{Now: now})
			return o, err
		}); err != nil {
			t.Fatal(err)
		}
		idx.Invalidate("4W", "RN")
		check("after invalidate")
		shifts, err := idx.UserShifts(ctx, "cat", now, now.Add(7*24*time.Hour))
		if err != nil || len(shifts) != 1 || !shifts[0].Start.Equal(local(4, 7)) {
			t.Fatalf("cat's shifts %v, %v", shifts, err)
		}
		next, err := idx.NextShifts(ctx, "4W", "RN", now, 3)
		if err != nil || len(next) != 3 || next[0].UserID != "ann" || !next[0].Start.Equal(local(2, 7)) {
			t.Fatalf("next shifts %+v, %v", next, err)
		}
	})
}

func TestShiftStartNotices(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		seedHospital(t, d)
		notices, err := inTx(t, d, func(tx *sql.Tx) ([]oncall.Notice, error) {
			return oncall.NotifyShiftStarts(ctx, tx, local(2, 18), local(2, 20), now)
		})
		if err != nil || len(notices) != 1 || notices[0].RecipientID != "bob" || !notices[0].Start.Equal(local(2, 19)) {
			t.Fatalf("notices %+v, %v", notices, err)
		}
		again, _ := inTx(t, d, func(tx *sql.Tx) ([]oncall.Notice, error) {
			return oncall.NotifyShiftStarts(ctx, tx, local(2, 17), local(2, 20), now)
		})
		if len(again) != 0 {
			t.Fatalf("repeated window notified again: %+v", again)
		}
	})
}
