package decode

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clarion-health/clarion/ingest"
)

func newDecoder(t testing.TB) *Decoder {
	t.Helper()
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMapFixtures(t *testing.T) {
	d := newDecoder(t)
	cases := []struct {
		file  string
		check func(t *testing.T, m *Mapped)
	}{
		{"heart-rate-rpm.json", func(t *testing.T, m *Mapped) {
			o := m.Event.Observations[0]
			if m.Identifier.Value != "rpm-hr-0001" || m.Status != "final" || o.Status != "F" ||
				!o.ObservedAt.Equal(time.Date(2026, 11, 23, 8, 15, 0, 0, time.UTC)) || o.ValueType != "NM" {
				t.Fatalf("%+v %+v", m, o)
			}
		}},
		{"blood-pressure-rpm.json", func(t *testing.T, m *Mapped) {
			if len(m.Event.Observations) != 2 || !m.Event.Observations[0].ObservedAt.Equal(time.Date(2026, 11, 23, 7, 20, 0, 0, time.UTC)) {
				t.Fatalf("%+v", m.Event.Observations)
			}
		}},
		{"potassium-critical.json", func(t *testing.T, m *Mapped) {
			o := m.Event.Observations[0]
			if o.ReferenceRange != "3.5-5.1" || !slices.Equal(o.Flags, []string{"HH"}) || m.Identifier != nil {
				t.Fatalf("%+v", o)
			}
		}},
		{"encounter-admit-4w.json", func(t *testing.T, m *Mapped) {
			if m.Event.Kind != ingest.KindAdmit || m.Event.Location.Unit != "4W" || m.Event.Visit.Class != "I" || m.Event.Visit.Number != "V-9001" {
				t.Fatalf("%+v", m.Event)
			}
		}},
		{"communicationrequest-macm.json", func(t *testing.T, m *Mapped) {
			o := m.Event.Observations[0]
			if o.System != "urn:oid:1.3.6.1.4.1.99999.9" || o.Display != "Fall detected" {
				t.Fatalf("%+v", o)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			res, err := d.Decode(fixture(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Map(res, TypeOf(res))
			if err != nil {
				t.Fatal(err)
			}
			m.Event.Source, m.Event.SourceID = "fhir:test", "x"
			if m.Event.OccurredAt.IsZero() {
				m.Event.OccurredAt = time.Now()
			}
			if err := m.Event.Validate(); err != nil {
				t.Fatalf("mapped event does not validate: %v", err)
			}
			c.check(t, m)
		})
	}
}

func TestDecodeRefusals(t *testing.T) {
	d := newDecoder(t)
	cases := []struct {
		name, body string
		code, expr string
	}{
		{"not JSON", `{"resourceType":`, CodeStructure, ""},
		{"not an object", `[1,2]`, CodeStructure, ""},
		{"unknown resource type", `{"resourceType":"Banana"}`, CodeInvalid, ""},
		{"missing required element", `{"resourceType":"Observation","code":{"text":"x"}}`, CodeRequired, "Observation.status"},
		{"wrong value type", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"high"}}`, CodeInvalid, ""},
		{"reference to the wrong type", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Medication/1"}}`, CodeValue, "Observation.subject"},
	}
	for _, c := range cases {
		_, err := d.Decode([]byte(c.body))
		var derr *Error
		if !errors.As(err, &derr) || derr.Status != 400 {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if derr.Issues[0].Code != c.code || (c.expr != "" && derr.Issues[0].Expression != c.expr) {
			t.Errorf("%s: %+v, want %s at %s", c.name, derr.Issues, c.code, c.expr)
		}
	}
}

func TestReferences(t *testing.T) {
	cases := []struct {
		url, typ, id, base string
		ok                 bool
	}{
		{"https://ehr.example/fhir/Patient/123", "Patient", "123", "https://ehr.example/fhir", true},
		{"https://ehr.example/fhir/Patient/123/_history/2", "Patient", "123", "https://ehr.example/fhir", true},
		{"urn:uuid:0e6b0000-0000-4000-8000-000000000001", "", "", "", false},
		{"https://ehr.example/x", "", "", "", false},
	}
	for _, c := range cases {
		typ, id, base, ok := SplitURL(c.url)
		if typ != c.typ || id != c.id || base != c.base || ok != c.ok {
			t.Errorf("%s: %s %s %s %v", c.url, typ, id, base, ok)
		}
	}
	if typeFromField("device_metric_id") != "DeviceMetric" {
		t.Error("typeFromField")
	}
	for _, s := range []string{"a|b", "|b", "b"} {
		if id, ok := ParseToken(s); !ok || id.Value != "b" {
			t.Errorf("ParseToken(%q)", s)
		}
	}
}

// FuzzDecodeAndMap feeds the strict decoder and the mapper arbitrary
// bytes, seeded with Clarion's fixtures and the shared corpus: neither may
// panic, a refusal is always an *Error with a 4xx status, and an accepted
// resource maps to an event that validates.
func FuzzDecodeAndMap(f *testing.F) {
	for _, dir := range []string{filepath.Join("..", "testdata"), filepath.Join("..", "..", "..", "shared", "corpus", "fhir")} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"resourceType":"Observation"}`))
	d := newDecoder(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := d.Decode(body)
		if err != nil {
			var derr *Error
			if !errors.As(err, &derr) || derr.Status < 400 || derr.Status > 499 || len(derr.Issues) == 0 {
				t.Fatalf("decode refusal is not a 4xx Error: %v", err)
			}
			return
		}
		m, err := Map(res, TypeOf(res))
		if err != nil {
			var derr *Error
			if !errors.As(err, &derr) || derr.Status != 422 && derr.Status != 400 {
				t.Fatalf("map refusal: %v", err)
			}
			for _, is := range derr.Issues {
				if is.Expression == "" || !strings.Contains(is.Expression, TypeOf(res)) {
					t.Fatalf("issue does not name its element: %+v", is)
				}
			}
			return
		}
		m.Event.Source, m.Event.SourceID, m.Event.OccurredAt = "fhir:fuzz", "x", time.Now()
		if err := m.Event.Validate(); err != nil {
			t.Fatalf("a mapped %s does not validate: %v", m.ResourceType, err)
		}
	})
}
