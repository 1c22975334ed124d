package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/clarion-health/clarion/internal/db"
)

// storeFlags are the flags every command that touches the database takes.
type storeFlags struct {
	dataDir     string
	databaseURL string
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.dataDir, "data-dir", envOr("CLARION_DATA_DIR", "./clarion-data"),
		"directory for the embedded database, NATS store and keys (env CLARION_DATA_DIR)")
	fs.StringVar(&s.databaseURL, "database-url", os.Getenv("CLARION_DATABASE_URL"),
		"postgres:// URL; empty means embedded SQLite in --data-dir (env CLARION_DATABASE_URL)")
}

func (s *storeFlags) open(ctx context.Context) (*db.DB, error) {
	d, err := db.Open(ctx, s.databaseURL, s.dataDir)
	if err != nil {
		return nil, err
	}
	if err := d.Migrate(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// newLogger writes JSON lines to w. Log lines carry ids and codes, never PHI.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}
