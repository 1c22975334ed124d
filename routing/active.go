package routing

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/clarion-health/clarion/internal/db"
)

// keyedAlert is an alert a key points at (as its dedup key, or as a part
// key of a grouped alert), as activeByKey reads it.
type keyedAlert struct {
	key     string
	alert   activeAlert
	created int64
}

// QueueActive queues, on p, the reads of the open, held and accepted
// alerts of patientIDs with their keys; once p is flushed, the session
// answers the dedup lookups of those patients (activeByKey) from memory,
// instead of a read per firing, until it writes one of a patient's
// alerts: from then on that patient's are read from the database again.
// p must be a Pipe within the session's transaction.
func (s *Session) QueueActive(p *db.Pipe, patientIDs []string) {
	t := s.tx
	if t.active == nil {
		t.active, t.touched = map[string][]keyedAlert{}, map[string]bool{}
	}
	// Each grouped alert's parts are read by its id through a lateral
	// join fenced by OFFSET 0 on PostgreSQL, as activeByKey does.
	parts := `alerts a JOIN alert_parts p ON p.alert_id = a.id`
	if t.r.opts.Dialect == db.Postgres {
		parts = `alerts a CROSS JOIN LATERAL (SELECT part_key FROM alert_parts WHERE alert_id = a.id OFFSET 0) p`
	}
	query := `SELECT dedup_key, id, state, rule_id, COALESCE(accepted_by, ''), group_name, created_at FROM alerts
		WHERE patient_id = $1 AND state IN ('open', 'held', 'accepted')
		UNION ALL SELECT p.part_key, a.id, a.state, a.rule_id, COALESCE(a.accepted_by, ''), a.group_name, a.created_at
		FROM ` + parts + ` WHERE a.patient_id = $1 AND a.state IN ('open', 'held', 'accepted')`
	queued := map[string]bool{}
	for _, id := range patientIDs {
		if queued[id] {
			continue
		}
		queued[id] = true
		p.Query(func(rows db.Rows) error {
			got := []keyedAlert{}
			for rows.Next() {
				var k keyedAlert
				a := &k.alert
				if err := rows.Scan(&k.key, &a.id, &a.state, &a.ruleID, &a.acceptedBy, &a.group, &k.created); err != nil {
					return err
				}
				got = append(got, k)
			}
			t.active[id] = got
			return rows.Err()
		}, query, id)
	}
}

// activeFor is activeByKey from what QueueActive read, when it holds the
// key's patient (the dedup key begins with the patient id) and the
// session has written none of that patient's alerts since.
func (t *rtx) activeFor(key string, withAccepted bool) ([]activeAlert, bool) {
	if !t.vouches(key) {
		return nil, false
	}
	patient, _, _ := strings.Cut(key, "|")
	known := t.active[patient]
	var hits []keyedAlert
	for _, k := range known {
		s := k.alert.state
		if k.key == key && (s == StateOpen || s == StateHeld || (withAccepted && s == StateAccepted)) {
			hits = append(hits, k)
		}
	}
	slices.SortStableFunc(hits, func(a, b keyedAlert) int { return cmp.Compare(b.created, a.created) })
	var out []activeAlert
	for _, k := range hits {
		if !containsAlert(out, k.alert.id) {
			out = append(out, k.alert)
		}
	}
	return openFirst(out), true
}

// WriteBehind lets the session queue, on p, the insert of a new alert
// whose dedup lookup it answered from QueueActive's reads, rather than
// send it at once: those reads vouch that no open alert holds its key
// (only the routing of the patient's partition, this transaction, opens
// one), and nothing reads the alert back before the batch's messages are
// stored. p must be the Pipe of a db.Behind the session's transaction
// runs on, so that any statement sent meanwhile sends the insert first.
// Should the insert find the key taken after all, the flush fails and
// the transaction with it.
func (s *Session) WriteBehind(p *db.Pipe) { s.tx.behind = p }

// queueInsert queues a's insert on the WriteBehind pipe, when the
// session may: free, keyFree(a.DedupKey) before the plan was applied.
func (t *rtx) queueInsert(sealer Sealer, a *Alert, free bool) bool {
	if t.behind == nil || !free {
		return false
	}
	query, args := insertAlertSQL(sealer, a)
	t.behind.ExecChecked(func(n int64) error {
		if n != 1 {
			return fmt.Errorf("open alert %s: an alert is open for its dedup key, which the batch's reads did not show", a.ID)
		}
		return nil
	}, query, args...)
	return true
}

// keyFree reports whether the session's reads vouch that no alert is
// open for key, so that a new alert's insert under it cannot conflict.
func (t *rtx) keyFree(key string) bool {
	open, ok := t.activeFor(key, false)
	return ok && !slices.ContainsFunc(open, func(a activeAlert) bool { return a.state == StateOpen })
}

// vouches reports whether the session answers the dedup lookups of key
// from QueueActive's reads: it holds the key's patient (a dedup key
// begins with the patient id) and has written none of that patient's
// alerts since.
func (t *rtx) vouches(key string) bool {
	patient, _, found := strings.Cut(key, "|")
	_, known := t.active[patient]
	return found && known && !t.touched[patient]
}

// touch notes that the session writes (or may write) the alerts of these
// patients: their dedup lookups go to the database from now on.
func (t *rtx) touch(patientIDs ...string) {
	if t.touched == nil {
		return // nothing prefetched
	}
	for _, p := range patientIDs {
		t.touched[p] = true
	}
}

// verifyActive, set by tests, checks every answer activeFor gives against
// the database's.
var verifyActive bool

// VerifyPrefetch makes sessions check every dedup lookup they answer from
// QueueActive's reads against the database, failing the routing on a
// difference: for tests.
func VerifyPrefetch(on bool) { verifyActive = on }

func (t *rtx) verifyActive(ctx context.Context, r *Router, key string, withAccepted bool, got []activeAlert) error {
	want, err := r.activeByKey(ctx, t.Queryer, key, withAccepted)
	if err != nil {
		return err
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("session's alerts for key %q: %v, the database's %v", key, got, want)
	}
	return nil
}
