package main

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
)

const auditUsage = `usage:
  clarion audit verify      verify the hash chain and every signed checkpoint
  clarion audit export      write records as JSON lines, CSV or a FHIR AuditEvent Bundle
  clarion audit tail        write records as JSON lines, and with --follow keep going
  clarion audit checkpoint  sign the chain head now
  clarion audit purge       delete records past the retention horizon, up to a checkpoint
  clarion audit public-key  print the checkpoint public key, for an auditor to verify with
`

// runAudit dispatches "clarion audit SUBCOMMAND".
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return exitCode(2)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr, false)
	case "tail":
		return runAuditExport(ctx, args[1:], stdout, stderr, true)
	case "checkpoint":
		return runAuditCheckpoint(ctx, args[1:], stdout, stderr)
	case "purge":
		return runAuditPurge(ctx, args[1:], stdout, stderr)
	case "public-key":
		return runAuditPublicKey(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, auditUsage)
	return exitCode(2)
}

// openAuditStore opens the database, migrated, with the append-only guard
// installed (PostgreSQL) and the records committed so far linked into the
// chain: every audit command then sees them, whether or not a node runs.
func openAuditStore(ctx context.Context, s storeFlags) (*db.DB, error) {
	d, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := audit.InstallGuards(ctx, d.DB, d.Dialect == db.Postgres); err != nil {
		d.Close()
		return nil, err
	}
	if err := audit.ChainAll(ctx, d); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// keyFiles is a repeatable --public-key flag.
type keyFiles []string

func (k *keyFiles) String() string     { return strings.Join(*k, ",") }
func (k *keyFiles) Set(v string) error { *k = append(*k, v); return nil }

// trustedKeys reads the --public-key files and adds the local signing key
// when there is one (never creating it).
func trustedKeys(files []string, dataDir string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		k, err := audit.ParsePublicKeys(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, k...)
	}
	s, err := audit.ExistingSigner(dataDir)
	if err != nil {
		return nil, err
	}
	if s != nil {
		keys = append(keys, s.Public())
	}
	return keys, nil
}

// filterFlags registers the query filters as flags.
func filterFlags(fs *flag.FlagSet) func() (audit.Filter, error) {
	names := []string{"from", "to", "actor_type", "actor_id", "action", "object_type", "object_id", "correlation_id", "after"}
	vals := map[string]*string{}
	for _, n := range names {
		vals[n] = fs.String(strings.ReplaceAll(n, "_", "-"), "", "only records with this "+n+
			map[bool]string{true: " (RFC 3339)", false: ""}[n == "from" || n == "to"])
	}
	return func() (audit.Filter, error) {
		v := url.Values{}
		for n, p := range vals {
			if *p != "" {
				v.Set(n, *p)
			}
		}
		f, err := audit.ParseFilter(v)
		f.Limit = audit.MaxPage
		return f, err
	}
}

// cliEntry is the audit record of an operator command.
func cliEntry(action string, detail map[string]any) audit.Entry {
	host, _ := os.Hostname()
	return audit.Entry{ActorType: audit.ActorSystem, ActorID: "cli", Action: action, ObjectType: "audit_log",
		ObjectID: "chain", SourceAddr: host, Detail: detail}
}

func appendOne(ctx context.Context, d *db.DB, e audit.Entry) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, e)
		return err
	})
}

