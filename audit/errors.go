package audit

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	// ErrNoSigningKey means a checkpoint was asked for without a key.
	ErrNoSigningKey = errors.New("audit: no signing key")
	// ErrNoTrustedKey means checkpoints exist but no public key was given to check them.
	ErrNoTrustedKey = errors.New("audit: checkpoints present but no trusted public key to verify them")
	// ErrNothingToPurge means no checkpoint lies wholly before the retention horizon.
	ErrNothingToPurge = errors.New("audit: nothing to purge before the horizon")
)

// Problem names the first record or checkpoint that breaks the chain.
type Problem struct {
	Seq        int64
	Reason     string
	Checkpoint bool // the problem is with the checkpoint at Seq, not the record
}

func (p *Problem) Error() string {
	if p.Checkpoint {
		return fmt.Sprintf("audit checkpoint at record %d: %s", p.Seq, p.Reason)
	}
	return fmt.Sprintf("audit record %d: %s", p.Seq, p.Reason)
}

// InvalidError is a validation failure to show the caller: which field, why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return strings.TrimSpace(e.Field + ": " + e.Reason) }

// UserError marks the error as safe to show the caller.
func (e *InvalidError) UserError() {}
