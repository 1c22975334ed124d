package messaging

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// ErrNotFound is returned for an unknown device or message.
var ErrNotFound = errors.New("not found")

// DeviceActive is the state of a device that receives messages.
const DeviceActive = "active"

// Device is a phone or workstation bound to one user, with the public key
// its messages are sealed to.
type Device struct {
	ID         string     `json:"id"`
	UserID     string     `json:"user_id"`
	Name       string     `json:"name"`
	Suite      string     `json:"suite"`
	PublicKey  []byte     `json:"public_key"`
	State      string     `json:"state"`
	AckedSeq   int64      `json:"acked_seq"`
	CreatedAt  time.Time  `json:"created_at"`
	LastSeenAt *time.Time `json:"last_seen_at,omitempty"`
}

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// RegisterDevice stores a new device for userID after checking its key;
// audited in tx as done by actor.
func RegisterDevice(ctx context.Context, tx Queryer, actor audit.Entry, d Device, now time.Time) (Device, error) {
	if d.UserID == "" {
		return d, &InvalidError{"user_id", "required"}
	}
	if d.Name == "" {
		d.Name = "device"
	}
	if err := ParsePublicKey(d.Suite, d.PublicKey); err != nil {
		return d, &InvalidError{"public_key", err.Error()}
	}
	d.ID, d.State, d.CreatedAt = ids.New("dev"), DeviceActive, now
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (id, user_id, name, suite, public_key, state, next_seq, acked_seq, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)`, d.ID, d.UserID, d.Name, d.Suite, d.PublicKey, d.State, now.UnixMicro())
	if err != nil {
		return d, fmt.Errorf("register device: %w", err)
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "device.enrolled", "device", d.ID, d.ID
	actor.Detail = map[string]any{"user_id": d.UserID, "suite": d.Suite}
	err = audit.Append(ctx, tx, actor)
	return d, err
}

const deviceColumns = `id, user_id, name, suite, public_key, state, acked_seq, created_at, last_seen_at`

func scanDevice(s interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var created int64
	var seen sql.NullInt64
	if err := s.Scan(&d.ID, &d.UserID, &d.Name, &d.Suite, &d.PublicKey, &d.State, &d.AckedSeq, &created, &seen); err != nil {
		return d, err
	}
	d.CreatedAt = time.UnixMicro(created).UTC()
	if seen.Valid {
		t := time.UnixMicro(seen.Int64).UTC()
		d.LastSeenAt = &t
	}
	return d, nil
}

// GetDevice loads one device.
func GetDevice(ctx context.Context, q Queryer, id string) (Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", id, ErrNotFound)
	}
	return d, err
}

// ActiveDevices returns the active devices of a user, by id.
func ActiveDevices(ctx context.Context, q Queryer, userID string) ([]Device, error) {
	rows, err := q.QueryContext(ctx, activeDevicesSQL, userID, DeviceActive)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	return scanDevices(rows)
}

const activeDevicesSQL = `SELECT ` + deviceColumns + ` FROM devices WHERE user_id = $1 AND state = $2 ORDER BY id`

func scanDevices(rows db.Rows) ([]Device, error) {
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// InvalidError is a request problem to show the caller.
type InvalidError struct {
	Field, Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// UserError marks the error as safe to show the caller.
func (e *InvalidError) UserError() {}
