// Package report answers "how fast did the team answer": over a period,
// the time to deliver, to read and to accept an alert (p50 and p90), the
// escalation rate, the alerts that reached the failsafe and those still
// open, grouped by unit, role, rule, priority or user. It reads the
// alerts, messages and escalation_policies tables and writes nothing but
// its own audit record.
//
// Two levels of measure, because a unit's question and a nurse's differ:
//
//   - Alert level (group_by unit, rule, priority): one sample per alert
//     created in [from, to). Deliver = the first delivered_at of any of its
//     messages − the alert's created_at; read = the first read_at − created_at;
//     accept = accepted_at − created_at. Escalated = it paged a step after
//     the first. Failsafe = the escalation engine recorded that it paged the
//     failsafe (an alert.escalated audit record with failsafe true). Open =
//     its state is still open.
//   - Page level (group_by user, role): one sample per (alert, user) pair,
//     the user's first message for the alert marking the page. Deliver, read
//     and accept run from that first message's created_at to the first
//     delivered_at, the first read_at and the accept (responded_at with
//     response accept) of that user's messages for the alert. Escalated =
//     the alert went on to a later step than the user's. Failsafe = the user
//     was paged at or after the step the engine recorded as the failsafe.
//     Role = the role(s) the escalation step addressed (the policy's step
//     for that rung, repeats unrolled, from the policy as it is now); a step
//     that names users directly counts as role "(named user)", a team as
//     "team:<id>".
//
// Percentiles are nearest-rank: the p-th of n sorted samples is the one at
// rank ceil(p/100 × n). A sample that never happened (never delivered,
// never accepted) is left out of that measure; N says how many there were.
package report

