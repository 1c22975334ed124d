package fhir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clarion-health/clarion/fhir/outbound"
	"github.com/clarion-health/clarion/ingest"
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

// lookupChunk bounds the keys one lookup statement carries.
const lookupChunk = 500

// marks is "$from, $from+1, …" for n parameters.
func marks(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}

func scanResource(rows ingest.Rows, extra *string) (resourceRow, error) {
	var r resourceRow
	var at int64
	if err := rows.Scan(&r.ID, &r.Type, &r.EventID, &at, extra); err != nil {
		return r, err
	}
	r.CreatedAt = time.UnixMicro(at).UTC()
	return r, nil
}

// queueLookup queues, for each key of groups in order, the lookup of its
// values (each once); scan reads the rows of each statement, with the key
// it was sent for. On PostgreSQL (pg) it is one statement per key, byArray
// with $1 the key and $2 the values as one array: joined laterally (fenced
// by OFFSET 0) to an index on both, it is planned as one index probe per
// value whatever the table's statistics say, where an IN list's cached
// plan could keep scanning every row of the key that a young table's
// statistics made look cheap. On SQLite it is inList, with $1 the key and
// the values from $2 on at its %s, in runs of up to lookupChunk.
func queueLookup(q ingest.Queue, pg bool, groups map[string][]string, byArray, inList string,
	scan func(key string, rows ingest.Rows) error) {
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		list := slices.Compact(slices.Sorted(slices.Values(groups[key])))
		read := func(rows ingest.Rows) error { return scan(key, rows) }
		if pg {
			q.Query(read, byArray, key, list)
			continue
		}
		for start := 0; start < len(list); start += lookupChunk {
			chunk := list[start:min(start+lookupChunk, len(list))]
			args := make([]any, 0, len(chunk)+1)
			args = append(args, key)
			for _, v := range chunk {
				args = append(args, v)
			}
			q.Query(read, fmt.Sprintf(inList, marks(2, len(chunk))), args...)
		}
	}
}

// queueBySource queues the lookup of the resources created under the
// dedup keys ids (source → its source ids); once sent, found holds each by
// source+"|"+source_id.
func queueBySource(q ingest.Queue, pg bool, ids map[string][]string, found map[string]resourceRow) {
	queueLookup(q, pg, ids, `SELECT r.id, r.resource_type, r.event_id, r.created_at, r.source_id
		FROM unnest($2::text[]) AS k (v)
		CROSS JOIN LATERAL (SELECT * FROM fhir_resources WHERE source = $1 AND source_id = k.v OFFSET 0) r`,
		`SELECT id, resource_type, event_id, created_at, source_id FROM fhir_resources
		WHERE source = $1 AND source_id IN (%s)`, func(source string, rows ingest.Rows) error {
			for rows.Next() {
				var sourceID string
				r, err := scanResource(rows, &sourceID)
				if err != nil {
					return fmt.Errorf("find fhir resources: %w", err)
				}
				found[source+"|"+sourceID] = r
			}
			return nil
		})
}

// queueByIdentifier queues the lookup of the resources of each type with a
// business identifier (by its keyed hash) in hashes (type → hashes); once
// sent, found holds them by type+"|"+hash, oldest id first.
func queueByIdentifier(q ingest.Queue, pg bool, hashes map[string][]string, found map[string][]resourceRow) {
	queueLookup(q, pg, hashes, `SELECT r.id, r.resource_type, r.event_id, r.created_at, r.identifier_hash
		FROM unnest($2::text[]) AS k (v)
		CROSS JOIN LATERAL (SELECT * FROM fhir_resources WHERE resource_type = $1 AND identifier_hash = k.v OFFSET 0) r
		ORDER BY r.id`,
		`SELECT id, resource_type, event_id, created_at, identifier_hash FROM fhir_resources
		WHERE resource_type = $1 AND identifier_hash IN (%s) ORDER BY id`, func(typ string, rows ingest.Rows) error {
			for rows.Next() {
				var hash string
				r, err := scanResource(rows, &hash)
				if err != nil {
					return fmt.Errorf("find fhir resources by identifier: %w", err)
				}
				found[typ+"|"+hash] = append(found[typ+"|"+hash], r)
			}
			return nil
		})
}

// queueResources queues the insert of created resources, 200 rows a
// statement.
func queueResources(q ingest.Queue, rows []resourceRow, keys []resourceKey, now time.Time) {
	for start := 0; start < len(rows); start += 200 {
		end := min(start+200, len(rows))
		var b strings.Builder
		b.WriteString(`INSERT INTO fhir_resources (id, resource_type, source, source_id, identifier_hash, event_id, created_at) VALUES `)
		args := make([]any, 0, 7*(end-start))
		for i := start; i < end; i++ {
			if i > start {
				b.WriteByte(',')
			}
			b.WriteString("(" + marks(len(args)+1, 7) + ")")
			args = append(args, rows[i].ID, rows[i].Type, keys[i].source, keys[i].sourceID, keys[i].idHash, rows[i].EventID,
				now.UnixMicro())
		}
		q.Exec(b.String(), args...)
	}
}

// readingKey is a patient (pseudonym) and a code ("LN|8867-4").
type readingKey struct{ patient, code string }

// queueReadings queues the stale-reading check of the keys of newest (each
// with the newest reading time of this transaction), one statement per
// lookupChunk keys: every key is set to the newer of its stored time and
// newest, and the time it had is returned (previous_at). Once sent, before
// holds each key that was stored already, with that time; a key missing
// from it was never seen. On PostgreSQL the upsert locks each key until
// commit and sees the latest committed time, waiting for a concurrent
// transaction that inserted the same key. A reading is then fresh when it
// is at least as new as before and every reading earlier in the
// transaction.
func queueReadings(q ingest.Queue, newest map[readingKey]int64, before map[readingKey]int64) {
	keys := slices.SortedFunc(maps.Keys(newest), func(a, b readingKey) int { // one lock order in every statement
		if c := strings.Compare(a.code, b.code); c != 0 {
			return c
		}
		return strings.Compare(a.patient, b.patient)
	})
	for start := 0; start < len(keys); start += lookupChunk {
		chunk := keys[start:min(start+lookupChunk, len(keys))]
		var vals strings.Builder
		args := make([]any, 0, 3*len(chunk))
		for i, k := range chunk {
			if i > 0 {
				vals.WriteByte(',')
			}
			vals.WriteString("(" + marks(len(args)+1, 3) + ")")
			args = append(args, k.patient, k.code, newest[k])
		}
		q.Query(func(rows ingest.Rows) error {
			for rows.Next() {
				var k readingKey
				var previous sql.NullInt64
				if err := rows.Scan(&k.patient, &k.code, &previous); err != nil {
					return fmt.Errorf("record latest readings: %w", err)
				}
				if previous.Valid {
					before[k] = previous.Int64
				}
			}
			return nil
		}, `INSERT INTO fhir_latest_reading (patient_id, code, effective_at) VALUES `+vals.String()+`
			ON CONFLICT (patient_id, code) DO UPDATE SET previous_at = fhir_latest_reading.effective_at,
				effective_at = CASE WHEN excluded.effective_at > fhir_latest_reading.effective_at
					THEN excluded.effective_at ELSE fhir_latest_reading.effective_at END
			RETURNING patient_id, code, previous_at`, args...)
	}
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
