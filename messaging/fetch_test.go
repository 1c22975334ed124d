package messaging_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/internal/ids"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
	"github.com/clarion-health/clarion/routing"
)

// openAlertUnwoken is openAlert without the wake-up: as if it was lost on
// the bus.
func (f *fixture) openAlertUnwoken(mrn string) *routing.Alert {
	f.t.Helper()
	patient := ingest.Patient{ID: mrn, Authority: "HOSP"}
	k := 6.9
	admit := &ingest.Event{Kind: ingest.KindAdmit, Source: "ADT^HOSP", SourceID: "A-" + mrn, Trigger: "ADT^A01",
		OccurredAt: f.now, Patient: patient, Location: ingest.Location{Unit: "4W", Room: "412", Bed: "12"}}
	result := &ingest.Event{Kind: ingest.KindResult, Source: "LAB^HOSP", SourceID: "R-" + mrn, Trigger: "ORU^R01",
		OccurredAt: f.now, Patient: patient, Observations: []ingest.Observation{{Code: "2823-3", System: "LN",
			Display: "Potassium", ValueType: "NM", Value: "6.9", Numeric: &k, Units: "mmol/L", Flags: []string{"HH"}}}}
	var alert *routing.Alert
	err := f.d.InTx(f.ctx, func(tx *sql.Tx) error {
		if _, err := f.router.Route(f.ctx, tx, ids.New("evt"), admit, f.keys, f.now); err != nil {
			return err
		}
		out, err := f.router.Route(f.ctx, tx, ids.New("evt"), result, f.keys, f.now)
		if err != nil {
			return err
		}
		if len(out.Opened) != 1 {
			return fmt.Errorf("result opened %d alerts, want 1", len(out.Opened))
		}
		alert = out.Opened[0]
		_, err = f.engine.Start(f.ctx, tx, alert, f.now)
		return err
	})
	if err != nil {
		f.t.Fatalf("open alert: %v", err)
	}
	return alert
}

// A wake-up lost on the bus is covered by the node-wide sweep: the
// message still arrives, in order after the ones before it.
func TestSweepDeliversWithoutWakeup(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{}, messaging.WithSweep(200*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := deviceclient.Dial(ctx, e.identity("rn"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		first := e.openAlert("MRN1")
		second := e.openAlertUnwoken("MRN2")
		for i, want := range []string{first.ID, second.ID} {
			rec, err := conn.Next(ctx)
			if err != nil {
				t.Fatalf("message %d: %v", i+1, err)
			}
			if rec.Envelope.AlertID != want || rec.Envelope.Seq != int64(i+1) {
				t.Fatalf("message %d: alert %s seq %d, want alert %s seq %d", i+1, rec.Envelope.AlertID, rec.Envelope.Seq, want, i+1)
			}
		}
	})
}

// Two connections of one device (a reconnect racing the old connection)
// are both served by the node's fetch, each from its own cursor.
func TestFetchServesEveryConnectionOfADevice(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		first := e.openAlert("MRN1")
		a, err := deviceclient.Dial(ctx, e.identity("rn"))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if rec, err := a.Next(ctx); err != nil || rec.Envelope.AlertID != first.ID {
			t.Fatalf("first connection: %v %+v", err, rec)
		}
		b, err := deviceclient.Dial(ctx, e.identity("rn"))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		second := e.openAlert("MRN2")
		// Each connection is served from its own cursor: the first has
		// message 1 and gets only 2; the second resumes after what the
		// device acknowledged (1, unless its ack is not yet recorded: then
		// it gets 1 again, which a device ignores) and gets 2 as well.
		for name, c := range map[string]*deviceclient.Conn{"first": a, "second": b} {
			var seqs []int64
			for len(seqs) == 0 || seqs[len(seqs)-1] < 2 {
				rec, err := c.Next(ctx)
				if err != nil {
					t.Fatalf("%s connection after %v: %v", name, seqs, err)
				}
				seqs = append(seqs, rec.Envelope.Seq)
				if rec.Envelope.Seq == 2 && rec.Envelope.AlertID != second.ID {
					t.Fatalf("%s connection: seq 2 is alert %s, want %s", name, rec.Envelope.AlertID, second.ID)
				}
			}
			if name == "first" && len(seqs) != 1 || len(seqs) > 2 || (len(seqs) == 2 && seqs[0] != 1) {
				t.Fatalf("%s connection got sequences %v", name, seqs)
			}
		}
	})
}