import (
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Groupings.
const (
	ByUnit     = "unit"
	ByRole     = "role"
	ByRule     = "rule"
	ByPriority = "priority"
	ByUser     = "user"
)

// GroupBys lists the groupings, for validation.
var GroupBys = []string{ByUnit, ByRole, ByRule, ByPriority, ByUser}

// NamedUserRole is the role of a page from a step that names users.
const NamedUserRole = "(named user)"

// Params is what a report covers.
type Params struct {
	From, To time.Time
	GroupBy  string
}

// Validate checks the period and the grouping.
func (p Params) Validate() error {
	switch {
	case p.From.IsZero():
		return &InvalidError{"from", "is required"}
	case p.To.IsZero():
		return &InvalidError{"to", "is required"}
	case !p.To.After(p.From):
		return &InvalidError{"to", "must be after from"}
	case !slices.Contains(GroupBys, p.GroupBy):
		return &InvalidError{"group_by", "must be one of " + strings.Join(GroupBys, ", ")}
	}
	return nil
}

// Level says what one sample is.
func (p Params) Level() string {
	if p.GroupBy == ByUser || p.GroupBy == ByRole {
		return "page"
	}
	return "alert"
}

// Percentiles summarises one measure, in seconds.
type Percentiles struct {
	N   int      `json:"n"`
	P50 *float64 `json:"p50_seconds"`
	P90 *float64 `json:"p90_seconds"`
}

// Group is one row of a report.
type Group struct {
	Key            string      `json:"key"`
	Samples        int         `json:"samples"` // alerts, or pages at page level
	Deliver        Percentiles `json:"time_to_deliver"`
	Read           Percentiles `json:"time_to_read"`
	Accept         Percentiles `json:"time_to_accept"`
	Escalated      int         `json:"escalated"`
	EscalationRate float64     `json:"escalation_rate"`
	Failsafe       int         `json:"reached_failsafe"`
	Open           int         `json:"still_open"`
}

// OpenAlert is an alert of the period still open: ids and codes only.
type OpenAlert struct {
	ID         string  `json:"id"`
	Unit       string  `json:"unit"`
	RuleID     string  `json:"rule_id"`
	Priority   string  `json:"priority"`
	Step       int     `json:"step"`
	AgeSeconds float64 `json:"age_seconds"`
}

// Report is the answer.
type Report struct {
	From       time.Time   `json:"from"`
	To         time.Time   `json:"to"`
	GroupBy    string      `json:"group_by"`
	Level      string      `json:"level"`
	Groups     []Group     `json:"groups"`
	Total      Group       `json:"total"`
	OpenAlerts []OpenAlert `json:"open_alerts"`
}

// Alert is what a report needs of an alert.
type Alert struct {
	ID, RuleID, Priority, Unit, PolicyID, State string
	Step                                        int
	CreatedAt                                   time.Time
	AcceptedAt                                  *time.Time
}

// Message is what a report needs of a message.
type Message struct {
	AlertID, UserID                  string
	Step                             int
	CreatedAt                        time.Time
	DeliveredAt, ReadAt, RespondedAt *time.Time
	Response                         string
}

// Data is everything a report is computed from.
type Data struct {
	Alerts   []Alert
	Messages []Message
	// FailsafeRung is, per alert that reached its failsafe, the rung
	// (message step) at which it did.
	FailsafeRung map[string]int
	// Role names the role an alert's rung addressed; nil means every page
	// is NamedUserRole.
	Role func(a Alert, rung int) string
}

// sample is one alert or page.
type sample struct {
	key                       string
	deliver, read, accept     *time.Duration
	escalated, failsafe, open bool
}

// Build computes the report of p from d at time now. It is pure: the
// tests feed it hand-made data.
func Build(p Params, d Data, now time.Time) Report {
	rep := Report{From: p.From.UTC(), To: p.To.UTC(), GroupBy: p.GroupBy, Level: p.Level(),
		Groups: []Group{}, OpenAlerts: []OpenAlert{}}
	byAlert := map[string][]Message{}
	for _, m := range d.Messages {
		byAlert[m.AlertID] = append(byAlert[m.AlertID], m)
	}
	var samples []sample
	for _, a := range d.Alerts {
		if a.CreatedAt.Before(p.From) || !a.CreatedAt.Before(p.To) {
			continue
		}
		msgs := byAlert[a.ID]
		maxStep := 0
		for _, m := range msgs {
			maxStep = max(maxStep, m.Step)
		}
		fsRung, reachedFailsafe := d.FailsafeRung[a.ID]
		open := a.State == "open"
		if open {
			rep.OpenAlerts = append(rep.OpenAlerts, OpenAlert{ID: a.ID, Unit: a.Unit, RuleID: a.RuleID,
				Priority: a.Priority, Step: a.Step, AgeSeconds: seconds(now.Sub(a.CreatedAt))})
		}
		if rep.Level == "alert" {
			s := sample{key: alertKey(p.GroupBy, a), escalated: maxStep > 0, failsafe: reachedFailsafe, open: open}
			s.deliver = since(a.CreatedAt, firstOf(msgs, func(m Message) *time.Time { return m.DeliveredAt }))
			s.read = since(a.CreatedAt, firstOf(msgs, func(m Message) *time.Time { return m.ReadAt }))
			s.accept = since(a.CreatedAt, a.AcceptedAt)
			samples = append(samples, s)
			continue
		}
		byUser := map[string][]Message{}
		var users []string
		for _, m := range msgs {
			if _, ok := byUser[m.UserID]; !ok {
				users = append(users, m.UserID)
			}
			byUser[m.UserID] = append(byUser[m.UserID], m)
		}
		for _, u := range users {
			um := byUser[u]
			first := um[0]
			for _, m := range um {
				if m.CreatedAt.Before(first.CreatedAt) {
					first = m
				}
			}
			key := u
			if p.GroupBy == ByRole {
				key = NamedUserRole
				if d.Role != nil {
					key = d.Role(a, first.Step)
				}
			}
			s := sample{key: key, escalated: maxStep > first.Step, failsafe: reachedFailsafe && first.Step >= fsRung, open: open}
			s.deliver = since(first.CreatedAt, firstOf(um, func(m Message) *time.Time { return m.DeliveredAt }))
			s.read = since(first.CreatedAt, firstOf(um, func(m Message) *time.Time { return m.ReadAt }))
			s.accept = since(first.CreatedAt, firstOf(um, func(m Message) *time.Time {
				if m.Response == "accept" {
					return m.RespondedAt
				}
				return nil
			}))
			samples = append(samples, s)
		}
	}
	groups := map[string][]sample{}
	for _, s := range samples {
		groups[s.key] = append(groups[s.key], s)
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rep.Groups = append(rep.Groups, summarise(k, groups[k]))
	}
	rep.Total = summarise("total", samples)
	sort.Slice(rep.OpenAlerts, func(i, j int) bool { return rep.OpenAlerts[i].AgeSeconds > rep.OpenAlerts[j].AgeSeconds })
	return rep
}

func alertKey(groupBy string, a Alert) string {
	switch groupBy {
	case ByRule:
		return a.RuleID
	case ByPriority:
		return a.Priority
	}
	return a.Unit
}

// firstOf returns the earliest of the times get picks from msgs.
func firstOf(msgs []Message, get func(Message) *time.Time) *time.Time {
	var first *time.Time
	for _, m := range msgs {
		if t := get(m); t != nil && (first == nil || t.Before(*first)) {
			first = t
		}
	}
	return first
}

func since(start time.Time, end *time.Time) *time.Duration {
	if end == nil {
		return nil
	}
	d := end.Sub(start)
	return &d
}

func summarise(key string, ss []sample) Group {
	g := Group{Key: key, Samples: len(ss)}
	var deliver, read, accept []time.Duration
	for _, s := range ss {
		if s.deliver != nil {
			deliver = append(deliver, *s.deliver)
		}
		if s.read != nil {
			read = append(read, *s.read)
		}
		if s.accept != nil {
			accept = append(accept, *s.accept)
		}
		if s.escalated {
			g.Escalated++
		}
		if s.failsafe {
			g.Failsafe++
		}
		if s.open {
			g.Open++
		}
	}
	g.Deliver, g.Read, g.Accept = percentiles(deliver), percentiles(read), percentiles(accept)
	if g.Samples > 0 {
		g.EscalationRate = float64(g.Escalated) / float64(g.Samples)
	}
	return g
}

func percentiles(ds []time.Duration) Percentiles {
	p := Percentiles{N: len(ds)}
	if len(ds) == 0 {
		return p
	}
	slices.Sort(ds)
	p50, p90 := seconds(NearestRank(ds, 50)), seconds(NearestRank(ds, 90))
	p.P50, p.P90 = &p50, &p90
	return p
}

// NearestRank is the p-th percentile of sorted (ascending, non-empty)
// samples: the one at rank ceil(p/100 × n), counting from 1.
func NearestRank(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func seconds(d time.Duration) float64 {
	return math.Round(d.Seconds()*1e6) / 1e6
}

// InvalidError is a validation failure to show the caller: which field, why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// UserError marks the error as safe to show the caller.
func (e *InvalidError) UserError() {}
