package hl7

import (
	"strconv"
	"strings"
	"testing"
)

// Malformed input at the parse and map level: each case names the table
// 0357 code and the location the sender is told (connection-level cases
// live with the listener's tests).
func TestMalformed(t *testing.T) {
	const mshA01 = `MSH|^~\&|APP|FAC|R|RF|20240101120000||ADT^A01|CTRL1|P|2.5`
	hdr := func(msh9 string) string {
		return `MSH|^~\&|APP|FAC|R|RF|20240101120000||` + msh9 + `|CTRL1|P|2.5`
	}
	oru := func(obx ...string) []byte {
		return msg(append([]string{hdr("ORU^R01"), "PID|1||MRN1"}, obx...)...)
	}
	r40 := func(obx ...string) []byte {
		return msg(append([]string{hdr("ORU^R40"), "PID|1||MRN1", "OBR|1||7^AR"}, obx...)...)
	}
	const evtOBX = "OBX|1|ST|196648^MDC_EVT_HI^MDC|1.1.1.1|high||||||F"
	tests := []struct {
		name string
		raw  []byte
		want string // code and ParseError.Location()
	}{
		// Structure (Parse).
		{"empty", nil, "100 MSH"},
		{"blank lines only", []byte("\r\n \r\n"), "100 MSH"},
		{"first segment not MSH", msg("PID|1||X", mshA01), "100 MSH"},
		{"truncated MSH: id only", []byte("MSH"), "101 MSH-1"},
		{"truncated MSH: separator only", []byte("MSH|"), "101 MSH-2"},
		{"truncated MSH: short encoding chars", []byte("MSH|^~"), "101 MSH-2"},
		{"truncated MSH: no type", []byte(`MSH|^~\&|A|B|C|D|20240101`), "101 MSH-9.1"},
		{"wrong delimiters: repeated", []byte(`MSH|^^\&|A|B`), "102 MSH-2"},
		{"wrong delimiters: letter", []byte(`MSH|^~\A|A|B`), "102 MSH-2"},
		{"wrong delimiters: six encoding chars", []byte(`MSH|^~\&#!|A`), "102 MSH-2"},
		{"wrong delimiters: field separator is a digit", []byte(`MSH1^~\&1A`), "102 MSH-2"},
		{"wrong delimiters: field separator reused as component", []byte(`MSH|||~\&|A`), "101 MSH-2"},
		{"missing MSH-12", msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P`), "101 MSH-12.1"},
		{"lower-case segment id", msg(mshA01, "pid|1||X"), "100"},
		{"segment id too short", msg(mshA01, "PI|1||X"), "100"},
		{"line break inside a field", msg(mshA01, "NTE|1||one\ntwo"), "100"},
		{"invalid UTF-8", msg(mshA01, "PID|1||X|\xff"), "102 PID-4"},
		{"invalid UTF-8 under MSH-18 ASCII", msg(mshA01+"||||||ASCII", "PID|1||X|\xe9t\xe9"), "102 PID-4"},
		{"unsupported MSH-18", msg(mshA01+"||||||ISO IR87", "PID|1||X"), "103 MSH-18"},
		{"unsupported MSH-18 UTF-16", msg(mshA01+"||||||UNICODE UTF-16", "PID|1||X"), "103 MSH-18"},

		// The header, as ToEvent reads it.
		{"missing MSH-10", msg(`MSH|^~\&|A|F|R|RF|20240101||ADT^A03||P|2.5`, "PID|1||X"), "101 MSH-10"},
		{"no sender", msg(`MSH|^~\&|||R|RF|20240101||ADT^A03|C|P|2.5`, "PID|1||X"), "101 MSH-3.1"},
		{"version 3", msg(`MSH|^~\&|A|F|R|RF|20240101||ADT^A03|C|P|3.0`, "PID|1||X"), "203 MSH-12.1"},
		{"version not a number", msg(`MSH|^~\&|A|F|R|RF|20240101||ADT^A03|C|P|v2`, "PID|1||X"), "203 MSH-12.1"},
		{"unknown message type", msg(hdr("ZZZ^Z01"), "PID|1||X"), "200 MSH-9.1"},
		{"order message", msg(hdr("ORM^O01"), "PID|1||X"), "200 MSH-9.1"},
		{"ADT unsupported trigger", msg(hdr("ADT^A05"), "PID|1||X"), "201 MSH-9.2"},
		{"ADT without trigger", msg(hdr("ADT"), "PID|1||X"), "201 MSH-9.2"},
		{"ORU unsupported trigger", msg(hdr("ORU^R30"), "PID|1||X"), "201 MSH-9.2"},
		{"bad MSH-7", msg(`MSH|^~\&|A|F|R|RF|2024-01-01||ADT^A03|C|P|2.5`, "PID|1||X"), "102 MSH-7.1"},
		{"no MSH-7 and no EVN", msg(`MSH|^~\&|A|F|R|RF|||ADT^A03|C|P|2.5`, "PID|1||X"), "101 MSH-7.1"},
		{"bad EVN-2", msg(hdr("ADT^A03"), "EVN|A03|20241301", "PID|1||X"), "102 EVN-2.1"},

		// ADT.
		{"no PID", msg(hdr("ADT^A03"), "PV1|1|I|W"), "100 PID"},
		{"empty PID-3.1", msg(hdr("ADT^A03"), "PID|1||^^^AUTH"), "101 PID-3.1"},
		{"A01 without PV1", msg(hdr("ADT^A01"), "PID|1||X"), "101 PV1-3.1"},
		{"A02 without PV1-3.1", msg(hdr("ADT^A02"), "PID|1||X", "PV1|1|I|^12^B"), "101 PV1-3.1"},
		{"A17 without second PID", msg(hdr("ADT^A17"), "PID|1||X", "PV1|1|I|4W^1^A"), "100 PID(2)"},
		{"A17 without second PV1", msg(hdr("ADT^A17"), "PID|1||X", "PV1|1|I|4W^1^A", "PID|2||Y"), "100 PV1(2)"},
		{"A17 without first PV1", msg(hdr("ADT^A17"), "PID|1||X", "PID|2||Y", "PV1|1|I|4W^1^B"), "100 PV1"},
		{"A17 second PID without id", msg(hdr("ADT^A17"), "PID|1||X", "PV1|1|I|4W", "PID|2||^^^GHH", "PV1|1|I|4W"), "101 PID(2)-3.1"},
		{"A40 without MRG", msg(hdr("ADT^A40"), "PID|1||X"), "100 MRG"},
		{"A40 MRG without id", msg(hdr("ADT^A40"), "PID|1||X", "MRG|^^^GHH"), "101 MRG-1.1"},

		// ORU^R01.
		{"ORU without OBX", oru(), "100 OBX"},
		{"OBX without code", oru("OBX|1|NM|^Potassium||6.9"), "101 OBX-3.1"},
		{"second OBX without code", oru("OBX|1|NM|2823-3^K^LN||6.9", "OBX|2|NM|||1"), "101 OBX(2)-3.1"},
		{"non-numeric NM", oru("OBX|1|NM|2823-3^K^LN||6.9", "OBX|2|NM|2823-3^K^LN||high"), "102 OBX(2)-5"},
		{"NM with exponent", oru("OBX|1|NM|2823-3^K^LN||1e3"), "102 OBX-5"},
		{"NM Inf", oru("OBX|1|NM|2823-3^K^LN||Inf"), "102 OBX-5"},
		{"NM two dots", oru("OBX|1|NM|2823-3^K^LN||1.2.3"), "102 OBX-5"},
		{"SN bad comparator", oru("OBX|1|SN|2823-3^K^LN||!!^5"), "102 OBX-5"},
		{"SN not numeric", oru("OBX|1|SN|2823-3^K^LN||>^ten"), "102 OBX-5"},
		{"bad OBX-14", oru("OBX|1|NM|2823-3^K^LN||6.9||||||F|||202499"), "102 OBX-14.1"},

		// ORU^R40.
		{"R40 without OBX", r40(), "100 OBX"},
		{"R40 without an MDC_EVT event", r40("OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|99"), "101 OBX-3"},
		{"R40 event coded by number only", r40("OBX|1|ST|196648^^MDC|1.1.1.1|high"), "101 OBX-3"},
		{"R40 without patient", msg(hdr("ORU^R40"), "OBR|1||7^AR", evtOBX), "101 PID-3.1"},
		{"R40 bad metric value", r40(evtOBX, "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|n/a"), "102 OBX(2)-5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.raw)
			if err == nil {
				_, err = ToEvent(m)
			}
			if err == nil {
				t.Fatalf("accepted, want %s", tc.want)
			}
			pe := requireParseError(t, err)
			if got := strings.TrimSpace(strconv.Itoa(pe.Code) + " " + pe.Location()); got != tc.want {
				t.Errorf("got %q (%v), want %q", got, pe, tc.want)
			}
		})
	}
}
