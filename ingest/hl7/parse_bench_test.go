package hl7

import (
	"os"
	"path/filepath"
	"testing"
)

// benchMsgs are the fixtures and every message of the shared corpus.
func benchMsgs(b *testing.B) [][]byte {
	var msgs [][]byte
	for _, name := range fixtureFiles(b) {
		raw, _ := os.ReadFile(name)
		msgs = append(msgs, raw)
	}
	if _, err := os.Stat(corpusDir); err == nil {
		files, _ := filepath.Glob(filepath.Join(corpusDir, "*.hl7"))
		for _, name := range files {
			raw, _ := os.ReadFile(name)
			msgs = append(msgs, SplitBatch(raw)...)
		}
	}
	return msgs
}

// BenchmarkParseOnly is Parse alone: index segments, check structure and
// character set, copy the text once.
func BenchmarkParseOnly(b *testing.B) {
	msgs := benchMsgs(b)
	var size int
	for _, m := range msgs {
		size += len(m)
	}
	b.SetBytes(int64(size / len(msgs)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := Parse(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkToEvent is the mapping alone, on messages parsed beforehand
// (those that do not map return their error, as they would in service).
func BenchmarkToEvent(b *testing.B) {
	var ms []*Message
	for _, raw := range benchMsgs(b) {
		m, _ := Parse(raw)
		ms = append(ms, m)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, _ = ToEvent(ms[i%len(ms)])
	}
}
