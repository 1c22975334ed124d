package fhir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/fhir/outbound"
)

// The tables of migration 00006 (fhir_resources, fhir_latest_reading,
// fhir_subscriptions) are this package's. The searches at the end read
// alerts, messages and audit_log: read-only projections for the FHIR
// views, never written here.

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ErrNotFound is returned for an unknown resource or subscription.
var ErrNotFound = errors.New("not found")

// resourceRow is one created resource.
type resourceRow struct {
	ID        string
	Type      string
	EventID   string
	CreatedAt time.Time
}

func findBySource(ctx context.Context, q Queryer, source, sourceID string) (*resourceRow, error) {
	var r resourceRow
	var at int64
	err := q.QueryRowContext(ctx, `SELECT id, resource_type, event_id, created_at FROM fhir_resources
		WHERE source = $1 AND source_id = $2`, source, sourceID).Scan(&r.ID, &r.Type, &r.EventID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find fhir resource: %w", err)
	}
	r.CreatedAt = time.UnixMicro(at).UTC()
	return &r, nil
}

// findByIdentifier returns up to two resources of a type with a business
// identifier (by its keyed hash): enough to tell none, one and several.
func findByIdentifier(ctx context.Context, q Queryer, typ, idHash string) ([]resourceRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, resource_type, event_id, created_at FROM fhir_resources
		WHERE resource_type = $1 AND identifier_hash = $2 ORDER BY id LIMIT 2`, typ, idHash)
	if err != nil {
		return nil, fmt.Errorf("find fhir resource by identifier: %w", err)
	}
	defer rows.Close()
	var out []resourceRow
	for rows.Next() {
		var r resourceRow
		var at int64
		if err := rows.Scan(&r.ID, &r.Type, &r.EventID, &at); err != nil {
			return nil, fmt.Errorf("find fhir resource by identifier: %w", err)
		}
		r.CreatedAt = time.UnixMicro(at).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// insertResources adds created resources, 200 rows a statement.
func insertResources(ctx context.Context, tx Queryer, rows []resourceRow, keys []resourceKey, now time.Time) error {
	for start := 0; start < len(rows); start += 200 {
		end := min(start+200, len(rows))
		var q strings.Builder
		q.WriteString(`INSERT INTO fhir_resources (id, resource_type, source, source_id, identifier_hash, event_id, created_at) VALUES `)
		args := make([]any, 0, 7*(end-start))
		for i := start; i < end; i++ {
			if i > start {
				q.WriteByte(',')
			}
			n := len(args)
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
			args = append(args, rows[i].ID, rows[i].Type, keys[i].source, keys[i].sourceID, keys[i].idHash, rows[i].EventID,
				now.UnixMicro())
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("insert fhir resources: %w", err)
		}
	}
	return nil
}

// freshReading records a reading's time for (patient, code) and reports
// whether it is at least as new as every reading seen before; an older one
// is stale and leaves the newest time in place. One statement: the upsert
// keeps the newest time and returns it.
func freshReading(ctx context.Context, tx Queryer, patientID, code string, at time.Time) (bool, error) {
	var newest int64
	err := tx.QueryRowContext(ctx, `INSERT INTO fhir_latest_reading (patient_id, code, effective_at) VALUES ($1, $2, $3)
		ON CONFLICT (patient_id, code) DO UPDATE SET effective_at = CASE
			WHEN excluded.effective_at > fhir_latest_reading.effective_at THEN excluded.effective_at
			ELSE fhir_latest_reading.effective_at END
		RETURNING effective_at`, patientID, code, at.UnixMicro()).Scan(&newest)
	if err != nil {
		return false, fmt.Errorf("record latest reading: %w", err)
	}
	return at.UnixMicro() >= newest, nil
}

// Subscription is a FHIR server Clarion subscribes to.
type Subscription struct {
	ID              string    `json:"id"`                // the last path segment of Clarion's endpoint
	SourceBaseURL   string    `json:"source_base_url"`   // the EHR's FHIR base, e.g. https://ehr.example/fhir
	RemoteID        string    `json:"remote_id"`         // the Subscription's id on the source
	Token           string    `json:"token,omitempty"`   // bearer token Clarion presents to the source (write only)
	LastEventNumber int64     `json:"last_event_number"` // the highest event number processed
	Status          string    `json:"status"`            // requested, active (after the handshake)
	HasToken        bool      `json:"has_token"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Sealer seals subscription credentials at rest.
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

func putSubscription(ctx context.Context, tx Queryer, sealer Sealer, s Subscription, now time.Time) error {
	var token []byte
	if s.Token != "" {
		token = sealer.Seal([]byte(s.Token), []byte("fhir_subscriptions/"+s.ID))
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO fhir_subscriptions (id, source_base_url, remote_id, token_sealed,
		last_event_number, status, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, 'requested', $5, $5)
		ON CONFLICT (id) DO UPDATE SET source_base_url = excluded.source_base_url, remote_id = excluded.remote_id,
		token_sealed = COALESCE(excluded.token_sealed, fhir_subscriptions.token_sealed), updated_at = excluded.updated_at`,
		s.ID, s.SourceBaseURL, s.RemoteID, token, now.UnixMicro())
	if err != nil {
		return fmt.Errorf("put subscription: %w", err)
	}
	return nil
}

func getSubscription(ctx context.Context, q Queryer, sealer Sealer, id string) (Subscription, error) {
	var s Subscription
	var token []byte
	var at int64
	err := q.QueryRowContext(ctx, `SELECT id, source_base_url, remote_id, token_sealed, last_event_number, status, updated_at
		FROM fhir_subscriptions WHERE id = $1`, id).Scan(&s.ID, &s.SourceBaseURL, &s.RemoteID, &token, &s.LastEventNumber,
		&s.Status, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("get subscription: %w", err)
	}
	s.UpdatedAt = time.UnixMicro(at).UTC()
	if len(token) > 0 {
		plain, err := sealer.Open(token, []byte("fhir_subscriptions/"+s.ID))
		if err != nil {
			return s, fmt.Errorf("open subscription token: %w", err)
		}
		s.Token, s.HasToken = string(plain), true
	}
	return s, nil
}

func listSubscriptions(ctx context.Context, q Queryer) ([]Subscription, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, source_base_url, remote_id, token_sealed IS NOT NULL, last_event_number,
		status, updated_at FROM fhir_subscriptions ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	defer rows.Close()
	var out []Subscription
	for rows.Next() {
		var s Subscription
		var at int64
		if err := rows.Scan(&s.ID, &s.SourceBaseURL, &s.RemoteID, &s.HasToken, &s.LastEventNumber, &s.Status, &at); err != nil {
			return nil, fmt.Errorf("list subscriptions: %w", err)
		}
		s.UpdatedAt = time.UnixMicro(at).UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}

// advanceSubscription records progress: the status and the highest event
// number processed (never moving it back).
func advanceSubscription(ctx context.Context, tx Queryer, id, status string, eventNumber int64, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE fhir_subscriptions SET status = $1, updated_at = $2,
		last_event_number = CASE WHEN last_event_number < $3 THEN $3 ELSE last_event_number END WHERE id = $4`,
		status, now.UnixMicro(), eventNumber, id)
	if err != nil {
		return fmt.Errorf("advance subscription: %w", err)
	}
	return nil
}

// filter builds a WHERE clause with $n placeholders.
type filter struct {
	where []string
	args  []any
}

func (f *filter) add(cond string, args ...any) {
	for _, a := range args {
		f.args = append(f.args, a)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(f.args)), 1)
	}
	f.where = append(f.where, cond)
}

