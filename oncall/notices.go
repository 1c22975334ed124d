package oncall

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/ids"
)

// Notice kinds.
const (
	NoticeGap           = "gap"            // to the unit's schedulers: a required role nobody holds
	NoticeDoubleBooking = "double_booking" // to the unit's schedulers: a person in two units at once
	NoticeOnCall        = "on_call"        // to the incoming holder: "you are on call"
)

// Notice is a stored notification for a person (delivery to devices is the
// messaging package's business). RecipientID is empty when a unit has no
// scheduler assigned: the notice still shows in the unit's list.
type Notice struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	RecipientID string     `json:"recipient_id"`
	UnitID      string     `json:"unit_id"`
	Role        string     `json:"role"`
	SubjectID   string     `json:"subject_id,omitempty"` // the double-booked or on-call user
	Start       time.Time  `json:"start"`
	End         time.Time  `json:"end"`
	CreatedAt   time.Time  `json:"created_at"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
}

// key identifies a notice so that it is stored once. An on_call notice is
// keyed by its start only: a shift running past the checked window has no
// final end yet.
func (n Notice) key() string {
	end := n.End.UnixMicro()
	if n.Kind == NoticeOnCall {
		end = 0
	}
	return strings.Join([]string{n.Kind, n.UnitID, n.Role, n.SubjectID, n.RecipientID,
		fmt.Sprint(n.Start.UnixMicro()), fmt.Sprint(end)}, "|")
}

// CoverageReport returns the gaps of unitID's required roles (every unit's
// when empty) and the double bookings touching that unit over [from, to),
// read from q.
func CoverageReport(ctx context.Context, q Queryer, unitID string, from, to time.Time) (Report, error) {
	rep := Report{From: from, To: to, Gaps: []Gap{}, DoubleBookings: []DoubleBooking{}}
	rosters, _, err := loadRosters(ctx, q, rosterFilter{from: from, to: to})
	if err != nil {
		return rep, err
	}
	required, err := ListUnitRoles(ctx, q, unitID)
	if err != nil {
		return rep, err
	}
	keys := make([]RoleKey, 0, len(rosters))
	for k := range rosters {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].UnitID+"\x00"+keys[i].Role < keys[j].UnitID+"\x00"+keys[j].Role })
	var shifts []UserShift
	for _, k := range keys {
		segs := rosters[k].Timeline(from, to)
		shifts = append(shifts, ShiftsOf(k.UnitID, k.Role, segs)...)
	}
	for _, ur := range required {
		if !ur.Required {
			continue
		}
		k := RoleKey{ur.UnitID, ur.Role}
		r := rosters[k]
		if r == nil {
			r = &Roster{UnitID: k.UnitID, Role: k.Role}
		}
		rep.Gaps = append(rep.Gaps, GapsIn(k, r.Timeline(from, to))...)
	}
	for _, d := range DoubleBookings(shifts) {
		if unitID == "" || d.First.UnitID == unitID || d.Second.UnitID == unitID {
			rep.DoubleBookings = append(rep.DoubleBookings, d)
		}
	}
	return rep, nil
}

// NotifyCoverage checks unitID's coverage over the next CoverageWindow and
// stores a notice for each of its schedulers per gap and double booking
// not already notified; notices of problems that no longer exist are marked
// resolved. Each new or resolved notice is audited.
func NotifyCoverage(ctx context.Context, tx Queryer, unitID string, now time.Time) (Report, []Notice, error) {
	rep, err := CoverageReport(ctx, tx, unitID, now, now.Add(CoverageWindow))
	if err != nil {
		return rep, nil, err
	}
	recipients, err := Schedulers(ctx, tx, unitID)
	if err != nil {
		return rep, nil, err
	}
	if len(recipients) == 0 {
		recipients = []string{""}
	}
	var want []Notice
	for _, r := range recipients {
		for _, g := range rep.Gaps {
			want = append(want, Notice{Kind: NoticeGap, RecipientID: r, UnitID: g.UnitID, Role: g.Role, Start: g.Start, End: g.End})
		}
		for _, d := range rep.DoubleBookings {
			role := d.First.Role
			if d.First.UnitID != unitID {
				role = d.Second.Role
			}
			want = append(want, Notice{Kind: NoticeDoubleBooking, RecipientID: r, UnitID: unitID, Role: role,
				SubjectID: d.UserID, Start: d.Start, End: d.End})
		}
	}
	current := map[string]bool{}
	var created []Notice
	for _, n := range want {
		current[n.key()] = true
		ok, err := insertNotice(ctx, tx, &n, now)
		if err != nil {
			return rep, nil, err
		}
		if ok {
			created = append(created, n)
		}
	}
	return rep, created, resolveStale(ctx, tx, unitID, current, now)
}

// insertNotice stores n unless an identical one exists; it reports whether
// it stored it, and audits it if so.
func insertNotice(ctx context.Context, tx Queryer, n *Notice, now time.Time) (bool, error) {
	n.ID, n.CreatedAt = ids.New("ntc"), now
	res, err := tx.ExecContext(ctx, `INSERT INTO coverage_notices (id, dedup_key, kind, recipient_id, unit_id, role, subject_id,
		starts_at, ends_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (dedup_key) DO NOTHING`,
		n.ID, n.key(), n.Kind, n.RecipientID, n.UnitID, n.Role, n.SubjectID, n.Start.UnixMicro(), n.End.UnixMicro(), now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("store notice: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return false, nil
	}
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "oncall",
		Action: "oncall.notice_sent", ObjectType: "coverage_notice", ObjectID: n.ID, CorrelationID: n.ID,
		Detail: map[string]any{"kind": n.Kind, "recipient_id": n.RecipientID, "unit_id": n.UnitID, "role": n.Role,
			"subject_id": n.SubjectID, "start": rfc(n.Start), "end": rfc(n.End)}})
	return true, err
}

// resolveStale marks the unit's open gap and double-booking notices that
// are not in current as resolved.
func resolveStale(ctx context.Context, tx Queryer, unitID string, current map[string]bool, now time.Time) error {
	type open struct{ id, key string }
	var stale []open
	err := eachRow(ctx, tx, `SELECT id, dedup_key FROM coverage_notices WHERE unit_id = $1 AND kind IN ('gap', 'double_booking')
		AND resolved_at IS NULL ORDER BY id`, []any{unitID}, func(scan func(...any) error) error {
		var o open
		if err := scan(&o.id, &o.key); err != nil {
			return err
		}
		if !current[o.key] {
			stale = append(stale, o)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resolve notices: %w", err)
	}
	for _, o := range stale {
		if _, err := tx.ExecContext(ctx, `UPDATE coverage_notices SET resolved_at = $1 WHERE id = $2`, now.UnixMicro(), o.id); err != nil {
			return fmt.Errorf("resolve notices: %w", err)
		}
		if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "oncall",
			Action: "oncall.notice_resolved", ObjectType: "coverage_notice", ObjectID: o.id, CorrelationID: o.id,
			Detail: map[string]any{"unit_id": unitID}}); err != nil {
			return err
		}
	}
	return nil
}

// NotifyShiftStarts stores an on_call notice for every shift (after all
// roster layers) starting in (from, to], for its holder. Repeating a window
// is harmless: an identical notice is not stored twice.
func NotifyShiftStarts(ctx context.Context, tx Queryer, from, to, now time.Time) ([]Notice, error) {
	// A day before the window, so a shift already running at `from` shows
	// its real start and is not taken for a new one.
	winFrom, winTo := from.Add(-24*time.Hour), to.Add(time.Microsecond)
	rosters, _, err := loadRosters(ctx, tx, rosterFilter{from: winFrom, to: winTo})
	if err != nil {
		return nil, err
	}
	var out []Notice
	for k, r := range rosters {
		for _, s := range ShiftsOf(k.UnitID, k.Role, r.Timeline(winFrom, winTo)) {
			if !s.Start.After(from) || s.Start.After(to) {
				continue
			}
			n := Notice{Kind: NoticeOnCall, RecipientID: s.UserID, UnitID: k.UnitID, Role: k.Role, SubjectID: s.UserID,
				Start: s.Start, End: s.End}
			ok, err := insertNotice(ctx, tx, &n, now)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// NoticeFilter selects notices: by recipient, by unit, open only.
type NoticeFilter struct {
	RecipientID string
	UnitID      string
	OpenOnly    bool
	Limit       int
}

// ListNotices returns notices, newest first.
func ListNotices(ctx context.Context, q Queryer, f NoticeFilter) ([]Notice, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 200
	}
	open := 0
	if f.OpenOnly {
		open = 1
	}
	out := []Notice{}
	err := eachRow(ctx, q, `SELECT id, kind, recipient_id, unit_id, role, subject_id, starts_at, ends_at, created_at, resolved_at
		FROM coverage_notices WHERE ($1 = '' OR recipient_id = $1) AND ($2 = '' OR unit_id = $2)
		AND ($3 = 0 OR resolved_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT $4`,
		[]any{f.RecipientID, f.UnitID, open, f.Limit}, func(scan func(...any) error) error {
			var n Notice
			var start, end, created int64
			var resolved sql.NullInt64
			if err := scan(&n.ID, &n.Kind, &n.RecipientID, &n.UnitID, &n.Role, &n.SubjectID, &start, &end, &created, &resolved); err != nil {
				return err
			}
			n.Start, n.End, n.CreatedAt = micros(start), micros(end), micros(created)
			if resolved.Valid {
				t := micros(resolved.Int64)
				n.ResolvedAt = &t
			}
			out = append(out, n)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list notices: %w", err)
	}
	return out, nil
}
