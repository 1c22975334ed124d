package hl7

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusDir is the shared public sample corpus; it is not part of the
// repository, so tests that need it skip when it is absent.
const corpusDir = "../../../shared/corpus/hl7v2"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, raw []byte) *Message {
	t.Helper()
	m, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

// msg joins segments with CR.
func msg(segs ...string) []byte { return []byte(strings.Join(segs, "\r") + "\r") }

// corpusFiles lists the corpus, or skips the test when it is absent.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	if _, err := os.Stat(corpusDir); err != nil {
		t.Skipf("shared corpus not available (%s): %v", corpusDir, err)
	}
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.hl7"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus files in %s: %v", corpusDir, err)
	}
	return files
}

func fixtureFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	return files
}

func requireParseError(t *testing.T, err error) *ParseError {
	t.Helper()
	pe, ok := err.(*ParseError)
	if !ok {
		t.Fatalf("error %T %v is not a *ParseError", err, err)
	}
	return pe
}
