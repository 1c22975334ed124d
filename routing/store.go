package routing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/clarion-health/clarion/ingest"
)

// ErrNotFound is returned for an unknown alert or rule.
var ErrNotFound = errors.New("not found")

// Alert states. A held alert waits for the end of its rule's quiet hours
// (release_at) before it is paged.
const (
	StateOpen     = "open"
	StateAccepted = "accepted"
	StateClosed   = "closed"
	StateHeld     = "held"
)

// Close reasons (alerts.close_reason) of alerts routing closes.
const (
	CloseNormal    = "normal"    // auto-resolve: a later reading was normal
	CloseAlarmEnd  = "alarm_end" // auto-resolve: the IHE alarm ended
	CloseTransfer  = "transfer"  // on_transfer: close
	CloseDischarge = "discharge" // on_discharge: close
	CloseDedup     = "dedup"     // a held alert folded into an open one on release
)

// Alert is an open or finished page for one dedup key.
type Alert struct {
	ID         string    `json:"id"`
	RuleID     string    `json:"rule_id"`
	EventID    string    `json:"event_id"`
	PatientID  string    `json:"patient_id"` // opaque pseudonym, never the MRN
	DedupKey   string    `json:"-"`
	Priority   string    `json:"priority"`
	Unit       string    `json:"unit"`
	TargetRole string    `json:"target_role"`
	PolicyID   string    `json:"policy_id"`
	State      string    `json:"state"`
	Step       int       `json:"step"`
	LockText   string    `json:"lock_text"`
	Updates    int       `json:"updates"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	AcceptedBy string    `json:"accepted_by,omitempty"`
	// TargetKind and TargetID are whom the rule targets first (role, team,
	// user or policy); the engine pages EffectivePolicy.
	TargetKind string `json:"target_kind,omitempty"`
	TargetID   string `json:"target_id,omitempty"`
	// DelayPct scales the policy's step delays (100: as written).
	DelayPct int `json:"delay_pct"`
	// Failsafe: nobody held the target when the alert opened, so only the
	// policy's failsafe step is paged.
	Failsafe    bool       `json:"failsafe,omitempty"`
	GroupName   string     `json:"group,omitempty"`
	ReleaseAt   *time.Time `json:"release_at,omitempty"`
	ClosedAt    *time.Time `json:"closed_at,omitempty"`
	CloseReason string     `json:"close_reason,omitempty"`
	// Body is the rendered message body; it holds PHI and is stored sealed.
	Body string `json:"-"`
}

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Sealer encrypts alert bodies at rest.
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

// Context is where a patient is now, as ADT last said.
type Context struct {
	PatientID string
	Location  ingest.Location
	Visit     ingest.Visit
	// Previous is where the patient was before the last transfer or bed
	// swap: a cancelled transfer (A12) puts them back there.
	Previous  ingest.Location
	Admitted  bool
	UpdatedAt time.Time // when the context last changed (set by SetContext)
}

// SetContext records the patient's context after an ADT event.
func SetContext(ctx context.Context, tx Queryer, c Context, now time.Time) error {
	admitted := 0
	if c.Admitted {
		admitted = 1
	}
	l, p, v := c.Location, c.Previous, c.Visit
	_, err := tx.ExecContext(ctx, `INSERT INTO patient_context (patient_id, unit, room, bed, facility, admitted,
		updated_at, visit_class, attending, visit_number, prev_unit, prev_room, prev_bed, prev_facility)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (patient_id) DO UPDATE SET unit = excluded.unit, room = excluded.room, bed = excluded.bed,
		facility = excluded.facility, admitted = excluded.admitted, updated_at = excluded.updated_at,
		visit_class = excluded.visit_class, attending = excluded.attending, visit_number = excluded.visit_number,
		prev_unit = excluded.prev_unit, prev_room = excluded.prev_room, prev_bed = excluded.prev_bed,
		prev_facility = excluded.prev_facility`,
		c.PatientID, l.Unit, l.Room, l.Bed, l.Facility, admitted, now.UnixMicro(),
		v.Class, v.Attending, v.Number, p.Unit, p.Room, p.Bed, p.Facility)
	if err != nil {
		return fmt.Errorf("set patient context: %w", err)
	}
	if t, ok := tx.(*rtx); ok && t.contexts != nil {
		c.UpdatedAt = time.UnixMicro(now.UnixMicro()).UTC() // as GetContext would read it back
		t.contexts[c.PatientID] = knownContext{c, true}
	}
	return nil
}

// GetContext returns the patient's last known context; ok is false when
// no ADT has been seen for the patient. A routing session that prefetched
// the patient answers from memory.
func GetContext(ctx context.Context, q Queryer, patientID string) (c Context, ok bool, err error) {
	if t, isSession := q.(*rtx); isSession {
		if k, held := t.contexts[patientID]; held {
			return k.c, k.known, nil
		}
	}
	got, err := getContexts(ctx, q, []string{patientID})
	if err != nil {
		return Context{PatientID: patientID}, false, err
	}
	c, ok = got[patientID]
	if !ok {
		c.PatientID = patientID
	}
	return c, ok, nil
}

// freshContext is GetContext from the database even where the session
// holds the patient, refreshing what it holds.
func freshContext(ctx context.Context, tx *rtx, patientID string) (Context, bool, error) {
	got, err := getContexts(ctx, tx.Queryer, []string{patientID})
	if err != nil {
		return Context{PatientID: patientID}, false, err
	}
	c, ok := got[patientID]
	if !ok {
		c.PatientID = patientID
	}
	if tx.contexts != nil {
		tx.contexts[patientID] = knownContext{c, ok}
	}
	return c, ok, nil
}

// getContexts reads the known contexts of patientIDs, 500 a query.
func getContexts(ctx context.Context, q Queryer, patientIDs []string) (map[string]Context, error) {
	out := make(map[string]Context, len(patientIDs))
	for lo := 0; lo < len(patientIDs); lo += 500 {
		chunk := patientIDs[lo:min(lo+500, len(patientIDs))]
		args := make([]any, len(chunk))
		marks := make([]string, len(chunk))
		for i, id := range chunk {
			args[i], marks[i] = id, fmt.Sprintf("$%d", i+1)
		}
		rows, err := q.QueryContext(ctx, `SELECT patient_id, unit, room, bed, facility, admitted, updated_at, visit_class,
			attending, visit_number, prev_unit, prev_room, prev_bed, prev_facility FROM patient_context
			WHERE patient_id IN (`+strings.Join(marks, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("get patient context: %w", err)
		}
		for rows.Next() {
			var c Context
			var admitted int
			var updated int64
			l, p, v := &c.Location, &c.Previous, &c.Visit
			if err := rows.Scan(&c.PatientID, &l.Unit, &l.Room, &l.Bed, &l.Facility, &admitted, &updated, &v.Class,
				&v.Attending, &v.Number, &p.Unit, &p.Room, &p.Bed, &p.Facility); err != nil {
				rows.Close()
				return nil, fmt.Errorf("get patient context: %w", err)
			}
			c.Admitted, c.UpdatedAt = admitted == 1, time.UnixMicro(updated).UTC()
			out[c.PatientID] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("get patient context: %w", err)
		}
	}
	return out, nil
}

// deleteContext forgets a patient identity that was merged away.
func deleteContext(ctx context.Context, tx Queryer, patientID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM patient_context WHERE patient_id = $1`, patientID); err != nil {
		return fmt.Errorf("delete patient context: %w", err)
	}
	if t, ok := tx.(*rtx); ok && t.contexts != nil {
		t.contexts[patientID] = knownContext{Context{PatientID: patientID}, false}
	}
	return nil
}

