package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/ingest/hl7"
	"github.com/clarion-health/clarion/internal/atrest"
	"github.com/clarion-health/clarion/routing"
)

// dryRunDecoder decodes the dry run's HL7 and FHIR input
// (routing.InputDecoder): HL7 v2 through hl7.Parse and hl7.ToEvent, FHIR
// R4 through the fhir package's decoder and mapping. The FHIR decoder is
// built on first use (it is large).
type dryRunDecoder struct {
	once sync.Once
	fhir *decode.Decoder
	err  error
}

var _ routing.InputDecoder = (*dryRunDecoder)(nil)

func newDryRunDecoder() *dryRunDecoder { return &dryRunDecoder{} }

// DecodeInput implements routing.InputDecoder.
func (d *dryRunDecoder) DecodeInput(_ context.Context, format string, body []byte) (*ingest.Event, error) {
	switch format {
	case "hl7":
		m, err := hl7.Parse(bytes.ReplaceAll(body, []byte("\n"), []byte("\r")))
		if err != nil {
			return nil, &routing.InvalidInputError{Reason: "hl7: " + err.Error()}
		}
		ev, err := hl7.ToEvent(m)
		if err != nil {
			return nil, &routing.InvalidInputError{Reason: "hl7: " + err.Error()}
		}
		return &ev, nil
	case "fhir":
		d.once.Do(func() { d.fhir, d.err = decode.NewDecoder() })
		if d.err != nil {
			return nil, d.err
		}
		res, err := d.fhir.Decode(body)
		if err != nil {
			return nil, &routing.InvalidInputError{Reason: "fhir: " + err.Error()}
		}
		m, err := decode.Map(res, decode.TypeOf(res))
		if err != nil {
			return nil, &routing.InvalidInputError{Reason: "fhir: " + err.Error()}
		}
		ev := m.Event
		if ev.OccurredAt.IsZero() {
			ev.OccurredAt = time.Now().UTC()
		}
		return &ev, nil
	}
	return nil, &routing.InvalidInputError{Reason: fmt.Sprintf("unknown input format %q", format)}
}

// sniffFormat guesses a file's format: HL7 starts with MSH (or a batch
// header), FHIR is JSON with a resourceType, anything else JSON is an event.
func sniffFormat(b []byte) string {
	t := bytes.TrimSpace(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")))
	for _, p := range []string{"MSH", "FHS", "BHS"} {
		if bytes.HasPrefix(t, []byte(p)) {
			return "hl7"
		}
	}
	var probe struct {
		ResourceType string `json:"resourceType"`
	}
	if json.Unmarshal(t, &probe) == nil && probe.ResourceType != "" {
		return "fhir"
	}
	return "event"
}

// runRulesDryRun is "clarion rules test": it prints, as JSON, what routing
// the given message would do now, without writing anything. The output
// holds the message's PHI (the rendered body): it is for the rule owner's
// terminal.
func runRulesDryRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rules test", stderr)
	var s storeFlags
	s.register(fs)
	format := fs.String("format", "auto", "input format: hl7, fhir, event or auto")
	atFlag := fs.String("at", "", "evaluate at this RFC 3339 time (default now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, rulesUsage)
		return exitCode(2)
	}
	var body []byte
	var err error
	if fs.Arg(0) == "-" {
		body, err = io.ReadAll(io.LimitReader(os.Stdin, 2<<20))
	} else {
		body, err = os.ReadFile(fs.Arg(0))
	}
	if err != nil {
		return err
	}
	at := time.Now()
	if *atFlag != "" {
		if at, err = time.Parse(time.RFC3339, *atFlag); err != nil {
			return fmt.Errorf("--at: %w", err)
		}
	}
	f := *format
	if f == "auto" {
		f = sniffFormat(body)
	}
	req := routing.DryRunRequest{}
	switch f {
	case "hl7":
		msgs := hl7.SplitBatch(body)
		if len(msgs) == 0 {
			return fmt.Errorf("%s: no HL7 message", fs.Arg(0))
		}
		req.HL7 = string(msgs[0])
	case "fhir":
		req.FHIR = json.RawMessage(body)
	case "event":
		var ev ingest.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			return fmt.Errorf("%s: not an event: %w", fs.Arg(0), err)
		}
		req.Event = &ev
	default:
		return fmt.Errorf("--format must be hl7, fhir, event or auto, not %q", f)
	}
	ev, err := routing.DecodeDryRunInput(ctx, req, newDryRunDecoder())
	if err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	keys, err := atrest.Load(s.dataDir)
	if err != nil {
		return err
	}
	res, err := routing.RunDryRun(ctx, d, routing.NewRouter(keys), ev, keys, at)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return err
	}
	if len(res.Matches) == 0 {
		fmt.Fprintln(stderr, strings.TrimSpace(fmt.Sprintf("no rule matches (%d enabled)", res.RulesEnabled)))
	}
	return nil
}
