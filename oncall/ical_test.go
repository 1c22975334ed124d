package oncall

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWriteICalFormat(t *testing.T) {
	start := time.Date(2026, 3, 7, 19, 0, 0, 0, mustLoc(t, "America/New_York"))
	long := strings.Repeat("Überwachung, Station; Nacht ", 8) // multi-byte runes across the fold
	var b bytes.Buffer
	err := WriteICal(&b, "On call: RN 4W", []FeedEvent{{UID: "x@clarion", Summary: long, Start: start, End: start.Add(11 * time.Hour)}},
		time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "END:VCALENDAR\r\n") || strings.Contains(strings.ReplaceAll(out, "\r\n", ""), "\n") {
		t.Fatalf("lines must end in CRLF:\n%q", out)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(line) > 75 {
			t.Fatalf("line of %d octets: %q", len(line), line)
		}
		if !utf8.ValidString(line) {
			t.Fatalf("fold split a UTF-8 sequence: %q", line)
		}
	}
	for _, want := range []string{"DTSTART:20260308T000000Z", "DTEND:20260308T110000Z", "DTSTAMP:20260301T120000Z", "UID:x@clarion",
		`SUMMARY:Überwachung\, Station\; Nacht`} {
		if !strings.Contains(strings.ReplaceAll(out, "\r\n ", ""), want) {
			t.Fatalf("feed lacks %q:\n%s", want, out)
		}
	}
	unfolded := strings.ReplaceAll(out, "\r\n ", "")
	if !strings.Contains(unfolded, "SUMMARY:"+escapeICal(long)+"\r\n") {
		t.Fatal("unfolding does not restore the summary")
	}
}
