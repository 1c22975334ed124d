package fhir

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/fhir/outbound"
	"github.com/clarion-health/clarion/internal/auth"
)

// Paging: _count results per page (default 50, at most 500); the next link
// carries an opaque _cursor (the last id of the page).
const (
	defaultCount = 50
	maxCount     = 500
)

// query is a parsed search: the SQL filter and the parameters honoured,
// which the self and next links repeat.
type query struct {
	f        filter
	honoured url.Values
	count    int
	cursor   string
	reported *decode.Identifier
}

func badParam(name, format string, args ...any) *decode.Error {
	return decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, name, format, args...)
}

// search is GET [base]/Type?….
func (a *API) search(c *gin.Context, typ string) {
	if !auth.ScopesFrom(c).Allows(typ, auth.AccessSearch) {
		a.deny(c, http.StatusForbidden, "searching "+typ+" needs scope system/"+typ+".read (or .s)")
		return
	}
	q, derr := a.parseSearch(c, typ)
	if derr != nil {
		a.fail(c, derr)
		return
	}
	entries, last, more, err := a.run(c, typ, q)
	if err != nil {
		a.internal(c, err)
		return
	}
	base := a.baseURL(c)
	link := func(cursor string) string {
		v := url.Values{}
		for k, vs := range q.honoured {
			v[k] = vs
		}
		v.Set("_count", strconv.Itoa(q.count))
		if cursor != "" {
			v.Set("_cursor", cursor)
		}
		return base + "/" + typ + "?" + v.Encode()
	}
	next := ""
	if more {
		next = link(last)
	}
	a.write(c, http.StatusOK, outbound.Marshal(outbound.SearchSet(entries, link(q.cursor), next, a.now())))
}

