package routing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
)

// ErrNotFound is returned for an unknown alert or rule.
var ErrNotFound = errors.New("not found")

// Alert states.
const (
	StateOpen     = "open"
	StateAccepted = "accepted"
	StateClosed   = "closed"
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

// PutRule validates and stores a rule, bumping its version; audited in tx.
func PutRule(ctx context.Context, tx Queryer, actor audit.Entry, r Rule, now time.Time) error {
	if err := r.Validate(); err != nil {
		return err
	}
	def, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("put rule: %w", err)
	}
	enabled := 0
	if r.Enabled {
		enabled = 1
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO rules (id, name, version, enabled, definition, updated_at)
		VALUES ($1, $2, 1, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = rules.version + 1,
		enabled = excluded.enabled, definition = excluded.definition, updated_at = excluded.updated_at`,
		r.ID, r.Name, enabled, string(def), now.UnixMicro())
	if err != nil {
		return fmt.Errorf("put rule: %w", err)
	}
	actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = "rule.saved", "rule", r.ID, r.ID
	actor.Detail = map[string]any{"definition": json.RawMessage(def)}
	_, err = audit.Append(ctx, tx, actor)
	return err
}

// Rules returns the enabled rules.
func Rules(ctx context.Context, q Queryer) ([]Rule, error) {
	rows, err := q.QueryContext(ctx, `SELECT definition FROM rules WHERE enabled = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	defer rows.Close()
	var out []Rule
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		var r Rule
		if err := json.Unmarshal([]byte(def), &r); err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
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
	return nil
}

// GetContext returns the patient's last known context; ok is false when
// no ADT has been seen for the patient.
func GetContext(ctx context.Context, q Queryer, patientID string) (c Context, ok bool, err error) {
	c.PatientID = patientID
	var admitted int
	var updated int64
	l, p, v := &c.Location, &c.Previous, &c.Visit
	err = q.QueryRowContext(ctx, `SELECT unit, room, bed, facility, admitted, updated_at, visit_class, attending,
		visit_number, prev_unit, prev_room, prev_bed, prev_facility FROM patient_context WHERE patient_id = $1`,
		patientID).Scan(&l.Unit, &l.Room, &l.Bed, &l.Facility, &admitted, &updated, &v.Class, &v.Attending,
		&v.Number, &p.Unit, &p.Room, &p.Bed, &p.Facility)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("get patient context: %w", err)
	}
	c.Admitted, c.UpdatedAt = admitted == 1, time.UnixMicro(updated).UTC()
	return c, true, nil
}

// deleteContext forgets a patient identity that was merged away.
func deleteContext(ctx context.Context, tx Queryer, patientID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM patient_context WHERE patient_id = $1`, patientID); err != nil {
		return fmt.Errorf("delete patient context: %w", err)
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
	state, step, lock_text, body, updates, created_at, updated_at, accepted_by`

// insertAlert adds an open alert unless one is already open for its dedup
// key; it reports whether it inserted.
func insertAlert(ctx context.Context, tx Queryer, sealer Sealer, a *Alert) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO alerts (`+alertColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL)
		ON CONFLICT (dedup_key) WHERE state = 'open' DO NOTHING`,
		a.ID, a.RuleID, a.EventID, a.PatientID, a.DedupKey, a.Priority, a.Unit, a.TargetRole, a.PolicyID,
		a.State, a.Step, a.LockText, sealer.Seal([]byte(a.Body), []byte(a.ID)), a.Updates,
		a.CreatedAt.UnixMicro(), a.UpdatedAt.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("insert alert: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
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
	err := s.Scan(&a.ID, &a.RuleID, &a.EventID, &a.PatientID, &a.DedupKey, &a.Priority, &a.Unit, &a.TargetRole,
		&a.PolicyID, &a.State, &a.Step, &a.LockText, &body, &a.Updates, &created, &updated, &acceptedBy)
	if err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt, a.AcceptedBy = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC(), acceptedBy.String
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
