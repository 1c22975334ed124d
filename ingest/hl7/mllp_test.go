package hl7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func frame(s string) string { return "\x0b" + s + "\x1c\r" }

func TestReadFrame(t *testing.T) {
	long := strings.Repeat("0123456789", 10) // longer than the 16-byte reader buffer
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr error // after the frames in want
	}{
		{"one frame", frame("MSH|x"), 0, []string{"MSH|x"}, io.EOF},
		{"empty stream", "", 0, nil, io.EOF},
		{"empty payload", frame(""), 0, []string{""}, io.EOF},
		{"pipelined", frame("a") + frame("b") + frame("c"), 0, []string{"a", "b", "c"}, io.EOF},
		{"garbage before and between", "noise\r\n" + frame("a") + "\x00junk" + frame("b") + "tail", 0, []string{"a", "b"}, io.EOF},
		{"long payload", frame(long) + frame(long), 0, []string{long, long}, io.EOF},
		{"stray end block kept", frame("a\x1cb"), 0, []string{"a\x1cb"}, io.EOF},
		{"stray end block at end", frame("a\x1c"), 0, []string{"a\x1c"}, io.EOF},
		{"unclosed", frame("a") + "\x0bMSH|never closed", 0, []string{"a"}, io.ErrUnexpectedEOF},
		{"end block then EOF", "\x0babc\x1c", 0, nil, io.ErrUnexpectedEOF},
		{"exactly max", frame("12345"), 5, []string{"12345"}, io.EOF},
		{"over max", frame("123456"), 5, nil, ErrFrameTooLarge},
		{"over max in long payload", frame(long), 50, nil, ErrFrameTooLarge},
		{"over max by stray end block", frame("12345\x1c"), 5, nil, ErrFrameTooLarge},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tc := range tests {
		for rname, wrap := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				br := bufio.NewReaderSize(wrap(strings.NewReader(tc.in)), 16)
				for i, want := range tc.want {
					got, err := ReadFrame(br, tc.max)
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					if string(got) != want {
						t.Fatalf("frame %d = %q, want %q", i, got, want)
					}
				}
				if _, err := ReadFrame(br, tc.max); !errors.Is(err, tc.wantErr) {
					t.Fatalf("final error = %v, want %v", err, tc.wantErr)
				}
			})
		}
	}
}

// After ErrFrameTooLarge the rest of the big frame is skipped as garbage
// by the next call (the Server closes the connection instead).
func TestReadFrameAfterTooLarge(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(frame("0123456789") + frame("ok")))
	if _, err := ReadFrame(br, 4); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
	got, err := ReadFrame(br, 4)
	if err != nil || string(got) != "ok" {
		t.Fatalf("next frame = %q, %v", got, err)
	}
}

func TestReadFrameReturnsFreshSlice(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(frame("first")+frame("other")), 16)
	a, _ := ReadFrame(br, 0)
	if _, err := ReadFrame(br, 0); err != nil {
		t.Fatal(err)
	}
	if string(a) != "first" {
		t.Errorf("first payload overwritten: %q", a)
	}
}

func TestReadFrameUnderlyingError(t *testing.T) {
	boom := errors.New("boom")
	for _, in := range []string{"", "\x0bpartial"} {
		br := bufio.NewReader(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom)))
		if _, err := ReadFrame(br, 0); !errors.Is(err, boom) {
			t.Errorf("in %q: err = %v, want wrapped boom", in, err)
		}
	}
}

func TestWriteFrame(t *testing.T) {
	var buf bytes.Buffer
	payloads := []string{"MSH|^~\\&|A\rPID|1\r", "", "x"}
	for _, p := range payloads {
		if err := WriteFrame(&buf, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.HasPrefix(buf.String(), "\x0bMSH") || !strings.HasSuffix(buf.String(), "x\x1c\r") {
		t.Errorf("framing wrong: %q", buf.String())
	}
	br := bufio.NewReader(&buf)
	for _, p := range payloads {
		got, err := ReadFrame(br, 0)
		if err != nil || string(got) != p {
			t.Errorf("round trip = %q, %v; want %q", got, err, p)
		}
	}
	if err := WriteFrame(errWriter{}, nil); err == nil {
		t.Error("want write error")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("closed") }
