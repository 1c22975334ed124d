package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/routing"
)

const rulesUsage = `usage:
  clarion rules load [--prune] FILE    validate a YAML rule file and apply it in one transaction (audited)
  clarion rules export [--out FILE]    write every rule as a YAML rule file
  clarion rules validate FILE          check a rule file without a database (references are not checked)
  clarion rules test [--format F] [--at T] FILE
                                       dry run: which rules an HL7 message, FHIR resource or event fires,
                                       the alert, who would be paged now, the lock screen; writes nothing
`

// runRules is "clarion rules …": the tools for the people who own the
// rules (docs/rules.md).
func runRules(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return exitCode(2)
	}
	switch args[0] {
	case "load":
		return runRulesLoad(ctx, args[1:], stdout, stderr)
	case "export":
		return runRulesExport(ctx, args[1:], stdout, stderr)
	case "validate":
		return runRulesValidate(args[1:], stdout, stderr)
	case "test":
		return runRulesDryRun(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return nil
	}
	fmt.Fprint(stderr, rulesUsage)
	return exitCode(2)
}

// readRuleFile parses and checks a rule file; every problem is printed to
// stderr, one a line, and the command fails with exit code 1.
func readRuleFile(path string, stderr io.Writer) ([]routing.Rule, *routing.Compiler, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	c, err := routing.NewCompiler()
	if err != nil {
		return nil, nil, err
	}
	rules, err := routing.ParseRules(data, c)
	if err != nil {
		return nil, nil, reportRuleErrors(path, err, stderr)
	}
	return rules, c, nil
}

// reportRuleErrors prints rule problems, one a line, and turns them into
// exit code 1; other errors pass through.
func reportRuleErrors(path string, err error, stderr io.Writer) error {
	var re routing.RuleErrors
	if !errors.As(err, &re) {
		return err
	}
	for _, p := range re {
		fmt.Fprintf(stderr, "%s: %s\n", path, p.Error())
	}
	fmt.Fprintf(stderr, "%s: %d problem(s); nothing was applied\n", path, len(re))
	return exitCode(1)
}

func runRulesValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rules validate", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, rulesUsage)
		return exitCode(2)
	}
	rules, _, err := readRuleFile(fs.Arg(0), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d rule(s) valid\n", fs.Arg(0), len(rules))
	return nil
}

func runRulesLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rules load", stderr)
	var s storeFlags
	s.register(fs)
	prune := fs.Bool("prune", false, "delete the stored rules the file does not list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, rulesUsage)
		return exitCode(2)
	}
	path := fs.Arg(0)
	rules, c, err := readRuleFile(path, stderr)
	if err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	host, _ := os.Hostname()
	actor := audit.Entry{ActorType: audit.ActorSystem, ActorID: "cli", ActorRole: "admin", SourceAddr: host}
	var res routing.ApplyResult
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = routing.ApplyRules(ctx, tx, c, actor, rules, *prune, time.Now())
		return err
	})
	if err != nil {
		return reportRuleErrors(path, err, stderr)
	}
	list := func(ids []string) string {
		if len(ids) == 0 {
			return "-"
		}
		return strings.Join(ids, ", ")
	}
	var disabled []string
	for _, r := range rules {
		if !r.Enabled {
			disabled = append(disabled, r.ID)
		}
	}
	fmt.Fprintf(stdout, "%s: %d rule(s) applied in one transaction\n  created:   %s\n  updated:   %s\n  unchanged: %d\n  deleted:   %s\n  disabled:  %s\n",
		path, len(rules), list(res.Created), list(res.Updated), len(res.Unchanged), list(res.Deleted), list(disabled))
	return nil
}

func runRulesExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rules export", stderr)
	var s storeFlags
	s.register(fs)
	out := fs.String("out", "", "file to write (default standard output)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	stored, err := routing.ListRules(ctx, d)
	if err != nil {
		return err
	}
	rules := make([]routing.Rule, len(stored))
	for i, sr := range stored {
		rules[i] = sr.Rule
	}
	b, err := routing.MarshalRules(rules)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}
