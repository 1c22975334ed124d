package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
)

// VerifyOptions says which keys to trust for checkpoint signatures.
type VerifyOptions struct {
	// Keys are the trusted public keys. Without any, signatures are not
	// checked, though each checkpoint's hash is still compared to the chain.
	Keys []ed25519.PublicKey
	// RequireSignatures fails with ErrNoTrustedKey when checkpoints exist
	// and Keys is empty, instead of skipping the signatures.
	RequireSignatures bool
}

// Result is what a verification covered.
type Result struct {
	Records           int64 `json:"records"`
	FirstSeq          int64 `json:"first_seq"`
	LastSeq           int64 `json:"last_seq"`
	Checkpoints       int   `json:"checkpoints"`
	LastCheckpoint    int64 `json:"last_checkpoint"`
	AnchorSeq         int64 `json:"anchor_seq,omitempty"` // the checkpoint a purged chain starts from
	SignaturesChecked bool  `json:"signatures_checked"`
	// Pending is how many committed records await Chain: they are not part
	// of the chain yet, so this walk did not cover them.
	Pending int64 `json:"pending"`
}

// Unanchored is how many records after the last checkpoint are protected
// by the hash chain alone (a full rewrite of them would go unnoticed).
func (r Result) Unanchored() int64 {
	if r.LastSeq <= r.LastCheckpoint {
		return 0
	}
	return r.LastSeq - r.LastCheckpoint
}

// Verify walks the whole chain and the checkpoints without checking
// signatures. It returns the number of records checked and a *Problem
// naming the first bad record, as VerifyAll does.
func Verify(ctx context.Context, q Querier) (int64, error) {
	r, err := VerifyAll(ctx, q, VerifyOptions{})
	return r.Records, err
}

