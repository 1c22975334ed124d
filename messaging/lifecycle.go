package messaging

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/ids"
)

// Device states beyond active. A device whose wipe was requested receives
// nothing more at once; on its next connection it is told to delete its
// messages and keys, and once it confirms it is wiped and its credential
// revoked.
const (
	DeviceWipePending = "wipe_pending"
	DeviceWiped       = "wiped"
)

// Wipe reasons.
const (
	WipeRevoked    = "revoked"    // an admin revoked the device
	WipeLost       = "lost"       // its owner reported it lost
	WipeOffboarded = "offboarded" // its owner left
)

// EnrolmentTTL is how long a one-time enrolment code stays valid.
const EnrolmentTTL = 10 * time.Minute

// ErrCodeInvalid is returned for an unknown, used or expired enrolment code.
var ErrCodeInvalid = errors.New("enrolment code is invalid, used or expired")

func hashCode(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

// IssueEnrolmentCode makes a one-time code that enrols one device for
// userID; only its hash is stored.
func IssueEnrolmentCode(ctx context.Context, tx Queryer, actor audit.Entry, userID string, now time.Time) (string, time.Time, error) {
	code := ids.Secret(10)
	expires := now.Add(EnrolmentTTL)
	_, err := tx.ExecContext(ctx, `INSERT INTO enrolment_codes (hash, user_id, issued_by, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, hashCode(code), userID, actor.ActorID, now.UnixMicro(), expires.UnixMicro())
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue enrolment code: %w", err)
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "device.enrolment_code_issued", "user", userID, userID
	actor.Detail = map[string]any{"expires_at": expires.UTC().Format(time.RFC3339)}
	err = audit.Append(ctx, tx, actor)
	return code, expires, err
}

// EnrolWithCode spends a code: it registers the device for the code's user
// and returns the device and its credential.
func EnrolWithCode(ctx context.Context, tx Queryer, code string, d Device, now time.Time) (Device, string, error) {
	var userID string
	var expires int64
	var used sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT user_id, expires_at, used_at FROM enrolment_codes WHERE hash = $1`,
		hashCode(code)).Scan(&userID, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (used.Valid || now.UnixMicro() >= expires)) {
		return d, "", ErrCodeInvalid
	}
	if err != nil {
		return d, "", fmt.Errorf("enrol: %w", err)
	}
	d.UserID = userID
	dev, err := RegisterDevice(ctx, tx, audit.Entry{ActorType: audit.ActorUser, ActorID: userID, ActorRole: auth.RoleClinician,
		Detail: map[string]any{"via": "enrolment_code"}}, d, now)
	if err != nil {
		return d, "", err
	}
	// The update is conditional so two racing uses of one code cannot both win.
	res, err := tx.ExecContext(ctx, `UPDATE enrolment_codes SET used_at = $1, device_id = $2 WHERE hash = $3 AND used_at IS NULL`,
		now.UnixMicro(), dev.ID, hashCode(code))
	if err != nil {
		return d, "", fmt.Errorf("enrol: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return d, "", ErrCodeInvalid
	}
	token, err := auth.Issue(ctx, tx, auth.KindDevice, dev.ID, auth.RoleDevice, now)
	return dev, token, err
}

// ListDevices returns a user's devices, every state included.
func ListDevices(ctx context.Context, q Queryer, userID string) ([]Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// RotateKey replaces a device's public key. Messages sealed before stay
// sealed to the old key: the device keeps its previous private key until it
// has received them.
func RotateKey(ctx context.Context, tx Queryer, deviceID, suite string, pub []byte, now time.Time) error {
	if err := ParsePublicKey(suite, pub); err != nil {
		return &InvalidError{"public_key", err.Error()}
	}
	res, err := tx.ExecContext(ctx, `UPDATE devices SET suite = $1, public_key = $2, key_rotated_at = $3 WHERE id = $4 AND state = $5`,
		suite, pub, now.UnixMicro(), deviceID, DeviceActive)
	if err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("device %s: %w", deviceID, ErrNotFound)
	}
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID, ActorRole: auth.RoleDevice,
		Action: "device.key_rotated", ObjectType: "device", ObjectID: deviceID, CorrelationID: deviceID,
		Detail: map[string]any{"suite": suite}})
	return err
}

// RequestWipe stops a device receiving at once and marks it to be wiped on
// its next connection. It returns false when the device was not active.
func RequestWipe(ctx context.Context, tx Queryer, actor audit.Entry, deviceID, reason string, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE devices SET state = $1, wipe_requested_at = $2, wipe_reason = $3 WHERE id = $4 AND state = $5`,
		DeviceWipePending, now.UnixMicro(), reason, deviceID, DeviceActive)
	if err != nil {
		return false, fmt.Errorf("wipe: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, nil
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "device.wipe_requested", "device", deviceID, deviceID
	actor.Detail = map[string]any{"reason": reason}
	err = audit.Append(ctx, tx, actor)
	return true, err
}

// ConfirmWipe records that the device deleted its messages and keys, and
// revokes its credential.
func ConfirmWipe(ctx context.Context, tx Queryer, deviceID string, now time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE devices SET state = $1, wiped_at = $2 WHERE id = $3 AND state = $4`,
		DeviceWiped, now.UnixMicro(), deviceID, DeviceWipePending)
	if err != nil {
		return fmt.Errorf("confirm wipe: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return &InvalidError{"device", "no wipe was requested"}
	}
	if err := auth.RevokeSubject(ctx, tx, auth.KindDevice, deviceID, now); err != nil {
		return err
	}
	err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID, ActorRole: auth.RoleDevice,
		Action: "device.wiped", ObjectType: "device", ObjectID: deviceID, CorrelationID: deviceID})
	return err
}

// ErrDeviceRevoked is returned when a device that is being wiped tries to
// act: it may no longer acknowledge, read or answer.
var ErrDeviceRevoked = errors.New("device revoked")

func requireActive(ctx context.Context, q Queryer, deviceID string) error {
	var state string
	err := q.QueryRowContext(ctx, `SELECT state FROM devices WHERE id = $1`, deviceID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrDeviceRevoked
	}
	if err != nil {
		return fmt.Errorf("device state: %w", err)
	}
	if state != DeviceActive {
		return ErrDeviceRevoked
	}
	return nil
}
