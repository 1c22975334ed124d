package oncall

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/ids"
)

// Feed kinds.
const (
	FeedUser     = "user"      // one user's shifts in every unit-role
	FeedUnitRole = "unit_role" // every shift of one unit-role
)

// FeedToken is a revocable secret URL for an iCalendar feed; only the
// SHA-256 of the secret is stored.
type FeedToken struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	UserID    string    `json:"user_id,omitempty"`
	UnitID    string    `json:"unit_id,omitempty"`
	Role      string    `json:"role,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

func feedHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// CreateFeedToken stores a new feed token and returns it with its secret,
// which is shown once.
func CreateFeedToken(ctx context.Context, tx Queryer, by Actor, ft FeedToken, now time.Time) (FeedToken, string, error) {
	switch ft.Kind {
	case FeedUser:
		if err := checkExists(ctx, tx, "", map[string]string{"user_id": ft.UserID}); err != nil {
			return ft, "", err
		}
		ft.UnitID, ft.Role = "", ""
	case FeedUnitRole:
		if ft.Role == "" {
			return ft, "", &InvalidError{"role", "required for a unit_role feed"}
		}
		if err := checkExists(ctx, tx, ft.UnitID, nil); err != nil {
			return ft, "", err
		}
		ft.UserID = ""
	default:
		return ft, "", &InvalidError{"kind", "must be user or unit_role"}
	}
	ft.ID, ft.CreatedBy, ft.CreatedAt = ids.New("ics"), by.ID, now
	secret := "ics_" + ids.Secret(24)
	if _, err := tx.ExecContext(ctx, `INSERT INTO ical_tokens (id, hash, kind, user_id, unit_id, role, created_by, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, ft.ID, feedHash(secret), ft.Kind, ft.UserID, ft.UnitID, ft.Role, by.ID,
		now.UnixMicro()); err != nil {
		return ft, "", fmt.Errorf("create feed token: %w", err)
	}
	err := audit.Append(ctx, tx, by.entryAt(now, "ical.token_created", "ical_token", ft.ID, map[string]any{
		"kind": ft.Kind, "user_id": ft.UserID, "unit_id": ft.UnitID, "role": ft.Role}))
	return ft, secret, err
}

// GetFeedToken loads a live token by id.
func GetFeedToken(ctx context.Context, q Queryer, id string) (FeedToken, error) {
	return scanFeedToken(q.QueryRowContext(ctx, `SELECT id, kind, user_id, unit_id, role, created_by, created_at
		FROM ical_tokens WHERE id = $1 AND revoked_at IS NULL`, id))
}

// LookupFeedToken returns the live token whose secret this is.
func LookupFeedToken(ctx context.Context, q Queryer, secret string) (FeedToken, error) {
	return scanFeedToken(q.QueryRowContext(ctx, `SELECT id, kind, user_id, unit_id, role, created_by, created_at
		FROM ical_tokens WHERE hash = $1 AND revoked_at IS NULL`, feedHash(secret)))
}

func scanFeedToken(row *sql.Row) (FeedToken, error) {
	var ft FeedToken
	var created int64
	err := row.Scan(&ft.ID, &ft.Kind, &ft.UserID, &ft.UnitID, &ft.Role, &ft.CreatedBy, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return ft, fmt.Errorf("feed token: %w", ErrNotFound)
	}
	if err != nil {
		return ft, fmt.Errorf("feed token: %w", err)
	}
	ft.CreatedAt = micros(created)
	return ft, nil
}

// RevokeFeedToken ends a feed URL for good.
func RevokeFeedToken(ctx context.Context, tx Queryer, by Actor, id string, now time.Time) error {
	r, err := tx.ExecContext(ctx, `UPDATE ical_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, now.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("revoke feed token: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return fmt.Errorf("feed token %q: %w", id, ErrNotFound)
	}
	err = audit.Append(ctx, tx, by.entryAt(now, "ical.token_revoked", "ical_token", id, nil))
	return err
}

// FeedEvent is one VEVENT.
type FeedEvent struct {
	UID     string
	Summary string
	Start   time.Time
	End     time.Time
}

// EventUID is stable for a shift, so calendar clients update rather than
// duplicate it on each refresh.
func EventUID(s UserShift) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%s\x00%d", s.UnitID, s.Role, s.UserID, s.Start.UnixMicro())))
	return hex.EncodeToString(h[:16]) + "@clarion"
}

// WriteICal writes an RFC 5545 calendar: CRLF line ends, lines folded at
// 75 octets (never inside a UTF-8 sequence), TEXT values escaped, times in
// UTC (the "Z" form, so no VTIMEZONE is needed), DTSTAMP on every event.
func WriteICal(w io.Writer, name string, events []FeedEvent, stamp time.Time) error {
	bw := bufio.NewWriter(w)
	line := func(s string) { bw.WriteString(foldICal(s)) }
	utc := func(t time.Time) string { return t.UTC().Format("20060102T150405Z") }
	line("BEGIN:VCALENDAR")
	line("VERSION:2.0")
	line("PRODID:-//Clarion//On-call rosters//EN")
	line("CALSCALE:GREGORIAN")
	line("METHOD:PUBLISH")
	line("X-WR-CALNAME:" + escapeICal(name))
	for _, e := range events {
		line("BEGIN:VEVENT")
		line("UID:" + e.UID)
		line("DTSTAMP:" + utc(stamp))
		line("DTSTART:" + utc(e.Start))
		line("DTEND:" + utc(e.End))
		line("SUMMARY:" + escapeICal(e.Summary))
		line("TRANSP:OPAQUE")
		line("END:VEVENT")
	}
	line("END:VCALENDAR")
	return bw.Flush()
}

// escapeICal escapes a TEXT value (RFC 5545 3.3.11).
func escapeICal(s string) string {
	return strings.NewReplacer(`\`, `\\`, ";", `\;`, ",", `\,`, "\r\n", `\n`, "\n", `\n`, "\r", `\n`).Replace(s)
}

// foldICal returns one content line with CRLF, folded so that no physical
// line exceeds 75 octets (continuations start with one space).
func foldICal(s string) string {
	var b strings.Builder
	limit := 75
	for len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		b.WriteString(s[:cut])
		b.WriteString("\r\n ")
		s = s[cut:]
		limit = 74 // the leading space counts
	}
	b.WriteString(s)
	b.WriteString("\r\n")
	return b.String()
}
