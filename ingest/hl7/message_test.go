package hl7

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFixtures(t *testing.T) {
	tests := []struct {
		file string
		want map[string]string // path -> decoded value
		segs int
	}{
		{"adt_a01.hl7", map[string]string{
			"MSH-1": "|", "MSH-2": `^~\&`, "MSH-3": "EPIC", "MSH-9": "ADT^A01^ADT_A01",
			"MSH-9.2": "A01", "MSH-10": "MSG-A01-0001", "MSH-12": "2.5.1",
			"PID-3.1": "MRN12345", "PID-3.4": "GHH&1.2.840.1&ISO", "PID-3.4.1": "GHH",
			"PID-3.4.2": "1.2.840.1", "PID-3(2).1": "ALT999", "PID-3(2).4": "OTHER",
			"PID-3(3).1": "", "PID-5.2": "ALPHA", "PV1-3.2": "412", "PID-99": "", "ZZZ-1": "",
		}, 4},
		{"adt_a03_lf.hl7", map[string]string{"MSH-9.2": "A03", "EVN-2": "20240306091000+0100", "PV1-2": "I"}, 4},
		{"custom_delims.hl7", map[string]string{
			"MSH-1": "#", "MSH-2": "$*!%", "MSH-4": "SITE B", "MSH-9.1": "ADT", "MSH-9.2": "A01",
			"PID-3.1": "P-77", "PID-3.4.2": "9.9", "PID-3(2).1": "X1", "PV1-3.4": "SITE B",
			"NTE-3": "pipe | caret ^ tilde ~ amp & hash # dollar $",
		}, 4},
		{"truncation.hl7", map[string]string{
			"MSH-2": `^~\&#`, "MSH-7": "20240308101010.1234-0500",
			"OBX-3.2": "Sodium [Moles/volume#", "OBX-8(2)": "L", "NTE-3": "hash # escaped",
		}, 4},
		{"escapes_crlf_bom.hl7", map[string]string{
			"MSH-3": "LAB", "PID-3.1": "A&B",
			"OBX-5":  "Line one\nLine two: a|b^c&d~e\\f Hé \\Zunknown\\ end",
			"OBX-11": "F",
		}, 3},
		{"oru_r01_potassium.hl7", map[string]string{
			"OBX-5": "6.9", "OBX(2)-5": ">^200", "OBX(2)-5.2": "200", "OBX(1)-3.1": "2823-3",
			"OBX(3)-3": "", "OBX-6.1": "mmol/L", "OBX(2)-8(2)": "A",
		}, 7},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			m := mustParse(t, readFixture(t, tc.file))
			if got := len(m.Segments()); got != tc.segs {
				t.Errorf("segments = %d, want %d", got, tc.segs)
			}
			for path, want := range tc.want {
				if got := m.Get(path); got != want {
					t.Errorf("Get(%q) = %q, want %q", path, got, want)
				}
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	m := mustParse(t, readFixture(t, "adt_a01.hl7"))
	pid, ok := m.Segment("PID", 1)
	if !ok || pid.Name() != "PID" {
		t.Fatalf("Segment(PID,1) = %v, %v", pid.Name(), ok)
	}
	if _, ok := m.Segment("PID", 2); ok {
		t.Error("Segment(PID,2) found, want absent")
	}
	f := pid.Field(3)
	if f.Reps() != 2 || f.Rep(1).Comps() != 5 || f.Rep(2).Comp(4).String() != "OTHER" {
		t.Errorf("reps=%d comps=%d rep2.4=%q", f.Reps(), f.Rep(1).Comps(), f.Rep(2).Comp(4))
	}
	if got := f.Comp(4).Sub(3).String(); got != "ISO" {
		t.Errorf("PID-3.4.3 = %q", got)
	}
	// Asking below the last level only ever has a first piece.
	if got := f.Comp(1).Sub(1).Sub(1).String(); got != "MRN12345" {
		t.Errorf("nested Sub(1) = %q", got)
	}
	if !f.Comp(1).Sub(2).IsEmpty() || !pid.Field(0).IsEmpty() || !f.Rep(0).IsEmpty() {
		t.Error("out of range accessors should be empty")
	}
	msh := m.MSH()
	if msh.Field(1).String() != "|" || msh.Field(2).Comp(2).String() != "" || msh.Field(2).Comp(1).String() != `^~\&` {
		t.Error("MSH-1/MSH-2 must be returned verbatim and never split")
	}
	if msh.FieldCount() != 12 || pid.FieldCount() != 8 {
		t.Errorf("FieldCount msh=%d pid=%d", msh.FieldCount(), pid.FieldCount())
	}
	if m.Count("PV1") != 1 || m.Delimiters() != DefaultDelimiters() {
		t.Error("Count or Delimiters wrong")
	}
	if v := mustParse(t, msg("MSH|^~\\&|A|B|||20240101||ADT^A01|1|P|2.5", `PID|1||""`)).Get("PID-3"); v != `""` {
		t.Errorf("explicit null = %q", v)
	}
}

func TestGetPaths(t *testing.T) {
	m := mustParse(t, readFixture(t, "oru_r01_potassium.hl7"))
	tests := []struct {
		path, want string
	}{
		{"OBX-3.1", "2823-3"},
		{"OBX(1)-3.1", "2823-3"},
		{"OBX(2)-3.1", "2345-7"},
		{"OBX(2)-8(1)", "H"},
		{"OBX(2)-8(2).1", "A"},
		{"OBX(2)-8(2).1.1", "A"},
		{"PID-3", "MRN12345^^^GHH^MR"},
		{"OBX-", ""},
		{"OBX-0", ""},
		{"OBX(0)-3", ""},
		{"OBX-3.", ""},
		{"OBX-3x", ""},
		{"obx-3", ""},
		{"OBX(2-3", ""},
		{"", ""},
		{"OBX-3(1", ""},
		{"OBX-9999999", ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if got := m.Get(tc.path); got != tc.want {
				t.Errorf("Get(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestDecodeEscapes(t *testing.T) {
	d := DefaultDelimiters()
	d.Truncation = '#'
	tests := []struct{ name, in, want string }{
		{"plain", "abc", "abc"},
		{"delimiters", `\F\\S\\T\\R\\E\`, `|^&~\`},
		{"truncation", `a\P\b`, "a#b"},
		{"line break", `a\.br\b`, "a\nb"},
		{"highlight removed", `\H\bold\N\`, "bold"},
		{"hex", `\X414243\`, "ABC"},
		{"hex utf8", `\XC3A9\`, "é"},
		{"hex invalid utf8 replaced", `\XFF\`, "\uFFFD"},
		{"hex odd length kept", `\X414\`, `\X414\`},
		{"hex bad digit kept", `\XZZ\`, `\XZZ\`},
		{"unknown kept", `\Zabc\`, `\Zabc\`},
		{"unterminated kept", `a\F`, `a\F`},
		{"empty sequence kept", `a\\b`, `a\\b`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := d.decode(tc.in, false); got != tc.want {
				t.Errorf("decode(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	// \P\ means nothing when the message declares no truncation character.
	if got := DefaultDelimiters(); got.Truncation != 0 {
		t.Fatal("default has a truncation char")
	} else if s := got.decode(`\P\`, false); s != `\P\` {
		t.Errorf("\\P\\ without truncation char = %q", s)
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	for _, d := range []Delimiters{DefaultDelimiters(), {'#', '$', '*', '!', '%', '@'}} {
		for _, s := range []string{"", "plain", `a|b^c~d\e&f#g`, "cr\rlf\n\x0b\x1c end", "é ü 漢", "#$*!%@"} {
			enc := Escape(s, d)
			if strings.ContainsAny(enc, "\r\n\x0b\x1c"+string([]byte{d.Field, d.Component, d.Repetition, d.Subcomponent})) {
				t.Errorf("Escape(%q) = %q still holds a delimiter or control char", s, enc)
			}
			if d.Truncation != 0 && strings.IndexByte(enc, d.Truncation) >= 0 {
				t.Errorf("Escape(%q) = %q holds the truncation char", s, enc)
			}
			if got := d.decode(enc, false); got != s {
				t.Errorf("decode(Escape(%q)) = %q", s, got)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	const msh = `MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5`
	tests := []struct {
		name  string
		raw   []byte
		code  int
		seg   string
		field int
	}{
		{"empty", nil, 100, "MSH", 0},
		{"blank lines", []byte("\r\n\r\n  \r"), 100, "MSH", 0},
		{"bom only", []byte("\xef\xbb\xbf"), 100, "MSH", 0},
		{"not MSH first", msg("PID|1||X", msh), 100, "MSH", 0},
		{"MSH alone", []byte("MSH"), 101, "MSH", 1},
		{"no encoding chars", []byte("MSH|"), 101, "MSH", 2},
		{"short encoding chars", []byte("MSH|^~|A"), 101, "MSH", 2},
		{"too many encoding chars", []byte(`MSH|^~\&#!|A`), 102, "MSH", 2},
		{"repeated delimiter", []byte(`MSH|^~\^|A`), 102, "MSH", 2},
		{"alphanumeric delimiter", []byte(`MSHA^~\&A`), 102, "MSH", 2},
		{"missing MSH-9", msg(`MSH|^~\&|A|B|C|D|20240101|||1|P|2.5`), 101, "MSH", 9},
		{"missing MSH-12", msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P`), 101, "MSH", 12},
		{"invalid utf8", msg(msh, "PID|1||ok|\xff\xfe"), 102, "PID", 4},
		{"invalid utf8 in MSH", msg("MSH|^~\\&|A|B\xc3|C|D|20240101||ADT^A01|1|P|2.5"), 102, "MSH", 4},
		{"bad segment id", msg(msh, "pid|1"), 100, "", 0},
		{"embedded newline", msg(msh, "NTE|1||first line\nsecond line"), 100, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.raw)
			if err == nil {
				t.Fatalf("Parse succeeded with %d segments, want error %d", len(m.Segments()), tc.code)
			}
			pe := requireParseError(t, err)
			if pe.Code != tc.code || pe.Segment != tc.seg || pe.Field != tc.field {
				t.Errorf("got code=%d seg=%q field=%d (%v), want %d %q %d", pe.Code, pe.Segment, pe.Field, pe, tc.code, tc.seg, tc.field)
			}
		})
	}
}

// Error text must name places and problems, never values (PHI).
func TestParseErrorHasNoValues(t *testing.T) {
	secret := "SECRETPATIENTNAME"
	raws := [][]byte{
		msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5`, "PID|1||"+secret+"\xff"),
		msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5`, secret[:2]+"|x"),
		msg(secret + "|x"),
	}
	for _, raw := range raws {
		_, err := Parse(raw)
		if err == nil {
			t.Fatal("expected error")
		}
		if strings.Contains(err.Error(), secret[:2]+"|") || strings.Contains(err.Error(), secret) {
			t.Errorf("error text leaks input: %q", err)
		}
	}
	e := &ParseError{Code: 101, Segment: "OBX", SegmentSeq: 2, Field: 5, Component: 1, Msg: "value missing"}
	if got, want := e.Error(), "hl7: 101 required field missing at OBX(2)-5.1: value missing"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestLineEndings(t *testing.T) {
	base := []string{`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5`, "PID|1||X1", "PV1|1|I|W"}
	tests := []struct{ name, raw string }{
		{"CR", strings.Join(base, "\r")},
		{"LF", strings.Join(base, "\n")},
		{"CRLF", strings.Join(base, "\r\n")},
		{"mixed with trailing blanks", base[0] + "\r\n" + base[1] + "\n" + base[2] + "\r\r\n\n"},
		{"BOM and leading blank line", "\xef\xbb\xbf\r\n" + strings.Join(base, "\r")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustParse(t, []byte(tc.raw))
			if n := len(m.Segments()); n != 3 {
				t.Errorf("segments = %d", n)
			}
			if got := m.Get("PV1-3"); got != "W" {
				t.Errorf("PV1-3 = %q", got)
			}
		})
	}
}

// corpusExpect holds per-file facts read off the published samples.
var corpusExpect = map[string]struct {
	msh9, msh10, pid31 string
	segs               int
}{
	"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7":          {"ORU^R01^ORU_R01", "PHELR.1.45543", "A0995614951", 15},
	"elixir-hl7_nist_VXU_V04.hl7":                        {"VXU^V04^VXU_V04", "NIST-IZ-020.00", "252430", 24},
	"elixir-hl7_nist_syndromic_ADT_A03.hl7":              {"ADT^A03^ADT_A03", "NIST-SS-003.32", "33333", 10},
	"elixir-hl7_wikipedia_ADT_A01.hl7":                   {"ADT^A01^ADT_A01", "01052901", "56782445", 8},
	"ihe-pcd-acm-draeger_ACK_watchdog.hl7":               {"ACK^R40", "", "", 2},
	"ihe-pcd-acm-draeger_PCD04_alarm.hl7":                {"ORU^R40^ORU_R40", "0", "8888", 13},
	"ihe-pcd-acm-draeger_PCD04_watchdog.hl7":             {"ORU^R40^ORU_R40", "2df8823a-f8fb-44e0-a4ba-1d826e0809f1", "8888", 14},
	"ihe-pcd-acm-draeger_PCD05_alarm.hl7":                {"ORA^R41^ORA_R41", "0", "", 3},
	"msft-fhirconv_ADT-A01-01.hl7":                       {"ADT^A01^ADT_A01", "MSG00001", "PATID1234", 24},
	"msft-fhirconv_ADT-A01-02.hl7":                       {"ADT^A01^ADT_A01", "MSG00001", "PATID1234", 4},
	"msft-fhirconv_ADT-A02-01.hl7":                       {"ADT^A02^ADT_A02", "MSG00001", "PATID1234", 14},
	"msft-fhirconv_ADT-A02-02.hl7":                       {"ADT^A02^ADT_A02", "MSG00001", "PATID1234", 4},
	"msft-fhirconv_ADT-A03-01.hl7":                       {"ADT^A03^ADT_A03", "MSG00001", "PATID1234", 24},
	"msft-fhirconv_ADT-A03-02.hl7":                       {"ADT^A03^ADT_A03", "MSG00001", "PATID1234", 4},
	"msft-fhirconv_ADT-A04-02.hl7":                       {"ADT^A04^ADT_A04", "MSG00001", "PATID1234", 5},
	"msft-fhirconv_ADT-A08-01.hl7":                       {"ADT^A08^ADT_A08", "MSG00001", "PATID1234", 24},
	"msft-fhirconv_ADT-A08-02.hl7":                       {"ADT^A08^ADT_A08", "MSG00001", "PATID1234", 4},
	"msft-fhirconv_ADT-A11-02.hl7":                       {"ADT^A11^ADT_A11", "MSG00001", "PATID1234", 5},
	"msft-fhirconv_ADT-A13-02.hl7":                       {"ADT^A13^ADT_A13", "MSG00001", "PATID1234", 5},
	"msft-fhirconv_ADT01-23.hl7":                         {"ADT^A01", "599102", "10006579", 12},
	"msft-fhirconv_ADT01-28.hl7":                         {"ADT^A01^ADT_A01", "MSG00001", "PATID1234", 5},
	"msft-fhirconv_ADT04-23.hl7":                         {"ADT^A04", "Q123456789T123456789X123456", "123456789", 8},
	"msft-fhirconv_ADT04-251.hl7":                        {"ADT^A04", "1270326314", "MRN12345", 4},
	"msft-fhirconv_ADT04-28.hl7":                         {"ADT^A04", "1270326314", "0000000001", 8},
	"msft-fhirconv_IZ_1_1.1_Admin_Child_Max_Message.hl7": {"VXU^V04^VXU_V04", "NIST-IZ-001.00", "D26376273", 11},
	"msft-fhirconv_LAB-ORU-1.hl7":                        {"ORU^R01", "182", "10006579", 16},
	"msft-fhirconv_LAB-ORU-2.hl7":                        {"ORU^R01", "ControlID", "10006579", 16},
	"msft-fhirconv_LRI_2.0-NG_CBC_Typ_Message.hl7":       {"ORU^R01^ORU_R01", "NIST-LRI-NG-002.00", "PATID1234", 33},
	"msft-fhirconv_MDM-T02-01.hl7":                       {"MDM^T02^MDM_T02", "PS1-20080131160038", "987654321", 13},
	"msft-fhirconv_ORM-O01-01.hl7":                       {"ORM^O01^ORM_O01", "MSG00018", "PATID1234", 12},
	"msft-fhirconv_ORU-R01-01.hl7":                       {"ORU^R01^ORU_R01", "2.16.840.1.114222.4.3.3.5.1.2-20120314235954.325", "14", 29},
	"msft-fhirconv_ORU-R01-RMGEAD.hl7":                   {"ORU^R01", "CNTRL-3456", "555-44-4444", 4},
	"python-hl7_repetition_subcomponent.hl7":             {"ORU^R01", "CNTRL-3456", "Component1", 2},
	"python-hl7_spec_ORU_R01_glucose_H.hl7":              {"ORU^R01", "CNTRL-3456", "555-44-4444", 5},
}

// batchExpect: control ids of the messages inside each batch file.
var batchExpect = map[string][]string{
	"python-hl7_batch_BHS_BTS_ADT_A04.hl7": {"12334456778890", "12334456778891"},
	"python-hl7_file_FHS_BHS_ADT_A04.hl7":  {"12334456778890", "12334456778891", "12334456778890"},
}

func TestCorpus(t *testing.T) {
	files := corpusFiles(t)
	if len(files) != len(corpusExpect)+len(batchExpect) {
		t.Errorf("corpus has %d files, expectations cover %d: update the tables", len(files), len(corpusExpect)+len(batchExpect))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if ids, ok := batchExpect[name]; ok {
				if !IsBatch(raw) {
					t.Error("IsBatch = false")
				}
				if _, err := Parse(raw); err == nil {
					t.Error("Parse accepted a batch as one message")
				}
				msgs := SplitBatch(raw)
				if len(msgs) != len(ids) {
					t.Fatalf("SplitBatch gave %d messages, want %d", len(msgs), len(ids))
				}
				for i, b := range msgs {
					m := mustParse(t, b)
					if got := m.Get("MSH-10"); got != ids[i] {
						t.Errorf("message %d MSH-10 = %q, want %q", i+1, got, ids[i])
					}
					if got := m.Get("MSH-9"); got != "ADT^A04^ADT_A01" {
						t.Errorf("message %d MSH-9 = %q", i+1, got)
					}
					if got := m.Count("PID"); got != 1 {
						t.Errorf("message %d has %d PID segments", i+1, got)
					}
				}
				return
			}
			want, ok := corpusExpect[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			if IsBatch(raw) {
				t.Error("IsBatch = true")
			}
			if got := len(SplitBatch(raw)); got != 1 {
				t.Errorf("SplitBatch gave %d messages, want 1", got)
			}
			m := mustParse(t, raw)
			if got := m.Get("MSH-9"); got != want.msh9 {
				t.Errorf("MSH-9 = %q, want %q", got, want.msh9)
			}
			if got := m.Get("MSH-10"); got != want.msh10 {
				t.Errorf("MSH-10 = %q, want %q", got, want.msh10)
			}
			if got := m.Get("PID-3(1).1"); got != want.pid31 {
				t.Errorf("PID-3.1 = %q, want %q", got, want.pid31)
			}
			if got := len(m.Segments()); got != want.segs {
				t.Errorf("segments = %d, want %d", got, want.segs)
			}
		})
	}
}

// Spot checks on corpus files with notable structure.
func TestCorpusDetails(t *testing.T) {
	corpusFiles(t)
	tests := []struct {
		file, path, want string
	}{
		{"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", "MSH-2", `^~\&#`},
		{"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", "OBX-3.2", "Sodium [Moles/volume#"},
		{"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", "PID-3(2).4.2", "1.11.111.1.1111111.4.3.2.2.1.321.111"},
		{"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", "OBX(2)-5", "=^4.2"},
		{"python-hl7_repetition_subcomponent.hl7", "PID-3.2.2", "Sub-Component2"},
		{"python-hl7_repetition_subcomponent.hl7", "PID-4(2)", "Repeat2"},
		{"python-hl7_repetition_subcomponent.hl7", "PID-2.2", "Component2"},
		{"msft-fhirconv_ORU-R01-01.hl7", "MSH-12", "2.5.1"},
		{"msft-fhirconv_ADT01-23.hl7", "PV1-3.1", "PREOP"},
		{"ihe-pcd-acm-draeger_PCD04_alarm.hl7", "PV1-3.3", "Bed001"},
		{"elixir-hl7_wikipedia_ADT_A01.hl7", "PV1-3", "W^389^1^UABH^^^^3"},
		{"msft-fhirconv_ORU-R01-RMGEAD.hl7", "OBX-5.2", "182"},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.path, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(corpusDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := mustParse(t, raw).Get(tc.path); got != tc.want {
				t.Errorf("Get(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestSplitBatchPlain(t *testing.T) {
	one := msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5`, "PID|1||X")
	two := append(append([]byte{}, one...), msg(`MSH|^~\&|A|B|C|D|20240101||ADT^A01|2|P|2.5`)...)
	tests := []struct {
		name string
		raw  []byte
		n    int
	}{
		{"single", one, 1},
		{"two concatenated", two, 2},
		{"empty", nil, 0},
		{"envelope only", msg(`BHS|^~\&`, "BTS|0"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := SplitBatch(tc.raw)
			if len(got) != tc.n {
				t.Fatalf("SplitBatch = %d messages, want %d", len(got), tc.n)
			}
			for _, b := range got {
				mustParse(t, b)
			}
		})
	}
}