// runAuditExport writes the records matching the filters (export), or the
// records after --after as JSON lines, following new ones with --follow
// (tail). Either is audited before the first record is written.
func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer, tail bool) error {
	name := "audit export"
	if tail {
		name = "audit tail"
	}
	fs := newFlagSet(name, stderr)
	var s storeFlags
	s.register(fs)
	filter := filterFlags(fs)
	format := audit.FormatJSONLines
	var out string
	follow, poll := new(bool), new(time.Duration)
	if tail {
		follow = fs.Bool("follow", false, "keep writing new records as they are committed")
		poll = fs.Duration("poll", time.Second, "how often to look for new records when following")
	} else {
		fs.StringVar(&format, "format", audit.FormatJSONLines, "jsonl, csv or fhir")
		fs.StringVar(&out, "out", "", "write to this file (mode 0600) instead of stdout")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := filter()
	if err != nil {
		return err
	}
	if format != audit.FormatJSONLines && format != audit.FormatCSV && format != audit.FormatFHIR {
		return &audit.InvalidError{Field: "format", Reason: "must be jsonl, csv or fhir"}
	}
	d, err := openAuditStore(ctx, s)
	if err != nil {
		return err
	}
	defer d.Close()
	if !*follow {
		if f.Through, err = audit.Head(ctx, d); err != nil {
			return err
		}
	}
	detail := f.Detail()
	detail["format"], detail["follow"] = format, *follow
	if err := appendOne(ctx, d, cliEntry("audit.exported", detail)); err != nil {
		return err
	}
	w := stdout
	if out != "" {
		file, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer file.Close()
		w = file
	}
	if tail {
		return audit.Tail(ctx, d, w, f, *follow, *poll)
	}
	host, _ := os.Hostname()
	ex, err := audit.NewExporter(w, format, host, time.Now())
	if err != nil {
		return err
	}
	if err := audit.Each(ctx, d, f, ex.Write); err != nil {
		return err
	}
	return ex.Close()
}

func runAuditCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit checkpoint", stderr)
	var s storeFlags
	s.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	signer, err := audit.LoadSigner(s.dataDir)
	if err != nil {
		return err
	}
	d, err := openAuditStore(ctx, s)
	if err != nil {
		return err
	}
	defer d.Close()
	var c audit.Checkpoint
	var wrote bool
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		c, wrote, err = audit.WriteCheckpoint(ctx, tx, signer, time.Now())
		return err
	})
	if err != nil {
		return err
	}
	if !wrote {
		fmt.Fprintln(stdout, "nothing new to sign since the last checkpoint")
		return nil
	}
	fmt.Fprintf(stdout, "checkpoint signed: record %d, hash %s, key %s\n", c.Seq, c.Hash, c.KeyID)
	return nil
}

func runAuditPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit purge", stderr)
	var s storeFlags
	s.register(fs)
	keep := fs.Duration("retention", audit.DefaultRetention, "keep records younger than this (default six years)")
	before := fs.String("before", "", "purge records older than this RFC 3339 time instead of --retention")
	var files keyFiles
	fs.Var(&files, "public-key", "a file of trusted public keys (repeatable); the local key is trusted too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	now := time.Now()
	horizon := now.Add(-*keep)
	if *before != "" {
		t, err := time.Parse(time.RFC3339, *before)
		if err != nil {
			return &audit.InvalidError{Field: "before", Reason: "must be an RFC 3339 time"}
		}
		horizon = t
	}
	keys, err := trustedKeys(files, s.dataDir)
	if err != nil {
		return err
	}
	d, err := openAuditStore(ctx, s)
	if err != nil {
		return err
	}
	defer d.Close()
	res, err := audit.Purge(ctx, d, audit.PurgeOptions{Horizon: horizon, Postgres: d.Dialect == db.Postgres, Keys: keys,
		Now: now, By: cliEntry("", nil)})
	if errors.Is(err, audit.ErrNothingToPurge) {
		fmt.Fprintf(stdout, "nothing to purge: no checkpoint lies wholly before %s\n", horizon.UTC().Format(time.RFC3339))
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "purged %d records through %d (and %d checkpoints); the chain now starts from checkpoint %d\n",
		res.Deleted, res.ThroughSeq, res.Checkpoints, res.ThroughSeq)
	return nil
}

func runAuditPublicKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit public-key", stderr)
	var s storeFlags
	s.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	signer, err := audit.LoadSigner(s.dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# Clarion audit checkpoint key, id %s\n%s\n", audit.KeyID(signer.Public()), audit.FormatPublicKey(signer.Public()))
	return nil
}
