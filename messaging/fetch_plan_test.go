package messaging

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

// The fetch's generic plan, made while messages is empty and analyzed (a
// new node's tables), reads each device's messages through its index on
// the fetcher's connection, whatever the table grows to; the connection
// goes back to the pool with its settings reset.
func TestFetchPlannedByIndex(t *testing.T) {
	d := dbtest.Postgres(t)
	ctx := context.Background()
	for _, table := range []string{"messages", "devices"} {
		if _, err := d.ExecContext(ctx, "ANALYZE "+table); err != nil {
			t.Fatal(err)
		}
	}
	f := &fetchConn{db: d}
	rows, err := f.query(ctx, "SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	query, _ := fetchQuery(db.Postgres, []*gconn{{deviceID: "dev_a"}, {deviceID: "dev_b"}}, []int64{0, 0}, 0, 100)
	if _, err := f.conn.ExecContext(ctx, "PREPARE fetch_plan(bigint, bigint, bigint[], text[], bigint[]) AS "+query); err != nil {
		t.Fatal(err)
	}
	rows, err = f.conn.QueryContext(ctx, fmt.Sprintf(`EXPLAIN EXECUTE fetch_plan(%d, 100, '{0,1}', '{dev_a,dev_b}', '{0,0}')`,
		time.Now().UnixMicro()))
	if err != nil {
		t.Fatal(err)
	}
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	rows.Close()
	if _, err := f.conn.ExecContext(ctx, "DEALLOCATE fetch_plan"); err != nil {
		t.Fatal(err)
	}
	if p := plan.String(); !strings.Contains(p, "messages_device_id_seq_key") || strings.Contains(p, "Seq Scan on messages") {
		t.Fatalf("fetch plan does not read messages by device:\n%s", p)
	}

	f.release()
	if f.conn != nil {
		t.Fatal("released, yet held")
	}
	// Every pooled connection, the fetcher's among them, plans as usual.
	n := d.Stats().OpenConnections
	for range n {
		c, err := d.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var seqscan, mode string
		if err := c.QueryRowContext(ctx, "SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')").Scan(&seqscan, &mode); err != nil {
			t.Fatal(err)
		}
		if seqscan != "on" || mode != "auto" {
			t.Fatalf("a pooled connection has enable_seqscan %s, plan_cache_mode %s", seqscan, mode)
		}
	}
}
