package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/clarion-health/clarion/audit"
)

// runAuditVerify walks the whole chain and checks every checkpoint's
// signature with the trusted keys: the --public-key files and the local
// signing key. It exits 1 naming the first bad record or checkpoint.
func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit verify", stderr)
	var s storeFlags
	s.register(fs)
	var files keyFiles
	fs.Var(&files, "public-key", "a file of trusted public keys, \"ed25519:<base64>\" a line (repeatable); the local key is trusted too")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	keys, err := trustedKeys(files, s.dataDir)
	if err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	// Link what committed since the last chaining (a stopped node leaves
	// nothing behind, a running one may), so the walk covers it.
	if err := audit.ChainAll(ctx, d); err != nil {
		fmt.Fprintf(stderr, "audit chain: could not link pending records: %v\n", err)
	}
	res, verr := audit.VerifyAll(ctx, d, audit.VerifyOptions{Keys: keys, RequireSignatures: true})
	var prob *audit.Problem
	if *asJSON {
		out := map[string]any{"ok": verr == nil, "result": res}
		if errors.As(verr, &prob) {
			out["problem"] = map[string]any{"seq": prob.Seq, "checkpoint": prob.Checkpoint, "reason": prob.Reason}
		} else if verr != nil {
			out["error"] = verr.Error()
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(stdout, string(b))
		if verr != nil {
			return exitCode(1)
		}
		return nil
	}
	switch {
	case errors.As(verr, &prob) && prob.Checkpoint:
		fmt.Fprintf(stdout, "audit chain BROKEN after %d good records: checkpoint at record %d: %s\n", res.Records, prob.Seq, prob.Reason)
		return exitCode(1)
	case errors.As(verr, &prob):
		fmt.Fprintf(stdout, "audit chain BROKEN after %d good records: record %d: %s\n", res.Records, prob.Seq, prob.Reason)
		return exitCode(1)
	case errors.Is(verr, audit.ErrNoTrustedKey):
		fmt.Fprintln(stdout, "audit chain NOT VERIFIED: checkpoints are present but no trusted key: pass --public-key")
		return exitCode(1)
	case verr != nil:
		return verr
	}
	fmt.Fprintf(stdout, "audit chain intact: %d records", res.Records)
	if res.AnchorSeq > 0 {
		fmt.Fprintf(stdout, " (%d to %d; records up to %d purged, anchored by a signed checkpoint)", res.FirstSeq, res.LastSeq, res.AnchorSeq)
	}
	fmt.Fprintf(stdout, ", %d signed checkpoints verified", res.Checkpoints)
	if res.Checkpoints > 0 {
		fmt.Fprintf(stdout, ", the last at record %d", res.LastCheckpoint)
	}
	switch n := res.Unanchored(); {
	case n == 1:
		fmt.Fprint(stdout, "; 1 record after it rests on the hash chain alone")
	case n > 1:
		fmt.Fprintf(stdout, "; %d records after it rest on the hash chain alone", n)
	}
	if res.Pending > 0 {
		fmt.Fprintf(stdout, "; %d records committed since are not chained yet", res.Pending)
	}
	fmt.Fprintln(stdout)
	return nil
}
