package messaging_test

import (
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/dbtest"
	"github.com/clarion-health/clarion/messaging"
)

func newEscrow(t *testing.T) *messaging.EscrowPrivateKey {
	t.Helper()
	k, err := messaging.GenerateEscrowKey("")
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

func TestEscrowAndDigest(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		esc := newEscrow(t)
		f := newFixture(t, d, seedOpts{engineOpts: []messaging.Option{messaging.WithEscrow(&esc.EscrowPublicKey)}})
		a := f.openAlert("MRN1")
		env := f.onlyMessage("rn", a.ID, 0)
		want, err := f.open("rn", env)
		if err != nil {
			t.Fatal(err)
		}
		var digest, digestKey, escrowKey sql.NullString
		var escrowed []byte
		if err := d.QueryRowContext(f.ctx, `SELECT body_digest, digest_key_id, escrow_sealed, escrow_key_id FROM messages WHERE id = $1`,
			env.MessageID).Scan(&digest, &digestKey, &escrowed, &escrowKey); err != nil {
			t.Fatal(err)
		}
		if len(digest.String) != 64 || digestKey.String != "k1" || len(escrowed) == 0 || escrowKey.String != esc.KeyID {
			t.Fatalf("row: digest %q key %q escrow %d bytes key %q", digest.String, digestKey.String, len(escrowed), escrowKey.String)
		}
		open := func(key *messaging.EscrowPrivateKey) (messaging.Escrowed, error) {
			var out messaging.Escrowed
			err := d.InTx(f.ctx, func(tx *sql.Tx) (err error) {
				out, err = messaging.OpenEscrow(f.ctx, tx, key, f.keys, audit.Entry{ActorType: audit.ActorUser, ActorID: "auditor-1"},
					env.MessageID, f.now)
				return err
			})
			return out, err
		}
		got, err := open(esc)
		if err != nil {
			t.Fatal(err)
		}
		if got.Plain != want || got.Digest != "match" || got.DeviceID != f.devs["rn"].id {
			t.Fatalf("escrow opened %+v, want %+v with a matching digest", got, want)
		}
		if recs := f.auditRecords("message.escrow_opened", env.MessageID); len(recs) != 1 || recs[0]["escrow_key_id"] != esc.KeyID {
			t.Fatalf("escrow_opened audit: %v", recs)
		}
		if _, err := open(newEscrow(t)); !errors.Is(err, messaging.ErrEscrowKey) {
			t.Fatalf("another escrow key: %v", err)
		}
		escrowed[len(escrowed)-1] ^= 1
		if _, err := d.ExecContext(f.ctx, `UPDATE messages SET escrow_sealed = $1 WHERE id = $2`, escrowed, env.MessageID); err != nil {
			t.Fatal(err)
		}
		if _, err := open(esc); !errors.Is(err, messaging.ErrEscrowOpen) {
			t.Fatalf("tampered escrow copy: %v", err)
		}
	})
}

func TestNoEscrowKeepsDigestOnly(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		env := f.onlyMessage("rn", a.ID, 0)
		var digest sql.NullString
		var escrowed []byte
		if err := d.QueryRowContext(f.ctx, `SELECT body_digest, escrow_sealed FROM messages WHERE id = $1`, env.MessageID).
			Scan(&digest, &escrowed); err != nil {
			t.Fatal(err)
		}
		if !digest.Valid || escrowed != nil {
			t.Fatalf("digest %v, escrow %d bytes; want a digest and no escrow copy", digest, len(escrowed))
		}
		err := d.InTx(f.ctx, func(tx *sql.Tx) error {
			_, err := messaging.OpenEscrow(f.ctx, tx, newEscrow(t), f.keys, audit.Entry{ActorType: "user", ActorID: "x"}, env.MessageID, f.now)
			return err
		})
		if !errors.Is(err, messaging.ErrNoEscrow) {
			t.Fatalf("open without escrow copy: %v", err)
		}
	})
}

