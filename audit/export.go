package audit

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Export formats.
const (
	FormatJSONLines = "jsonl"
	FormatCSV       = "csv"
	FormatFHIR      = "fhir"
)

// ContentType returns the media type of an export format.
func ContentType(format string) string {
	switch format {
	case FormatCSV:
		return "text/csv; charset=utf-8"
	case FormatFHIR:
		return "application/fhir+json"
	default:
		return "application/x-ndjson"
	}
}

// Exporter writes records in one format: Write for each record, then Close.
type Exporter interface {
	Write(r Record) error
	Close() error
}

// NewExporter returns an exporter of format writing to w. The FHIR Bundle
// names its source (the observer) and the time it was made.
func NewExporter(w io.Writer, format, source string, now time.Time) (Exporter, error) {
	switch format {
	case FormatJSONLines, "":
		return &jsonLines{w: bufio.NewWriter(w)}, nil
	case FormatCSV:
		c := csv.NewWriter(w)
		return &csvExport{w: c}, c.Write(csvHeader)
	case FormatFHIR:
		return newFHIRExport(w, source, now)
	}
	return nil, &InvalidError{"format", "must be jsonl, csv or fhir"}
}

// jsonLines writes one Record as JSON per line: the lossless format, whose
// records can be re-hashed and verified offline.
type jsonLines struct{ w *bufio.Writer }

func (j *jsonLines) Write(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	j.w.Write(b)
	return j.w.WriteByte('\n')
}

func (j *jsonLines) Close() error { return j.w.Flush() }

var csvHeader = []string{"seq", "at", "actor_type", "actor_id", "actor_role", "action", "object_type", "object_id",
	"outcome", "correlation_id", "source_addr", "device_id", "detail", "prev_hash", "hash", "hash_version"}

type csvExport struct{ w *csv.Writer }

func (c *csvExport) Write(r Record) error {
	return c.w.Write([]string{strconv.FormatInt(r.Seq, 10), r.At.Format(time.RFC3339Nano),
		cell(r.ActorType), cell(r.ActorID), cell(r.ActorRole), cell(r.Action), cell(r.ObjectType), cell(r.ObjectID),
		cell(r.Outcome), cell(r.CorrelationID), cell(r.SourceAddr), cell(r.DeviceID), cell(string(r.Detail)),
		r.PrevHash, r.Hash, strconv.Itoa(r.HashVersion)})
}

func (c *csvExport) Close() error {
	c.w.Flush()
	return c.w.Error()
}

// cell defuses spreadsheet formulas: a text cell that a spreadsheet would
// evaluate (=, +, -, @, tab, CR first) gets a leading apostrophe. Ids can
// come from outside (a sender's name), and an auditor opens CSV in a
// spreadsheet; the JSON-lines export stays byte-exact for re-hashing.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
