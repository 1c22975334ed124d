package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/oncall"
	"github.com/clarion-health/clarion/routing"
)

// rulesDataDir makes a data directory whose SQLite database has unit 4W
// (RN held by rn1 now), the users, the teams and the policies the example
// rule file names.
func rulesDataDir(t *testing.T) string {
	t.Helper()
	t.Setenv("CLARION_DATABASE_URL", "")
	t.Setenv("CLARION_AT_REST_KEYS", "")
	dir := t.TempDir()
	ctx := context.Background()
	d, err := db.Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	by := oncall.Actor{Type: audit.ActorSystem, ID: "test", Role: "admin"}
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		if err := oncall.PutUnit(ctx, tx, by, oncall.Unit{ID: "4W", Name: "4 West", TimeZone: "UTC"}); err != nil {
			return err
		}
		for _, u := range []string{"rn1", "sup", "rt1"} {
			if err := oncall.PutUser(ctx, tx, by, oncall.User{ID: u, Name: u}); err != nil {
				return err
			}
		}
		if _, err := oncall.AddShift(ctx, tx, by, oncall.Shift{UnitID: "4W", Role: "RN", UserID: "rn1",
			Start: now.Add(-time.Hour), End: now.Add(time.Hour)}); err != nil {
			return err
		}
		if err := oncall.PutTeam(ctx, tx, by, oncall.Team{ID: "respiratory", Name: "RT", Members: []string{"rt1"}}, now); err != nil {
			return err
		}
		for _, id := range []string{"nursing", "icu"} {
			if err := oncall.PutPolicy(ctx, tx, by, oncall.Policy{ID: id, Name: id, Steps: []oncall.Step{
				{Targets: []oncall.Target{{Kind: oncall.TargetRole, Role: "RN"}}, DelaySeconds: 60},
				{Targets: []oncall.Target{{Kind: oncall.TargetUser, UserID: "sup"}}}}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRulesCLI(t *testing.T) {
	ctx := context.Background()
	dir := rulesDataDir(t)
	examples := filepath.Join("..", "..", "routing", "testdata", "rules", "examples.yaml")
	run := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := runRules(ctx, args, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	// A bad file: every problem listed, exit 1, nothing applied.
	_, stderr, err := run("load", "--data-dir", dir, filepath.Join("..", "..", "routing", "testdata", "rules", "invalid.yaml"))
	var ec exitCode
	if !errors.As(err, &ec) || ec != 1 || strings.Count(stderr, "\n") < 8 || !strings.Contains(stderr, "nothing was applied") {
		t.Fatalf("load invalid: err %v stderr:\n%s", err, stderr)
	}

	if out, _, err := run("validate", examples); err != nil || !strings.Contains(out, "4 rule(s) valid") {
		t.Fatalf("validate: %v %s", err, out)
	}
	out, stderr, err := run("load", "--data-dir", dir, examples)
	if err != nil || !strings.Contains(out, "created:   critical-potassium, spo2-low-sustained, admit-notice-4w, vent-alarm") {
		t.Fatalf("load: %v\n%s%s", err, out, stderr)
	}
	if out, _, err = run("load", "--data-dir", dir, examples); err != nil || !strings.Contains(out, "unchanged: 4") {
		t.Fatalf("load again: %v\n%s", err, out)
	}

	exported := filepath.Join(t.TempDir(), "export.yaml")
	if _, _, err := run("export", "--data-dir", dir, "--out", exported); err != nil {
		t.Fatal(err)
	}
	if out, _, err = run("load", "--data-dir", dir, exported); err != nil || !strings.Contains(out, "unchanged: 4") {
		t.Fatalf("loading the export: %v\n%s", err, out)
	}

	// Prune with a file of one rule.
	one := filepath.Join(t.TempDir(), "one.yaml")
	b, _ := os.ReadFile(examples)
	head := string(b)[:strings.Index(string(b), "  # 2.")]
	if err := os.WriteFile(one, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, err = run("load", "--data-dir", dir, "--prune", one); err != nil ||
		!strings.Contains(out, "deleted:   admit-notice-4w, spo2-low-sustained, vent-alarm") {
		t.Fatalf("prune: %v\n%s", err, out)
	}

	// Dry run of an HL7 message: the alert, who is paged, the lock screen.
	msg := filepath.Join(t.TempDir(), "k.hl7")
	hl7 := "MSH|^~\\&|LAB|GHH|CLARION|GHH|20260302100000||ORU^R01^ORU_R01|m1|P|2.5.1\n" +
		"PID|1||MRN9||Doe^Jane\nPV1|1|I|4W^412^B\nOBR|1||o1|24323-8\n" +
		"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\n"
	if err := os.WriteFile(msg, []byte(hl7), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = run("test", "--data-dir", dir, msg)
	if err != nil {
		t.Fatalf("test: %v %s", err, stderr)
	}
	var res routing.DryRunResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("dry run output: %v\n%s", err, out)
	}
	if len(res.Matches) != 1 || res.Matches[0].Alert == nil || res.Matches[0].Alert.LockScreen != "PH alert on 4W: open Clarion" ||
		strings.Join(res.Matches[0].PagedNow, ",") != "rn1" || res.Matches[0].Alert.DelayPct != 50 {
		t.Fatalf("dry run: %s", out)
	}
	d, err := db.Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var alerts int
	if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM alerts`).Scan(&alerts); err != nil || alerts != 0 {
		t.Fatalf("the dry run wrote %d alerts (%v)", alerts, err)
	}
	if _, _, err := run("bogus"); err == nil {
		t.Fatal("an unknown subcommand succeeded")
	}
}
