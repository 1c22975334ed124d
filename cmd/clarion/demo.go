package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/messaging"
	"github.com/clarion-health/clarion/messaging/deviceclient"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// The sample hospital: two units, a 12-hour rotation of a day and a night
// holder for each (required) role, and a house supervisor as the failsafe.
var (
	demoUnits = []oncall.Unit{
		{ID: "4W", Name: "4 West Medical-Surgical", TimeZone: "America/New_York"},
		{ID: "ICU", Name: "Medical ICU", TimeZone: "America/New_York"},
	}
	// demoRoster maps unit → role → [day holder, night holder].
	demoRoster = map[string]map[string][2]string{
		"4W":  {"RN": {"ana.rivera", "ben.okafor"}, "CHARGE_RN": {"cara.lee", "dan.smith"}},
		"ICU": {"RN": {"eva.novak", "finn.walsh"}, "CHARGE_RN": {"gina.park", "hugo.tan"}},
	}
	demoNames = map[string]string{
		"ana.rivera": "Ana Rivera, RN", "ben.okafor": "Ben Okafor, RN", "cara.lee": "Cara Lee, RN (charge)",
		"dan.smith": "Dan Smith, RN (charge)", "eva.novak": "Eva Novak, RN", "finn.walsh": "Finn Walsh, RN",
		"gina.park": "Gina Park, RN (charge)", "hugo.tan": "Hugo Tan, RN (charge)", "sam.house": "Sam House, house supervisor",
	}
)

func f64(v float64) *float64 { return &v }

func demoPolicy() oncall.Policy {
	return oncall.Policy{ID: "nursing", Name: "Nursing: RN, then charge RN, then house supervisor", Handoff: true, Steps: []oncall.Step{
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
		{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "CHARGE_RN"}}, DelaySeconds: 60},
		{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sam.house"}}},
	}}
}

func demoRules() []routing.Rule {
	lock := "{priority} alert on {unit}: open Clarion"
	return []routing.Rule{
		{ID: "critical-potassium", Name: "Critical potassium", Enabled: true, Priority: routing.PriorityHigh,
			Match:      routing.Match{Codes: []routing.Code{{System: "LN", Code: "2823-3"}}, Flags: []string{"HH", "LL"}},
			TargetRole: "RN", PolicyID: "nursing", LockText: lock,
			Body: "Room {room} bed {bed}: critical {test} {value} {units} ({flag})"},
		{ID: "heart-rate", Name: "Heart rate out of range", Enabled: true, Priority: routing.PriorityMedium,
			Match:      routing.Match{Codes: []routing.Code{{System: "LN", Code: "8867-4"}}, Above: f64(130), Below: f64(40)},
			TargetRole: "RN", PolicyID: "nursing", LockText: lock,
			Body: "Room {room} bed {bed}: heart rate {value} {units}"},
		{ID: "spo2-low", Name: "SpO2 low", Enabled: true, Priority: routing.PriorityHigh,
			Match: routing.Match{Codes: []routing.Code{{System: "LN", Code: "2708-6"}, {System: "LN", Code: "59408-5"}},
				Below: f64(88)},
			TargetRole: "RN", PolicyID: "nursing", LockText: lock,
			Body: "Room {room} bed {bed}: SpO2 {value} {units}"},
	}
}

// demoRotation is a unit-role's 12-hour rotation, 07:00-19:00 and
// 19:00-07:00 in the unit's zone, the day holder on days and the night
// holder on nights, from yesterday on. Boundaries are wall-clock times: a
// night across a DST change lasts 11 or 13 hours.
func demoRotation(unit oncall.Unit, role string, holders [2]string, now time.Time) oncall.Rotation {
	loc, _ := time.LoadLocation(unit.TimeZone)
	start := now.In(loc).AddDate(0, 0, -1).Format(time.DateOnly)
	return oncall.Rotation{ID: unit.ID + "-" + role, UnitID: unit.ID, Role: role, Name: role + " days and nights",
		Kind: oncall.RotationPattern, Participants: holders[:], StartDate: start, CycleDays: 1,
		Slots: []oncall.Slot{{Day: 0, Start: "07:00", End: "19:00"}, {Day: 0, Start: "19:00", End: "07:00"}}}
}

