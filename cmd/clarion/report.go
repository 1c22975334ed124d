package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/report"
)

// runReport prints the response report of a period: a table, or JSON.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	var s storeFlags
	s.register(fs)
	from := fs.String("from", "", "start of the period, RFC 3339 (default: 24 hours before --to)")
	to := fs.String("to", "", "end of the period, RFC 3339 (default: now)")
	groupBy := fs.String("group-by", report.ByUnit, "unit, role, rule, priority or user")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	now := time.Now()
	p, err := report.ParseParams(*from, *to, *groupBy, now)
	if err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := audit.ChainAll(ctx, d); err != nil {
		return err
	}
	rep, err := report.Compute(ctx, d, p, now)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if err := appendOne(ctx, d, audit.Entry{ActorType: audit.ActorSystem, ActorID: "cli", Action: "report.viewed",
		ObjectType: "report", ObjectID: "response", SourceAddr: host,
		Detail: map[string]any{"from": p.From.UTC().Format(time.RFC3339), "to": p.To.UTC().Format(time.RFC3339),
			"group_by": p.GroupBy, "samples": rep.Total.Samples}}); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReport(stdout, rep)
	return nil
}

func printReport(w io.Writer, rep report.Report) {
	fmt.Fprintf(w, "Response report %s to %s, by %s (one sample per %s; seconds, p50/p90)\n\n",
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.GroupBy, rep.Level)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tsamples\tdeliver\tread\taccept\tescalated\tfailsafe\topen\t")
	for _, g := range append(rep.Groups, rep.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d (%.0f%%)\t%d\t%d\t\n", g.Key, g.Samples, pct(g.Deliver), pct(g.Read),
			pct(g.Accept), g.Escalated, 100*g.EscalationRate, g.Failsafe, g.Open)
	}
	tw.Flush()
	if len(rep.OpenAlerts) > 0 {
		fmt.Fprintf(w, "\nStill open (%d):\n", len(rep.OpenAlerts))
		for _, a := range rep.OpenAlerts {
			fmt.Fprintf(w, "  %s  unit %s  rule %s  %s  step %d  open %s\n", a.ID, a.Unit, a.RuleID, a.Priority, a.Step,
				(time.Duration(a.AgeSeconds) * time.Second).String())
		}
	}
}

// pct shows "p50/p90 (n)", or "-" when nothing was measured.
func pct(p report.Percentiles) string {
	if p.N == 0 {
		return "-"
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }
	return fmt.Sprintf("%s/%s (%d)", f(*p.P50), f(*p.P90), p.N)
}
