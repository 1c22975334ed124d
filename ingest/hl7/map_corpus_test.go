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

// obsSpot is one observation checked field by field.
type obsSpot struct {
	i                                         int
	code, system, value, units, status, order string
	num                                       *float64
	flags                                     []string
	path, equipment                           string
}

// What ToEvent makes of every corpus message: the event's specific field
// values, or the error code and location the sender is told.
func TestCorpusEvents(t *testing.T) {
	files := corpusFiles(t)
	// The msft-fhirconv ADT samples share one patient and visit.
	ghh := struct {
		p ingest.Patient
		l ingest.Location
		v ingest.Visit
	}{ingest.Patient{ID: "PATID1234", Authority: "test1"},
		ingest.Location{Unit: "HUH AE OMU", Room: "OMU B", Bed: "Bed 03", Facility: "HOMERTON UNIVER"},
		ingest.Visit{Class: "P", Attending: "1122334", Number: "40007716"}}
	a04 := ingest.Event{Kind: ingest.KindRegister, Source: "^ABCHS", Trigger: "ADT^A04",
		OccurredAt: time.Date(2006, 7, 5, 0, 0, 0, 0, time.UTC),
		Patient:    ingest.Patient{ID: "0000112234", Authority: "100"}, Visit: ingest.Visit{Class: "O"}}
	adt := func(kind ingest.Kind, trig string) ingest.Event {
		return ingest.Event{Kind: kind, Source: "ADTApp^GHHSFacility", SourceID: "MSG00001", Trigger: "ADT^" + trig,
			OccurredAt: time.Date(2029, 8, 1, 7, 6, 24, 0, time.FixedZone("", 75*60)),
			Patient:    ghh.p, Location: ghh.l, Visit: ghh.v}
	}
	withID := func(ev ingest.Event, id string) ingest.Event { ev.SourceID = id; return ev }
	tests := []struct {
		file  string
		index int    // message within a batch file
		err   string // code and location, when the message is refused
		want  ingest.Event
		nobs  int
		obs   []obsSpot
	}{
		{file: "elixir-hl7_elr_ORU_R01_v251_truncchar.hl7", err: "102 OBX(2)-14.1"}, // OBX-14 masked with '*'
		{file: "elixir-hl7_nist_VXU_V04.hl7", err: "200 MSH-9.1"},
		{file: "elixir-hl7_nist_syndromic_ADT_A03.hl7", want: ingest.Event{Kind: ingest.KindDischarge,
			Source: "^LakeMichMC", SourceID: "NIST-SS-003.32", Trigger: "ADT^A03",
			OccurredAt: time.Date(2012, 4, 2, 0, 30, 0, 0, time.UTC), // EVN-2
			Patient:    ingest.Patient{ID: "33333"}, Visit: ingest.Visit{Number: "33333_001"}}},
		{file: "elixir-hl7_wikipedia_ADT_A01.hl7", want: ingest.Event{Kind: ingest.KindAdmit,
			Source: "MegaReg^XYZHospC", SourceID: "01052901", Trigger: "ADT^A01",
			OccurredAt: time.Date(2006, 5, 29, 9, 1, 0, 0, time.UTC),
			Patient:    ingest.Patient{ID: "56782445", Authority: "UAReg"},
			Location:   ingest.Location{Unit: "W", Room: "389", Bed: "1", Facility: "UABH"},
			Visit:      ingest.Visit{Class: "I", Attending: "12345"}}},
		{file: "ihe-pcd-acm-draeger_ACK_watchdog.hl7", err: "200 MSH-9.1"}, // an ACK is not a message to route
		{file: "ihe-pcd-acm-draeger_PCD04_alarm.hl7", nobs: 9, want: ingest.Event{Kind: ingest.KindAlarm,
			Source: "0000000000000001^IHE_AR", SourceID: "0", Trigger: "ORU^R40",
			OccurredAt: time.Date(2019, 11, 27, 16, 5, 43, 0, time.FixedZone("", 3600)),
			Patient:    ingest.Patient{ID: "8888"}, Location: ingest.Location{Unit: "CU1", Bed: "Bed001", Facility: "TAM"},
			Alarm: &ingest.Alarm{ID: "0^3d313edb-6fab-4718-9d38-82262c83aea5^0000000000000001^EUI-64",
				Reporter: "0000000000000001", Source: "MDC_EVT_SENSOR_DISCONN", Phase: "start", State: "active",
				InactivationState: "enabled", Priority: "PL", Type: "SP",
				EquipmentID: "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"}},
			obs: []obsSpot{
				{i: 2, code: "MDC_EVT_SENSOR_DISCONN", system: "MDC", value: "CO2 Sensor unplugged", status: "F",
					order: "MDC_EVT_ALARM", path: "1.1.1.1", equipment: "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"},
				{i: 3, code: "MDC_ATTR_ALERT_SOURCE", system: "MDC", value: "42", num: ptr(42), status: "F",
					order: "MDC_EVT_ALARM", path: "1.1.1.2", equipment: "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"},
			}},
		{file: "ihe-pcd-acm-draeger_PCD04_watchdog.hl7", want: ingest.Event{Kind: ingest.KindWatchdog,
			Source: "0000000000000001^IHE_AR", SourceID: "2df8823a-f8fb-44e0-a4ba-1d826e0809f1", Trigger: "ORU^R40",
			OccurredAt: time.Date(2019, 11, 27, 14, 56, 35, 0, time.FixedZone("", 3600)),
			Patient:    ingest.Patient{ID: "8888"}, Location: ingest.Location{Unit: "CU1", Bed: "Bed001", Facility: "TAM"},
			Alarm: &ingest.Alarm{ID: "830^urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb^0000000000000001",
				Reporter: "0000000000000001", Source: "MDC_EVT_ACTIVE", Phase: "start", State: "active",
				InactivationState: "enabled", Priority: "PN", Type: "SA",
				EquipmentID: "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"}}},
		{file: "ihe-pcd-acm-draeger_PCD05_alarm.hl7", err: "200 MSH-9.1"}, // ORA^R41 goes to devices, not from them
		{file: "msft-fhirconv_ADT-A01-01.hl7", want: adt(ingest.KindAdmit, "A01")},
		{file: "msft-fhirconv_ADT-A01-02.hl7", want: adt(ingest.KindAdmit, "A01")},
		{file: "msft-fhirconv_ADT-A02-01.hl7", want: adt(ingest.KindTransfer, "A02")},
		{file: "msft-fhirconv_ADT-A02-02.hl7", want: adt(ingest.KindTransfer, "A02")},
		{file: "msft-fhirconv_ADT-A03-01.hl7", want: adt(ingest.KindDischarge, "A03")},
		{file: "msft-fhirconv_ADT-A03-02.hl7", want: adt(ingest.KindDischarge, "A03")},
		{file: "msft-fhirconv_ADT-A04-02.hl7", want: adt(ingest.KindRegister, "A04")},
		{file: "msft-fhirconv_ADT-A08-01.hl7", want: adt(ingest.KindUpdate, "A08")},
		{file: "msft-fhirconv_ADT-A08-02.hl7", want: adt(ingest.KindUpdate, "A08")},
		{file: "msft-fhirconv_ADT-A11-02.hl7", want: adt(ingest.KindCancelAdmit, "A11")},
		{file: "msft-fhirconv_ADT-A13-02.hl7", want: adt(ingest.KindCancelDischarge, "A13")},
		{file: "msft-fhirconv_ADT01-23.hl7", want: ingest.Event{Kind: ingest.KindAdmit, Source: "AccMgr^1",
			SourceID: "599102", Trigger: "ADT^A01", OccurredAt: time.Date(2005, 1, 10, 4, 55, 2, 0, time.FixedZone("", 7*3600)),
			Patient:  ingest.Patient{ID: "10006579", Authority: "1"},
			Location: ingest.Location{Unit: "PREOP", Room: "101", Bed: "1", Facility: "1"},
			Visit:    ingest.Visit{Class: "I", Attending: "37", Number: "40007716"}}},
		{file: "msft-fhirconv_ADT01-28.hl7", want: ingest.Event{Kind: ingest.KindAdmit,
			Source: "ADT1^GOOD HEALTH HOSPITAL", SourceID: "MSG00001", Trigger: "ADT^A01",
			OccurredAt: time.Date(2007, 8, 18, 11, 23, 0, 0, time.FixedZone("", 7*3600)),
			Patient:    ingest.Patient{ID: "PATID1234", Authority: "ADT1"},
			Location:   ingest.Location{Unit: "2000", Room: "2012", Bed: "01"},
			Visit:      ingest.Visit{Class: "I", Attending: "004777"}}},
		{file: "msft-fhirconv_ADT04-23.hl7", want: ingest.Event{Kind: ingest.KindRegister, Source: "NES^NINTENDO",
			SourceID: "Q123456789T123456789X123456", Trigger: "ADT^A04",
			OccurredAt: time.Date(2001, 1, 1, 0, 0, 0, 0, time.FixedZone("", 7*3600)),
			Patient:    ingest.Patient{ID: "123456789"}, Location: ingest.Location{Unit: "ABCD", Room: "EFGH"},
			Visit: ingest.Visit{Class: "O", Attending: "123456", Number: "0123456789"}}},
		{file: "msft-fhirconv_ADT04-251.hl7", want: ingest.Event{Kind: ingest.KindRegister, Source: "REDOX^RDX",
			SourceID: "1270326314", Trigger: "ADT^A04",
			OccurredAt: time.Date(2019, 5, 4, 18, 12, 5, 0, time.FixedZone("", 7*3600)),
			Patient:    ingest.Patient{ID: "MRN12345"}, Visit: ingest.Visit{Class: "E", Attending: "12345"}}},
		{file: "msft-fhirconv_ADT04-28.hl7", want: ingest.Event{Kind: ingest.KindRegister, Source: "REDOX^RDX",
			SourceID: "1270326314", Trigger: "ADT^A04",
			OccurredAt: time.Date(2018, 10, 17, 2, 55, 43, 0, time.FixedZone("", 7*3600)),
			Patient:    ingest.Patient{ID: "0000000001", Authority: "MR"},
			Location:   ingest.Location{Unit: "3N", Room: "136", Bed: "B", Facility: "RES General Hospital"},
			Visit:      ingest.Visit{Class: "I", Attending: "4356789876", Number: "1234"}}},
		{file: "msft-fhirconv_IZ_1_1.1_Admin_Child_Max_Message.hl7", err: "200 MSH-9.1"},
		{file: "msft-fhirconv_LAB-ORU-1.hl7", nobs: 10, obs: []obsSpot{
			{i: 0, code: "11156-7", system: "LN", status: "I", order: "24317-0"}, // no value yet
			{i: 1, code: "11273-0", system: "LN", value: "4.06", num: ptr(4.06), units: "tera.l-1", status: "P",
				order: "24317-0", flags: []string{"N"}},
		}},
		{file: "msft-fhirconv_LAB-ORU-2.hl7", nobs: 10, obs: []obsSpot{
			{i: 0, code: "30180-4", system: "LN", value: "0", num: ptr(0), units: "%", status: "F", order: "26464-8",
				flags: []string{"N"}},
		}},
		{file: "msft-fhirconv_LRI_2.0-NG_CBC_Typ_Message.hl7", nobs: 28, obs: []obsSpot{
			{i: 1, code: "718-7", system: "LN", value: "12.5", num: ptr(12.5), units: "g/mL", status: "F",
				order: "57021-8", flags: []string{"L"}},
		}},
		{file: "msft-fhirconv_MDM-T02-01.hl7", err: "200 MSH-9.1"},
		{file: "msft-fhirconv_ORM-O01-01.hl7", err: "200 MSH-9.1"},
		{file: "msft-fhirconv_ORU-R01-01.hl7", err: "101 OBX(2)-3.1"}, // an ED OBX with no OBX-3
		{file: "msft-fhirconv_ORU-R01-RMGEAD.hl7", nobs: 1, obs: []obsSpot{
			{i: 0, code: "1554-5", system: "POST 12H CFST:MCNC:PT:SER/PLAS:QN", value: "^182", num: ptr(182),
				units: "mg/dl", status: "F", order: "15545", flags: []string{"H"}},
		}},
		{file: "python-hl7_batch_BHS_BTS_ADT_A04.hl7", index: 0, want: withID(a04, "12334456778890")},
		{file: "python-hl7_batch_BHS_BTS_ADT_A04.hl7", index: 1, want: withID(a04, "12334456778891")},
		{file: "python-hl7_file_FHS_BHS_ADT_A04.hl7", index: 0, want: withID(a04, "12334456778890")},
		{file: "python-hl7_file_FHS_BHS_ADT_A04.hl7", index: 1, want: withID(a04, "12334456778891")},
		{file: "python-hl7_file_FHS_BHS_ADT_A04.hl7", index: 2, want: withID(a04, "12334456778890")},
		{file: "python-hl7_repetition_subcomponent.hl7", err: "100 OBX"}, // a parser sample: no OBX at all
		{file: "python-hl7_spec_ORU_R01_glucose_H.hl7", nobs: 2, obs: []obsSpot{
			{i: 0, code: "1554-5", value: "^182", num: ptr(182), units: "mg/dl", status: "F", order: "1554-5",
				system: "POST 12H CFST:MCNC:PT:SER/PLAS:QN", flags: []string{"H"}},
			{i: 1, code: "1553-5", value: "^182", units: "mg/dl", status: "F", order: "1554-5", // FN: no number
				system: "POST 12H CFST:MCNC:PT:SER/PLAS:QN", flags: []string{"H"}},
		}},
	}
	covered := map[string]bool{}
	for _, tc := range tests {
		covered[tc.file] = true
		t.Run(tc.file+"#"+strconv.Itoa(tc.index), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(corpusDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			msgs := SplitBatch(raw)
			if tc.index >= len(msgs) {
				t.Fatalf("%d messages, want message %d", len(msgs), tc.index)
			}
			ev, err := ToEvent(mustParse(t, msgs[tc.index]))
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
			if len(ev.Observations) != tc.nobs {
				t.Errorf("%d observations, want %d", len(ev.Observations), tc.nobs)
			}
			for _, o := range tc.obs {
				checkObs(t, ev.Observations, o)
			}
			if tc.want.Kind == "" { // results: only observations are spot-checked
				return
			}
			if !ev.OccurredAt.Equal(tc.want.OccurredAt) {
				t.Errorf("OccurredAt = %v, want %v", ev.OccurredAt, tc.want.OccurredAt)
			}
			ev.OccurredAt, ev.Observations = tc.want.OccurredAt, nil
			if !reflect.DeepEqual(ev, tc.want) {
				t.Errorf("event\n got %+v\nwant %+v", ev, tc.want)
				if ev.Alarm != nil && tc.want.Alarm != nil {
					t.Errorf("alarm\n got %+v\nwant %+v", *ev.Alarm, *tc.want.Alarm)
				}
			}
		})
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("corpus file %s has no expectation", filepath.Base(f))
		}
	}
}

func checkObs(t *testing.T, obs []ingest.Observation, want obsSpot) {
	t.Helper()
	if want.i >= len(obs) {
		t.Errorf("no observation %d", want.i)
		return
	}
	o := obs[want.i]
	got := obsSpot{i: want.i, code: o.Code, system: o.System, value: o.Value, units: o.Units, status: o.Status,
		order: o.Order, num: o.Numeric, flags: o.Flags, path: o.ContainmentPath, equipment: o.EquipmentID}
	numEq := (got.num == nil) == (want.num == nil) && (got.num == nil || *got.num == *want.num)
	got.num, want.num = nil, nil
	if !numEq || !reflect.DeepEqual(got, want) {
		t.Errorf("observation %d\n got %+v (numeric %v)\nwant %+v", want.i, got, o.Numeric, want)
	}
}