func (a *API) parseSearch(c *gin.Context, typ string) (query, *decode.Error) {
	q := query{honoured: url.Values{}, count: defaultCount}
	params := c.Request.URL.Query()
	strict := strings.Contains(c.GetHeader("Prefer"), "handling=strict")
	s, _ := outbound.Lookup(typ)
	known := map[string]bool{"_count": true, "_cursor": true, "_format": true}
	for _, p := range s.SearchParams {
		known[p.Name] = true
	}
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		base, _, _ := strings.Cut(name, ":")
		if !known[base] && strict {
			return q, decode.Errorf(http.StatusBadRequest, decode.CodeNotSupported, name,
				"search parameter %q is not supported on %s", name, typ)
		}
	}
	if v := params.Get("_count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return q, badParam("_count", "_count must be a non-negative integer")
		}
		q.count = min(n, maxCount)
	}
	q.cursor = params.Get("_cursor")
	keep := func(name string) {
		if vs := params[name]; len(vs) > 0 {
			q.honoured[name] = vs
		}
	}
	// patient / subject: the pseudonym.
	patientCol, dateCol, idCol := "patient_id", "updated_at", "id"
	switch typ {
	case "Communication":
		patientCol, dateCol, idCol = "a.patient_id", messageUpdated, "m.id"
	case "AuditEvent":
		dateCol, idCol = "at", "seq"
	}
	for _, name := range []string{"patient", "subject"} {
		if !known[name] {
			continue
		}
		for _, v := range params[name] {
			pt, derr := pseudonymParam(name, v)
			if derr != nil {
				return q, derr
			}
			if typ == "AuditEvent" {
				q.f.add(`(detail LIKE ? ESCAPE '\' OR (object_type = 'patient' AND object_id = ?))`,
					`%"patient_id":"`+likeEscape(pt)+`"%`, pt)
			} else {
				q.f.add(patientCol+" = ?", pt)
			}
		}
		keep(name)
	}
	for _, name := range []string{"_lastUpdated", "date"} {
		if !known[name] {
			continue
		}
		for _, v := range params[name] {
			cond, args, derr := dateCondition(name, dateCol, v)
			if derr != nil {
				return q, derr
			}
			q.f.add(cond, args...)
		}
		keep(name)
	}
	if q.cursor != "" {
		if typ == "AuditEvent" {
			n, err := strconv.ParseInt(q.cursor, 10, 64)
			if err != nil {
				return q, badParam("_cursor", "not a cursor this server made")
			}
			q.f.add(idCol+" < ?", n)
		} else {
			q.f.add(idCol+" < ?", q.cursor)
		}
	}
	switch typ {
	case "CommunicationRequest", "Flag":
		for _, v := range params["status"] {
			var states []string
			if typ == "Flag" {
				switch v {
				case "active":
					states = []string{"open"}
				case "inactive":
					states = []string{"accepted", "closed"}
				}
			} else {
				states = outbound.StatesForRequestStatus(v)
			}
			if states == nil {
				states = []string{"none"} // a valid status no alert has: no match
			}
			q.f.add(inList("state", len(states)), anys(states)...)
		}
		keep("status")
		if typ == "CommunicationRequest" {
			for _, v := range params["identifier"] {
				id, ok := decode.ParseToken(v)
				if !ok {
					return q, badParam("identifier", "want identifier=system|value")
				}
				if id.System == outbound.SystemAlert {
					q.f.add("id = ?", id.Value)
					continue
				}
				if id.System == "" {
					return q, badParam("identifier", "give the identifier's system: identifier=system|value")
				}
				q.f.add(`event_id IN (SELECT event_id FROM fhir_resources WHERE resource_type = 'CommunicationRequest'
					AND identifier_hash = ? AND event_id <> '')`, a.identifierHash("CommunicationRequest", id))
				q.reported = &id
			}
			keep("identifier")
		}
	case "Communication":
		for _, v := range params["status"] {
			switch v {
			case "in-progress":
				q.f.add("m.delivered_at IS NULL")
			case "completed":
				q.f.add("(m.delivered_at IS NOT NULL OR m.response IS NOT NULL)")
			default:
				q.f.add("1 = 0")
			}
		}
		keep("status")
		for _, v := range params["based-on"] {
			id := strings.TrimPrefix(v, "CommunicationRequest/")
			q.f.add("m.alert_id = ?", outbound.ClarionID(id))
		}
		keep("based-on")
	case "AuditEvent":
		for _, v := range params["outcome"] {
			switch v {
			case "0":
				q.f.add("outcome = 'success'")
			case "4", "8", "12":
				q.f.add("outcome <> 'success'")
			default:
				return q, badParam("outcome", "outcome is 0, 4, 8 or 12")
			}
		}
		keep("outcome")
		for _, v := range params["action"] {
			q.f.add("action = ?", v)
		}
		keep("action")
	}
	return q, nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func inList(col string, n int) string {
	return col + " IN (" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// pseudonymParam reads a patient parameter: pt_…, Patient/pt_… or
// urn:clarion:patient-pseudonym|pt_…. Clarion holds no patient identifier
// in clear, so only the pseudonym can be searched.
func pseudonymParam(name, v string) (string, *decode.Error) {
	v = strings.TrimPrefix(v, "Patient/")
	if sys, val, ok := strings.Cut(v, "|"); ok {
		if sys != "" && sys != outbound.SystemPseudonym {
			return "", badParam(name, "Clarion knows patients by pseudonym only (system %s)", outbound.SystemPseudonym)
		}
		v = val
	}
	if !strings.HasPrefix(v, "pt_") {
		return "", badParam(name, "Clarion knows patients by their pseudonym (pt_…) only: it holds no patient id in clear")
	}
	return v, nil
}

// dateCondition turns a FHIR date search value (prefix + partial date or
// dateTime) into a condition on a column of unix microseconds.
func dateCondition(name, col, v string) (string, []any, *decode.Error) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' && v[1] >= 'a' && v[1] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	lo, hi, ok := dateRange(v)
	if !ok {
		return "", nil, badParam(name, "want a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.f]+zz:zz)")
	}
	l, h := lo.UnixMicro(), hi.UnixMicro()
	switch prefix {
	case "eq":
		return "(" + col + " >= ? AND " + col + " < ?)", []any{l, h}, nil
	case "ne":
		return "(" + col + " < ? OR " + col + " >= ?)", []any{l, h}, nil
	case "gt", "sa":
		return col + " >= ?", []any{h}, nil
	case "ge":
		return col + " >= ?", []any{l}, nil
	case "lt", "eb":
		return col + " < ?", []any{l}, nil
	case "le":
		return col + " < ?", []any{h}, nil
	}
	return "", nil, badParam(name, "unknown prefix %q (eq, ne, gt, ge, lt, le, sa, eb)", prefix)
}

// dateRange is the interval [lo, hi) a partial date or dateTime denotes.
func dateRange(v string) (lo, hi time.Time, ok bool) {
	layouts := []struct {
		layout string
		step   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15:04Z07:00", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05Z07:00", func(t time.Time) time.Time { return t.Add(time.Second) }},
		{"2006-01-02T15:04:05.999999999Z07:00", func(t time.Time) time.Time { return t.Add(time.Microsecond) }},
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l.layout, v, time.UTC); err == nil {
			if l.layout == layouts[5].layout && !strings.Contains(v, ".") {
				continue
			}
			return t, l.step(t), true
		}
	}
	return time.Time{}, time.Time{}, false
}