func TestExpiryRetentionAndHolds(t *testing.T) {
	cases := []struct {
		name    string
		hold    string // "", "alert", "user", "other-user", "released"
		wantGo  bool   // expired message is told to the device and purged
		release bool
	}{
		{name: "no hold", wantGo: true},
		{name: "hold on the alert", hold: "alert"},
		{name: "hold on the user", hold: "user"},
		{name: "hold on another user", hold: "other-user", wantGo: true},
		{name: "hold released", hold: "alert", release: true, wantGo: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dbtest.Each(t, func(t *testing.T, d *db.DB) {
				esc := newEscrow(t)
				f := newFixture(t, d, seedOpts{engineOpts: []messaging.Option{messaging.WithEscrow(&esc.EscrowPublicKey)}})
				a := f.openAlert("MRN1")
				env := f.onlyMessage("rn", a.ID, 0)
				dev := f.devs["rn"].id
				by := audit.Entry{ActorType: audit.ActorUser, ActorID: "auditor-1", ActorRole: "auditor"}
				hold := messaging.LegalHold{Reason: "matter 2026-01"}
				switch tc.hold {
				case "alert":
					hold.AlertID = a.ID
				case "user":
					hold.UserID = "rn"
				case "other-user":
					hold.UserID = "charge"
				}
				if tc.hold != "" {
					err := d.InTx(f.ctx, func(tx *sql.Tx) (err error) {
						hold, err = messaging.PlaceHold(f.ctx, tx, by, hold, f.now)
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				expiry := messaging.DefaultExpiry().For("PH")
				// Just before expiry: nothing to do.
				before := t0.Add(expiry - time.Second)
				if ids, _ := messaging.ExpiredOnDevice(f.ctx, d, dev, 100, before, 10); len(ids) != 0 {
					t.Fatalf("expired before its time: %v", ids)
				}
				if n, err := f.engine.PurgeExpired(f.ctx, before); err != nil || n != 0 {
					t.Fatalf("purged %d before expiry: %v", n, err)
				}
				at := t0.Add(expiry)
				f.now = at
				if pending, _ := messaging.PendingMessages(f.ctx, d, dev, 0, at, 10); len(pending) != 0 {
					t.Fatalf("an expired message is still to be sent: %v", pending)
				}
				// An acknowledgement after expiry does not deliver what was never sent.
				if err := f.engine.Delivered(f.ctx, dev, env.Seq); err != nil {
					t.Fatal(err)
				}
				if recs := f.auditRecords("message.delivered", env.MessageID); len(recs) != 0 {
					t.Fatalf("an expired message was marked delivered: %v", recs)
				}
				if tc.release {
					err := d.InTx(f.ctx, func(tx *sql.Tx) error {
						_, err := messaging.ReleaseHold(f.ctx, tx, by, hold.ID, at)
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				ids, err := messaging.ExpiredOnDevice(f.ctx, d, dev, 100, at, 10)
				if err != nil {
					t.Fatal(err)
				}
				if got := slices.Equal(ids, []string{env.MessageID}); got != tc.wantGo {
					t.Fatalf("device told to delete %v; want told = %v", ids, tc.wantGo)
				}
				n, err := f.engine.PurgeExpired(f.ctx, at)
				if err != nil || (n == 1) != tc.wantGo {
					t.Fatalf("purged %d (%v); want purged = %v", n, err, tc.wantGo)
				}
				var sealed, escrowed []byte
				var digest sql.NullString
				var purged sql.NullInt64
				if err := d.QueryRowContext(f.ctx, `SELECT sealed, escrow_sealed, body_digest, purged_at FROM messages WHERE id = $1`,
					env.MessageID).Scan(&sealed, &escrowed, &digest, &purged); err != nil {
					t.Fatalf("the message row is gone: %v", err)
				}
				if tc.wantGo {
					if len(sealed) != 0 || escrowed != nil || !digest.Valid || !purged.Valid {
						t.Fatalf("tombstone: sealed %d, escrow %d bytes, digest %v, purged %v", len(sealed), len(escrowed), digest.Valid, purged)
					}
					if recs := f.auditRecords("message.purged", env.MessageID); len(recs) != 1 {
						t.Fatalf("message.purged records: %v", recs)
					}
				} else if len(sealed) == 0 || escrowed == nil || purged.Valid {
					t.Fatal("a held message was purged")
				}
				n, err = f.engine.ConfirmDeleted(f.ctx, dev, []string{env.MessageID, "msg_not_mine"})
				if err != nil || (n == 1) != tc.wantGo {
					t.Fatalf("confirm deleted %d (%v); want recorded = %v", n, err, tc.wantGo)
				}
				if n, _ := f.engine.PurgeExpired(f.ctx, at.Add(time.Hour)); n != 0 {
					t.Fatalf("purged %d twice", n)
				}
			})
		})
	}
}

func TestPlaceHoldValidation(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, d *db.DB) {
		f := newFixture(t, d, seedOpts{})
		a := f.openAlert("MRN1")
		cases := []struct {
			name      string
			hold      messaging.LegalHold
			wantField string
		}{
			{"alert", messaging.LegalHold{AlertID: a.ID, Reason: "r"}, ""},
			{"user", messaging.LegalHold{UserID: "rn", Reason: "r"}, ""},
			{"neither", messaging.LegalHold{Reason: "r"}, "alert_id"},
			{"both", messaging.LegalHold{AlertID: a.ID, UserID: "rn", Reason: "r"}, "alert_id"},
			{"no reason", messaging.LegalHold{UserID: "rn"}, "reason"},
			{"unknown alert", messaging.LegalHold{AlertID: "alr_nope", Reason: "r"}, "alert_id"},
			{"unknown user", messaging.LegalHold{UserID: "nobody", Reason: "r"}, "user_id"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := d.InTx(f.ctx, func(tx *sql.Tx) error {
					_, err := messaging.PlaceHold(f.ctx, tx, audit.Entry{ActorType: "user", ActorID: "a"}, tc.hold, f.now)
					return err
				})
				var inv *messaging.InvalidError
				switch {
				case tc.wantField == "" && err != nil:
					t.Fatalf("PlaceHold: %v", err)
				case tc.wantField != "" && (!errors.As(err, &inv) || inv.Field != tc.wantField):
					t.Fatalf("PlaceHold: %v, want an error on %s", err, tc.wantField)
				}
			})
		}
		holds, err := messaging.ListHolds(f.ctx, d, true)
		if err != nil || len(holds) != 2 {
			t.Fatalf("active holds: %v %v", holds, err)
		}
		if recs := f.auditRecords("legal_hold.placed", holds[0].ID); len(recs) != 1 || recs[0]["reason"] != nil {
			t.Fatalf("legal_hold.placed audit (no free text in it): %v", recs)
		}
	})
}

func TestParseExpiry(t *testing.T) {
	cases := []struct {
		name, spec string
		want       string
		wantErr    bool
	}{
		{"empty is the default", "", "PH=24h0m0s,PL=4h0m0s,PM=12h0m0s,PN=4h0m0s", false},
		{"override one", "PH=48h", "PH=48h0m0s,PL=4h0m0s,PM=12h0m0s,PN=4h0m0s", false},
		{"new priority", "PX=1h, PN=2h", "PH=24h0m0s,PL=4h0m0s,PM=12h0m0s,PN=2h0m0s,PX=1h0m0s", false},
		{"no equals", "PH", "", true},
		{"bad duration", "PH=soon", "", true},
		{"too short", "PH=10s", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x, err := messaging.ParseExpiry(tc.spec)
			if (err != nil) != tc.wantErr || (err == nil && x.String() != tc.want) {
				t.Fatalf("ParseExpiry(%q) = %v, %v; want %s (error %v)", tc.spec, x, err, tc.want, tc.wantErr)
			}
		})
	}
	if d := messaging.DefaultExpiry().For("P?"); d != 24*time.Hour {
		t.Fatalf("an unknown priority lives %v, want the longest (24h)", d)
	}
}
