package fhir

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	samply "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/fhir/outbound"
	"github.com/clarion-health/clarion/internal/auth"
)

// Clarion as a subscriber: the EHR's FHIR server holds a rest-hook
// Subscription whose endpoint is [base]/subscription-notification/<id>, and
// POSTs notification Bundles there (R4 Subscriptions Backport IG: a Bundle
// of type history whose first entry is a Parameters SubscriptionStatus; or
// R5-style, whose first entry is a SubscriptionStatus resource).

// Notification types.
const (
	NotifyHandshake = "handshake"
	NotifyHeartbeat = "heartbeat"
	NotifyEvent     = "event-notification"
	NotifyQueryStat = "query-status"
	NotifyQueryEvt  = "query-event"
)

// Status is the SubscriptionStatus of a notification.
type Status struct {
	Type   string
	Since  int64 // eventsSinceSubscriptionStart, -1 when absent
	Events []Event
}

// Event is one notification event: its number and focus reference.
type Event struct {
	Number int64 // -1 when absent
	Focus  string
}

// Notification is a parsed notification Bundle: its status and the
// entries after it (resources for full-resource, URLs for id-only).
type Notification struct {
	Status  Status
	Entries []NotificationEntry
}

// NotificationEntry is one entry after the status.
type NotificationEntry struct {
	FullURL  string
	Resource json.RawMessage
}

var errNotNotification = errors.New("not a subscription notification")

// ParseNotification reads a notification Bundle. The envelope is read
// leniently (R5-style Bundles are not R4); the R4 status (Parameters) and
// every resource are decoded strictly by the caller.
func ParseNotification(dec *decode.Decoder, body []byte) (*Notification, *decode.Error) {
	var env struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeStructure, "", "not JSON: %v", err)
	}
	if env.ResourceType != "Bundle" || len(env.Entry) == 0 {
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "Bundle",
			"a notification is a Bundle whose first entry is its SubscriptionStatus")
	}
	switch env.Type {
	case "history", "subscription-notification":
	default:
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "Bundle.type",
			"a notification Bundle has type history (R4 backport) or subscription-notification (R5), not %q", env.Type)
	}
	st, derr := parseStatus(dec, env.Entry[0].Resource)
	if derr != nil {
		return nil, derr
	}
	n := &Notification{Status: st}
	for _, e := range env.Entry[1:] {
		n.Entries = append(n.Entries, NotificationEntry{FullURL: e.FullURL, Resource: e.Resource})
	}
	return n, nil
}

func parseStatus(dec *decode.Decoder, raw json.RawMessage) (Status, *decode.Error) {
	st := Status{Since: -1}
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal(raw, &head)
	switch head.ResourceType {
	case "Parameters":
		if _, err := dec.Decode(raw); err != nil {
			derr := asError(err)
			for i := range derr.Issues {
				derr.Issues[i].Expression = "Bundle.entry[0].resource" + strings.TrimPrefix(derr.Issues[i].Expression, "Parameters")
			}
			return st, derr
		}
		var p struct {
			Parameter []map[string]json.RawMessage `json:"parameter"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return st, decode.Errorf(http.StatusBadRequest, decode.CodeStructure, "Bundle.entry[0].resource", "%v", err)
		}
		for _, prm := range p.Parameter {
			switch name := str(prm["name"]); name {
			case "type":
				st.Type = paramValue(prm)
			case "events-since-subscription-start":
				st.Since = number(paramValue(prm))
			case "notification-event":
				var parts []map[string]json.RawMessage
				_ = json.Unmarshal(prm["part"], &parts)
				ev := Event{Number: -1}
				for _, part := range parts {
					switch str(part["name"]) {
					case "event-number":
						ev.Number = number(paramValue(part))
					case "focus":
						ev.Focus = refValue(part["valueReference"])
					}
				}
				st.Events = append(st.Events, ev)
			}
		}
	case "SubscriptionStatus":
		var s struct {
			Type              string          `json:"type"`
			EventsSince       json.RawMessage `json:"eventsSinceSubscriptionStart"`
			NotificationEvent []struct {
				EventNumber json.RawMessage `json:"eventNumber"`
				Focus       json.RawMessage `json:"focus"`
			} `json:"notificationEvent"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return st, decode.Errorf(http.StatusBadRequest, decode.CodeStructure, "Bundle.entry[0].resource", "%v", err)
		}
		st.Type, st.Since = s.Type, number(scalar(s.EventsSince))
		for _, e := range s.NotificationEvent {
			st.Events = append(st.Events, Event{Number: number(scalar(e.EventNumber)), Focus: refValue(e.Focus)})
		}
	default:
		return st, decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "Bundle.entry[0].resource",
			"the first entry must be the SubscriptionStatus (a Parameters resource in R4, SubscriptionStatus in R5)")
	}
	switch st.Type {
	case NotifyHandshake, NotifyHeartbeat, NotifyEvent, NotifyQueryStat, NotifyQueryEvt:
	default:
		return st, decode.Errorf(http.StatusBadRequest, decode.CodeValue, "Bundle.entry[0].resource.type",
			"unknown notification type %q", st.Type)
	}
	return st, nil
}