// run executes a search and renders its entries; last is the cursor of
// the last row and more says whether another page follows.
func (a *API) run(c *gin.Context, typ string, q query) (entries []outbound.Entry, last string, more bool, err error) {
	ctx := c.Request.Context()
	base := a.baseURL(c)
	if q.count == 0 {
		return nil, "", false, nil
	}
	switch typ {
	case "CommunicationRequest", "Flag":
		alerts, err := searchAlerts(ctx, a.db, q.f, q.count+1)
		if err != nil {
			return nil, "", false, err
		}
		if len(alerts) > q.count {
			alerts, more = alerts[:q.count], true
		}
		for _, al := range alerts {
			var body []byte
			if typ == "Flag" {
				body = outbound.Marshal(outbound.Flag(al))
			} else {
				if q.reported != nil {
					al.Reported = reportedIdentifier(*q.reported)
				}
				body = outbound.Marshal(outbound.CommunicationRequest(al))
			}
			entries = append(entries, outbound.Entry{FullURL: base + "/" + typ + "/" + outbound.ID(al.ID), Resource: body})
			last = al.ID
		}
	case "Communication":
		status := c.Query("status")
		msgs, err := searchMessages(ctx, a.db, q.f, q.count+1)
		if err != nil {
			return nil, "", false, err
		}
		if len(msgs) > q.count {
			msgs, more = msgs[:q.count], true
		}
		for _, m := range msgs {
			if status != "completed" || !m.DeliveredAt.IsZero() {
				entries = append(entries, outbound.Entry{FullURL: base + "/Communication/" + outbound.ID(m.ID),
					Resource: outbound.Marshal(outbound.Delivery(m))})
			}
			if r, ok := outbound.Response(m); ok && status != "in-progress" {
				entries = append(entries, outbound.Entry{FullURL: base + "/Communication/" + *r.Id,
					Resource: outbound.Marshal(r)})
			}
			last = m.ID
		}
	case "AuditEvent":
		a.linkAudit(ctx)
		recs, err := searchAudit(ctx, a.db, q.f, q.count+1)
		if err != nil {
			return nil, "", false, err
		}
		if len(recs) > q.count {
			recs, more = recs[:q.count], true
		}
		for _, r := range recs {
			entries = append(entries, outbound.Entry{FullURL: fmt.Sprintf("%s/AuditEvent/%d", base, r.Seq),
				Resource: outbound.Marshal(outbound.AuditEvent(r))})
			last = strconv.FormatInt(r.Seq, 10)
		}
	}
	return entries, last, more, nil
}

// read is GET [base]/Type/id.
func (a *API) read(c *gin.Context, typ, id string) {
	if !auth.ScopesFrom(c).Allows(typ, auth.AccessRead) {
		a.deny(c, http.StatusForbidden, "reading "+typ+" needs scope system/"+typ+".read (or .r)")
		return
	}
	ctx := c.Request.Context()
	notFound := func() {
		a.fail(c, decode.Errorf(http.StatusNotFound, decode.CodeNotFound, "", "%s/%s is not known", typ, id))
	}
	var f filter
	var body []byte
	switch typ {
	case "CommunicationRequest", "Flag":
		f.add("id = ?", outbound.ClarionID(id))
		alerts, err := searchAlerts(ctx, a.db, f, 1)
		if err != nil {
			a.internal(c, err)
			return
		}
		if len(alerts) == 0 {
			notFound()
			return
		}
		if typ == "Flag" {
			body = outbound.Marshal(outbound.Flag(alerts[0]))
		} else {
			body = outbound.Marshal(outbound.CommunicationRequest(alerts[0]))
		}
	case "Communication":
		msgID, isResponse := strings.CutSuffix(id, outbound.ResponseSuffix)
		f.add("m.id = ?", outbound.ClarionID(msgID))
		msgs, err := searchMessages(ctx, a.db, f, 1)
		if err != nil {
			a.internal(c, err)
			return
		}
		if len(msgs) == 0 {
			notFound()
			return
		}
		if !isResponse {
			body = outbound.Marshal(outbound.Delivery(msgs[0]))
			break
		}
		r, ok := outbound.Response(msgs[0])
		if !ok {
			notFound()
			return
		}
		body = outbound.Marshal(r)
	case "AuditEvent":
		seq, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			notFound()
			return
		}
		f.add("seq = ?", seq)
		a.linkAudit(ctx)
		recs, err := searchAudit(ctx, a.db, f, 1)
		if err != nil {
			a.internal(c, err)
			return
		}
		if len(recs) == 0 {
			notFound()
			return
		}
		body = outbound.Marshal(outbound.AuditEvent(recs[0]))
	default:
		notFound()
		return
	}
	c.Header("ETag", `W/"1"`)
	a.write(c, http.StatusOK, body)
}

// linkAudit chains the audit records committed but not linked yet, so an
// AuditEvent read sees everything up to the moment of asking. A failure
// leaves them to the Chainer.
func (a *API) linkAudit(ctx context.Context) {
	if err := audit.ChainAll(ctx, a.db); err != nil {
		a.log.Warn("audit chain before read", "error", err)
	}
}
