package routing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/oncall"
)

// StoredRule is a rule with its current version.
type StoredRule struct {
	Rule      Rule      `json:"rule"`
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RuleVersion is one saved version of a rule (or its deletion).
type RuleVersion struct {
	Version   int       `json:"version"`
	Rule      Rule      `json:"rule"`
	Deleted   bool      `json:"deleted,omitempty"`
	SavedAt   time.Time `json:"saved_at"`
	ActorType string    `json:"actor_type"`
	ActorID   string    `json:"actor_id"`
}

// SaveResult says what saving a rule did.
type SaveResult struct {
	Version int  `json:"version"`
	Changed bool `json:"changed"` // false: the definition was already the current one
}

// PutRule validates and stores a rule; see SaveRule.
func PutRule(ctx context.Context, tx Queryer, actor audit.Entry, r Rule, now time.Time) error {
	c, err := NewCompiler()
	if err != nil {
		return err
	}
	_, err = SaveRule(ctx, tx, c, actor, r, now)
	return err
}

// SaveRule normalizes, validates (CEL included) and checks the references
// of r (policy, team, user), then stores it as a new version unless its
// definition is unchanged. The version is kept in rule_versions, the
// routers' rule generation is bumped, and the change is audited
// ("rule.saved", with the definition: rules hold no PHI), all in tx.
func SaveRule(ctx context.Context, tx Queryer, c *Compiler, actor audit.Entry, r Rule, now time.Time) (SaveResult, error) {
	r.Normalize()
	if p := append(c.Check(&r), CheckReferences(ctx, tx, &r)...); len(p) > 0 {
		return SaveResult{}, p
	}
	def, err := json.Marshal(r)
	if err != nil {
		return SaveResult{}, fmt.Errorf("save rule: %w", err)
	}
	cur, version, err := currentDefinition(ctx, tx, r.ID)
	if err != nil {
		return SaveResult{}, err
	}
	if cur == string(def) {
		return SaveResult{Version: version}, nil
	}
	version, err = nextVersion(ctx, tx, r.ID)
	if err != nil {
		return SaveResult{}, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO rules (id, name, version, enabled, definition, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = excluded.version,
		enabled = excluded.enabled, definition = excluded.definition, updated_at = excluded.updated_at`,
		r.ID, r.Name, version, boolInt(r.Enabled), string(def), now.UnixMicro())
	if err != nil {
		return SaveResult{}, fmt.Errorf("save rule %s: %w", r.ID, err)
	}
	if err := addVersion(ctx, tx, r, version, false, string(def), actor, now); err != nil {
		return SaveResult{}, err
	}
	if actor.At.IsZero() {
		actor.At = now
	}
	actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = "rule.saved", "rule", r.ID, r.ID
	actor.Detail = map[string]any{"version": version, "definition": json.RawMessage(def)}
	if err := audit.Append(ctx, tx, actor); err != nil {
		return SaveResult{}, err
	}
	return SaveResult{Version: version, Changed: true}, nil
}

// CheckReferences checks that what r names exists: its policy, and its
// target team or user. It reads through tx, so a policy created earlier in
// the same transaction counts.
func CheckReferences(ctx context.Context, q Queryer, r *Rule) RuleErrors {
	var out RuleErrors
	bad := func(field, reason string) {
		out = append(out, &InvalidRuleError{Rule: r.label(), Field: field, Reason: reason})
	}
	if r.PolicyID != "" {
		p, err := oncall.GetPolicy(ctx, q, r.PolicyID)
		switch {
		case errors.Is(err, oncall.ErrNotFound):
			bad("policy_id", fmt.Sprintf("unknown escalation policy %q", r.PolicyID))
		case err != nil:
			bad("policy_id", "could not be read")
		case len(p.Steps) == 0:
			bad("policy_id", fmt.Sprintf("escalation policy %q has no steps", r.PolicyID))
		}
	}
	if r.Target.Team != "" {
		if _, err := oncall.GetTeam(ctx, q, r.Target.Team); errors.Is(err, oncall.ErrNotFound) {
			bad("target.team", fmt.Sprintf("unknown team %q", r.Target.Team))
		} else if err != nil {
			bad("target.team", "could not be read")
		}
	}
	if r.Target.User != "" {
		if ok, err := oncall.UserExists(ctx, q, r.Target.User); err != nil {
			bad("target.user", "could not be read")
		} else if !ok {
			bad("target.user", fmt.Sprintf("unknown user %q", r.Target.User))
		}
	}
	return out
}

func currentDefinition(ctx context.Context, q Queryer, id string) (string, int, error) {
	var def string
	var version int
	err := q.QueryRowContext(ctx, `SELECT definition, version FROM rules WHERE id = $1`, id).Scan(&def, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("read rule %s: %w", id, err)
	}
	return def, version, nil
}

// nextVersion continues the rule's numbering across deletions.
func nextVersion(ctx context.Context, q Queryer, id string) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM rule_versions WHERE rule_id = $1`, id).Scan(&v); err != nil {
		return 0, fmt.Errorf("rule version: %w", err)
	}
	var cur int
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM rules WHERE id = $1`, id).Scan(&cur); err != nil {
		return 0, fmt.Errorf("rule version: %w", err)
	}
	return max(int(v.Int64), cur) + 1, nil
}

func addVersion(ctx context.Context, tx Queryer, r Rule, version int, deleted bool, def string, actor audit.Entry, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO rule_versions (rule_id, version, name, enabled, deleted, definition,
		saved_at, actor_type, actor_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.ID, version, r.Name, boolInt(r.Enabled), boolInt(deleted), def, now.UnixMicro(), actor.ActorType, actor.ActorID); err != nil {
		return fmt.Errorf("rule version: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE rule_generation SET generation = generation + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("rule generation: %w", err)
	}
	return nil
}

// DeleteRule removes a rule; its versions are kept, with a deletion
// version on top, and its open alerts keep escalating. Audited
// ("rule.deleted") in tx.
func DeleteRule(ctx context.Context, tx Queryer, actor audit.Entry, id string, now time.Time) (int, error) {
	sr, err := GetRule(ctx, tx, id)
	if err != nil {
		return 0, err
	}
	version, err := nextVersion(ctx, tx, id)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rules WHERE id = $1`, id); err != nil {
		return 0, fmt.Errorf("delete rule %s: %w", id, err)
	}
	def, err := json.Marshal(sr.Rule)
	if err != nil {
		return 0, fmt.Errorf("delete rule: %w", err)
	}
	if err := addVersion(ctx, tx, sr.Rule, version, true, string(def), actor, now); err != nil {
		return 0, err
	}
	if actor.At.IsZero() {
		actor.At = now
	}
	actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = "rule.deleted", "rule", id, id
	actor.Detail = map[string]any{"version": version, "previous_version": sr.Version}
	err = audit.Append(ctx, tx, actor)
	return version, err
}

// GetRule returns a rule, enabled or not.
func GetRule(ctx context.Context, q Queryer, id string) (StoredRule, error) {
	var def string
	var sr StoredRule
	var updated int64
	err := q.QueryRowContext(ctx, `SELECT definition, version, updated_at FROM rules WHERE id = $1`, id).
		Scan(&def, &sr.Version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return sr, fmt.Errorf("rule %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return sr, fmt.Errorf("get rule: %w", err)
	}
	if err := json.Unmarshal([]byte(def), &sr.Rule); err != nil {
		return sr, fmt.Errorf("rule %s definition: %w", id, err)
	}
	sr.Rule.Normalize()
	sr.UpdatedAt = time.UnixMicro(updated).UTC()
	return sr, nil
}

// ListRules returns every rule, enabled or not, by id.
func ListRules(ctx context.Context, q Queryer) ([]StoredRule, error) {
	rows, err := q.QueryContext(ctx, `SELECT definition, version, updated_at FROM rules ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	out := []StoredRule{}
	for rows.Next() {
		var def string
		var sr StoredRule
		var updated int64
		if err := rows.Scan(&def, &sr.Version, &updated); err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		if err := json.Unmarshal([]byte(def), &sr.Rule); err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		sr.Rule.Normalize()
		sr.UpdatedAt = time.UnixMicro(updated).UTC()
		out = append(out, sr)
	}
	return out, rows.Err()
}

// RuleVersions returns every version of a rule, oldest first; ErrNotFound
// when it never existed.
func RuleVersions(ctx context.Context, q Queryer, id string) ([]RuleVersion, error) {
	rows, err := q.QueryContext(ctx, `SELECT version, deleted, definition, saved_at, actor_type, actor_id
		FROM rule_versions WHERE rule_id = $1 ORDER BY version`, id)
	if err != nil {
		return nil, fmt.Errorf("rule versions: %w", err)
	}
	defer rows.Close()
	var out []RuleVersion
	for rows.Next() {
		var v RuleVersion
		var deleted int
		var def string
		var saved int64
		if err := rows.Scan(&v.Version, &deleted, &def, &saved, &v.ActorType, &v.ActorID); err != nil {
			return nil, fmt.Errorf("rule versions: %w", err)
		}
		if err := json.Unmarshal([]byte(def), &v.Rule); err != nil {
			return nil, fmt.Errorf("rule versions: %w", err)
		}
		v.Rule.Normalize()
		v.Deleted, v.SavedAt = deleted == 1, time.UnixMicro(saved).UTC()
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("rule %s: %w", id, ErrNotFound)
	}
	return out, nil
}

// Rules returns the enabled rules.
func Rules(ctx context.Context, q Queryer) ([]Rule, error) {
	all, err := ListRules(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, sr := range all {
		if sr.Rule.Enabled {
			out = append(out, sr.Rule)
		}
	}
	return out, nil
}

// ApplyResult says what loading a rule file did.
type ApplyResult struct {
	Created   []string `json:"created"`
	Updated   []string `json:"updated"`
	Unchanged []string `json:"unchanged"`
	Deleted   []string `json:"deleted"`
}

// ApplyRules saves every rule of a file in tx (the caller commits them
// together); with prune, rules not in the file are deleted. Every problem
// of every rule (fields, CEL, references, duplicate ids and names) is
// reported at once, as RuleErrors, before anything is written. One
// "rules.loaded" audit record sums it up, after each rule's own.
func ApplyRules(ctx context.Context, tx Queryer, c *Compiler, actor audit.Entry, rules []Rule, prune bool, now time.Time) (ApplyResult, error) {
	res := ApplyResult{Created: []string{}, Updated: []string{}, Unchanged: []string{}, Deleted: []string{}}
	var probs RuleErrors
	ids, names := map[string]int{}, map[string]int{}
	for i := range rules {
		r := &rules[i]
		r.Normalize()
		probs = append(probs, c.Check(r)...)
		probs = append(probs, CheckReferences(ctx, tx, r)...)
		if j, ok := ids[r.ID]; ok && r.ID != "" {
			probs = append(probs, &InvalidRuleError{Rule: r.label(), Field: "id",
				Reason: fmt.Sprintf("%q is also the id of rule #%d", r.ID, j+1)})
		}
		if j, ok := names[r.Name]; ok && r.Name != "" {
			probs = append(probs, &InvalidRuleError{Rule: r.label(), Field: "name",
				Reason: fmt.Sprintf("also the name of rule #%d", j+1)})
		}
		ids[r.ID], names[r.Name] = i, i
	}
	existing, err := ListRules(ctx, tx)
	if err != nil {
		return res, err
	}
	for _, sr := range existing {
		_, inFile := ids[sr.Rule.ID]
		if j, clash := names[sr.Rule.Name]; clash && !inFile && !prune {
			r := &rules[j]
			probs = append(probs, &InvalidRuleError{Rule: r.label(), Field: "name",
				Reason: fmt.Sprintf("is the name of stored rule %q, which this file does not list (load with prune to replace it)", sr.Rule.ID)})
		}
	}
	if len(probs) > 0 {
		return res, probs
	}
	known := map[string]bool{}
	for _, sr := range existing {
		known[sr.Rule.ID] = true
	}
	if prune {
		// Deletions first, so that a rule renamed into a pruned rule's
		// name does not collide with it.
		for _, sr := range existing {
			if _, keep := ids[sr.Rule.ID]; !keep {
				if _, err := DeleteRule(ctx, tx, actor, sr.Rule.ID, now); err != nil {
					return res, err
				}
				res.Deleted = append(res.Deleted, sr.Rule.ID)
			}
		}
	}
	for _, r := range rules {
		sr, err := SaveRule(ctx, tx, c, actor, r, now)
		if err != nil {
			return res, err
		}
		switch {
		case !sr.Changed:
			res.Unchanged = append(res.Unchanged, r.ID)
		case known[r.ID]:
			res.Updated = append(res.Updated, r.ID)
		default:
			res.Created = append(res.Created, r.ID)
		}
	}
	slices.Sort(res.Deleted)
	if actor.At.IsZero() {
		actor.At = now
	}
	actor.Action, actor.ObjectType, actor.ObjectID, actor.CorrelationID = "rules.loaded", "rule_set", "rules", ""
	actor.Detail = map[string]any{"created": res.Created, "updated": res.Updated, "unchanged": len(res.Unchanged),
		"deleted": res.Deleted, "prune": prune}
	err = audit.Append(ctx, tx, actor)
	return res, err
}

const ruleGenerationSQL = `SELECT generation FROM rule_generation WHERE id = 1`

// ruleGeneration reads the counter every rule change bumps.
func ruleGeneration(ctx context.Context, q Queryer) (int64, error) {
	var g int64
	if err := q.QueryRowContext(ctx, ruleGenerationSQL).Scan(&g); err != nil {
		return 0, fmt.Errorf("rule generation: %w", err)
	}
	return g, nil
}

// enabledRuleDefs returns (id, version, definition) of the enabled rules.
func enabledRuleDefs(ctx context.Context, q Queryer) ([]storedDef, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, version, definition FROM rules WHERE enabled = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	defer rows.Close()
	var out []storedDef
	for rows.Next() {
		var d storedDef
		if err := rows.Scan(&d.id, &d.version, &d.def); err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

type storedDef struct {
	id, def string
	version int
}
