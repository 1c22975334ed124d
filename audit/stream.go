package audit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Sink receives records in seq order. Flush makes what was sent durable;
// the outbox position advances only after it.
type Sink interface {
	Send(ctx context.Context, r Record, data []byte) error
	Flush(ctx context.Context) error
}

// Streamer is the outbox that copies the log to a sink after commit:
// records are appended inside transactions, so they can only be published
// once committed. It tails audit_log by seq from the position it keeps in
// audit_stream_positions under Name.
//
// Publishing happens outside any transaction (on SQLite a transaction holds
// the only connection); the position then moves by compare-and-set. A
// crash between the two, or two nodes racing, sends a record twice: the
// JetStream sink's message id (the seq) makes the stream drop the repeat,
// and every record carries its seq for any other consumer to do the same.
type Streamer struct {
	DB    TxBeginner
	Q     Querier
	Name  string
	Sink  Sink
	Batch int // records per step; 0 means DefaultPage
	Log   *slog.Logger
}

// Position returns how far the streamer has got (creating its row).
func (s *Streamer) Position(ctx context.Context) (int64, error) {
	var pos int64
	err := s.Q.QueryRowContext(ctx, `SELECT seq FROM audit_stream_positions WHERE name = $1`, s.Name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		err = inTx(ctx, s.DB, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO audit_stream_positions (name, seq) VALUES ($1, 0)
				ON CONFLICT (name) DO NOTHING`, s.Name)
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("audit stream position: %w", err)
	}
	return pos, nil
}

// Step sends the next batch and advances the position; it returns how many
// records it sent.
func (s *Streamer) Step(ctx context.Context) (int, error) {
	pos, err := s.Position(ctx)
	if err != nil {
		return 0, err
	}
	batch := s.Batch
	if batch <= 0 {
		batch = DefaultPage
	}
	page, err := Query(ctx, s.Q, Filter{After: pos, Limit: min(batch, MaxPage)})
	if err != nil {
		return 0, err
	}
	sent := 0
	var sendErr error
	for _, r := range page.Records {
		data, err := json.Marshal(r)
		if err != nil {
			sendErr = fmt.Errorf("audit stream: %w", err)
			break
		}
		if sendErr = s.Sink.Send(ctx, r, data); sendErr != nil {
			break
		}
		sent++
	}
	if sent == 0 {
		return 0, sendErr
	}
	if err := s.Sink.Flush(ctx); err != nil {
		return 0, fmt.Errorf("audit stream flush: %w", err)
	}
	next := page.Records[sent-1].Seq
	err = inTx(ctx, s.DB, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE audit_stream_positions SET seq = $1 WHERE name = $2 AND seq = $3`,
			next, s.Name, pos)
		return err
	})
	if err != nil {
		return sent, fmt.Errorf("audit stream position: %w", err)
	}
	return sent, sendErr
}

// Run steps until ctx ends: at once while there is a backlog, else every poll.
func (s *Streamer) Run(ctx context.Context, poll time.Duration) {
	for {
		n, err := s.Step(ctx)
		if err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("audit stream", "stream", s.Name, "error", err)
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

// Publisher publishes one message with a de-duplication id (JetStream's
// Nats-Msg-Id); internal/bus implements it.
type Publisher interface {
	PublishAudit(ctx context.Context, subject string, data []byte, msgID string) error
}

// JetStreamSink publishes each record to "clarion.audit.<action>" with
// message id MsgIDPrefix + seq, so the stream stores each record once.
// The prefix (the chain id and a dot, see ChainID) keeps deployments that
// share one NATS from de-duplicating each other's records.
type JetStreamSink struct {
	Pub         Publisher
	MsgIDPrefix string
}

// SubjectPrefix starts every audit subject.
const SubjectPrefix = "clarion.audit."

// Subject is the NATS subject of an action: its dot-separated tokens, with
// anything a subject cannot hold replaced by '_'.
func Subject(action string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		}
		return '_'
	}, action)
	var toks []string
	for _, t := range strings.Split(clean, ".") {
		if t != "" {
			toks = append(toks, t)
		}
	}
	if len(toks) == 0 {
		toks = []string{"unknown"}
	}
	return SubjectPrefix + strings.Join(toks, ".")
}

func (j JetStreamSink) Send(ctx context.Context, r Record, data []byte) error {
	return j.Pub.PublishAudit(ctx, Subject(r.Action), data, j.MsgIDPrefix+strconv.FormatInt(r.Seq, 10))
}

func (JetStreamSink) Flush(context.Context) error { return nil } // each publish is acknowledged

// JSONLinesSink writes one record as JSON per line. When W has a Sync
// method (an *os.File), Flush calls it.
type JSONLinesSink struct{ W io.Writer }

func (j JSONLinesSink) Send(_ context.Context, _ Record, data []byte) error {
	_, err := j.W.Write(append(data, '\n'))
	return err
}

func (j JSONLinesSink) Flush(context.Context) error {
	if s, ok := j.W.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

// Tail writes the records after seq `after` as JSON lines to w; with follow
// it keeps polling for new ones until ctx ends.
func Tail(ctx context.Context, q Querier, w io.Writer, f Filter, follow bool, poll time.Duration) error {
	sink := JSONLinesSink{W: w}
	for {
		page, err := Query(ctx, q, f)
		if err != nil {
			return err
		}
		for _, r := range page.Records {
			data, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("audit tail: %w", err)
			}
			if err := sink.Send(ctx, r, data); err != nil {
				return err
			}
			f.After = r.Seq
		}
		if page.Next != 0 {
			continue
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// ChainID returns this chain's random id, creating it on first use.
func ChainID(ctx context.Context, d TxBeginner) (string, error) {
	var id string
	if err := d.QueryRowContext(ctx, `SELECT chain_id FROM audit_head WHERE id = 1`).Scan(&id); err != nil {
		return "", fmt.Errorf("audit chain id: %w", err)
	}
	if id != "" {
		return id, nil
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	err := inTx(ctx, d, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET chain_id = $1 WHERE id = 1 AND chain_id = ''`,
			hex.EncodeToString(b)); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT chain_id FROM audit_head WHERE id = 1`).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("audit chain id: %w", err)
	}
	return id, nil
}
