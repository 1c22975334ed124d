package audit

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Page sizes.
const (
	DefaultPage = 100
	MaxPage     = 1000
)

// Filter selects records; every set field must match. An Action ending in
// ".*" matches the prefix ("alert.*" is every alert action).
type Filter struct {
	From          time.Time `json:"from,omitzero"` // at >= From
	To            time.Time `json:"to,omitzero"`   // at < To
	ActorType     string    `json:"actor_type,omitempty"`
	ActorID       string    `json:"actor_id,omitempty"`
	Action        string    `json:"action,omitempty"`
	ObjectType    string    `json:"object_type,omitempty"`
	ObjectID      string    `json:"object_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	After         int64     `json:"after,omitempty"`   // cursor: records with seq > After
	Through       int64     `json:"through,omitempty"` // records with seq <= Through (0: no bound)
	Limit         int       `json:"limit,omitempty"`
}

// Validate checks the filter and fills in the default page size.
func (f *Filter) Validate() error {
	switch {
	case !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From):
		return &InvalidError{"to", "must be after from"}
	case f.After < 0:
		return &InvalidError{"after", "must not be negative"}
	case f.Through < 0:
		return &InvalidError{"through", "must not be negative"}
	case f.Limit < 0 || f.Limit > MaxPage:
		return &InvalidError{"limit", fmt.Sprintf("must be between 1 and %d", MaxPage)}
	}
	if f.Limit == 0 {
		f.Limit = DefaultPage
	}
	return nil
}

// Detail is the filter as an audit detail: what an auditor asked for.
func (f Filter) Detail() map[string]any {
	d := map[string]any{}
	add := func(k, v string) {
		if v != "" {
			d[k] = v
		}
	}
	if !f.From.IsZero() {
		d["from"] = f.From.UTC().Format(time.RFC3339Nano)
	}
	if !f.To.IsZero() {
		d["to"] = f.To.UTC().Format(time.RFC3339Nano)
	}
	add("actor_type", f.ActorType)
	add("actor_id", f.ActorID)
	add("action", f.Action)
	add("object_type", f.ObjectType)
	add("object_id", f.ObjectID)
	add("correlation_id", f.CorrelationID)
	if f.After > 0 {
		d["after"] = f.After
	}
	if f.Through > 0 {
		d["through"] = f.Through
	}
	return d
}

// ParseFilter reads a filter from URL query parameters (or CLI flags turned
// into them): from, to (RFC 3339), actor_type, actor_id, action,
// object_type, object_id, correlation_id, after, limit.
func ParseFilter(v url.Values) (Filter, error) {
	var f Filter
	var err error
	parseTime := func(name string) (time.Time, error) {
		s := v.Get(name)
		if s == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return t, &InvalidError{name, "must be an RFC 3339 time"}
		}
		return t, nil
	}
	parseInt := func(name string) (int64, error) {
		s := v.Get(name)
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, &InvalidError{name, "must be an integer"}
		}
		return n, nil
	}
	if f.From, err = parseTime("from"); err != nil {
		return f, err
	}
	if f.To, err = parseTime("to"); err != nil {
		return f, err
	}
	if f.After, err = parseInt("after"); err != nil {
		return f, err
	}
	limit, err := parseInt("limit")
	if err != nil {
		return f, err
	}
	if limit < 0 || limit > MaxPage {
		return f, &InvalidError{"limit", fmt.Sprintf("must be between 1 and %d", MaxPage)}
	}
	f.Limit = int(limit)
	f.ActorType, f.ActorID, f.Action = v.Get("actor_type"), v.Get("actor_id"), v.Get("action")
	f.ObjectType, f.ObjectID, f.CorrelationID = v.Get("object_type"), v.Get("object_id"), v.Get("correlation_id")
	return f, f.Validate()
}

// where builds the WHERE clause and its arguments.
func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	add("seq > ?", f.After)
	if f.Through > 0 {
		add("seq <= ?", f.Through)
	}
	if !f.From.IsZero() {
		add("at >= ?", f.From.UnixMicro())
	}
	if !f.To.IsZero() {
		add("at < ?", f.To.UnixMicro())
	}
	for _, c := range []struct{ col, v string }{{"actor_type", f.ActorType}, {"actor_id", f.ActorID},
		{"object_type", f.ObjectType}, {"object_id", f.ObjectID}, {"correlation_id", f.CorrelationID}} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	if prefix, ok := strings.CutSuffix(f.Action, "*"); ok {
		add(`action LIKE ? ESCAPE '\'`, likeEscape(prefix)+"%")
	} else if f.Action != "" {
		add("action = ?", f.Action)
	}
	return strings.Join(conds, " AND "), args
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// PageResult is one page of records and the cursor of the next (0: no more).
type PageResult struct {
	Records []Record `json:"records"`
	Next    int64    `json:"next,omitempty"`
}

// Query returns the records matching f in seq order, one page of f.Limit.
func Query(ctx context.Context, q Querier, f Filter) (PageResult, error) {
	var out PageResult
	if err := f.Validate(); err != nil {
		return out, err
	}
	where, args := f.where()
	args = append(args, f.Limit+1)
	rows, err := q.QueryContext(ctx, `SELECT `+recordColumns+` FROM audit_log WHERE `+where+
		` ORDER BY seq LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return out, fmt.Errorf("audit query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return out, err
		}
		out.Records = append(out.Records, r)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("audit query: %w", err)
	}
	if len(out.Records) > f.Limit {
		out.Records = out.Records[:f.Limit]
		out.Next = out.Records[f.Limit-1].Seq
	}
	return out, nil
}

// Each calls fn for every record matching f, in seq order, a page at a
// time (f.After and f.Limit are the starting cursor and the page size).
func Each(ctx context.Context, q Querier, f Filter, fn func(Record) error) error {
	for {
		page, err := Query(ctx, q, f)
		if err != nil {
			return err
		}
		for _, r := range page.Records {
			if err := fn(r); err != nil {
				return err
			}
		}
		if page.Next == 0 {
			return nil
		}
		f.After = page.Next
	}
}

// Head returns the chain head's seq.
func Head(ctx context.Context, q Querier) (int64, error) {
	var seq int64
	if err := q.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("audit head: %w", err)
	}
	return seq, nil
}
