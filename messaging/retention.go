package messaging

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/internal/loop"
)

// LegalHold keeps the messages of one alert, or of one user, on devices and
// in storage past their expiry, until it is released.
type LegalHold struct {
	ID         string     `json:"id"`
	AlertID    string     `json:"alert_id,omitempty"`
	UserID     string     `json:"user_id,omitempty"`
	Reason     string     `json:"reason"`
	PlacedBy   string     `json:"placed_by"`
	PlacedAt   time.Time  `json:"placed_at"`
	ReleasedBy string     `json:"released_by,omitempty"`
	ReleasedAt *time.Time `json:"released_at,omitempty"`
}

// Active reports whether the hold is in force.
func (h LegalHold) Active() bool { return h.ReleasedAt == nil }

// notHeld is the SQL condition "no active hold covers the message row t".
func notHeld(t string) string {
	return `NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.released_at IS NULL AND (h.alert_id = ` + t + `.alert_id OR h.user_id = ` + t + `.user_id))`
}

// PlaceHold validates and stores a hold, audited in tx (legal_hold.placed;
// the reason stays in the table, out of the audit log, as it is free text).
func PlaceHold(ctx context.Context, tx Queryer, actor audit.Entry, h LegalHold, now time.Time) (LegalHold, error) {
	switch {
	case (h.AlertID == "") == (h.UserID == ""):
		return h, &InvalidError{"alert_id", "give exactly one of alert_id and user_id"}
	case h.Reason == "":
		return h, &InvalidError{"reason", "required"}
	case len(h.Reason) > 1000:
		return h, &InvalidError{"reason", "at most 1000 characters"}
	}
	var n int
	var err error
	if h.AlertID != "" {
		err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM alerts WHERE id = $1`, h.AlertID).Scan(&n)
		if err == nil && n == 0 {
			return h, &InvalidError{"alert_id", "unknown alert"}
		}
	} else {
		err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE id = $1`, h.UserID).Scan(&n)
		if err == nil && n == 0 {
			return h, &InvalidError{"user_id", "unknown user"}
		}
	}
	if err != nil {
		return h, fmt.Errorf("place hold: %w", err)
	}
	h.ID, h.PlacedBy, h.PlacedAt, h.ReleasedBy, h.ReleasedAt = ids.New("hold"), actor.ActorID, now.UTC(), "", nil
	if _, err := tx.ExecContext(ctx, `INSERT INTO legal_holds (id, alert_id, user_id, reason, placed_by, placed_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, h.ID, h.AlertID, h.UserID, h.Reason, h.PlacedBy, now.UnixMicro()); err != nil {
		return h, fmt.Errorf("place hold: %w", err)
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "legal_hold.placed", "legal_hold", h.ID, h.ID
	actor.Detail = map[string]any{"alert_id": h.AlertID, "user_id": h.UserID}
	err = audit.Append(ctx, tx, actor)
	return h, err
}

// ReleaseHold ends a hold, audited in tx (legal_hold.released). Messages it
// kept are then expired as usual: devices are told, storage is emptied.
func ReleaseHold(ctx context.Context, tx Queryer, actor audit.Entry, id string, now time.Time) (LegalHold, error) {
	res, err := tx.ExecContext(ctx, `UPDATE legal_holds SET released_by = $1, released_at = $2 WHERE id = $3 AND released_at IS NULL`,
		actor.ActorID, now.UnixMicro(), id)
	if err != nil {
		return LegalHold{}, fmt.Errorf("release hold: %w", err)
	}
	h, err := GetHold(ctx, tx, id)
	if err != nil {
		return h, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return h, &InvalidError{"id", "hold already released"}
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "legal_hold.released", "legal_hold", id, id
	actor.Detail = map[string]any{"alert_id": h.AlertID, "user_id": h.UserID}
	err = audit.Append(ctx, tx, actor)
	return h, err
}

const holdColumns = `id, alert_id, user_id, reason, placed_by, placed_at, released_by, released_at`

func scanHold(s interface{ Scan(...any) error }) (LegalHold, error) {
	var h LegalHold
	var placed int64
	var by sql.NullString
	var released sql.NullInt64
	if err := s.Scan(&h.ID, &h.AlertID, &h.UserID, &h.Reason, &h.PlacedBy, &placed, &by, &released); err != nil {
		return h, err
	}
	h.PlacedAt, h.ReleasedBy = time.UnixMicro(placed).UTC(), by.String
	if released.Valid {
		t := time.UnixMicro(released.Int64).UTC()
		h.ReleasedAt = &t
	}
	return h, nil
}

// GetHold loads one hold.
func GetHold(ctx context.Context, q Queryer, id string) (LegalHold, error) {
	h, err := scanHold(q.QueryRowContext(ctx, `SELECT `+holdColumns+` FROM legal_holds WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("legal hold %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("legal hold: %w", err)
	}
	return h, nil
}