func (f *filter) sql() string {
	if len(f.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(f.where, " AND ")
}

func micros(t sql.NullInt64) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return time.UnixMicro(t.Int64).UTC()
}

func searchAlerts(ctx context.Context, q Queryer, f filter, limit int) ([]outbound.Alert, error) {
	f.args = append(f.args, limit)
	rows, err := q.QueryContext(ctx, `SELECT id, rule_id, patient_id, priority, unit, state, lock_text, created_at,
		updated_at, accepted_by, accepted_at FROM alerts`+f.sql()+` ORDER BY id DESC LIMIT $`+strconv.Itoa(len(f.args)), f.args...)
	if err != nil {
		return nil, fmt.Errorf("search alerts: %w", err)
	}
	defer rows.Close()
	var out []outbound.Alert
	for rows.Next() {
		var a outbound.Alert
		var created, updated int64
		var acceptedBy sql.NullString
		var acceptedAt sql.NullInt64
		if err := rows.Scan(&a.ID, &a.RuleID, &a.PatientID, &a.Priority, &a.Unit, &a.State, &a.LockText, &created,
			&updated, &acceptedBy, &acceptedAt); err != nil {
			return nil, fmt.Errorf("search alerts: %w", err)
		}
		a.CreatedAt, a.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
		a.AcceptedBy, a.AcceptedAt = acceptedBy.String, micros(acceptedAt)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search alerts: %w", err)
	}
	rows.Close()
	for i := range out {
		users, err := recipients(ctx, q, out[i].ID)
		if err != nil {
			return nil, err
		}
		out[i].Recipients = users
	}
	return out, nil
}

