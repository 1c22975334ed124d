package main

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

// phiMarkers are the named test patient's identifiers in every form they
// could leak in: name parts, MRN, date of birth as sent and as reformatted.
var phiMarkers = []string{"TESTPATIENT", "ALEX", patientMRN, patientDOB, "1961-02-14", "02/14/1961", "14.02.1961"}

// TestAuditLogAndProcessLogsHoldNoPHI admits a named patient, sends a
// critical result, reads and accepts it on the nurse's device, then scans
// every column of every audit table and the server's logs.
func TestAuditLogAndProcessLogsHoldNoPHI(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		h.start()
		hosp := h.seed()
		requireAA(t, h.send(admitMessage("ADT-PHI")), "ADT-PHI")
		requireAA(t, h.send(potassiumMessage("LAB-PHI")), "LAB-PHI")
		rec, conn := receive(t, hosp.rn, 30*time.Second)
		if err := conn.MarkRead(context.Background(), rec.Envelope.MessageID); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		state, err := deviceclient.RespondHTTP(context.Background(), hosp.rn, rec.Envelope.MessageID, messaging.ResponseAccept)
		if err != nil || state != "accepted" {
			t.Fatalf("accept: %q %v", state, err)
		}
		d := h.openDB()
		waitFor(t, "the accept in the audit log", func() bool {
			a := auditActions(t, d)
			return contains(a, "patient.context_updated") && contains(a, "alert.opened") &&
				contains(a, "message.read") && contains(a, "alert.accepted")
		})
		h.stop() // flush every log line the server would write

		scanned := 0
		for _, table := range []string{"audit_log", "audit_checkpoints", "audit_stream_positions", "audit_head"} {
			scanned += scanTable(t, d, table)
		}
		if scanned < 10 {
			t.Fatalf("only %d audit rows scanned", scanned)
		}
		logs := h.logs.String()
		if !strings.Contains(logs, "clarion serving") {
			t.Fatal("no server logs captured")
		}
		for _, m := range phiMarkers {
			if strings.Contains(logs, m) {
				t.Errorf("server logs contain %q", m)
			}
		}
	})
}

// scanTable reads every column of every row as text and fails on PHI.
func scanTable(t *testing.T, d *db.DB, table string) int {
	t.Helper()
	rows, err := d.Query(`SELECT * FROM ` + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			for _, m := range phiMarkers {
				if strings.Contains(v.String, m) {
					t.Errorf("%s.%s holds %q: %s", table, cols[i], m, v.String)
				}
			}
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