// ListHolds returns holds, newest first; only active ones when activeOnly.
func ListHolds(ctx context.Context, q Queryer, activeOnly bool) ([]LegalHold, error) {
	query := `SELECT ` + holdColumns + ` FROM legal_holds`
	if activeOnly {
		query += ` WHERE released_at IS NULL`
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY placed_at DESC, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list holds: %w", err)
	}
	defer rows.Close()
	out := []LegalHold{}
	for rows.Next() {
		h, err := scanHold(rows)
		if err != nil {
			return nil, fmt.Errorf("list holds: %w", err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// holdsCovering returns the ids of active holds on an alert or a user.
func holdsCovering(ctx context.Context, q Queryer, alertID, userID string) ([]string, error) {
	return queryStrings(ctx, q, "holds", `SELECT id FROM legal_holds WHERE released_at IS NULL
		AND (alert_id = $1 OR user_id = $2) ORDER BY id`, alertID, userID)
}

// devicesCoveredBy returns the devices holding messages of a hold's scope:
// once the hold is released they are to be told of expired ones.
func devicesCoveredBy(ctx context.Context, q Queryer, h LegalHold) ([]string, error) {
	return queryStrings(ctx, q, "hold devices", `SELECT DISTINCT device_id FROM messages
		WHERE (alert_id = $1 OR user_id = $2) AND device_deleted_at IS NULL ORDER BY device_id`, h.AlertID, h.UserID)
}

// purgeBatch is how many messages one retention transaction empties.
const purgeBatch = 500

// PurgeExpired empties, for up to purgeBatch expired messages no hold
// covers, the sealed body and the escrow copy. The row stays as a
// tombstone (ids, times, answer, keyed digest) so that audit records naming
// the message still resolve; each purge is audited (message.purged). It
// returns how many messages it emptied; a full batch means more may wait.
func (e *Engine) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := e.db.InTx(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT m.id, m.alert_id, m.device_id, m.expires_at,
			COALESCE((SELECT a.event_id FROM alerts a WHERE a.id = m.alert_id), '')
			FROM messages m WHERE m.purged_at IS NULL AND m.expires_at <= $1 AND `+notHeld("m")+`
			ORDER BY m.expires_at, m.id LIMIT $2`+e.db.SkipLocked(), now.UnixMicro(), purgeBatch)
		if err != nil {
			return fmt.Errorf("purge: %w", err)
		}
		type msg struct {
			id, alertID, deviceID, eventID string
			expires                        int64
		}
		var msgs []msg
		for rows.Next() {
			var m msg
			if err := rows.Scan(&m.id, &m.alertID, &m.deviceID, &m.expires, &m.eventID); err != nil {
				rows.Close()
				return fmt.Errorf("purge: %w", err)
			}
			msgs = append(msgs, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("purge: %w", err)
		}
		for _, m := range msgs {
			// The hold check again, in the statement that purges.
			res, err := tx.ExecContext(ctx, `UPDATE messages SET sealed = $1, escrow_sealed = NULL, purged_at = $2
				WHERE id = $3 AND purged_at IS NULL AND `+notHeld("messages"), []byte{}, now.UnixMicro(), m.id)
			if err != nil {
				return fmt.Errorf("purge: %w", err)
			}
			if k, _ := res.RowsAffected(); k != 1 {
				continue
			}
			n++
			if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "retention",
				Action: "message.purged", ObjectType: "message", ObjectID: m.id, CorrelationID: m.eventID, DeviceID: m.deviceID,
				Detail: map[string]any{"alert_id": m.alertID, "expired_at": time.UnixMicro(m.expires).UTC().Format(time.RFC3339Nano)}}); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// RunRetention purges expired messages every `every` (a minute when not
// set) until ctx ends.
func (e *Engine) RunRetention(ctx context.Context, every time.Duration) {
	loop.Every(ctx, every, time.Minute, func(ctx context.Context) {
		for ctx.Err() == nil {
			n, err := e.PurgeExpired(ctx, e.now())
			if err != nil {
				if ctx.Err() == nil {
					e.log.Error("message retention", "error", err)
				}
				break
			}
			if n > 0 {
				e.log.Info("message retention", "purged", n)
			}
			if n < purgeBatch {
				break
			}
		}
	})
}

// ExpiredOnDevice returns the ids of a device's messages, up to sequence
// upTo (what the device holds), that expired by now, that it has not
// confirmed deleting and that no hold covers: the device is to delete them.
func ExpiredOnDevice(ctx context.Context, q Queryer, deviceID string, upTo int64, now time.Time, limit int) ([]string, error) {
	return queryStrings(ctx, q, "expired on device", `SELECT m.id FROM messages m WHERE m.device_id = $1 AND m.seq <= $2
		AND m.expires_at <= $3 AND m.device_deleted_at IS NULL AND `+notHeld("m")+` ORDER BY m.seq LIMIT $4`,
		deviceID, upTo, now.UnixMicro(), limit)
}

// NextExpiry returns when the next of a device's messages up to upTo that
// it still holds expires, after now; false when none will.
func NextExpiry(ctx context.Context, q Queryer, deviceID string, upTo int64, now time.Time) (time.Time, bool, error) {
	var next sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM messages WHERE device_id = $1 AND seq <= $2
		AND expires_at > $3 AND device_deleted_at IS NULL`, deviceID, upTo, now.UnixMicro()).Scan(&next)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next expiry: %w", err)
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMicro(next.Int64), true, nil
}

// ConfirmDeleted records that a device deleted the expired messages named;
// ids that are not the device's, not expired, or held are ignored. Each
// deletion is audited (message.deleted_on_device). It returns how many it
// recorded.
func (e *Engine) ConfirmDeleted(ctx context.Context, deviceID string, messageIDs []string) (int, error) {
	now := e.now()
	n := 0
	err := e.db.InTx(ctx, func(tx *sql.Tx) error {
		n = 0
		for _, id := range messageIDs {
			var alertID string
			err := tx.QueryRowContext(ctx, `UPDATE messages SET device_deleted_at = $1 WHERE id = $2 AND device_id = $3
				AND device_deleted_at IS NULL AND expires_at <= $1 AND `+notHeld("messages")+` RETURNING alert_id`,
				now.UnixMicro(), id, deviceID).Scan(&alertID)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("confirm deleted: %w", err)
			}
			n++
			var eventID sql.NullString
			_ = tx.QueryRowContext(ctx, `SELECT event_id FROM alerts WHERE id = $1`, alertID).Scan(&eventID)
			if err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorDevice, ActorID: deviceID,
				ActorRole: "device", Action: "message.deleted_on_device", ObjectType: "message", ObjectID: id,
				CorrelationID: eventID.String, DeviceID: deviceID, Detail: map[string]any{"alert_id": alertID}}); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// PolicyAcceptsRequired returns how many distinct users must accept an
// alert escalated under the policy (1 when it does not say).
func PolicyAcceptsRequired(ctx context.Context, q Queryer, policyID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT accepts_required FROM escalation_policies WHERE id = $1`, policyID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("policy %s: %w", policyID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("accepts required: %w", err)
	}
	return max(n, 1), nil
}

// MaxAcceptsRequired bounds a policy's accepts_required.
const MaxAcceptsRequired = 20

// SetPolicyAcceptsRequired sets how many distinct users must accept alerts
// escalated under the policy from now on (alerts already open keep theirs);
// audited in tx (policy.accepts_required_set).
func SetPolicyAcceptsRequired(ctx context.Context, tx Queryer, actor audit.Entry, policyID string, n int, now time.Time) error {
	if n < 1 || n > MaxAcceptsRequired {
		return &InvalidError{"accepts_required", fmt.Sprintf("must be 1 to %d", MaxAcceptsRequired)}
	}
	before, err := PolicyAcceptsRequired(ctx, tx, policyID)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE escalation_policies SET accepts_required = $1 WHERE id = $2`, n, policyID); err != nil {
		return fmt.Errorf("accepts required: %w", err)
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "policy.accepts_required_set", "escalation_policy", policyID, policyID
	actor.Detail = map[string]any{"before": before, "after": n}
	err = audit.Append(ctx, tx, actor)
	return err
}
