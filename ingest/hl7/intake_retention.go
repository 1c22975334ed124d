package hl7

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/loop"
)

// DefaultRawRetention is how long raw messages are kept (sealed).
const DefaultRawRetention = 30 * 24 * time.Hour

// Retention drops raw messages (accepted and rejected) older than Keep, and
// dedup keys older than DedupWindow. Events and the metadata of rejected
// messages stay. Each purge that removes anything is audited.
type Retention struct {
	DB          *db.DB
	Store       *ingest.Store
	Log         *slog.Logger
	Now         func() time.Time
	Keep        time.Duration // default DefaultRawRetention
	DedupWindow time.Duration // default DefaultDedupWindow
}

// Purged counts what one purge removed.
type Purged struct {
	Events    int64 // raw forms of accepted messages
	Rejected  int64 // raw forms of rejected messages
	DedupKeys int64
}

// Run purges every interval until ctx ends.
func (r *Retention) Run(ctx context.Context, every time.Duration) {
	loop.Every(ctx, every, time.Hour, func(ctx context.Context) {
		if _, err := r.PurgeOnce(ctx, r.Now()); err != nil && ctx.Err() == nil {
			r.Log.Error("raw message retention failed", "error", err)
		}
	})
}

// PurgeOnce purges what is older than the retention at now.
func (r *Retention) PurgeOnce(ctx context.Context, now time.Time) (Purged, error) {
	keep, window := orDefault(r.Keep, DefaultRawRetention), orDefault(r.DedupWindow, DefaultDedupWindow)
	var p Purged
	err := r.DB.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if p.Events, p.Rejected, err = r.Store.PurgeRaw(ctx, tx, now.Add(-keep)); err != nil {
			return err
		}
		if p.DedupKeys, err = r.Store.PurgeDedup(ctx, tx, now.Add(-window)); err != nil {
			return err
		}
		if p == (Purged{}) {
			return nil
		}
		err = audit.Append(ctx, tx, audit.Entry{At: now, ActorType: audit.ActorSystem, ActorID: "retention",
			Action: "ingest.raw_purged", ObjectType: "raw_message", ObjectID: "retention",
			Detail: map[string]any{"events": p.Events, "rejected": p.Rejected, "dedup_keys": p.DedupKeys,
				"retention_h": int64(keep.Hours()), "dedup_window_h": int64(window.Hours())}})
		return err
	})
	if err != nil {
		return Purged{}, fmt.Errorf("purge raw messages: %w", err)
	}
	if p != (Purged{}) {
		r.Log.Info("raw messages purged", "events", p.Events, "rejected", p.Rejected, "dedup_keys", p.DedupKeys)
	}
	return p, nil
}
