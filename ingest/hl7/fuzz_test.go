package hl7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzSeeds are the fixtures plus, when present, the shared corpus.
func fuzzSeeds(f *testing.F) [][]byte {
	files := fixtureFiles(f)
	if _, err := os.Stat(corpusDir); err == nil {
		more, _ := filepath.Glob(filepath.Join(corpusDir, "*.hl7"))
		files = append(files, more...)
	}
	var seeds [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte("MSH|^~\\&#|A|B|C|D|2024||ORU^R01|1|P|2.7\rOBX|1|SN|x||>^1\\X41\\"))
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error %T is not a *ParseError", err)
			}
			checkACK(t, BuildRejectFor(raw, pe, now, "R"))
			return
		}
		for _, p := range []string{"MSH-9.2", "PID-3(2).4.1", "OBX(2)-5", "ZZZ-1"} {
			_ = m.Get(p)
		}
		var fields [31]Value
		for i := range m.Len() {
			s := m.SegmentAt(i)
			s.Fields(fields[:])
			for i := range min(s.FieldCount(), 30) {
				v := s.Field(i + 1)
				if v != fields[i+1] {
					t.Fatalf("Fields and Field disagree on %s-%d", s.Name(), i+1)
				}
				// Whatever the declared character set, values read are UTF-8.
				if str := v.String(); !utf8.ValidString(str) {
					t.Fatalf("%s-%d decodes to invalid UTF-8 %q", s.Name(), i+1, str)
				}
				_ = v.Rep(2).Comp(2).Sub(2).String()
				_ = v.Reps() + v.Comps() + v.Comp(1).Subs()
				_ = v.Truncated()
			}
		}
		_, err = ToEvent(m)
		var pe *ParseError
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("ToEvent error %T is not a *ParseError", err)
		}
		code := "AA"
		if pe != nil {
			code = "AE"
		}
		checkACK(t, BuildACK(m, code, pe, now, "A"))
	})
}

// checkACK: every ACK must frame cleanly and parse, whatever it answers.
func checkACK(t *testing.T, ack []byte) {
	t.Helper()
	if bytes.ContainsAny(ack, "\x0b\x1c\n") {
		t.Fatalf("ACK holds LF or MLLP block bytes: %q", ack)
	}
	m, err := Parse(ack)
	if err != nil {
		t.Fatalf("ACK does not parse: %v\n%q", err, ack)
	}
	if m.Get("MSA-1") == "" {
		t.Fatalf("ACK without MSA-1: %q", ack)
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		var b bytes.Buffer
		WriteFrame(&b, s)
		f.Add(b.Bytes(), 1<<20)
	}
	f.Add([]byte("junk\x0ba\x1cb\x1c\r\x0b"), 3)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		max %= 1 << 16
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for range len(in) + 1 {
			p, err := ReadFrame(br, max)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return
				}
				if !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				continue
			}
			if max > 0 && len(p) > max {
				t.Fatalf("payload %d > max %d", len(p), max)
			}
			// A payload written back must read back the same.
			var b bytes.Buffer
			WriteFrame(&b, p)
			q, err := ReadFrame(bufio.NewReader(&b), 0)
			if err != nil || !bytes.Equal(p, q) {
				t.Fatalf("round trip: %q -> %q, %v", p, q, err)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
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
	var size int
	for _, m := range msgs {
		size += len(m)
	}
	b.SetBytes(int64(size / len(msgs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m, err := Parse(msgs[i%len(msgs)])
		if err != nil {
			b.Fatal(err)
		}
		_ = m.Get("MSH-9.1")
		_ = m.Get("MSH-10")
		_ = m.Get("PID-3.1")
		_ = m.Get("PV1-3.1")
		_ = m.Get("OBX-5")
		_, _ = ToEvent(m)
	}
}
