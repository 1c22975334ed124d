package audit_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/dbtest"
)

func exportAll(t *testing.T, format string, recs []audit.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	ex, err := audit.NewExporter(&buf, format, "clarion-test", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := ex.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := ex.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExportFormats(t *testing.T) {
	d := dbtest.SQLite(t)
	seedQueryLog(t, d)
	page, err := audit.Query(context.Background(), d, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	recs := page.Records

	t.Run("json lines are lossless and re-hash", func(t *testing.T) {
		lines := strings.Split(strings.TrimSpace(string(exportAll(t, audit.FormatJSONLines, recs))), "\n")
		if len(lines) != len(recs) {
			t.Fatalf("%d lines for %d records", len(lines), len(recs))
		}
		prev := ""
		for _, l := range lines {
			var r audit.Record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatal(err)
			}
			if r.PrevHash != prev || audit.RecomputeHash(&r) != r.Hash {
				t.Fatalf("record %d does not re-hash from its export", r.Seq)
			}
			prev = r.Hash
		}
	})

	t.Run("csv", func(t *testing.T) {
		rows, err := csv.NewReader(bytes.NewReader(exportAll(t, audit.FormatCSV, recs))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(recs)+1 || rows[0][0] != "seq" || rows[3][5] != "message.read" || rows[3][10] != "10.0.0.7" {
			t.Fatalf("csv rows: %q", rows[:4])
		}
	})

	t.Run("csv defuses formulas", func(t *testing.T) {
		r := recs[0]
		r.ActorID = "=HYPERLINK(\"http://x\")"
		rows, _ := csv.NewReader(bytes.NewReader(exportAll(t, audit.FormatCSV, []audit.Record{r}))).ReadAll()
		if got := rows[1][3]; !strings.HasPrefix(got, "'=") {
			t.Fatalf("actor_id cell %q", got)
		}
	})

	t.Run("fhir bundle of AuditEvents", func(t *testing.T) {
		var b struct {
			ResourceType string `json:"resourceType"`
			Type         string `json:"type"`
			Timestamp    string `json:"timestamp"`
			Entry        []struct {
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(exportAll(t, audit.FormatFHIR, recs), &b); err != nil {
			t.Fatal(err)
		}
		if b.ResourceType != "Bundle" || b.Type != "collection" || b.Timestamp == "" || len(b.Entry) != len(recs) {
			t.Fatalf("bundle: %+v", b)
		}
		ev := b.Entry[2].Resource // message.read by dev_1 from 10.0.0.7
		// R4 AuditEvent: type 1..1, recorded 1..1, agent 1..* with requestor 1..1, source 1..1 with observer 1..1.
		for _, k := range []string{"resourceType", "id", "type", "subtype", "action", "recorded", "outcome", "agent", "source", "entity"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("AuditEvent lacks %s: %v", k, ev)
			}
		}
		js, _ := json.Marshal(ev)
		for _, want := range []string{`"resourceType":"AuditEvent"`, `"action":"R"`, `"outcome":"0"`,
			`"requestor":true`, `"network":{"address":"10.0.0.7","type":"2"}`, `"observer":{`, `"code":"message.read"`,
			`"identifier":{"system":"urn:clarion:message","value":"msg_1"}`, `"valueString":"evt_1"`} {
			if !bytes.Contains(js, []byte(want)) {
				t.Errorf("AuditEvent lacks %s:\n%s", want, js)
			}
		}
		failed, _ := json.Marshal(b.Entry[5].Resource)
		if !bytes.Contains(failed, []byte(`"outcome":"4"`)) {
			t.Errorf("a failure is not outcome 4: %s", failed)
		}
	})

	t.Run("unknown format names the field", func(t *testing.T) {
		if _, err := audit.NewExporter(&bytes.Buffer{}, "xml", "x", t0); err == nil || !strings.HasPrefix(err.Error(), "format") {
			t.Fatalf("got %v", err)
		}
	})
}