// Receipts committed together: each is recorded or refused on its own
// merits; a refused one (not the device's message, a device being wiped)
// changes nothing and does not undo the others.
func TestReceiptsShareATransaction(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{})
		a1 := e.openAlert("MRN1")
		a2 := e.openAlert("MRN2")
		m1 := e.messages("rn")[0]
		if m1.AlertID != a1.ID {
			t.Fatalf("first message is for %s, want %s", m1.AlertID, a1.ID)
		}
		if err := d.InTx(e.ctx, func(tx *sql.Tx) error {
			_, err := messaging.RequestWipe(e.ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "test"},
				e.devs["sup"].id, messaging.WipeLost, e.now)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		errs := e.gw.CommitReceipts(e.ctx, []messaging.TestReceipt{
			{DeviceID: e.devs["rn"].id, Seq: 2},
			{DeviceID: e.devs["charge"].id, MessageID: m1.MessageID}, // not charge's
			{DeviceID: e.devs["rn"].id, MessageID: m1.MessageID},
			{DeviceID: e.devs["sup"].id, Seq: 1}, // being wiped
		})
		if errs[0] != nil || errs[2] != nil {
			t.Fatalf("receipts refused: %v", errs)
		}
		if !errors.Is(errs[1], messaging.ErrNotYours) || !errors.Is(errs[3], messaging.ErrDeviceRevoked) {
			t.Fatalf("answers %v, want ErrNotYours and ErrDeviceRevoked", errs)
		}
		for _, a := range []*routing.Alert{a1, a2} {
			var delivered, read sql.NullInt64
			if err := d.QueryRowContext(e.ctx, `SELECT delivered_at, read_at FROM messages WHERE alert_id = $1`, a.ID).
				Scan(&delivered, &read); err != nil {
				t.Fatal(err)
			}
			if !delivered.Valid || read.Valid != (a == a1) {
				t.Fatalf("alert %s: delivered %v read %v", a.ID, delivered, read)
			}
		}
		if got := e.auditRecords("message.delivered", m1.MessageID); len(got) != 1 {
			t.Fatalf("%d message.delivered records for the first message, want 1", len(got))
		}
		var acked int64
		if err := d.QueryRowContext(e.ctx, `SELECT acked_seq FROM devices WHERE id = $1`, e.devs["sup"].id).Scan(&acked); err != nil {
			t.Fatal(err)
		}
		if acked != 0 {
			t.Fatalf("the device being wiped acknowledged up to %d", acked)
		}
	})
}

// When the shared transaction fails, its receipts are recorded one by
// one: the failing one fails alone.
func TestReceiptGroupFallsBackOneByOne(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		e := newGatewayEnv(t, d, seedOpts{})
		e.openAlert("MRN1")
		e.openAlert("MRN2")
		msgs := e.messages("rn")
		// Make every read receipt fail in the database.
		var stmts []string
		if d.Dialect == db.Postgres {
			stmts = []string{`CREATE FUNCTION refuse_read() RETURNS trigger AS $$ BEGIN
				IF NEW.action = 'message.read' THEN RAISE EXCEPTION 'read refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`,
				`CREATE TRIGGER refuse_read BEFORE INSERT ON audit_pending FOR EACH ROW EXECUTE FUNCTION refuse_read()`}
		} else {
			stmts = []string{`CREATE TRIGGER refuse_read BEFORE INSERT ON audit_pending WHEN NEW.action = 'message.read'
				BEGIN SELECT RAISE(ABORT, 'read refused by the test'); END`}
		}
		for _, s := range stmts {
			if _, err := d.ExecContext(e.ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		errs := e.gw.CommitReceipts(e.ctx, []messaging.TestReceipt{
			{DeviceID: e.devs["rn"].id, MessageID: msgs[0].MessageID},
			{DeviceID: e.devs["rn"].id, Seq: 2},
		})
		if errs[0] == nil || errs[1] != nil {
			t.Fatalf("answers %v: want the read to fail alone", errs)
		}
		var delivered int
		if err := d.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM messages WHERE device_id = $1 AND delivered_at IS NOT NULL
			AND read_at IS NULL`, e.devs["rn"].id).Scan(&delivered); err != nil {
			t.Fatal(err)
		}
		if delivered != 2 {
			t.Fatalf("%d messages delivered and unread, want 2", delivered)
		}
	})
}