// VerifyAll walks the whole chain and every checkpoint. It returns a
// *Problem naming the first bad record or checkpoint: an edited record (its
// hash no longer matches), a removed or reordered one (a gap in seq or a
// broken link), a truncated tail (the head, or a signed checkpoint, is ahead
// of the last record), a rewritten chain (a record's hash differs from the
// signed checkpoint of it), or a checkpoint whose signature does not verify.
//
// A purged chain starts after a checkpoint: the walk trusts that
// checkpoint's signed hash as the link of the first remaining record, and
// requires the audit.purged record that accounts for the gap.
func VerifyAll(ctx context.Context, q Querier, opts VerifyOptions) (Result, error) {
	var res Result
	cps, err := Checkpoints(ctx, q)
	if err != nil {
		return res, err
	}
	if len(cps) > 0 && len(opts.Keys) == 0 && opts.RequireSignatures {
		return res, ErrNoTrustedKey
	}
	res.SignaturesChecked = len(opts.Keys) > 0
	bySeq := make(map[int64]Checkpoint, len(cps))
	for _, c := range cps {
		bySeq[c.Seq] = c
	}
	checkCP := func(c Checkpoint) *Problem {
		if res.SignaturesChecked && !c.Verify(opts.Keys) {
			return &Problem{Seq: c.Seq, Checkpoint: true, Reason: "signature does not verify with a trusted key (forged or altered checkpoint)"}
		}
		res.Checkpoints++
		res.LastCheckpoint = c.Seq
		return nil
	}

	rows, err := q.QueryContext(ctx, `SELECT `+recordColumns+` FROM audit_log ORDER BY seq`)
	if err != nil {
		return res, fmt.Errorf("audit verify: %w", err)
	}
	defer rows.Close()
	var last, anchor int64
	prev := ""
	purgeAccounted := false
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return res, err
		}
		if res.FirstSeq == 0 {
			res.FirstSeq = r.Seq
			if r.Seq > 1 {
				a, ok := bySeq[r.Seq-1]
				if !ok {
					return res, &Problem{Seq: 1, Reason: fmt.Sprintf(
						"missing (first record present is %d, and no checkpoint anchors it)", r.Seq)}
				}
				if p := checkCP(a); p != nil {
					return res, p
				}
				anchor, last, prev = a.Seq, a.Seq, a.Hash
				res.AnchorSeq = anchor
			}
		}
		switch {
		case r.Seq != last+1:
			return res, &Problem{Seq: last + 1, Reason: fmt.Sprintf("missing (next record present is %d)", r.Seq)}
		case r.PrevHash != prev:
			return res, &Problem{Seq: r.Seq, Reason: "link to the previous record is broken"}
		case r.HashVersion != HashV1 && r.HashVersion != HashV2:
			return res, &Problem{Seq: r.Seq, Reason: fmt.Sprintf("unknown hash version %d", r.HashVersion)}
		case r.HashVersion == HashV1 && (r.SourceAddr != "" || r.DeviceID != ""):
			return res, &Problem{Seq: r.Seq, Reason: "source address or device id set on a version 1 record, which its hash does not cover"}
		case r.computeHash() != r.Hash:
			return res, &Problem{Seq: r.Seq, Reason: "contents do not match its hash (altered)"}
		}
		if c, ok := bySeq[r.Seq]; ok {
			if p := checkCP(c); p != nil {
				return res, p
			}
			if c.Hash != r.Hash {
				return res, &Problem{Seq: c.Seq, Checkpoint: true, Reason: fmt.Sprintf(
					"record %d's hash differs from its signed checkpoint: the chain after checkpoint %d was rewritten",
					r.Seq, checkpointBefore(cps, c.Seq))}
			}
		}
		if r.Action == ActionCheckpointed {
			if p := matchCheckpointRecord(r, bySeq, res.FirstSeq); p != nil {
				return res, p
			}
		}
		if anchor > 0 && r.Action == ActionPurged && purgedThrough(r.Detail) == anchor {
			purgeAccounted = true
		}
		prev, last = r.Hash, r.Seq
		res.Records++
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("audit verify: %w", err)
	}
	res.LastSeq = last
	if len(cps) > 0 && cps[len(cps)-1].Seq > last {
		return res, &Problem{Seq: last + 1, Reason: fmt.Sprintf(
			"missing: a signed checkpoint covers record %d (truncated)", cps[len(cps)-1].Seq)}
	}
	var headSeq int64
	var headHash string
	if err := q.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash); err != nil {
		return res, fmt.Errorf("audit head: %w", err)
	}
	if headSeq != last || headHash != prev {
		return res, &Problem{Seq: last + 1, Reason: fmt.Sprintf("missing: the chain head is at record %d", headSeq)}
	}
	if anchor > 0 && !purgeAccounted {
		return res, &Problem{Seq: 1, Reason: fmt.Sprintf(
			"records 1 to %d are missing and no %s record accounts for them", anchor, ActionPurged)}
	}
	res.Pending, err = Pending(ctx, q)
	return res, err
}

// prevCheckpoint is the checkpoint before seq (0 for the chain's start).
func checkpointBefore(cps []Checkpoint, seq int64) int64 {
	var p int64
	for _, c := range cps {
		if c.Seq >= seq {
			break
		}
		p = c.Seq
	}
	return p
}

func purgedThrough(detail json.RawMessage) int64 {
	var d struct {
		ThroughSeq int64 `json:"through_seq"`
	}
	_ = json.Unmarshal(detail, &d)
	return d.ThroughSeq
}

// matchCheckpointRecord checks an audit.checkpointed record against the
// checkpoint table: deleting a checkpoint row (to hide a rewrite behind it)
// leaves the record that announced it.
func matchCheckpointRecord(r Record, bySeq map[int64]Checkpoint, firstSeq int64) *Problem {
	var d Checkpoint
	if err := json.Unmarshal(r.Detail, &d); err != nil || d.Seq == 0 {
		return &Problem{Seq: r.Seq, Reason: "checkpoint record without a checkpoint in its detail"}
	}
	if d.Seq < firstSeq-1 {
		return nil // purged along with the records it covered
	}
	c, ok := bySeq[d.Seq]
	switch {
	case !ok:
		return &Problem{Seq: d.Seq, Checkpoint: true, Reason: fmt.Sprintf("missing: record %d says it was signed", r.Seq)}
	case c.Hash != d.Hash || c.Signature != d.Signature || c.KeyID != d.KeyID || !c.At.Equal(d.At):
		return &Problem{Seq: d.Seq, Checkpoint: true, Reason: fmt.Sprintf("differs from the copy in record %d", r.Seq)}
	}
	return nil
}
