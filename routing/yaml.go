package routing

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// RuleFile is the YAML form of a rule set, for teams that keep their
// rules in git (docs/rules.md, "The YAML format").
type RuleFile struct {
	Rules []Rule `json:"rules"`
}

// MaxRuleFileSize bounds a rule file.
const MaxRuleFileSize = 8 << 20

// ParseRules reads a rule file and checks every rule with c, without a
// database (references to policies, teams and users are checked when the
// rules are applied). All problems of the file come back at once as
// RuleErrors, each with the rule's line; the rules are returned
// normalized.
func ParseRules(data []byte, c *Compiler) ([]Rule, error) {
	if len(data) > MaxRuleFileSize {
		return nil, RuleErrors{{Rule: "(file)", Field: "file", Reason: fmt.Sprintf("larger than %d bytes", MaxRuleFileSize)}}
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, RuleErrors{yamlError("(file)", err, 0)}
	}
	var seq *ast.SequenceNode
	switch {
	case len(f.Docs) == 0 || f.Docs[0].Body == nil:
		return nil, RuleErrors{{Rule: "(file)", Field: "rules", Reason: "the file is empty: it needs a top-level `rules:` list"}}
	case len(f.Docs) > 1:
		return nil, RuleErrors{{Rule: "(file)", Field: "file", Reason: "one YAML document only"}}
	}
	body, ok := f.Docs[0].Body.(*ast.MappingNode)
	if !ok {
		return nil, RuleErrors{{Rule: "(file)", Field: "rules", Reason: "the top level must be a mapping with a `rules:` list",
			Line: line(f.Docs[0].Body)}}
	}
	var probs RuleErrors
	for _, kv := range body.Values {
		switch key := kv.Key.String(); key {
		case "rules":
			s, ok := kv.Value.(*ast.SequenceNode)
			if !ok {
				if _, isNull := kv.Value.(*ast.NullNode); !isNull {
					probs = append(probs, &InvalidRuleError{Rule: "(file)", Field: "rules", Reason: "must be a list of rules",
						Line: line(kv.Value)})
				}
				continue
			}
			seq = s
		default:
			probs = append(probs, &InvalidRuleError{Rule: "(file)", Field: key, Reason: "unknown top-level key (only `rules`)",
				Line: line(kv)})
		}
	}
	if seq == nil {
		if len(probs) == 0 {
			probs = append(probs, &InvalidRuleError{Rule: "(file)", Field: "rules", Reason: "required: the list of rules"})
		}
		return nil, probs
	}
	rules := make([]Rule, 0, len(seq.Values))
	ids, names := map[string]int{}, map[string]int{}
	for i, n := range seq.Values {
		ln := line(n)
		var r Rule
		label := fmt.Sprintf("#%d", i+1)
		if err := yaml.NodeToValue(n, &r, yaml.DisallowUnknownField()); err != nil {
			if r.ID != "" {
				label = r.ID
			}
			probs = append(probs, yamlError(label, err, ln))
			continue
		}
		r.Normalize()
		for _, p := range c.Check(&r) {
			p.Line = ln
			probs = append(probs, p)
		}
		if j, dup := ids[r.ID]; dup && r.ID != "" {
			probs = append(probs, &InvalidRuleError{Rule: r.label(), Field: "id", Line: ln,
				Reason: fmt.Sprintf("%q is also the id of the rule at line %d", r.ID, j)})
		}
		if j, dup := names[r.Name]; dup && r.Name != "" {
			probs = append(probs, &InvalidRuleError{Rule: r.label(), Field: "name", Line: ln,
				Reason: fmt.Sprintf("also the name of the rule at line %d", j)})
		}
		ids[r.ID], names[r.Name] = ln, ln
		rules = append(rules, r)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return rules, nil
}

// yamlError turns a YAML decoding error into a rule error with its line.
func yamlError(rule string, err error, fallback int) *InvalidRuleError {
	e := &InvalidRuleError{Rule: rule, Field: "yaml", Reason: err.Error(), Line: fallback}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Reason = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line = tk.Position.Line
		}
	}
	var uf *yaml.UnknownFieldError
	if errors.As(err, &uf) {
		e.Field = "(unknown field)"
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		e.Field = "(type)"
	}
	e.Reason = strings.ReplaceAll(strings.TrimSpace(e.Reason), "\n", " ")
	return e
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

// MarshalRules writes rules as a rule file, in the order given.
func MarshalRules(rules []Rule) ([]byte, error) {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Normalize()
		out[i] = r
	}
	b, err := yaml.MarshalWithOptions(RuleFile{Rules: out}, yaml.Indent(2), yaml.IndentSequence(true),
		yaml.UseLiteralStyleIfMultiline(true))
	if err != nil {
		return nil, fmt.Errorf("export rules: %w", err)
	}
	return b, nil
}
