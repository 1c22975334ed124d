package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/ingest/hl7"
)

// The JSON "clarion hl7 inspect" prints: an analyst's view of a file of one
// or more HL7 v2 messages. It holds the file's PHI: it goes to the
// analyst's terminal, never to a log.
type (
	inspectReport struct {
		File     string           `json:"file"`
		Batch    bool             `json:"batch"` // the file has FHS/BHS envelopes
		Messages []inspectMessage `json:"messages"`
	}
	inspectMessage struct {
		Index      int              `json:"index"` // 1-based, in file order
		Delimiters *inspectDelims   `json:"delimiters,omitempty"`
		Charset    string           `json:"charset,omitempty"` // MSH-18 as understood; the values shown are UTF-8
		Segments   []inspectSegment `json:"segments,omitempty"`
		Event      *ingest.Event    `json:"event,omitempty"`
		Error      *inspectError    `json:"error,omitempty"`
	}
	inspectDelims struct {
		Field        string `json:"field"`
		Component    string `json:"component"`
		Repetition   string `json:"repetition"`
		Escape       string `json:"escape"`
		Subcomponent string `json:"subcomponent"`
		Truncation   string `json:"truncation,omitempty"`
	}
	inspectSegment struct {
		ID     string         `json:"id"`
		Seq    int            `json:"seq"` // occurrence of this id: PID(2) is seq 2
		Fields []inspectField `json:"fields,omitempty"`
	}
	// inspectField is one non-empty field: its whole decoded text and, when
	// it has structure, reps[r][c] = a component's text, or the list of
	// its subcomponents' texts.
	inspectField struct {
		N         int     `json:"n"`
		Value     string  `json:"value"`
		Reps      [][]any `json:"reps,omitempty"`
		Truncated bool    `json:"truncated,omitempty"`
	}
	inspectError struct {
		Stage    string `json:"stage"` // "parse" or "map"
		Code     int    `json:"code"`  // HL7 table 0357
		Location string `json:"location,omitempty"`
		Text     string `json:"text"`
	}
)

// runHL7Inspect prints FILE ("-" for standard input) as JSON: delimiters,
// every segment's fields by position with values decoded, and the event
// each message maps to, or the error it is refused with.
func runHL7Inspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("hl7 inspect", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("hl7 inspect: name one FILE (or - for standard input)")
	}
	name := fs.Arg(0)
	var raw []byte
	var err error
	if name == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(name)
	}
	if err != nil {
		return fmt.Errorf("hl7 inspect: %w", err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(inspect(name, raw))
}

func inspect(name string, raw []byte) inspectReport {
	r := inspectReport{File: name, Batch: hl7.IsBatch(raw), Messages: []inspectMessage{}}
	msgs := hl7.SplitBatch(raw)
	if len(msgs) == 0 {
		msgs = [][]byte{raw} // let Parse say what is wrong with it
	}
	for i, b := range msgs {
		r.Messages = append(r.Messages, inspectOne(i+1, b))
	}
	return r
}

func inspectOne(index int, raw []byte) inspectMessage {
	out := inspectMessage{Index: index}
	m, err := hl7.Parse(raw)
	if err != nil {
		out.Error = inspectErr("parse", err)
		return out
	}
	d := m.Delimiters()
	out.Delimiters = &inspectDelims{Field: string(d.Field), Component: string(d.Component),
		Repetition: string(d.Repetition), Escape: string(d.Escape), Subcomponent: string(d.Subcomponent)}
	if d.Truncation != 0 {
		out.Delimiters.Truncation = string(d.Truncation)
	}
	out.Charset = string(m.Charset())
	seen := map[string]int{}
	for i := range m.Len() {
		s := m.SegmentAt(i)
		seen[s.Name()]++
		out.Segments = append(out.Segments, inspectSeg(s, seen[s.Name()]))
	}
	ev, err := hl7.ToEvent(m)
	if err != nil {
		out.Error = inspectErr("map", err)
		return out
	}
	out.Event = &ev
	return out
}

func inspectSeg(s hl7.Segment, seq int) inspectSegment {
	out := inspectSegment{ID: s.Name(), Seq: seq}
	fields := make([]hl7.Value, s.FieldCount()+1)
	s.Fields(fields)
	for n, f := range fields {
		if n == 0 || f.IsEmpty() {
			continue
		}
		fld := inspectField{N: n, Value: f.String(), Truncated: f.Truncated()}
		if f.Reps() > 1 || f.Comps() > 1 || f.Comp(1).Subs() > 1 {
			fld.Reps = structure(f)
		}
		out.Fields = append(out.Fields, fld)
	}
	return out
}

// structure decodes every repetition, component and subcomponent.
func structure(f hl7.Value) [][]any {
	reps := make([][]any, 0, f.Reps())
	for r := 1; r <= max(f.Reps(), 1); r++ {
		rep := f.Rep(r)
		comps := make([]any, 0, rep.Comps())
		for c := 1; c <= max(rep.Comps(), 1); c++ {
			comp := rep.Comp(c)
			if comp.Subs() <= 1 {
				comps = append(comps, comp.String())
				continue
			}
			subs := make([]string, comp.Subs())
			for s := range subs {
				subs[s] = comp.Sub(s + 1).String()
			}
			comps = append(comps, subs)
		}
		reps = append(reps, comps)
	}
	return reps
}

func inspectErr(stage string, err error) *inspectError {
	var pe *hl7.ParseError
	if !errors.As(err, &pe) {
		return &inspectError{Stage: stage, Code: hl7.CodeApplicationInternal, Text: err.Error()}
	}
	return &inspectError{Stage: stage, Code: pe.Code, Location: pe.Location(), Text: pe.Msg}
}
