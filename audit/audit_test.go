package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func appendN(t *testing.T, d *db.DB, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			_, err := audit.Append(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test",
				Action: "test.step", ObjectType: "thing", ObjectID: fmt.Sprint(i), CorrelationID: "c1",
				Detail: map[string]any{"i": i}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		cases := []struct {
			name    string
			tamper  string
			wantSeq int64
		}{
			{"intact", ``, 0},
			{"edited", `UPDATE audit_log SET action = 'test.other' WHERE seq = 3`, 3},
			{"edited detail", `UPDATE audit_log SET detail = '{"i":99}' WHERE seq = 4`, 4},
			{"deleted", `DELETE FROM audit_log WHERE seq = 2`, 2},
			{"reordered", `UPDATE audit_log SET seq = 1000 WHERE seq = 2;
				UPDATE audit_log SET seq = 2 WHERE seq = 3;
				UPDATE audit_log SET seq = 3 WHERE seq = 1000`, 2},
			{"truncated", `DELETE FROM audit_log WHERE seq = 5`, 5},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ctx := context.Background()
				if _, err := d.ExecContext(ctx, `DELETE FROM audit_log`); err != nil {
					t.Fatal(err)
				}
				if _, err := d.ExecContext(ctx, `UPDATE audit_head SET seq = 0, hash = ''`); err != nil {
					t.Fatal(err)
				}
				appendN(t, d, 5)
				if c.tamper != "" {
					for _, stmt := range strings.Split(c.tamper, ";") {
						if _, err := d.ExecContext(ctx, stmt); err != nil {
							t.Fatal(err)
						}
					}
				}
				n, err := audit.Verify(ctx, d)
				if c.wantSeq == 0 {
					if err != nil || n != 5 {
						t.Fatalf("intact chain: n=%d err=%v", n, err)
					}
					return
				}
				var p *audit.Problem
				if !errors.As(err, &p) || p.Seq != c.wantSeq {
					t.Fatalf("got %v, want a problem at record %d", err, c.wantSeq)
				}
			})
		}
	})
}

func TestConcurrentAppendsStayLinear(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() { defer wg.Done(); appendN(t, d, 10) }()
		}
		wg.Wait()
		n, err := audit.Verify(context.Background(), d)
		if err != nil || n != 80 {
			t.Fatalf("n=%d err=%v", n, err)
		}
	})
}