func recipients(ctx context.Context, q Queryer, alertID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT user_id FROM messages WHERE alert_id = $1 ORDER BY user_id`, alertID)
	if err != nil {
		return nil, fmt.Errorf("alert recipients: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("alert recipients: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// messageUpdated is a message's last change, for _lastUpdated: receipts
// and answers only ever come later than what precedes them.
const messageUpdated = `COALESCE(m.responded_at, m.read_at, m.delivered_at, m.created_at)`

func searchMessages(ctx context.Context, q Queryer, f filter, limit int) ([]outbound.Message, error) {
	f.args = append(f.args, limit)
	rows, err := q.QueryContext(ctx, `SELECT m.id, m.alert_id, a.patient_id, m.device_id, m.user_id, m.step, m.created_at,
		m.delivered_at, m.read_at, m.response, m.responded_at FROM messages m JOIN alerts a ON a.id = m.alert_id`+f.sql()+
		` ORDER BY m.id DESC LIMIT $`+strconv.Itoa(len(f.args)), f.args...)
	if err != nil {
		return nil, fmt.Errorf("search messages: %w", err)
	}
	defer rows.Close()
	var out []outbound.Message
	for rows.Next() {
		var m outbound.Message
		var created int64
		var delivered, read, responded sql.NullInt64
		var response sql.NullString
		if err := rows.Scan(&m.ID, &m.AlertID, &m.PatientID, &m.DeviceID, &m.UserID, &m.Step, &created, &delivered,
			&read, &response, &responded); err != nil {
			return nil, fmt.Errorf("search messages: %w", err)
		}
		m.CreatedAt = time.UnixMicro(created).UTC()
		m.DeliveredAt, m.ReadAt, m.RespondedAt, m.Response = micros(delivered), micros(read), micros(responded), response.String
		out = append(out, m)
	}
	return out, rows.Err()
}

func searchAudit(ctx context.Context, q Queryer, f filter, limit int) ([]outbound.AuditRecord, error) {
	f.args = append(f.args, limit)
	rows, err := q.QueryContext(ctx, `SELECT seq, at, actor_type, actor_id, actor_role, action, object_type, object_id,
		outcome, correlation_id, detail FROM audit_log`+f.sql()+` ORDER BY seq DESC LIMIT $`+strconv.Itoa(len(f.args)), f.args...)
	if err != nil {
		return nil, fmt.Errorf("search audit: %w", err)
	}
	defer rows.Close()
	var out []outbound.AuditRecord
	for rows.Next() {
		var r outbound.AuditRecord
		var at int64
		var detail string
		if err := rows.Scan(&r.Seq, &at, &r.ActorType, &r.ActorID, &r.ActorRole, &r.Action, &r.ObjectType, &r.ObjectID,
			&r.Outcome, &r.CorrelationID, &detail); err != nil {
			return nil, fmt.Errorf("search audit: %w", err)
		}
		r.At, r.Detail = time.UnixMicro(at).UTC(), []byte(detail)
		out = append(out, r)
	}
	return out, rows.Err()
}
