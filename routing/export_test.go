package routing

import "context"

// ContextOf is GetContext through the session: from what it prefetched
// and wrote, where it holds the patient.
func (s *Session) ContextOf(ctx context.Context, patientID string) (Context, bool, error) {
	return GetContext(ctx, s.tx, patientID)
}

// Every dedup lookup a session answers from QueueActive's reads is checked
// against the database in these tests.
func init() { verifyActive = true }
