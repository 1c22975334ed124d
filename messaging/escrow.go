package messaging

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/clarion-health/clarion/audit"
)

// The escrow key: a copy of every message body is sealed (HPKE, as to a
// device) to a public key whose private half is kept offline, so a legal
// hold or an audit can show what was sent while the server cannot read it.

// EscrowPublicKey is the public half, given to `clarion serve`.
type EscrowPublicKey struct {
	Suite     string `json:"suite"`
	PublicKey []byte `json:"public_key"` // base64 in JSON
	KeyID     string `json:"key_id"`     // "esc_" + 16 hex digits of SHA-256(suite, key)
}

// EscrowPrivateKey is the offline half; its file must be mode 0600.
type EscrowPrivateKey struct {
	EscrowPublicKey
	PrivateKey []byte `json:"private_key"`
}

func escrowKeyID(suite string, pub []byte) string {
	h := sha256.New()
	h.Write([]byte(suite))
	h.Write([]byte{0})
	h.Write(pub)
	return "esc_" + hex.EncodeToString(h.Sum(nil)[:8])
}

// EscrowInfo is the HPKE info of an escrow copy: it binds the copy to its
// message, so it cannot be passed off as another's.
func EscrowInfo(messageID string) []byte {
	return []byte("clarion/v1 escrow message " + messageID)
}

// GenerateEscrowKey makes an escrow key pair; suite defaults to the
// post-quantum hybrid, since escrow copies are kept for years.
func GenerateEscrowKey(suite string) (EscrowPrivateKey, error) {
	if suite == "" {
		suite = SuiteXWing
	}
	priv, pub, err := GenerateKey(suite)
	if err != nil {
		return EscrowPrivateKey{}, err
	}
	return EscrowPrivateKey{EscrowPublicKey: EscrowPublicKey{Suite: suite, PublicKey: pub, KeyID: escrowKeyID(suite, pub)},
		PrivateKey: priv}, nil
}

// ParseEscrowPublicKey reads the JSON that `clarion escrow keygen` prints.
func ParseEscrowPublicKey(b []byte) (*EscrowPublicKey, error) {
	var k EscrowPublicKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, &InvalidError{"escrow_public_key", "not escrow key JSON: " + err.Error()}
	}
	if err := ParsePublicKey(k.Suite, k.PublicKey); err != nil {
		return nil, &InvalidError{"escrow_public_key", err.Error()}
	}
	if id := escrowKeyID(k.Suite, k.PublicKey); k.KeyID != id {
		return nil, &InvalidError{"key_id", "does not match the key (want " + id + ")"}
	}
	return &k, nil
}

// ParseEscrowPrivateKey reads an escrow private key file.
func ParseEscrowPrivateKey(b []byte) (*EscrowPrivateKey, error) {
	var k EscrowPrivateKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, &InvalidError{"escrow_private_key", "not escrow key JSON: " + err.Error()}
	}
	if _, err := ParseEscrowPublicKey(mustJSON(k.EscrowPublicKey)); err != nil {
		return nil, err
	}
	kem, err := kemFor(k.Suite)
	if err != nil {
		return nil, err
	}
	sk, err := kem.NewPrivateKey(k.PrivateKey)
	if err != nil {
		return nil, &InvalidError{"private_key", err.Error()}
	}
	if string(sk.PublicKey().Bytes()) != string(k.PublicKey) {
		return nil, &InvalidError{"private_key", "does not match public_key"}
	}
	return &k, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Seal makes the escrow copy of a message's plaintext.
func (k *EscrowPublicKey) Seal(messageID string, plaintext []byte) ([]byte, error) {
	return Seal(k.Suite, k.PublicKey, EscrowInfo(messageID), plaintext)
}

// Open decrypts an escrow copy.
func (k *EscrowPrivateKey) Open(messageID string, sealed []byte) ([]byte, error) {
	return Open(k.Suite, k.PrivateKey, EscrowInfo(messageID), sealed)
}

// Escrowed is a message opened from its escrow copy for an audit.
type Escrowed struct {
	MessageID string `json:"message_id"`
	AlertID   string `json:"alert_id"`
	DeviceID  string `json:"device_id"`
	UserID    string `json:"user_id"`
	Plain     Plain  `json:"plain"`
	// DigestChecked: the plaintext matches the keyed digest stored when it
	// was sent ("match"), does not ("mismatch"), or could not be checked
	// ("unchecked": no digest, or its at-rest key is gone).
	Digest string   `json:"digest"`
	Holds  []string `json:"holds"` // active legal holds covering the message
}

// Errors of OpenEscrow.
var (
	ErrNoEscrow   = errors.New("message has no escrow copy (purged, or sent without an escrow key)")
	ErrEscrowKey  = errors.New("message was escrowed to another key")
	ErrEscrowOpen = errors.New("escrow copy does not open")
)

// OpenEscrow decrypts a message's escrow copy with the offline private key,
// checks it against the stored keyed digest (when dg is not nil), and
// audits the opening in tx (message.escrow_opened; ids only).
func OpenEscrow(ctx context.Context, tx Queryer, key *EscrowPrivateKey, dg Digester, actor audit.Entry, messageID string, now time.Time) (Escrowed, error) {
	out := Escrowed{MessageID: messageID, Digest: "unchecked"}
	var sealed []byte
	var keyID, digest, digestKey, eventID sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT m.alert_id, m.device_id, m.user_id, m.escrow_sealed, m.escrow_key_id, m.body_digest,
		m.digest_key_id, (SELECT a.event_id FROM alerts a WHERE a.id = m.alert_id)
		FROM messages m WHERE m.id = $1`, messageID).Scan(&out.AlertID, &out.DeviceID, &out.UserID, &sealed, &keyID, &digest,
		&digestKey, &eventID)
	if errors.Is(err, sql.ErrNoRows) {
		return out, fmt.Errorf("message %s: %w", messageID, ErrNotFound)
	}
	if err != nil {
		return out, fmt.Errorf("open escrow: %w", err)
	}
	if len(sealed) == 0 {
		return out, ErrNoEscrow
	}
	if keyID.String != key.KeyID {
		return out, fmt.Errorf("%w %s", ErrEscrowKey, keyID.String)
	}
	plain, err := key.Open(messageID, sealed)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrEscrowOpen, err)
	}
	if err := json.Unmarshal(plain, &out.Plain); err != nil {
		return out, fmt.Errorf("escrow copy of %s: %w", messageID, err)
	}
	if out.Plain.MessageID != messageID || out.Plain.DeviceID != out.DeviceID || out.Plain.AlertID != out.AlertID {
		return out, fmt.Errorf("escrow copy of %s: %w", messageID, ErrMismatch)
	}
	if dg != nil && digest.Valid {
		if ok, err := dg.VerifyDigest(digestKey.String, digest.String, plain); err == nil {
			out.Digest = map[bool]string{true: "match", false: "mismatch"}[ok]
		}
	}
	if out.Holds, err = holdsCovering(ctx, tx, out.AlertID, out.UserID); err != nil {
		return out, err
	}
	actor.At, actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = now, "message.escrow_opened", "message", messageID, eventID.String
	actor.Detail = map[string]any{"alert_id": out.AlertID, "device_id": out.DeviceID, "escrow_key_id": key.KeyID,
		"digest": out.Digest, "legal_holds": out.Holds}
	err = audit.Append(ctx, tx, actor)
	return out, err
}

// ErrMismatch is returned when a decrypted body names another message,
// device or alert than the row it came from.
var ErrMismatch = errors.New("sealed body does not belong to this message")
