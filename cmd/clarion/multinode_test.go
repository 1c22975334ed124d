package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/messaging/deviceclient"
)

// peer is a second node of the same deployment: same database, same NATS,
// same data directory (so the same at-rest key), its own ports.
func (h *harness) peer() *harness {
	p := &harness{t: h.t, b: h.b, dataDir: h.dataDir, httpAddr: freeAddr(h.t), mllpAddr: freeAddr(h.t),
		logs: &syncBuffer{}, admin: h.admin}
	h.t.Cleanup(func() {
		if p.proc != nil {
			_ = p.proc.Process.Kill()
			<-p.exited
		}
		if h.t.Failed() {
			h.t.Logf("second node logs:\n%s", p.logs.String())
		}
	})
	return p
}

// TestTwoNodes runs two `clarion serve` processes on one PostgreSQL and one
// NATS: a device connected to node B receives an alert that node A opened,
// and 10,000 due escalation timers fire exactly once each across both.
func TestTwoNodes(t *testing.T) {
	if os.Getenv(dbtest.EnvPostgres) == "" {
		t.Skip("several nodes need PostgreSQL and an external NATS: set " + dbtest.EnvPostgres + " and CLARION_TEST_NATS_URL")
	}
	h := newHarness(t, backends()["postgres"](t))
	h.start()
	hosp := h.seed()
	b := h.peer()
	b.start()

	// The RN's phone is connected to node B; the lab talks to node A.
	onB := *hosp.rn
	onB.Server = "http://" + b.httpAddr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := deviceclient.Dial(ctx, &onB)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	requireAA(t, h.send(admitMessage("ADT-MN")), "ADT-MN")
	sent := time.Now()
	requireAA(t, h.send(potassiumMessage("LAB-MN")), "LAB-MN")
	rec, err := conn.Next(ctx)
	if err != nil {
		t.Fatalf("device on node B got nothing from node A: %v", err)
	}
	t.Logf("alert opened on node A reached the device on node B %s after the ACK", time.Since(sent))
	if !strings.Contains(rec.Plain.Body, "6.9") {
		t.Fatalf("unexpected message %+v", rec.Plain)
	}

	// 10,000 open alerts whose first-step timers are all due now.
	const n = 10000
	h.api("PUT", "/v1/policies/slow", map[string]any{"name": "Slow", "steps": []map[string]any{
		{"targets": []map[string]any{{"kind": "role", "role": "RN"}}, "delay_seconds": 3600},
		{"targets": []map[string]any{{"kind": "role", "role": "CHARGE_RN"}}, "delay_seconds": 3600},
		{"targets": []map[string]any{{"kind": "user", "user_id": "sup1"}}},
	}})
	keys, err := atrest.Load(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	d := h.openDB()
	inserted := time.Now()
	tx, err := d.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		id := ids.New("alr")
		now := time.Now().UnixMicro()
		if _, err := tx.Exec(`INSERT INTO alerts (id, rule_id, event_id, patient_id, dedup_key, priority, unit, target_role,
			policy_id, state, step, lock_text, body, updates, created_at, updated_at)
			VALUES ($1, 'bulk', $2, $3, $4, 'PM', '4W', 'RN', 'slow', 'open', 0, 'PM alert on 4W', $5, 0, $6, $6)`,
			id, "evt_bulk_"+fmt.Sprint(i), "pt_bulk", "bulk|"+id, keys.Seal([]byte("bulk alert"), []byte(id)), now); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO escalation_timers (id, alert_id, step, due_at, state) VALUES ($1, $2, 0, $3, 'pending')`,
			ids.New("tmr"), id, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var pending int
		if err := d.QueryRow(`SELECT COUNT(*) FROM escalation_timers t JOIN alerts a ON a.id = t.alert_id
			WHERE a.rule_id = 'bulk' AND t.step = 0 AND t.state = 'pending'`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d timers still pending after 5 minutes", pending)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d timers fired across two nodes in %s", n, time.Since(inserted))
	var fired, escalations, distinct int
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.QueryRow(`SELECT COUNT(*) FROM escalation_timers t JOIN alerts a ON a.id = t.alert_id
		WHERE a.rule_id = 'bulk' AND t.step = 0 AND t.state = 'fired'`).Scan(&fired))
	must(d.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT m.alert_id) FROM messages m JOIN alerts a ON a.id = m.alert_id
		WHERE a.rule_id = 'bulk' AND m.step = 1`).Scan(&escalations, &distinct))
	if fired != n || escalations != n || distinct != n {
		t.Fatalf("fired %d timers, %d step-1 messages for %d alerts; want %d of each (each timer exactly once)",
			fired, escalations, distinct, n)
	}
	var seqs, maxSeq int
	must(d.QueryRow(`SELECT COUNT(DISTINCT seq), MAX(seq) FROM messages WHERE device_id = $1`, hosp.charge.DeviceID).Scan(&seqs, &maxSeq))
	if seqs != maxSeq {
		t.Fatalf("charge device sequence has gaps or repeats: %d distinct, max %d", seqs, maxSeq)
	}
}
