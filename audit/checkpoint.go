package audit

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// Checkpoint is a signed statement "the chain's record Seq has hash Hash",
// made at At. A rewrite of the whole chain (every hash recomputed) cannot
// reproduce the signature without the private key, so it is detected.
type Checkpoint struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	At        time.Time `json:"at"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"signature"` // base64 Ed25519 over signedMessage
}

// ActionCheckpointed is the record each checkpoint appends to the chain, so
// a SIEM receiving the stream holds a copy of every signature too.
const ActionCheckpointed = "audit.checkpointed"

// signedMessage is what a checkpoint signs: a domain string, then seq, hash
// and time, newline-separated (none of them can hold a newline).
func signedMessage(seq int64, hash string, at time.Time) []byte {
	return []byte("clarion-audit-checkpoint-v1\n" + strconv.FormatInt(seq, 10) + "\n" + hash + "\n" +
		strconv.FormatInt(at.UnixMicro(), 10))
}

// Sign makes a checkpoint of (seq, hash) at time at.
func (s *Signer) Sign(seq int64, hash string, at time.Time) Checkpoint {
	at = at.UTC().Truncate(time.Microsecond)
	sig := ed25519.Sign(s.priv, signedMessage(seq, hash, at))
	return Checkpoint{Seq: seq, Hash: hash, At: at, KeyID: KeyID(s.Public()),
		Signature: base64.StdEncoding.EncodeToString(sig)}
}

// Verify reports whether one of keys signed c.
func (c Checkpoint) Verify(keys []ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return false
	}
	for _, k := range keys {
		if KeyID(k) == c.KeyID && ed25519.Verify(k, signedMessage(c.Seq, c.Hash, c.At), sig) {
			return true
		}
	}
	return false
}

// WriteCheckpoint signs the chain head inside tx and appends the
// audit.checkpointed record right after the signed one. It locks the head row first, so no record is
// appended between reading the head and signing it. It returns false when
// there is nothing new to sign.
func WriteCheckpoint(ctx context.Context, tx Execer, s *Signer, now time.Time) (Checkpoint, bool, error) {
	if s == nil {
		return Checkpoint{}, false, ErrNoSigningKey
	}
	seq, hash, err := lockHead(ctx, tx)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit checkpoint: %w", err)
	}
	last, err := lastCheckpoint(ctx, tx)
	if err != nil {
		return Checkpoint{}, false, err
	}
	if seq == 0 || seq <= last.Seq+1 && last.Seq > 0 {
		return Checkpoint{}, false, nil // empty chain, or nothing since the last checkpoint's own record
	}
	c := s.Sign(seq, hash, now)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature)
		VALUES ($1, $2, $3, $4, $5)`, c.Seq, c.Hash, c.At.UnixMicro(), c.KeyID, c.Signature); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit checkpoint: %w", err)
	}
	err = appendChained(ctx, tx, Entry{At: now, ActorType: ActorSystem, ActorID: "audit", Action: ActionCheckpointed,
		ObjectType: "audit_checkpoint", ObjectID: strconv.FormatInt(c.Seq, 10),
		Detail: map[string]any{"seq": c.Seq, "hash": c.Hash, "at": c.At.Format(time.RFC3339Nano),
			"key_id": c.KeyID, "signature": c.Signature}})
	if err != nil {
		return Checkpoint{}, false, err
	}
	return c, true, nil
}

// lastCheckpoint returns the newest checkpoint (zero when there is none).
func lastCheckpoint(ctx context.Context, q Execer) (Checkpoint, error) {
	var c Checkpoint
	var at int64
	err := q.QueryRowContext(ctx, `SELECT seq, hash, at, key_id, signature FROM audit_checkpoints
		ORDER BY seq DESC LIMIT 1`).Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return c, fmt.Errorf("audit checkpoint: %w", err)
	}
	c.At = time.UnixMicro(at).UTC()
	return c, nil
}

// Checkpoints returns every stored checkpoint in seq order.
func Checkpoints(ctx context.Context, q Querier) ([]Checkpoint, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, hash, at, key_id, signature FROM audit_checkpoints ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var at int64
		if err := rows.Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature); err != nil {
			return nil, fmt.Errorf("audit checkpoints: %w", err)
		}
		c.At = time.UnixMicro(at).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// TxBeginner is a database that starts transactions (a *sql.DB).
type TxBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func inTx(ctx context.Context, d TxBeginner, fn func(tx *sql.Tx) error) error {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Checkpointer signs the chain head every Every records or every Interval,
// whichever comes first (a zero disables that trigger).
type Checkpointer struct {
	DB       TxBeginner
	Signer   *Signer
	Every    int64
	Interval time.Duration
	Now      func() time.Time
	Log      *slog.Logger
}

// Tick writes a checkpoint when one is due at now, and says whether it did.
// The due check reads without locking; only a due checkpoint takes the head
// lock, so an idle poll never holds up appenders.
func (c *Checkpointer) Tick(ctx context.Context, now time.Time) (bool, error) {
	var head int64
	if err := c.DB.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&head); err != nil {
		return false, fmt.Errorf("audit checkpoint: %w", err)
	}
	var lastSeq, lastAt int64
	if err := c.DB.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(at), 0) FROM audit_checkpoints`).
		Scan(&lastSeq, &lastAt); err != nil {
		return false, fmt.Errorf("audit checkpoint: %w", err)
	}
	pending := head - lastSeq
	if lastSeq > 0 {
		pending-- // the last checkpoint's own record needs no checkpoint of its own
	}
	due := pending > 0 && (c.Every > 0 && pending >= c.Every ||
		c.Interval > 0 && now.Sub(time.UnixMicro(lastAt)) >= c.Interval)
	if !due {
		return false, nil
	}
	var wrote bool
	err := inTx(ctx, c.DB, func(tx *sql.Tx) error {
		var err error
		_, wrote, err = WriteCheckpoint(ctx, tx, c.Signer, now)
		return err
	})
	return wrote, err
}

// Run ticks every poll until ctx ends.
func (c *Checkpointer) Run(ctx context.Context, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.Tick(ctx, c.Now()); err != nil && ctx.Err() == nil && c.Log != nil {
				c.Log.Error("audit checkpoint", "error", err)
			}
		}
	}
}
