package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// AuditStream is the JetStream stream of audit records for a SIEM.
const AuditStream = "CLARION_AUDIT"

// AuditDuplicateWindow is how long the stream remembers message ids: a
// record re-published within it (an outbox retrying after a crash) is
// stored once.
const AuditDuplicateWindow = 10 * time.Minute

// EnsureAuditStream creates or updates the audit stream on subjects
// "clarion.audit.>", keeping messages for maxAge (0: until removed). It
// uses only what NATS 2.9 supports.
func (b *Bus) EnsureAuditStream(ctx context.Context, maxAge time.Duration) error {
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: AuditStream, Subjects: []string{"clarion.audit.>"}, MaxAge: maxAge,
		Storage: jetstream.FileStorage, Duplicates: AuditDuplicateWindow,
	})
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	return nil
}

// PublishAudit stores one audit record on the stream, de-duplicated by
// msgID, and waits for the stream's acknowledgement.
func (b *Bus) PublishAudit(ctx context.Context, subject string, data []byte, msgID string) error {
	if _, err := b.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("publish audit record: %w", err)
	}
	return nil
}

// JetStream exposes the JetStream context, for tests and tools that read
// the streams back.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }
