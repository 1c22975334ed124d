package hl7

import (
	"reflect"
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
			Visit:      ingest.Visit{Class: "I", Attending: "1234"},
		}},
		{"adt_a02.hl7", ingest.Event{
			Kind: ingest.KindTransfer, Source: "EPIC^GHH", SourceID: "MSG-A02-0001", Trigger: "ADT^A02",
			OccurredAt: time.Date(2024, 3, 5, 15, 0, 0, 0, time.UTC), // MSH-7, no offset: UTC
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
			Location:   ingest.Location{Unit: "ICU", Room: "01", Bed: "A", Facility: "GHH"},
			Visit:      ingest.Visit{Class: "I"},
		}},
		{"adt_a03_lf.hl7", ingest.Event{
			Kind: ingest.KindDischarge, Source: "EPIC^GHH", SourceID: "MSG-A03-0001", Trigger: "ADT^A03",
			OccurredAt: time.Date(2024, 3, 6, 8, 10, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN12345", Authority: "GHH"},
			Visit:      ingest.Visit{Class: "I"},
		}},
		{"custom_delims.hl7", ingest.Event{
			Kind: ingest.KindAdmit, Source: "ADTAPP^SITE B", SourceID: "CUST-1", Trigger: "ADT^A01",
			OccurredAt: time.Date(2024, 3, 7, 8, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "P-77", Authority: "SITEB"},
			Location:   ingest.Location{Unit: "MED", Room: "3", Bed: "2", Facility: "SITE B"},
			Visit:      ingest.Visit{Class: "I"},
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
				Order: "2823-3",
			}, {
				Code: "2345-7", System: "LN", Display: "Glucose [Mass/volume] in Serum or Plasma",
				ValueType: "SN", Value: ">^200", Numeric: ptr(200), Units: "mg/dL", ReferenceRange: "70-99",
				Flags: []string{"H", "A"}, Status: "F", Order: "2823-3",
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
		{"adt_a04_register.hl7", ingest.Event{
			Kind: ingest.KindRegister, Source: "EPIC^GHH", SourceID: "MSG-A04-0001", Trigger: "ADT^A04",
			OccurredAt: time.Date(2024, 3, 10, 7, 59, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN200", Authority: "GHH"},
			Location:   ingest.Location{Unit: "ED", Room: "05", Bed: "1", Facility: "GHH"},
			Visit:      ingest.Visit{Class: "E", Attending: "4455", Number: "V2001"},
		}},
		{"adt_a08_update.hl7", ingest.Event{
			Kind: ingest.KindUpdate, Source: "EPIC^GHH", SourceID: "MSG-A08-0001", Trigger: "ADT^A08",
			OccurredAt: time.Date(2024, 3, 10, 9, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN200", Authority: "GHH"},
			Visit:      ingest.Visit{Class: "I", Attending: "5566"},
		}},
		{"adt_a12_cancel_transfer.hl7", ingest.Event{
			Kind: ingest.KindCancelTransfer, Source: "EPIC^GHH", SourceID: "MSG-A12-0001", Trigger: "ADT^A12",
			OccurredAt: time.Date(2024, 3, 10, 10, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN200", Authority: "GHH"},
			Location:   ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"},
			Visit:      ingest.Visit{Class: "I"},
		}},
		{"adt_a17_swap.hl7", ingest.Event{
			Kind: ingest.KindSwap, Source: "EPIC^GHH", SourceID: "MSG-A17-0001", Trigger: "ADT^A17",
			OccurredAt: time.Date(2024, 3, 11, 10, 14, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN300", Authority: "GHH"},
			Location:   ingest.Location{Unit: "4W", Room: "412", Bed: "A", Facility: "GHH"},
			Visit:      ingest.Visit{Class: "I"},
			Other: &ingest.Swapped{Patient: ingest.Patient{ID: "MRN301", Authority: "GHH"},
				Location: ingest.Location{Unit: "4W", Room: "412", Bed: "B", Facility: "GHH"}},
		}},
		{"adt_a40_merge.hl7", ingest.Event{
			Kind: ingest.KindMerge, Source: "EPIC^GHH", SourceID: "MSG-A40-0001", Trigger: "ADT^A40",
			OccurredAt:   time.Date(2024, 3, 12, 11, 59, 0, 0, time.UTC),
			Patient:      ingest.Patient{ID: "MRN400", Authority: "GHH"},
			PriorPatient: &ingest.Patient{ID: "MRN399", Authority: "GHH"},
		}},
		{"oru_r01_pcd01.hl7", ingest.Event{
			Kind: ingest.KindResult, Source: "MONITOR^ICU", SourceID: "PCD-0001", Trigger: "ORU^R01",
			OccurredAt: time.Date(2024, 3, 13, 8, 30, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN500", Authority: "GHH"},
			Location:   ingest.Location{Unit: "ICU", Room: "07", Bed: "1", Facility: "GHH"},
			Observations: []ingest.Observation{{
				Code: "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS", System: "MDC", Display: "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS",
				Status: "X", Order: "182777000", ContainmentPath: "1.0.0.0", EquipmentID: "0012AB34CD56EF78",
			}, {
				Code: "MDC_PULS_OXIM_SAT_O2", System: "MDC", Display: "MDC_PULS_OXIM_SAT_O2", ValueType: "NM",
				Value: "86", Numeric: ptr(86), Units: "%", ReferenceRange: "90-100", Flags: []string{"L"}, Status: "F",
				ObservedAt: time.Date(2024, 3, 13, 8, 29, 55, 0, time.UTC), Order: "182777000",
				ContainmentPath: "1.1.1.1", EquipmentID: "0012AB34CD56EF78",
			}, {
				Code: "MDC_ECG_HEART_RATE", System: "MDC", Display: "MDC_ECG_HEART_RATE", ValueType: "NM",
				Value: "135", Numeric: ptr(135), Units: "MDC_DIM_BEAT_PER_MIN", ReferenceRange: "50-120",
				Flags: []string{"H"}, Status: "F", ObservedAt: time.Date(2024, 3, 13, 8, 29, 55, 0, time.UTC),
				Order: "182777000", ContainmentPath: "1.2.1.1", EquipmentID: "0012AB34CD56EF78",
			}},
		}},
		{"oru_r01_v27_corrected.hl7", ingest.Event{
			Kind: ingest.KindResult, Source: "LAB^GHH", SourceID: "LAB-C-0001", Trigger: "ORU^R01",
			OccurredAt: time.Date(2024, 3, 14, 9, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN600", Authority: "GHH"},
			Observations: []ingest.Observation{{
				Code: "2823-3", System: "LN", Display: "Potassium", ValueType: "NM", Value: "6.1", Numeric: ptr(6.1),
				Units: "mmol/L", ReferenceRange: "3.5-5.1", Flags: []string{"HH", "A"}, Status: "C",
				ObservedAt: time.Date(2024, 3, 14, 8, 55, 0, 0, time.UTC), Order: "24323-8",
			}, {
				Code: "2951-2", System: "LN", Display: "Sodium", ValueType: "NM", Value: "139", Numeric: ptr(139),
				Units: "mmol/L", ReferenceRange: "135-145", Flags: []string{"N"}, Status: "F", Order: "24323-8",
			}},
		}},
		{"oru_r40_watchdog.hl7", ingest.Event{
			Kind: ingest.KindWatchdog, Source: "AR01^ICU", SourceID: "WD-0001", Trigger: "ORU^R40",
			OccurredAt: time.Date(2024, 3, 15, 10, 15, 0, 0, time.UTC),
			Alarm: &ingest.Alarm{ID: "78^ALARMS^0012AB34CD56EF78^EUI-64", Reporter: "AR01", Source: "MDC_EVT_ACTIVE",
				Priority: "PN", Type: "SA", EquipmentID: "0012AB34CD56EF78"},
		}},
		{"latin1_8859.hl7", ingest.Event{
			Kind: ingest.KindAdmit, Source: "ADT^HÔPITAL", SourceID: "L1-0001", Trigger: "ADT^A01",
			OccurredAt: time.Date(2024, 3, 16, 8, 0, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "MRN800", Authority: "GHH"},
			Location:   ingest.Location{Unit: "CHIR", Room: "12", Bed: "A", Facility: "HÔPITAL"},
			Visit:      ingest.Visit{Class: "I"},
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
				if ev.Alarm != nil && tc.want.Alarm != nil {
					t.Errorf("alarm\n got %+v\nwant %+v", *ev.Alarm, *tc.want.Alarm)
				}
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
		{"prior_patient.id", "MRG-1.1"},
		{"other.patient.id", "PID(2)-3.1"},
		{"alarm.source", "OBX-3"},
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
