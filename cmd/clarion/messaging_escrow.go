package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/messaging"
)

// runEscrow is `clarion escrow keygen|open`.
func runEscrow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return runEscrowKeygen(args[1:], stdout, stderr)
		case "open":
			return runEscrowOpen(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprint(stderr, "usage: clarion escrow keygen --out FILE | clarion escrow open --key FILE --message ID\n")
	return exitCode(2)
}

// runEscrowKeygen writes a new escrow private key (mode 0600, never
// overwriting) and prints the public key for `serve --escrow-public-key`.
func runEscrowKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("escrow keygen", stderr)
	out := fs.String("out", "", "file to write the private key to (mode 0600; keep it offline)")
	pubOut := fs.String("public-out", "", "also write the public key to this file")
	suite := fs.String("suite", messaging.SuiteXWing, "HPKE suite: "+messaging.SuiteXWing+" or "+messaging.SuiteX25519)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("escrow keygen: --out is required")
	}
	k, err := messaging.GenerateEscrowKey(*suite)
	if err != nil {
		return fmt.Errorf("escrow keygen: %w", err)
	}
	priv, _ := json.MarshalIndent(k, "", "  ")
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("escrow keygen: %w", err)
	}
	if _, err := f.Write(append(priv, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("escrow keygen: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("escrow keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("escrow keygen: %w", err)
	}
	pub, _ := json.Marshal(k.EscrowPublicKey)
	if *pubOut != "" {
		if err := os.WriteFile(*pubOut, append(pub, '\n'), 0o644); err != nil {
			return fmt.Errorf("escrow keygen: %w", err)
		}
	}
	fmt.Fprintln(stdout, string(pub))
	fmt.Fprintf(stderr, "escrow private key %s written to %s (mode 0600): move it offline; give serve the public key above\n",
		k.KeyID, *out)
	return nil
}

// loadEscrowPublicKey reads the file `escrow keygen` printed.
func loadEscrowPublicKey(path string) (*messaging.EscrowPublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("escrow public key: %w", err)
	}
	return messaging.ParseEscrowPublicKey(b)
}

// runEscrowOpen decrypts one message's escrow copy for an audit; the
// opening is audited (message.escrow_opened).
func runEscrowOpen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("escrow open", stderr)
	var store storeFlags
	store.register(fs)
	keyFile := fs.String("key", "", "the escrow private key file")
	message := fs.String("message", "", "id of the message to open")
	actor := fs.String("actor", os.Getenv("USER"), "who opens it, for the audit record")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *message == "" || *actor == "" {
		return errors.New("escrow open: --key, --message and --actor are required")
	}
	info, err := os.Stat(*keyFile)
	if err != nil {
		return fmt.Errorf("escrow open: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("escrow open: %s is readable by others (mode %v); chmod 600 it", *keyFile, info.Mode().Perm())
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("escrow open: %w", err)
	}
	key, err := messaging.ParseEscrowPrivateKey(b)
	if err != nil {
		return fmt.Errorf("escrow open: %w", err)
	}
	keys, err := atrest.Load(store.dataDir) // to check the keyed digest
	if err != nil {
		return err
	}
	d, err := store.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	var out messaging.Escrowed
	err = d.InTx(ctx, func(tx *sql.Tx) (err error) {
		out, err = messaging.OpenEscrow(ctx, tx, key, keys, audit.Entry{ActorType: audit.ActorUser, ActorID: *actor,
			ActorRole: "auditor"}, *message, time.Now())
		return err
	})
	if err != nil {
		return fmt.Errorf("escrow open: %w", err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
