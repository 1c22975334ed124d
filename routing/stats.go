package routing

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// RuleStats is what one rule did over [From, To): how often it fired and
// what the fatigue controls made of it, and how its alerts were answered.
type RuleStats struct {
	RuleID string    `json:"rule_id"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	// Fired counts every firing: opened + held + deduplicated + grouped +
	// suppressed (each suppression reason counts once per firing; a
	// sustained spike that recovered counts once).
	Fired        int            `json:"fired"`
	Opened       int            `json:"opened"`
	Held         int            `json:"held"`
	Deduplicated int            `json:"deduplicated"`
	Grouped      int            `json:"grouped"`
	Suppressed   map[string]int `json:"suppressed"` // by control: sustain, rate_limit, quiet_hours
	AutoResolved int            `json:"auto_resolved"`
	Closed       map[string]int `json:"closed"` // by reason, auto-resolve included
	// NoHolder counts alerts that went straight to the failsafe.
	NoHolder int `json:"no_holder"`
	// Of the alerts opened in the window: accepted, escalated past their
	// first step, and the median seconds from opening to accept.
	Accepted                  int      `json:"accepted"`
	Escalated                 int      `json:"escalated"`
	MedianTimeToAcceptSeconds *float64 `json:"median_time_to_accept_seconds"`
}

// Stats computes a rule's statistics over [from, to) from its alerts and
// the audit records routing wrote.
func Stats(ctx context.Context, q Queryer, ruleID string, from, to time.Time) (RuleStats, error) {
	s := RuleStats{RuleID: ruleID, From: from, To: to, Suppressed: map[string]int{}, Closed: map[string]int{}}
	rows, err := q.QueryContext(ctx, `SELECT created_at, accepted_at, step FROM alerts
		WHERE rule_id = $1 AND created_at >= $2 AND created_at < $3`, ruleID, from.UnixMicro(), to.UnixMicro())
	if err != nil {
		return s, fmt.Errorf("rule stats: %w", err)
	}
	var waits []float64
	for rows.Next() {
		var created int64
		var accepted sql.NullInt64
		var step int
		if err := rows.Scan(&created, &accepted, &step); err != nil {
			rows.Close()
			return s, fmt.Errorf("rule stats: %w", err)
		}
		if accepted.Valid {
			s.Accepted++
			waits = append(waits, float64(accepted.Int64-created)/1e6)
		}
		if step > 0 {
			s.Escalated++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("rule stats: %w", err)
	}
	if len(waits) > 0 {
		slices.Sort(waits)
		m := waits[len(waits)/2]
		if len(waits)%2 == 0 {
			m = (waits[len(waits)/2-1] + waits[len(waits)/2]) / 2
		}
		s.MedianTimeToAcceptSeconds = &m
	}
	rows, err = q.QueryContext(ctx, `SELECT action, object_type, object_id, detail FROM audit_log
		WHERE at >= $1 AND at < $2 AND action IN ('alert.opened', 'alert.held', 'alert.updated', 'alert.grouped',
		'alert.suppressed', 'alert.closed', 'routing.no_holder')
		ORDER BY seq`, from.UnixMicro(), to.UnixMicro())
	if err != nil {
		return s, fmt.Errorf("rule stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var action, objType, objID, detail string
		if err := rows.Scan(&action, &objType, &objID, &detail); err != nil {
			return s, fmt.Errorf("rule stats: %w", err)
		}
		var d struct {
			RuleID string `json:"rule_id"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(detail), &d); err != nil {
			continue
		}
		if objType == "rule" {
			d.RuleID = objID
		}
		if d.RuleID != ruleID {
			continue
		}
		switch action {
		case "alert.opened":
			s.Opened++
		case "alert.held":
			s.Held++
		case "alert.updated":
			s.Deduplicated++
		case "alert.grouped":
			s.Grouped++
		case "alert.suppressed":
			s.Suppressed[d.Reason]++
		case "alert.closed":
			s.Closed[d.Reason]++
			if d.Reason == CloseNormal || d.Reason == CloseAlarmEnd {
				s.AutoResolved++
			}
		case "routing.no_holder":
			s.NoHolder++
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("rule stats: %w", err)
	}
	s.Fired = s.Opened + s.Held + s.Deduplicated + s.Grouped
	for _, n := range s.Suppressed {
		s.Fired += n
	}
	return s, nil
}