func seedDemo(ctx context.Context, a *app, cfg serveConfig, stdout io.Writer) error {
	server := "http://" + cfg.httpAddr
	devDir := filepath.Join(cfg.dataDir, "devices")
	var seeded int
	if err := a.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM units WHERE id = '4W'`).Scan(&seeded); err != nil {
		return err
	}
	if seeded == 0 {
		if err := os.MkdirAll(devDir, 0o700); err != nil {
			return err
		}
		now := a.now()
		by := oncall.Actor{Type: audit.ActorSystem, ID: "demo", Role: "admin"}
		var adminToken string
		idents := map[string]*deviceclient.Identity{}
		err := a.db.InTx(ctx, func(tx *sql.Tx) error {
			for _, u := range demoUnits {
				if err := oncall.PutUnit(ctx, tx, by, u); err != nil {
					return err
				}
			}
			for id, name := range demoNames {
				if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: id, Name: name}); err != nil {
					return err
				}
				priv, pub, err := messaging.GenerateKey(messaging.SuiteX25519)
				if err != nil {
					return err
				}
				dev, err := messaging.RegisterDevice(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "demo"},
					messaging.Device{UserID: id, Name: "demo phone", Suite: messaging.SuiteX25519, PublicKey: pub}, now)
				if err != nil {
					return err
				}
				token, err := auth.Issue(ctx, tx, auth.KindDevice, dev.ID, auth.RoleDevice, now)
				if err != nil {
					return err
				}
				idents[id] = &deviceclient.Identity{Server: server, DeviceID: dev.ID, UserID: id, Token: token,
					Suite: messaging.SuiteX25519, PrivateKey: priv}
			}
			for _, u := range demoUnits {
				for role, holders := range demoRoster[u.ID] {
					if err := oncall.PutUnitRole(ctx, tx, by, oncall.UnitRole{UnitID: u.ID, Role: role, Required: true}, now); err != nil {
						return err
					}
					if _, err := oncall.PutRotation(ctx, tx, by, demoRotation(u, role, holders, now), oncall.Edit{Now: now}); err != nil {
						return err
					}
				}
			}
			if err := oncall.PutPolicy(ctx, tx, by, demoPolicy()); err != nil {
				return err
			}
			for _, r := range demoRules() {
				if err := routing.PutRule(ctx, tx, audit.Entry{ActorType: audit.ActorSystem, ActorID: "demo"}, r, now); err != nil {
					return err
				}
			}
			var err error
			adminToken, err = auth.Issue(ctx, tx, auth.KindUser, "demo-admin", auth.RoleAdmin, now)
			return err
		})
		if err != nil {
			return err
		}
		for user, id := range idents {
			if err := id.Save(filepath.Join(devDir, user+".json")); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(cfg.dataDir, "admin.token"), []byte(adminToken+"\n"), 0o600); err != nil {
			return err
		}
		if err := writeDemoSamples(filepath.Join(cfg.dataDir, "samples"), now); err != nil {
			return err
		}
	}
	printDemoHelp(ctx, a, cfg, stdout)
	return nil
}

func writeDemoSamples(dir string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ts := now.UTC().Format("20060102150405")
	samples := map[string]string{
		"1-admit-4W-bed12.hl7": "MSH|^~\\&|ADT|DEMOHOSP|CLARION|DEMOHOSP|" + ts + "||ADT^A01^ADT_A01|DEMO-ADT-" + ts + "|P|2.5.1\r" +
			"EVN|A01|" + ts + "\r" +
			"PID|1||MRN1001^^^DEMOHOSP^MR||TESTPATIENT^ALEX||19700101|F\r" +
			"PV1|1|I|4W^412^12^DEMOHOSP||||1234^DOCTOR^DEMO\r",
		"2-potassium-critical.hl7": "MSH|^~\\&|LAB|DEMOHOSP|CLARION|DEMOHOSP|" + ts + "||ORU^R01^ORU_R01|DEMO-LAB-" + ts + "|P|2.5.1\r" +
			"PID|1||MRN1001^^^DEMOHOSP^MR||TESTPATIENT^ALEX||19700101|F\r" +
			"PV1|1|I|4W^412^12^DEMOHOSP\r" +
			"OBR|1||LAB" + ts + "|2823-3^Potassium^LN|||" + ts + "\r" +
			"OBX|1|NM|2823-3^Potassium [Moles/volume] in Serum or Plasma^LN||6.9|mmol/L^mmol/L^UCUM|3.5-5.1|HH|||F|||" + ts + "\r",
	}
	for name, body := range samples {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func printDemoHelp(ctx context.Context, a *app, cfg serveConfig, w io.Writer) {
	now := a.now()
	rn, _ := oncall.HoldersAt(ctx, a.db, "4W", "RN", now)
	charge, _ := oncall.HoldersAt(ctx, a.db, "4W", "CHARGE_RN", now)
	first := func(s []string) string {
		if len(s) == 0 {
			return "(nobody)"
		}
		return s[0]
	}
	dd := cfg.dataDir
	fmt.Fprintf(w, `
Clarion demo: a sample hospital is loaded in %[1]s
  units 4W and ICU; roles RN and CHARGE_RN; policy RN -> charge RN (after 60 s) -> house supervisor (after 60 s)
  on call on 4W now: RN %[2]s, charge RN %[3]s

Try this, each in its own terminal:
  1. be the RN's phone:        go run ./cmd/clarion device listen --key-file %[1]s/devices/%[2]s.json
  2. be the charge RN's phone: go run ./cmd/clarion device listen --key-file %[1]s/devices/%[3]s.json
  3. admit a patient to 4W bed 12, then send a critical potassium (6.9 mmol/L, HH):
       go run ./cmd/clarion hl7 send --addr %[4]s %[1]s/samples/1-admit-4W-bed12.hl7 %[1]s/samples/2-potassium-critical.hl7
  The RN's phone shows the alert; leave it unanswered and after 60 s it escalates to the charge RN.
  Answer it:  go run ./cmd/clarion device respond --key-file %[1]s/devices/%[2]s.json --message MESSAGE_ID accept
  (or run the phone with --auto-accept)

  Check the audit chain:  go run ./cmd/clarion audit verify --data-dir %[1]s
  Admin API token:        %[1]s/admin.token   (curl -H "Authorization: Bearer $(cat %[1]s/admin.token)" http://%[5]s/v1/alerts)
  Health and metrics:     http://%[5]s/healthz  http://%[5]s/readyz  http://%[5]s/metrics

`, dd, first(rn), first(charge), cfg.mllpAddr, cfg.httpAddr)
}
