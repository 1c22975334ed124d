package hl7

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
)

func ptr(f float64) *float64 { return &f }

func TestToEventFixtures(t *testing.T) {
	est := time.FixedZone("", -5*3600)
	tests := []struct {
		file string
		want ingest.Event
	}{
		{"adt_a01.hl7", ingest.Event{
			Kind: ingest.KindAdmit, Source: "EPIC^GHH", SourceID: "MSG-A01-0001", Trigger: "ADT^A01",
			OccurredAt: time.Date(2024, 3, 5, 14, 29, 0, 0, est), // EVN-2 wins over MSH-7
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
			Location:   ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"},
		}},
		{"adt_a02.hl7", ingest.Event{
			Kind: ingest.KindTransfer, Source: "EPIC^GHH", SourceID: "MSG-A02-0001", Trigger: "ADT^A02",
			OccurredAt: time.Date(2024, 3, 5, 15, 0, 0, 0, time.UTC), // MSH-7, no offset: UTC
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
			Location:   ingest.Location{Unit: "ICU", Room: "01", Bed: "A", Facility: "GHH"},
		}},
		{"adt_a03_lf.hl7", ingest.Event{
			Kind: ingest.KindDischarge, Source: "EPIC^GHH", SourceID: "MSG-A03-0001", Trigger: "ADT^A03",
			OccurredAt: time.Date(2024, 3, 6, 8, 10, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
		}},
		{"custom_delims.hl7", ingest.Event{
			Kind: ingest.KindAdmit, Source: "ADTAPP^SITE B", SourceID: "CUST-1", Trigger: "ADT^A01",
			OccurredAt: time.Date(2024, 3, 7, 8, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "P-77", Authority: "SITEB"},
			Location:   ingest.Location{Unit: "MED", Room: "3", Bed: "2", Facility: "SITE B"},
		}},
		{"oru_r01_potassium.hl7", ingest.Event{
			Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: "LAB-0042", Trigger: "ORU^R01",
			OccurredAt: time.Date(2024, 3, 5, 16, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
			Location:   ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"},
			Observations: []ingest.Observation{{
				Code: "2823-3", System: "LN", Display: "Potassium [Moles/volume] in Serum or Plasma",
				ValueType: "NM", Value: "6.9", Numeric: ptr(6.9), Units: "mmol/L", ReferenceRange: "3.5-5.1",
				Flags: []string{"HH"}, Status: "F", ObservedAt: time.Date(2024, 3, 5, 15, 55, 0, 0, time.UTC),
			}, {
				Code: "2345-7", System: "LN", Display: "Glucose [Mass/volume] in Serum or Plasma",
				ValueType: "SN", Value: ">^200", Numeric: ptr(200), Units: "mg/dL", ReferenceRange: "70-99",
				Flags: []string{"H", "A"}, Status: "F",
			}},
		}},
		{"truncation.hl7", ingest.Event{
			Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: "TR-1", Trigger: "ORU^R01",
			OccurredAt: time.Date(2024, 3, 8, 15, 10, 10, 123400000, time.UTC),
			Patient:    ingest.Patient{ID: "MRN-T", Authority: "GHH"},
			Observations: []ingest.Observation{{
				Code: "2951-2", Display: "Sodium [Moles/volume#", ValueType: "NM", Value: "140",
				Numeric: ptr(140), Units: "mmol/L", Flags: []string{"N", "L"}, Status: "F",
			}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			ev, err := ToEvent(mustParse(t, readFixture(t, tc.file)))
			if err != nil {
				t.Fatalf("ToEvent: %v", err)
			}
			if !ev.OccurredAt.Equal(tc.want.OccurredAt) {
				t.Errorf("OccurredAt = %v, want %v", ev.OccurredAt, tc.want.OccurredAt)
			}
			ev.OccurredAt = tc.want.OccurredAt
			for i := range min(len(ev.Observations), len(tc.want.Observations)) {
				got, want := &ev.Observations[i], tc.want.Observations[i]
				if !got.ObservedAt.Equal(want.ObservedAt) {
					t.Errorf("obs %d ObservedAt = %v, want %v", i, got.ObservedAt, want.ObservedAt)
				}
				got.ObservedAt = want.ObservedAt
			}
			if !reflect.DeepEqual(ev, tc.want) {
				t.Errorf("event mismatch\n got %+v\nwant %+v", ev, tc.want)
			}
		})
	}
}

func TestToEventErrors(t *testing.T) {
	adt := func(msh9 string, rest ...string) []byte {
		return msg(append([]string{`MSH|^~\&|APP|FAC|R|RF|20240101120000||` + msh9 + `|CTRL1|P|2.5`}, rest...)...)
	}
	oru := func(obx ...string) []byte {
		return adt("ORU^R01", append([]string{"PID|1||MRN1"}, obx...)...)
	}
	tests := []struct {
		name        string
		raw         []byte
		code        int
		seg         string
		seq, field  int
		comp        int
		inMsgSubstr string
	}{
		{"unknown type", adt("ORM^O01", "PID|1||X"), 200, "MSH", 1, 9, 1, ""},
		{"ADT unsupported trigger", adt("ADT^A08", "PID|1||X"), 201, "MSH", 1, 9, 2, ""},
		{"ORU unsupported trigger", adt("ORU^R40", "PID|1||X"), 201, "MSH", 1, 9, 2, ""},
		{"ADT without trigger", adt("ADT", "PID|1||X"), 201, "MSH", 1, 9, 2, ""},
		{"no sender", msg(`MSH|^~\&|||R|RF|20240101||ADT^A03|C|P|2.5`, "PID|1||X"), 101, "MSH", 1, 3, 1, ""},
		{"no control id", msg(`MSH|^~\&|A|F|R|RF|20240101||ADT^A03||P|2.5`, "PID|1||X"), 101, "MSH", 1, 10, 0, ""},
		{"version 3", msg(`MSH|^~\&|A|F|R|RF|20240101||ADT^A03|C|P|3.0`, "PID|1||X"), 203, "MSH", 1, 12, 1, ""},
		{"no PID", adt("ADT^A03", "PV1|1|I|W"), 101, "PID", 1, 3, 0, ""},
		{"empty PID-3.1", adt("ADT^A03", "PID|1||^^^AUTH"), 101, "PID", 1, 3, 1, ""},
		{"A01 without PV1", adt("ADT^A01", "PID|1||X"), 101, "PV1", 1, 3, 1, ""},
		{"A02 without PV1-3.1", adt("ADT^A02", "PID|1||X", "PV1|1|I|^12^B"), 101, "PV1", 1, 3, 1, ""},
		{"bad MSH-7", msg(`MSH|^~\&|A|F|R|RF|2024-01-01||ADT^A03|C|P|2.5`, "PID|1||X"), 102, "MSH", 1, 7, 1, ""},
		{"no MSH-7 no EVN", msg(`MSH|^~\&|A|F|R|RF|||ADT^A03|C|P|2.5`, "PID|1||X"), 101, "MSH", 1, 7, 1, ""},
		{"bad EVN-2", adt("ADT^A03", "EVN|A03|20241301", "PID|1||X"), 102, "EVN", 1, 2, 1, ""},
		{"ORU without OBX", oru(), 101, "OBX", 1, 0, 0, ""},
		{"OBX without code", oru("OBX|1|NM|^Potassium||6.9"), 101, "OBX", 1, 3, 1, ""},
		{"NM not numeric", oru("OBX|1|NM|2823-3^K^LN||6.9", "OBX|2|NM|2823-3^K^LN||high"), 102, "OBX", 2, 5, 0, ""},
		{"NM with exponent", oru("OBX|1|NM|2823-3^K^LN||1e3"), 102, "OBX", 1, 5, 0, ""},
		{"NM Inf", oru("OBX|1|NM|2823-3^K^LN||Inf"), 102, "OBX", 1, 5, 0, ""},
		{"SN bad comparator", oru("OBX|1|SN|2823-3^K^LN||!!^5"), 102, "OBX", 1, 5, 0, ""},
		{"SN not numeric", oru("OBX|1|SN|2823-3^K^LN||>^ten"), 102, "OBX", 1, 5, 0, ""},
		{"bad OBX-14", oru("OBX|1|NM|2823-3^K^LN||6.9||||||F|||202499"), 102, "OBX", 1, 14, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ToEvent(mustParse(t, tc.raw))
			if err == nil {
				t.Fatalf("ToEvent succeeded, want code %d", tc.code)
			}
			pe := requireParseError(t, err)
			got := [4]int{pe.Code, pe.SegmentSeq, pe.Field, pe.Component}
			want := [4]int{tc.code, tc.seq, tc.field, tc.comp}
			if got != want || pe.Segment != tc.seg {
				t.Errorf("got %s code=%d seq=%d field=%d comp=%d (%v), want %s %v", pe.Segment, pe.Code, pe.SegmentSeq, pe.Field, pe.Component, pe, tc.seg, want)
			}
		})
	}
}

func TestToEventNumeric(t *testing.T) {
	tests := []struct {
		typ, value string
		want       *float64
	}{
		{"NM", "6.9", ptr(6.9)},
		{"NM", "-0.5", ptr(-0.5)},
		{"NM", "+12", ptr(12)},
		{"NM", ".5", ptr(0.5)},
		{"NM", "5.", ptr(5)},
		{"NM", " 7 ", ptr(7)},
		{"NM", "", nil},
		{"SN", "^182", ptr(182)},
		{"SN", ">^10", ptr(10)},
		{"SN", "<^0.5", ptr(0.5)},
		{"SN", "<=^3", ptr(3)},
		{"SN", "=^4.2", ptr(4.2)},
		{"SN", "^10^-^20", nil}, // range: kept as text only
		{"SN", "^1^:^128", nil}, // ratio
		{"ST", "12", nil},
		{"CWE", "260385009^Negative^SCT", nil},
	}
	for _, tc := range tests {
		t.Run(tc.typ+" "+tc.value, func(t *testing.T) {
			raw := msg(`MSH|^~\&|A|F|R|RF|20240101||ORU^R01|C|P|2.5`, "PID|1||X", "OBX|1|"+tc.typ+"|1-8^X^LN||"+tc.value)
			ev, err := ToEvent(mustParse(t, raw))
			if err != nil {
				t.Fatal(err)
			}
			o := ev.Observations[0]
			if o.Value != tc.value {
				t.Errorf("Value = %q, want %q", o.Value, tc.value)
			}
			if (o.Numeric == nil) != (tc.want == nil) || o.Numeric != nil && *o.Numeric != *tc.want {
				t.Errorf("Numeric = %v, want %v", o.Numeric, tc.want)
			}
		})
	}
}

func TestParseDTM(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2024", want: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)},
		{in: "202403", want: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)},
		{in: "20240305", want: time.Date(2024, 3, 5, 0, 0, 0, 0, time.UTC)},
		{in: "2024030514", want: time.Date(2024, 3, 5, 14, 0, 0, 0, time.UTC)},
		{in: "202403051430", want: time.Date(2024, 3, 5, 14, 30, 0, 0, time.UTC)},
		{in: "20240305143059", want: time.Date(2024, 3, 5, 14, 30, 59, 0, time.UTC)},
		{in: "20240305143059.5", want: time.Date(2024, 3, 5, 14, 30, 59, 500000000, time.UTC)},
		{in: "20240305143059.1234-0500", want: time.Date(2024, 3, 5, 19, 30, 59, 123400000, time.UTC)},
		{in: "198908181126+0215", want: time.Date(1989, 8, 18, 9, 11, 0, 0, time.UTC)},
		{in: "20240229", want: time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{in: "", bad: true},
		{in: "20230229", bad: true},
		{in: "20241301", bad: true},
		{in: "2024030525", bad: true},
		{in: "20240305146", bad: true},
		{in: "2024-03-05", bad: true},
		{in: "20240305+05", bad: true},
		{in: "20240305+2500", bad: true},
		{in: "202403051430.5", bad: true},
		{in: "20240305143059.", bad: true},
		{in: "*******************", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDTM(tc.in)
			if tc.bad {
				if err == nil {
					t.Errorf("ParseDTM(%q) = %v, want error", tc.in, got)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Errorf("ParseDTM(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

// What ToEvent makes of the corpus: the kind, or the error code and where.
func TestToEventCorpus(t *testing.T) {
	corpusFiles(t)
	tests := []struct {
		file string
		kind ingest.Kind
		err  string // ParseError.Location() and code, when it fails
		nobs int
	}{
		{"elixir-hl7_wikipedia_ADT_A01.hl7", ingest.KindAdmit, "", 0},
		{"elixir-hl7_nist_syndromic_ADT_A03.hl7", ingest.KindDischarge, "", 0},
		{"msft-fhirconv_ADT-A01-01.hl7", ingest.KindAdmit, "", 0},
		{"msft-fhirconv_ADT-A02-02.hl7", ingest.KindTransfer, "", 0},
		{"msft-fhirconv_ADT-A03-01.hl7", ingest.KindDischarge, "", 0},
		{"msft-fhirconv_ADT01-23.hl7", ingest.KindAdmit, "", 0},
		{"msft-fhirconv_LAB-ORU-1.hl7", ingest.KindResult, "", 10},
		{"msft-fhirconv_LRI_2.0-NG_CBC_Typ_Message.hl7", ingest.KindResult, "", 28},
		{"msft-fhirconv_ORU-R01-RMGEAD.hl7", ingest.KindResult, "", 1},
		{"python-hl7_spec_ORU_R01_glucose_H.hl7", ingest.KindResult, "", 2},
		{"msft-fhirconv_ADT-A08-01.hl7", "", "201 MSH-9.2", 0},
		{"ihe-pcd-acm-draeger_PCD04_alarm.hl7", "", "201 MSH-9.2", 0},
		{"msft-fhirconv_MDM-T02-01.hl7", "", "200 MSH-9.1", 0},
		{"ihe-pcd-acm-draeger_ACK_watchdog.hl7", "", "200 MSH-9.1", 0},
		{"msft-fhirconv_ORU-R01-01.hl7", "", "101 OBX(2)-3.1", 0},               // an ED OBX with no OBX-3
		{"elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", "", "102 OBX(2)-14.1", 0}, // OBX-14 masked with '*'
		{"python-hl7_repetition_subcomponent.hl7", "", "101 OBX", 0},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(corpusDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := ToEvent(mustParse(t, raw))
			if tc.err != "" {
				if err == nil {
					t.Fatalf("ToEvent succeeded, want %s", tc.err)
				}
				pe := requireParseError(t, err)
				if got := strings.TrimSpace(strconv.Itoa(pe.Code) + " " + pe.Location()); got != tc.err {
					t.Errorf("error %q, want %q", got, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ToEvent: %v", err)
			}
			if ev.Kind != tc.kind || len(ev.Observations) != tc.nobs {
				t.Errorf("kind=%s obs=%d, want %s %d", ev.Kind, len(ev.Observations), tc.kind, tc.nobs)
			}
			if ev.OccurredAt.IsZero() || ev.SourceID == "" || ev.Patient.ID == "" {
				t.Errorf("incomplete event: %+v", ev)
			}
		})
	}
}

func TestFromValidation(t *testing.T) {
	tests := []struct {
		field, loc string
	}{
		{"source", "MSH-3"},
		{"source_id", "MSH-10"},
		{"patient.id", "PID-3.1"},
		{"location.unit", "PV1-3.1"},
		{"observations[0].code", "OBX"},
		{"kind", "MSH-9"},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			pe := fromValidation(&ingest.ValidationError{Field: tc.field, Reason: "x"})
			if pe.Code != 101 || pe.Location() != tc.loc {
				t.Errorf("got %d %q, want 101 %q", pe.Code, pe.Location(), tc.loc)
			}
		})
	}
}
