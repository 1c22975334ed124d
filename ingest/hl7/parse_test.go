package hl7

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/ingest"
)

func TestCharsets(t *testing.T) {
	const msh = `MSH|^~\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||`
	tests := []struct {
		name    string
		msh17   string // MSH-17 and MSH-18 as written after MSH-16
		pid5    []byte // PID-5 bytes as sent
		want    string // PID-5 decoded
		charset Charset
	}{
		{"empty MSH-18 is UTF-8", "|", []byte("Jos\xc3\xa9"), "José", CharsetDefault},
		{"ASCII", "|ASCII", []byte("Jose"), "Jose", CharsetASCII},
		{"ASCII declared, UTF-8 sent", "|ASCII", []byte("Jos\xc3\xa9"), "José", CharsetASCII},
		{"UNICODE UTF-8", "|UNICODE UTF-8", []byte("\xe6\xbc\xa2 \xc3\xa9"), "漢 é", CharsetUTF8},
		{"UTF-8 alias", "|utf-8", []byte("\xc3\xa9"), "é", CharsetUTF8},
		{"8859/1", "|8859/1", []byte("M\xdcLLER Jos\xe9 \xa9"), "MÜLLER José ©", CharsetLatin1},
		{"8859/1 hex escape", "|8859/1", []byte(`caf\XE9\`), "café", CharsetLatin1},
		{"UTF-8 hex escape", "|UNICODE UTF-8", []byte(`caf\XC3A9\`), "café", CharsetUTF8},
		{"alternate sets after the first", "|8859/1~ISO IR87", []byte("\xe9"), "é", CharsetLatin1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := append([]byte(msh+tc.msh17+"\rPID|1||X||"), tc.pid5...)
			m := mustParse(t, append(raw, '\r'))
			if got := m.Get("PID-5"); got != tc.want {
				t.Errorf("PID-5 = %q, want %q", got, tc.want)
			}
			if m.Charset() != tc.charset {
				t.Errorf("Charset = %q, want %q", m.Charset(), tc.charset)
			}
		})
	}
}

func TestFormattingEscapes(t *testing.T) {
	d := DefaultDelimiters()
	tests := []struct{ name, in, want string }{
		{"br", `a\.br\b`, "a\nb"},
		{"sp default", `a\.sp\b`, "a\nb"},
		{"sp n", `a\.sp3\b`, "a\n\n\nb"},
		{"sp with space", `a\.sp 2\b`, "a\n\nb"},
		{"sp bounded", `a\.sp999999\b`, "a" + strings.Repeat("\n", maxFormatRepeat) + "b"},
		{"sp negative kept", `a\.sp-1\b`, `a\.sp-1\b`},
		{"sk", `a\.sk2\b`, "a  b"},
		{"ti positive", `\.ti+2\b`, "  b"},
		{"ti negative", `\.ti-4\b`, "b"},
		{"in dropped", `\.in+4\b`, "b"},
		{"ce", `a\.ce\TITLE`, "a\nTITLE"},
		{"fi nf dropped", `\.fi\a\.nf\b`, "ab"},
		{"unknown command kept", `\.zz\`, `\.zz\`},
		{"br with argument kept", `\.br2\`, `\.br2\`},
		{"bad argument kept", `\.spx\`, `\.spx\`},
		{"charset switches kept", `\C2842\x\M2442\`, `\C2842\x\M2442\`},
		{"local escape kept", `\Z01\`, `\Z01\`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := d.decode(tc.in, false); got != tc.want {
				t.Errorf("decode(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	m := mustParse(t, readFixture(t, "formatted_text.hl7"))
	want := "\nIMPRESSION\n\n  No acute   findings. \\C2842\\ \\M2442\\"
	if got := m.Get("OBX-5"); got != want {
		t.Errorf("formatted OBX-5 = %q, want %q", got, want)
	}
}

func TestZSegmentsAndTruncation(t *testing.T) {
	m := mustParse(t, readFixture(t, "adt_a04_register.hl7"))
	z, ok := m.Segment("ZPI", 1)
	if !ok || z.Name() != "ZPI" || m.Get("ZPI-2.2") != "value" || m.Get("ZPI-3") != "kept" {
		t.Errorf("Z segment: ok=%v ZPI-2.2=%q ZPI-3=%q", ok, m.Get("ZPI-2.2"), m.Get("ZPI-3"))
	}
	if m.Count("ZPI") != 1 || m.SegmentAt(m.Len()-1).Name() != "ZPI" {
		t.Error("Z segment not kept in order")
	}
	tr := mustParse(t, readFixture(t, "truncation.hl7"))
	v, _ := tr.Lookup("OBX-3.2")
	if !v.Truncated() || v.String() != "Sodium [Moles/volume#" {
		t.Errorf("OBX-3.2 truncated=%v %q", v.Truncated(), v.String())
	}
	if n, _ := tr.Lookup("NTE-3"); n.Truncated() || n.String() != "hash # escaped" {
		t.Errorf("escaped truncation char: truncated=%v %q", n.Truncated(), n.String())
	}
	if v, _ := mustParse(t, readFixture(t, "adt_a01.hl7")).Lookup("PID-5.1"); v.Truncated() {
		t.Error("no truncation character declared, yet Truncated")
	}
}

func TestValueAccessors(t *testing.T) {
	m := mustParse(t, readFixture(t, "adt_a01.hl7"))
	pid, _ := m.Segment("PID", 1)
	var f [9]Value
	pid.Fields(f[:])
	for i := 1; i < len(f); i++ {
		if got, want := f[i].String(), pid.Field(i).String(); got != want {
			t.Errorf("Fields[%d] = %q, Field(%d) = %q", i, got, i, want)
		}
	}
	if f[3].Reps() != 2 || f[3].Comp(4).Subs() != 3 || !f[3].Comp(5).Equal("MR") || f[3].Comp(5).Equal("mr") {
		t.Errorf("reps=%d subs=%d", f[3].Reps(), f[3].Comp(4).Subs())
	}
	var msh [13]Value
	m.MSH().Fields(msh[:])
	if msh[1].String() != "|" || msh[2].String() != `^~\&` || msh[9].String() != "ADT^A01^ADT_A01" || msh[12].String() != "2.5.1" {
		t.Errorf("MSH Fields: %q %q %q %q", msh[1], msh[2], msh[9], msh[12])
	}
	// A segment made from bytes alone (as the ACK builder recovers a header).
	d := DefaultDelimiters()
	s := Segment{b: []byte(`MSH|^~\&|APP|FAC|||20240101||ADT^A01|X1|P|2.5`), d: &d}
	if s.Field(3).String() != "APP" || s.Field(9).Comp(2).String() != "A01" || string(s.Field(10).Raw()) != "X1" {
		t.Error("standalone segment fields")
	}
	var zero Value
	if zero.String() != "" || zero.Raw() != nil || !zero.IsEmpty() || zero.Reps() != 0 || !zero.Equal("") || zero.Truncated() {
		t.Error("zero Value is not empty")
	}
}

func TestAlarmFixture(t *testing.T) {
	ev, err := ToEvent(mustParse(t, readFixture(t, "oru_r40_alarm_flags.hl7")))
	if err != nil {
		t.Fatal(err)
	}
	want := ingest.Alarm{ID: "77^ALARMS^0012AB34CD56EF78^EUI-64", Reporter: "AR01", Source: "MDC_EVT_HI",
		Phase: "end", State: "inactive", Priority: "PM", Type: "SP", EquipmentID: "0012AB34CD56EF78"}
	if ev.Kind != ingest.KindAlarm || ev.Alarm == nil || *ev.Alarm != want {
		t.Fatalf("kind %s alarm %+v, want %+v", ev.Kind, ev.Alarm, want)
	}
	if len(ev.Observations) != 4 || ev.Observations[1].Code != "MDC_PULS_OXIM_SAT_O2" || *ev.Observations[1].Numeric != 100 ||
		ev.Observations[1].Units != "MDC_DIM_PERCENT" || ev.Observations[1].ContainmentPath != "1.1.1.150456.2" {
		t.Errorf("observations %+v", ev.Observations)
	}
}

func TestBuilder(t *testing.T) {
	for _, d := range []Delimiters{DefaultDelimiters(), {'#', '$', '*', '!', '%', '@'}} {
		b := NewBuilder(d)
		b.Segment("MSH").Set(3, "CLARION").Set(4, "GHH").Set(7, "20240101120000").
			Set(9, "ORU", "R01", "ORU_R01").Set(10, "c|^~\\&#$*!%@1").Set(11, "P").Set(12, "2.5.1")
		b.Segment("PID").SetReps(3, []string{"MRN|1", "", "", "GHH"}, []string{"ALT~2"}).SetSubs(4, 4, "A&B", "1.2", "ISO")
		b.Segment("OBX").Set(1, "1").Set(2, "TX").Set(3, "X-1", "Note", "L").Set(5, "line1\rline2 \\ end").Set(11, "F")
		b.Segment("ZZZ").Set(1, "").Set(2, "")
		raw := b.Bytes()
		if bytes.Contains(raw, []byte("\n")) || bytes.Count(raw, []byte("\r")) != 4 {
			t.Fatalf("segments: %q", raw)
		}
		m := mustParse(t, raw)
		want := map[string]string{
			"MSH-1": string(d.Field), "MSH-2": d.EncodingChars(), "MSH-3": "CLARION", "MSH-9.2": "R01",
			"MSH-10": "c|^~\\&#$*!%@1", "MSH-12": "2.5.1",
			"PID-3(1).1": "MRN|1", "PID-3(1).4": "GHH", "PID-3(2).1": "ALT~2", "PID-4.4.1": "A&B", "PID-4.4.3": "ISO",
			"OBX-3.2": "Note", "OBX-5": "line1\rline2 \\ end", "OBX-11": "F",
		}
		for p, w := range want {
			if got := m.Get(p); got != w {
				t.Errorf("delims %q: Get(%s) = %q, want %q", d.EncodingChars(), p, got, w)
			}
		}
		if z, _ := m.Segment("ZZZ", 1); string(z.Raw()) != "ZZZ" {
			t.Errorf("empty segment written as %q", z.Raw())
		}
	}
	// Building continues after Bytes; fields below the first settable one are ignored.
	b := NewBuilder(DefaultDelimiters())
	b.Segment("MSH").Set(1, "x").Set(2, "y").Set(9, "ACK")
	first := string(b.Bytes())
	b.Segment("MSA").Set(1, "AA")
	if first != "MSH|^~\\&|||||||ACK\r" || string(b.Bytes()) != first+"MSA|AA\r" {
		t.Errorf("builder output %q then %q", first, b.Bytes())
	}
}

// An ACK made with the Builder reads back like BuildACK's.
func TestBuilderACK(t *testing.T) {
	orig := mustParse(t, readFixture(t, "adt_a01.hl7"))
	b := NewBuilder(orig.Delimiters())
	b.Segment("MSH").Set(3, orig.Get("MSH-5")).Set(4, orig.Get("MSH-6")).Set(5, orig.Get("MSH-3")).
		Set(6, orig.Get("MSH-4")).Set(7, "20240305143000-0500").Set(9, "ACK", orig.Get("MSH-9.2"), "ACK").
		Set(10, "ACK-1").Set(11, orig.Get("MSH-11")).Set(12, orig.Get("MSH-12"))
	b.Segment("MSA").Set(1, "AA").Set(2, orig.Get("MSH-10"))
	got := mustParse(t, b.Bytes())
	ref := mustParse(t, BuildACK(orig, "AA", nil, ackNow, "ACK-1"))
	for _, p := range []string{"MSH-3", "MSH-4", "MSH-5", "MSH-6", "MSH-9", "MSH-10", "MSH-11", "MSH-12", "MSA-1", "MSA-2"} {
		if got.Get(p) != ref.Get(p) {
			t.Errorf("%s: builder %q, BuildACK %q", p, got.Get(p), ref.Get(p))
		}
	}
	if !reflect.DeepEqual(got.Delimiters(), ref.Delimiters()) {
		t.Error("delimiters differ")
	}
}

func TestPieces(t *testing.T) {
	m := mustParse(t, readFixture(t, "adt_a01.hl7"))
	for _, path := range []string{"PID-3", "PID-3(2)", "PID-3.4", "PID-5", "MSH-2", "PID-3.1.1", "ZZZ-1"} {
		v, _ := m.Lookup(path)
		for at := levelRep; at <= levelSub; at++ {
			var out [7]Value
			v.pieces(at, out[:])
			for i := 1; i < len(out); i++ {
				if want := v.split(at, i); out[i] != want {
					t.Errorf("%s pieces(%d)[%d] = %q, split = %q", path, at, i, out[i].String(), want.String())
				}
			}
		}
	}
}