func str(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// scalar renders a JSON string or number as text.
func scalar(raw json.RawMessage) string {
	if s := str(raw); s != "" {
		return s
	}
	return strings.TrimSpace(string(raw))
}

// paramValue is the value[x] of a Parameters parameter, as text.
func paramValue(p map[string]json.RawMessage) string {
	for k, v := range p {
		if strings.HasPrefix(k, "value") && k != "valueReference" {
			return scalar(v)
		}
	}
	return ""
}

func refValue(raw json.RawMessage) string {
	var r struct {
		Reference string `json:"reference"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.Reference
}

func number(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// notification is POST [base]/subscription-notification/:subscription.
func (a *API) notification(c *gin.Context) {
	ctx := c.Request.Context()
	sub, err := getSubscription(ctx, a.db, a.keys, c.Param("subscription"))
	if errors.Is(err, ErrNotFound) {
		a.fail(c, decode.Errorf(http.StatusNotFound, decode.CodeNotFound, "", "no subscription %q is configured", c.Param("subscription")))
		return
	}
	if err != nil {
		a.internal(c, err)
		return
	}
	body, derr := readBody(c)
	if derr != nil {
		a.fail(c, derr)
		return
	}
	n, derr := ParseNotification(a.dec, body)
	if derr != nil {
		a.fail(c, derr)
		return
	}
	p := auth.From(c)
	s := sender{source: "fhir-sub:" + sub.ID, actorID: p.Subject, role: p.Role, via: "subscription"}
	issues, err := a.handleNotification(ctx, sub, s, auth.ScopesFrom(c), n)
	if err != nil {
		var derr *decode.Error
		if errors.As(err, &derr) {
			a.fail(c, derr)
			return
		}
		a.internal(c, err)
		return
	}
	issues = append([]decode.Issue{{Severity: "information", Code: decode.CodeInformation,
		Diagnostics: fmt.Sprintf("%s processed", n.Status.Type)}}, issues...)
	a.write(c, http.StatusOK, outbound.Marshal(outbound.OperationOutcome(issues...)))
}

// handleNotification processes a parsed notification: detects a gap in
// the event numbers and fetches the missed events, fetches id-only
// resources, creates every resource like a batch entry, and records how
// far the subscription has got. A failed fetch answers 503 before anything
// is created, so the source retries the notification.
func (a *API) handleNotification(ctx context.Context, sub Subscription, s sender, scopes auth.Scopes, n *Notification) ([]decode.Issue, error) {
	st := n.Status
	var issues []decode.Issue
	resources, err := a.notificationResources(ctx, sub, n)
	if err != nil {
		return nil, err
	}
	low, high := eventRange(st, len(resources))
	advance := high
	if st.Type == NotifyHandshake || st.Type == NotifyHeartbeat || st.Type == NotifyEvent {
		if from, to := sub.LastEventNumber+1, low-1; low >= 0 && to >= from {
			a.log.Warn("fhir subscription gap", "subscription_id", sub.ID, "from_event", from, "to_event", to)
			missed, gerr := a.fetchMissed(ctx, sub, from, to)
			outcome, detail := "success", map[string]any{"subscription_id": sub.ID, "from_event": from, "to_event": to,
				"fetched": len(missed)}
			switch {
			case gerr == nil:
				resources = append(missed, resources...)
			case errors.Is(gerr, errUnsupported):
				outcome, detail["reason"] = "failure", "source does not support $events"
				issues = append(issues, decode.Issue{Severity: "warning", Code: decode.CodeIncomplete,
					Diagnostics: fmt.Sprintf("events %d to %d were missed and the source cannot replay them", from, to)})
			default:
				outcome, detail["reason"] = "failure", "fetch failed"
				advance = sub.LastEventNumber // keep the gap open: the next notification retries
				a.log.Warn("fhir subscription gap not recovered", "subscription_id", sub.ID, "error", gerr)
				issues = append(issues, decode.Issue{Severity: "warning", Code: decode.CodeIncomplete,
					Diagnostics: fmt.Sprintf("events %d to %d were missed; fetching them failed, will retry", from, to)})
			}
			if err := a.db.InTx(ctx, func(tx *sql.Tx) error {
				err := audit.Append(ctx, tx, audit.Entry{At: a.now(), ActorType: audit.ActorSystem, ActorID: "fhir",
					Action: "fhir.subscription_gap", ObjectType: "fhir_subscription", ObjectID: sub.ID,
					CorrelationID: sub.ID, Outcome: outcome, Detail: detail})
				return err
			}); err != nil {
				return nil, err
			}
		}
	}
	for i, r := range resources {
		issues = append(issues, a.createFromNotification(ctx, s, scopes, i, r)...)
	}
	status := "active"
	if st.Type == NotifyQueryStat || st.Type == NotifyQueryEvt {
		return issues, nil
	}
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := advanceSubscription(ctx, tx, sub.ID, status, advance, a.now()); err != nil {
			return err
		}
		if st.Type != NotifyHandshake {
			return nil
		}
		err := audit.Append(ctx, tx, audit.Entry{At: a.now(), ActorType: audit.ActorIntegration, ActorID: s.actorID,
			ActorRole: s.role, Action: "fhir.subscription_handshake", ObjectType: "fhir_subscription", ObjectID: sub.ID,
			CorrelationID: sub.ID})
		return err
	})
	return issues, err
}

// eventRange is the lowest and highest event number a notification
// carries; -1 when it says nothing about numbers.
func eventRange(st Status, resources int) (low, high int64) {
	low, high = -1, -1
	for _, e := range st.Events {
		if e.Number < 0 {
			continue
		}
		if low < 0 || e.Number < low {
			low = e.Number
		}
		high = max(high, e.Number)
	}
	if low >= 0 {
		return low, max(high, st.Since)
	}
	if st.Since < 0 {
		return -1, -1
	}
	switch st.Type {
	case NotifyEvent:
		n := int64(max(resources, len(st.Events), 1))
		return st.Since - n + 1, st.Since
	default: // handshake, heartbeat: everything up to Since should have arrived
		return st.Since + 1, st.Since
	}
}

// notifResource is a resource of a notification, fetched or carried.
type notifResource struct {
	raw  []byte
	from string // where it came from, for issues: the fullUrl or focus
}

// notificationResources collects the resources of a notification:
// carried ones (full-resource) and fetched ones (id-only).
func (a *API) notificationResources(ctx context.Context, sub Subscription, n *Notification) ([]notifResource, error) {
	var out []notifResource
	carried := map[string]bool{}
	var fetch []string
	for _, e := range n.Entries {
		switch {
		case len(e.Resource) > 0 && string(e.Resource) != "null":
			out = append(out, notifResource{raw: e.Resource, from: e.FullURL})
			carried[e.FullURL] = true
		case e.FullURL != "":
			fetch = append(fetch, e.FullURL)
		}
	}
	for _, ev := range n.Status.Events {
		if ev.Focus != "" && !carried[ev.Focus] && !contains(fetch, ev.Focus) && !carriedRelative(carried, ev.Focus) {
			fetch = append(fetch, ev.Focus)
		}
	}
	for _, ref := range fetch {
		raw, err := a.fetch(ctx, sub, ref)
		if err != nil {
			a.log.Warn("fhir subscription fetch failed", "subscription_id", sub.ID, "error", err)
			return nil, decode.Errorf(http.StatusServiceUnavailable, decode.CodeTransient, "",
				"fetching a notified resource from the source failed; retry the notification")
		}
		out = append(out, notifResource{raw: raw, from: ref})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// carriedRelative reports whether a relative focus ("Encounter/1") names
// a carried entry's absolute fullUrl.
func carriedRelative(carried map[string]bool, focus string) bool {
	for u := range carried {
		if strings.HasSuffix(u, "/"+focus) {
			return true
		}
	}
	return false
}

var errUnsupported = errors.New("operation not supported by the source")

// resolve turns a reference into a URL on the subscription's source; an
// absolute URL elsewhere is refused, so the source's token never leaves it.
func resolve(sub Subscription, ref string) (string, error) {
	base := strings.TrimRight(sub.SourceBaseURL, "/")
	if strings.Contains(ref, "..") || strings.ContainsAny(ref, "?#") {
		return "", fmt.Errorf("reference is not a plain resource URL")
	}
	if strings.Contains(ref, "://") {
		if !strings.HasPrefix(ref, base+"/") {
			return "", fmt.Errorf("reference outside the subscription's source")
		}
		return ref, nil
	}
	return base + "/" + strings.TrimLeft(ref, "/"), nil
}

// fetch GETs a resource from the subscription's source with its token.
func (a *API) fetch(ctx context.Context, sub Subscription, ref string) ([]byte, error) {
	u, err := resolve(sub, ref)
	if err != nil {
		return nil, err
	}
	return a.get(ctx, sub, u)
}

func (a *API) get(ctx context.Context, sub Subscription, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	if sub.Token != "" {
		req.Header.Set("Authorization", "Bearer "+sub.Token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return body, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
		resp.StatusCode == http.StatusNotImplemented || resp.StatusCode == http.StatusBadRequest:
		return nil, fmt.Errorf("fetch: %s: %w", resp.Status, errUnsupported)
	}
	return nil, fmt.Errorf("fetch: source answered %s", resp.Status)
}

// fetchMissed replays events from..to with the source's $events operation
// (Subscriptions Backport IG): GET [source]/Subscription/<id>/$events?
// eventsSinceNumber=from&eventsUntilNumber=to&content=full-resource.
func (a *API) fetchMissed(ctx context.Context, sub Subscription, from, to int64) ([]notifResource, error) {
	q := url.Values{"eventsSinceNumber": {strconv.FormatInt(from, 10)}, "eventsUntilNumber": {strconv.FormatInt(to, 10)},
		"content": {"full-resource"}}
	u := strings.TrimRight(sub.SourceBaseURL, "/") + "/Subscription/" + url.PathEscape(sub.RemoteID) + "/$events?" + q.Encode()
	body, err := a.get(ctx, sub, u)
	if err != nil {
		return nil, err
	}
	n, derr := ParseNotification(a.dec, body)
	if derr != nil {
		return nil, fmt.Errorf("$events answer: %w", derr)
	}
	return a.notificationResources(ctx, sub, n)
}

// createFromNotification creates one notified resource; a resource Clarion
// does not route (a Patient, say) is skipped, a bad one rejected.
func (a *API) createFromNotification(ctx context.Context, s sender, scopes auth.Scopes, i int, r notifResource) []decode.Issue {
	path := fmt.Sprintf("Bundle.entry[%d].resource", i+1)
	res, err := a.dec.Decode(r.raw)
	if err != nil {
		derr := asError(err)
		a.reject(ctx, s, r.raw, derr)
		return warnings(derr, path)
	}
	typ := decode.TypeOf(res)
	if !creatable(typ) {
		return []decode.Issue{{Severity: "information", Code: decode.CodeNotSupported, Expression: path,
			Diagnostics: typ + " is not routed by Clarion; skipped"}}
	}
	if !scopes.Allows(typ, auth.AccessCreate) {
		return []decode.Issue{{Severity: "warning", Code: decode.CodeForbidden, Expression: path,
			Diagnostics: "the notifying token lacks system/" + typ + ".write; skipped"}}
	}
	e := &entry{path: path, raw: r.raw, res: res}
	if derr := a.prepare(e); derr != nil {
		a.reject(ctx, s, r.raw, derr)
		return warnings(derr, "")
	}
	if _, err := a.commit(ctx, s, []*entry{e}); err != nil {
		if derr := asDecodeError(err); derr != nil {
			a.reject(ctx, s, r.raw, derr)
			return warnings(derr, "")
		}
		a.log.Error("fhir notification create failed", "error", err)
		return []decode.Issue{{Severity: "error", Code: decode.CodeProcessing, Expression: path, Diagnostics: "not stored"}}
	}
	return nil
}

func warnings(derr *decode.Error, prefix string) []decode.Issue {
	out := make([]decode.Issue, len(derr.Issues))
	for i, is := range derr.Issues {
		is.Severity = "warning"
		if prefix != "" && is.Expression == "" {
			is.Expression = prefix
		}
		out[i] = is
	}
	return out
}

var subscriptionID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

func (a *API) putSubscription(c *gin.Context) {
	var s Subscription
	if err := c.ShouldBindJSON(&s); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "body must be JSON: {source_base_url, remote_id, token}"})
		return
	}
	s.ID = c.Param("id")
	u, err := url.Parse(s.SourceBaseURL)
	switch {
	case !subscriptionID.MatchString(s.ID):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": "id: letters, digits, '-' and '.', at most 64"})
		return
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": "source_base_url: an absolute http(s) URL is required"})
		return
	case strings.TrimSpace(s.RemoteID) == "":
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": "remote_id: the Subscription's id on the source is required"})
		return
	}
	s.SourceBaseURL = strings.TrimRight(s.SourceBaseURL, "/")
	p := auth.From(c)
	now := a.now()
	err = a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		if err := putSubscription(c.Request.Context(), tx, a.keys, s, now); err != nil {
			return err
		}
		err := audit.Append(c.Request.Context(), tx, audit.Entry{At: now, ActorType: p.Kind, ActorID: p.Subject,
			ActorRole: p.Role, Action: "fhir.subscription_saved", ObjectType: "fhir_subscription", ObjectID: s.ID,
			CorrelationID: s.ID, Detail: map[string]any{"source_host": u.Host, "remote_id": s.RemoteID,
				"token_set": s.Token != ""}})
		return err
	})
	if err != nil {
		a.log.Error("save fhir subscription", "error", err)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
		return
	}
	saved, err := getSubscription(c.Request.Context(), a.db, a.keys, s.ID)
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
		return
	}
	saved.Token = ""
	c.JSON(http.StatusOK, saved)
}

func (a *API) listSubscriptions(c *gin.Context) {
	subs, err := listSubscriptions(c.Request.Context(), a.db)
	if err != nil {
		a.log.Error("list fhir subscriptions", "error", err)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"subscriptions": subs})
}

func reportedIdentifier(id decode.Identifier) *samply.Identifier {
	return &samply.Identifier{System: &id.System, Value: &id.Value}
}
