package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/db"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	var s storeFlags
	s.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := audit.InstallGuards(ctx, d.DB, d.Dialect == db.Postgres); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied (%s)\n", d.Dialect)
	return nil
}

func runHL7Send(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("hl7 send", stderr)
	addr := fs.String("addr", envOr("CLARION_MLLP_ADDR", "127.0.0.1:2575"), "MLLP address")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the ACK")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("hl7 send: name at least one FILE")
	}
	for _, name := range fs.Args() {
		raw, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		// Files written by hand use LF; HL7 separates segments with CR.
		raw = []byte(strings.ReplaceAll(strings.ReplaceAll(string(raw), "\r\n", "\r"), "\n", "\r"))
		ack, err := hl7.Send(ctx, *addr, raw, *timeout)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(stdout, "%s\n", strings.ReplaceAll(strings.TrimRight(string(ack), "\r"), "\r", "\n"))
	}
	return nil
}
