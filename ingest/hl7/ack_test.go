package hl7

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

var ackNow = time.Date(2024, 3, 5, 14, 30, 0, 0, time.FixedZone("", -5*3600))

func TestBuildACK(t *testing.T) {
	pidErr := &ParseError{Code: 101, Segment: "PID", SegmentSeq: 1, Field: 3, Component: 1, Msg: "patient identifier is required"}
	tests := []struct {
		name    string
		orig    []byte
		code    string
		perr    *ParseError
		ctrl    string
		want    map[string]string
		wantErr bool
	}{
		{"accept", readFixture(t, "adt_a01.hl7"), "AA", nil, "ACK-1", map[string]string{
			"MSH-2": `^~\&`, "MSH-3": "CLARION", "MSH-4": "GHH", "MSH-5": "EPIC", "MSH-6": "GHH",
			"MSH-7": "20240305143000-0500", "MSH-9": "ACK^A01^ACK", "MSH-10": "ACK-1",
			"MSH-11": "P", "MSH-12": "2.5.1", "MSA-1": "AA", "MSA-2": "MSG-A01-0001", "MSA-3": "",
		}, false},
		{"error", readFixture(t, "oru_r01_potassium.hl7"), "AE", pidErr, "ACK-2", map[string]string{
			"MSH-9": "ACK^R01^ACK", "MSA-1": "AE", "MSA-2": "LAB-0042",
			"MSA-3": "101 required field missing at PID-3.1: patient identifier is required",
			"ERR-1": "",
			"ERR-2": "PID^1^3^1^1",
			"ERR-3": "101^Required field missing^HL70357",
			"ERR-4": "E",
			"ERR-8": "patient identifier is required",
		}, true},
		{"custom delimiters copied", readFixture(t, "custom_delims.hl7"), "AA", nil, "A|B^C", map[string]string{
			"MSH-1": "#", "MSH-2": "$*!%", "MSH-3": "CLARION", "MSH-5": "ADTAPP", "MSH-6": "SITE B",
			"MSH-9.2": "A01", "MSH-10": "A|B^C", "MSA-2": "CUST-1", "MSH-12": "2.4",
		}, false},
		{"truncation char kept", readFixture(t, "truncation.hl7"), "AA", nil, "x#y", map[string]string{
			"MSH-2": `^~\&#`, "MSH-10": "x#y", "MSA-2": "TR-1", "MSH-12": "2.7",
		}, false},
		{"escaped control id and message", readFixture(t, "adt_a01.hl7"), "AR",
			&ParseError{Code: 207, Msg: `bad | ^ ~ \ & text`}, `c|^~\&` + "\r\n", map[string]string{
				"MSH-10": `c|^~\&` + "\r\n", "ERR-2": "", "ERR-3.1": "207", "ERR-8": `bad | ^ ~ \ & text`,
			}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ack := BuildACK(mustParse(t, tc.orig), tc.code, tc.perr, ackNow, tc.ctrl)
			if bytes.ContainsAny(ack, "\n\x0b\x1c") {
				t.Errorf("ACK holds LF or MLLP block bytes: %q", ack)
			}
			if !bytes.HasSuffix(ack, []byte("\r")) {
				t.Error("ACK does not end with CR")
			}
			m := mustParse(t, ack)
			for path, want := range tc.want {
				if got := m.Get(path); got != want {
					t.Errorf("Get(%q) = %q, want %q", path, got, want)
				}
			}
			if _, ok := m.Segment("ERR", 1); ok != tc.wantErr {
				t.Errorf("ERR present = %v, want %v", ok, tc.wantErr)
			}
		})
	}
}

func TestBuildACKSanitizesCopiedFields(t *testing.T) {
	// A control id holding an MLLP end block must not end the reply frame.
	orig := mustParse(t, msg("MSH|^~\\&|A|F|R|RF|20240101||ADT^A01|ID\x1c\x0bX|P|2.5", "PID|1||X"))
	ack := BuildACK(orig, "AA", nil, ackNow, "1")
	if bytes.ContainsAny(ack, "\x0b\x1c") {
		t.Fatalf("ACK holds block bytes: %q", ack)
	}
	if got := mustParse(t, ack).Get("MSA-2"); got != "IDX" {
		t.Errorf("MSA-2 = %q", got)
	}
}

func TestBuildRejectFor(t *testing.T) {
	perr := &ParseError{Code: 102, Segment: "PID", SegmentSeq: 1, Field: 5, Msg: "invalid UTF-8"}
	tests := []struct {
		name string
		raw  []byte
		want map[string]string
	}{
		{"recoverable MSH", msg(`MSH|^~\&|SND|SF|RCV|RF|20240101||ADT^A01|C-9|T|2.4`, "PID|1||X|\xff"), map[string]string{
			"MSH-3": "RCV", "MSH-4": "RF", "MSH-5": "SND", "MSH-6": "SF", "MSH-9": "ACK^A01^ACK",
			"MSH-10": "ACK-9", "MSH-11": "T", "MSH-12": "2.4", "MSA-1": "AR", "MSA-2": "C-9", "ERR-2": "PID^1^5^1",
		}},
		{"custom delimiters and BOM", append([]byte("\xef\xbb\xbf"), msg(`MSH#$*!%#SND#SF#RCV#RF#2024##ADT$A03#C-7#P`)...), map[string]string{
			"MSH-1": "#", "MSH-3": "RCV", "MSH-9": "ACK$A03$ACK", "MSA-2": "C-7", "MSH-12": "2.5.1",
		}},
		{"MSH after junk", msg("garbage line", `MSH|^~\&|SND|SF|RCV|RF|2024||ORU^R01|C-8|P|2.5`), map[string]string{
			"MSA-2": "C-8", "MSH-9": "ACK^R01^ACK",
		}},
		{"garbage", []byte("\x00\x01not hl7 at all"), map[string]string{
			"MSH-2": `^~\&`, "MSH-3": "", "MSH-9": "ACK^^ACK", "MSH-12": "2.5.1", "MSA-1": "AR", "MSA-2": "", "ERR-3.1": "102",
		}},
		{"broken delimiters", []byte("MSH|^^^^|SND"), map[string]string{"MSH-2": `^~\&`, "MSH-5": "", "MSA-1": "AR"}},
		{"invalid utf8 in copied field", msg("MSH|^~\\&|S\xffND|SF|RCV|RF|2024||ADT^A01|C\xfe|P|2.5"), map[string]string{
			"MSH-5": "S\uFFFDND", "MSA-2": "C\uFFFD",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ack := BuildRejectFor(tc.raw, perr, ackNow, "ACK-9")
			m := mustParse(t, ack)
			for path, want := range tc.want {
				if got := m.Get(path); got != want {
					t.Errorf("Get(%q) = %q, want %q", path, got, want)
				}
			}
		})
	}
}

func TestBuildACKNilOrig(t *testing.T) {
	ack := BuildACK(nil, "AR", nil, ackNow, "1")
	if m := mustParse(t, ack); m.Get("MSA-1") != "AR" || strings.Contains(string(ack), "ERR") {
		t.Errorf("unexpected ACK %q", ack)
	}
}
