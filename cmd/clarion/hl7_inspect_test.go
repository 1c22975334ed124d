package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateInspect = flag.Bool("update", false, "rewrite the hl7 inspect golden files")

// Each fixture under testdata/hl7_inspect has its expected JSON beside it
// (NAME.golden.json); go test -run TestHL7Inspect -update rewrites them.
func TestHL7Inspect(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "hl7_inspect", "*.hl7"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := runHL7Inspect(context.Background(), []string{file}, &stdout, &stderr); err != nil {
				t.Fatalf("runHL7Inspect: %v (stderr %s)", err, stderr.String())
			}
			var report inspectReport
			if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
				t.Fatalf("output is not JSON: %v", err)
			}
			golden := strings.TrimSuffix(file, ".hl7") + ".golden.json"
			if *updateInspect {
				if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(stdout.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update after checking):\n%s", golden, stdout.String())
			}
		})
	}
}

func TestHL7InspectUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	for _, args := range [][]string{nil, {"a", "b"}, {filepath.Join(t.TempDir(), "missing.hl7")}} {
		if err := runHL7Inspect(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("runHL7Inspect(%q) succeeded", args)
		}
	}
	// An empty file is reported as a parse error, not a crash.
	empty := filepath.Join(t.TempDir(), "empty.hl7")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if err := runHL7Inspect(context.Background(), []string{empty}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), `"stage": "parse"`) || !strings.Contains(stdout.String(), `"code": 100`) {
		t.Errorf("empty file: %s", stdout.String())
	}
}