// patientAlert is what a merge needs to know of an alert.
type patientAlert struct{ id, state, dedupKey string }

// alertsOf lists a patient's alerts, every state.
func alertsOf(ctx context.Context, q Queryer, patientID string) ([]patientAlert, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, state, dedup_key FROM alerts WHERE patient_id = $1 ORDER BY id`, patientID)
	if err != nil {
		return nil, fmt.Errorf("list patient alerts: %w", err)
	}
	defer rows.Close()
	var out []patientAlert
	for rows.Next() {
		var a patientAlert
		if err := rows.Scan(&a.id, &a.state, &a.dedupKey); err != nil {
			return nil, fmt.Errorf("list patient alerts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// openDedupTaken reports whether an open alert holds dedupKey.
func openDedupTaken(ctx context.Context, q Queryer, dedupKey string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM alerts WHERE dedup_key = $1 AND state = $2`, dedupKey, StateOpen).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check dedup key: %w", err)
	}
	return n > 0, nil
}

// reassignAlert moves an alert to another patient pseudonym and dedup key.
func reassignAlert(ctx context.Context, tx Queryer, id, patientID, dedupKey string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE alerts SET patient_id = $1, dedup_key = $2, updated_at = $3 WHERE id = $4`,
		patientID, dedupKey, now.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("reassign alert: %w", err)
	}
	return nil
}

const alertColumns = `id, rule_id, event_id, patient_id, dedup_key, priority, unit, target_role, policy_id,
	state, step, lock_text, body, updates, created_at, updated_at, accepted_by, target_kind, target_id, delay_pct,
	failsafe, group_name, release_at, closed_at, close_reason`

// insertAlert adds an open alert unless one is already open for its dedup
// key; it reports whether it inserted.
func insertAlert(ctx context.Context, tx Queryer, sealer Sealer, a *Alert) (bool, error) {
	query, args := insertAlertSQL(sealer, a)
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("insert alert: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// insertAlertSQL is insertAlert's statement: it inserts nothing when an
// alert is open for the dedup key.
func insertAlertSQL(sealer Sealer, a *Alert) (string, []any) {
	return `INSERT INTO alerts (` + alertColumns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, $17, $18, $19, $20, $21, $22,
		NULL, '')
		ON CONFLICT (dedup_key) WHERE state = 'open' DO NOTHING`,
		[]any{a.ID, a.RuleID, a.EventID, a.PatientID, a.DedupKey, a.Priority, a.Unit, a.TargetRole, a.PolicyID,
			a.State, a.Step, a.LockText, sealer.Seal([]byte(a.Body), []byte(a.ID)), a.Updates,
			a.CreatedAt.UnixMicro(), a.UpdatedAt.UnixMicro(), a.TargetKind, a.TargetID, a.DelayPct, boolInt(a.Failsafe),
			a.GroupName, microsOrNil(a.ReleaseAt)}
}

// GetAlert loads an alert and opens its body. forUpdate locks the row on
// PostgreSQL (pass the dialect's clause, or "").
func GetAlert(ctx context.Context, q Queryer, sealer Sealer, id, forUpdate string) (*Alert, error) {
	row := q.QueryRowContext(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1`+forUpdate, id)
	a, err := scanAlert(row, sealer)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("alert %s: %w", id, ErrNotFound)
	}
	return a, err
}

type scanner interface{ Scan(dest ...any) error }

func scanAlert(s scanner, sealer Sealer) (*Alert, error) {
	var a Alert
	var body []byte
	var created, updated int64
	var acceptedBy sql.NullString
	var failsafe int
	var releaseAt, closedAt sql.NullInt64
	err := s.Scan(&a.ID, &a.RuleID, &a.EventID, &a.PatientID, &a.DedupKey, &a.Priority, &a.Unit, &a.TargetRole,
		&a.PolicyID, &a.State, &a.Step, &a.LockText, &body, &a.Updates, &created, &updated, &acceptedBy,
		&a.TargetKind, &a.TargetID, &a.DelayPct, &failsafe, &a.GroupName, &releaseAt, &closedAt, &a.CloseReason)
	if err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt, a.AcceptedBy = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC(), acceptedBy.String
	a.Failsafe, a.ReleaseAt, a.ClosedAt = failsafe == 1, timeOrNil(releaseAt), timeOrNil(closedAt)
	if sealer != nil {
		plain, err := sealer.Open(body, []byte(a.ID))
		if err != nil {
			return nil, fmt.Errorf("open alert %s body: %w", a.ID, err)
		}
		a.Body = string(plain)
	}
	return &a, nil
}

// ListAlerts returns alerts in a state ("" for all), newest first; bodies
// are not opened.
func ListAlerts(ctx context.Context, q Queryer, state string, limit int) ([]Alert, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+alertColumns+` FROM alerts WHERE ($1 = '' OR state = $1)
		ORDER BY created_at DESC LIMIT $2`, state, limit)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		a, err := scanAlert(rows, nil)
		if err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		out = append(out, *a)
	}
	return out, rows.Err()
}

// SetAlertState moves an alert to a new state and step.
func SetAlertState(ctx context.Context, tx Queryer, id, state string, step int, acceptedBy string, now time.Time) error {
	var err error
	if acceptedBy != "" {
		_, err = tx.ExecContext(ctx, `UPDATE alerts SET state = $1, step = $2, accepted_by = $3, accepted_at = $4,
			updated_at = $4 WHERE id = $5`, state, step, acceptedBy, now.UnixMicro(), id)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE alerts SET state = $1, step = $2, updated_at = $3 WHERE id = $4`,
			state, step, now.UnixMicro(), id)
	}
	if err != nil {
		return fmt.Errorf("set alert state: %w", err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func microsOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func timeOrNil(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMicro(v.Int64).UTC()
	return &t
}
