package report

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clarion-health/clarion/oncall"
)

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Compute loads the period's alerts, their messages and escalation records,
// and builds the report at now.
func Compute(ctx context.Context, q Queryer, p Params, now time.Time) (Report, error) {
	if err := p.Validate(); err != nil {
		return Report{}, err
	}
	d, err := Load(ctx, q, p.From, p.To)
	if err != nil {
		return Report{}, err
	}
	return Build(p, d, now), nil
}

func micros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	x := time.UnixMicro(v.Int64).UTC()
	return &x
}

// Load reads what Build needs for the alerts created in [from, to).
func Load(ctx context.Context, q Queryer, from, to time.Time) (Data, error) {
	d := Data{FailsafeRung: map[string]int{}}
	rows, err := q.QueryContext(ctx, `SELECT id, rule_id, priority, unit, policy_id, state, step, created_at, accepted_at
		FROM alerts WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at`, from.UnixMicro(), to.UnixMicro())
	if err != nil {
		return d, fmt.Errorf("report alerts: %w", err)
	}
	for rows.Next() {
		var a Alert
		var created int64
		var accepted sql.NullInt64
		if err := rows.Scan(&a.ID, &a.RuleID, &a.Priority, &a.Unit, &a.PolicyID, &a.State, &a.Step, &created, &accepted); err != nil {
			rows.Close()
			return d, fmt.Errorf("report alerts: %w", err)
		}
		a.CreatedAt, a.AcceptedAt = time.UnixMicro(created).UTC(), micros(accepted)
		d.Alerts = append(d.Alerts, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("report alerts: %w", err)
	}

	rows, err = q.QueryContext(ctx, `SELECT m.alert_id, m.user_id, m.step, m.created_at, m.delivered_at, m.read_at,
		COALESCE(m.response, ''), m.responded_at FROM messages m JOIN alerts a ON a.id = m.alert_id
		WHERE a.created_at >= $1 AND a.created_at < $2 ORDER BY m.created_at`, from.UnixMicro(), to.UnixMicro())
	if err != nil {
		return d, fmt.Errorf("report messages: %w", err)
	}
	for rows.Next() {
		var m Message
		var created int64
		var delivered, read, responded sql.NullInt64
		if err := rows.Scan(&m.AlertID, &m.UserID, &m.Step, &created, &delivered, &read, &m.Response, &responded); err != nil {
			rows.Close()
			return d, fmt.Errorf("report messages: %w", err)
		}
		m.CreatedAt = time.UnixMicro(created).UTC()
		m.DeliveredAt, m.ReadAt, m.RespondedAt = micros(delivered), micros(read), micros(responded)
		d.Messages = append(d.Messages, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("report messages: %w", err)
	}

	// The engine records the failsafe it paged in alert.escalated; an
	// escalation always comes after its alert was created, so after `from`.
	rows, err = q.QueryContext(ctx, `SELECT object_id, detail FROM audit_log
		WHERE action = 'alert.escalated' AND object_type = 'alert' AND at >= $1 ORDER BY seq`, from.UnixMicro())
	if err != nil {
		return d, fmt.Errorf("report escalations: %w", err)
	}
	for rows.Next() {
		var alertID, detail string
		if err := rows.Scan(&alertID, &detail); err != nil {
			rows.Close()
			return d, fmt.Errorf("report escalations: %w", err)
		}
		var esc struct {
			ToStep   int  `json:"to_step"`
			Failsafe bool `json:"failsafe"`
		}
		if json.Unmarshal([]byte(detail), &esc) != nil || !esc.Failsafe {
			continue
		}
		if r, ok := d.FailsafeRung[alertID]; !ok || esc.ToStep < r {
			d.FailsafeRung[alertID] = esc.ToStep
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("report escalations: %w", err)
	}
	d.Role = roleNamer(ctx, q)
	return d, nil
}

// roleNamer names the role a rung addressed, from the alert's policy (by
// priority, repeats unrolled, as the engine resolves it), caching policies.
func roleNamer(ctx context.Context, q Queryer) func(Alert, int) string {
	type key struct{ policy, priority string }
	cache := map[key]*oncall.Policy{}
	return func(a Alert, rung int) string {
		k := key{a.PolicyID, a.Priority}
		p, ok := cache[k]
		if !ok {
			pol, err := oncall.PolicyFor(ctx, q, a.PolicyID, a.Priority)
			if err != nil && !errors.Is(err, oncall.ErrNotFound) {
				return "(unknown)"
			}
			if err == nil {
				p = &pol
			}
			cache[k] = p
		}
		if p == nil || len(p.Steps) == 0 {
			return "(unknown)"
		}
		return targetRoles(p.Steps[p.StepAt(rung)].Targets)
	}
}

func targetRoles(ts []oncall.Target) string {
	var names []string
	for _, t := range ts {
		n := NamedUserRole
		switch t.Kind {
		case oncall.TargetRole, oncall.TargetEveryoneInRole:
			n = t.Role
		case oncall.TargetTeam:
			n = "team:" + t.TeamID
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, "+")
}
