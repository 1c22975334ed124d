package routing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// InputDecoder turns a message given to the dry run into an event: format
// is "hl7" (an HL7 v2 message) or "fhir" (a FHIR R4 resource). The routing
// package decodes "event" (the normalized event as JSON) itself.
type InputDecoder interface {
	DecodeInput(ctx context.Context, format string, body []byte) (*ingest.Event, error)
}

// API serves rules and alerts.
type API struct {
	db      *db.DB
	log     *slog.Logger
	now     func() time.Time
	router  *Router
	decoder InputDecoder
	pseudo  Pseudonymizer
}

// APIOption configures the API.
type APIOption func(*API)

// WithDryRun enables POST /v1/rules/dry-run: events are evaluated by router
// (share the pipeline's, so its compiled rules are reused), patients are
// looked up by the pseudonyms pseudo makes, and dec (may be nil: event
// JSON only) decodes HL7 and FHIR input.
func WithDryRun(router *Router, pseudo Pseudonymizer, dec InputDecoder) APIOption {
	return func(a *API) { a.router, a.pseudo, a.decoder = router, pseudo, dec }
}

// NewAPI wires the routing HTTP API.
func NewAPI(d *db.DB, log *slog.Logger, now func() time.Time, opts ...APIOption) *API {
	a := &API{db: d, log: log, now: now}
	for _, o := range opts {
		o(a)
	}
	return a
}

// RegisterRoutes adds the routing routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	admin := auth.Require(auth.RoleAdmin)
	ruleReaders := auth.Require(auth.RoleAdmin, auth.RoleAuditor)
	r.GET("/v1/rules", ruleReaders, a.listRules)
	r.PUT("/v1/rules/:id", admin, a.putRule)
	r.GET("/v1/rules/:id", ruleReaders, a.getRule)
	r.DELETE("/v1/rules/:id", admin, a.deleteRule)
	r.GET("/v1/rules/:id/versions", ruleReaders, a.ruleVersions)
	r.GET("/v1/rules/:id/stats", ruleReaders, a.ruleStats)
	if a.router != nil {
		r.POST("/v1/rules/dry-run", admin, a.dryRun)
	}
	readers := auth.Require(auth.RoleAdmin, auth.RoleClinician, auth.RoleAuditor)
	r.GET("/v1/alerts", readers, a.listAlerts)
	r.GET("/v1/alerts/:id", readers, a.getAlert)
}

func actorOf(c *gin.Context) audit.Entry {
	p := auth.From(c)
	return audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role, SourceAddr: c.ClientIP()}
}

// failRule answers a rule error: a 422 listing every problem for invalid
// rules, else as httpx.Fail.
func (a *API) failRule(c *gin.Context, err error) {
	var re RuleErrors
	if errors.As(err, &re) {
		list := make([]gin.H, len(re))
		for i, p := range re {
			list[i] = gin.H{"rule": p.Rule, "field": p.Field, "reason": p.Reason}
		}
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": re.Error(), "problems": list})
		return
	}
	httpx.Fail(c, a.log, err, ErrNotFound)
}

func (a *API) putRule(c *gin.Context) {
	var rule Rule
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rule); err != nil {
		httpx.BadRequest(c, "invalid rule JSON: "+jsonProblem(err))
		return
	}
	if id := c.Param("id"); rule.ID != "" && rule.ID != id {
		httpx.BadRequest(c, "the body's id differs from the path's")
		return
	}
	rule.ID = c.Param("id")
	comp, err := NewCompiler()
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	var res SaveResult
	err = a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		var err error
		res, err = SaveRule(c.Request.Context(), tx, comp, actorOf(c), rule, a.now())
		return err
	})
	if err != nil {
		a.failRule(c, err)
		return
	}
	rule.Normalize()
	c.JSON(http.StatusOK, gin.H{"rule": rule, "version": res.Version, "changed": res.Changed})
}

// jsonProblem describes a JSON decoding error without quoting the input.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + te.Field + " must be " + te.Type.String()
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	}
	if msg := err.Error(); len(msg) < 120 {
		return msg // e.g. `json: unknown field "x"`: the field's name only
	}
	return "malformed"
}

func (a *API) listRules(c *gin.Context) {
	rules, err := ListRules(c.Request.Context(), a.db)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"rules": rules})
}

func (a *API) getRule(c *gin.Context) {
	sr, err := GetRule(c.Request.Context(), a.db, c.Param("id"))
	if err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	c.JSON(http.StatusOK, sr)
}

func (a *API) deleteRule(c *gin.Context) {
	var version int
	err := a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		var err error
		version, err = DeleteRule(c.Request.Context(), tx, actorOf(c), c.Param("id"), a.now())
		return err
	})
	if err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": c.Param("id"), "deleted": true, "version": version})
}

func (a *API) ruleVersions(c *gin.Context) {
	vs, err := RuleVersions(c.Request.Context(), a.db, c.Param("id"))
	if err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": c.Param("id"), "versions": vs})
}

func (a *API) ruleStats(c *gin.Context) {
	now := a.now()
	from, to := now.Add(-7*24*time.Hour), now
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := c.Query(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				httpx.BadRequest(c, p.name+" must be an RFC 3339 time")
				return
			}
			*p.dst = t
		}
	}
	if !to.After(from) {
		httpx.BadRequest(c, "to must be after from")
		return
	}
	if _, err := RuleVersions(c.Request.Context(), a.db, c.Param("id")); err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	// Stats count audit records: link the ones committed since the last poll.
	if err := audit.ChainAll(c.Request.Context(), a.db); err != nil {
		a.log.Warn("audit chain before read", "error", err)
	}
	s, err := Stats(c.Request.Context(), a.db, c.Param("id"), from, to)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, s)
}

// DryRunRequest is the body of POST /v1/rules/dry-run: exactly one of HL7
// (an HL7 v2 message; CR or LF segment ends), FHIR (a FHIR R4 resource) or
// Event (a normalized event). At is the time to evaluate at (default now).
type DryRunRequest struct {
	HL7   string          `json:"hl7,omitempty"`
	FHIR  json.RawMessage `json:"fhir,omitempty"`
	Event *ingest.Event   `json:"event,omitempty"`
	At    *time.Time      `json:"at,omitempty"`
}

// DecodeDryRunInput turns a dry-run request into an event.
func DecodeDryRunInput(ctx context.Context, req DryRunRequest, dec InputDecoder) (*ingest.Event, error) {
	given := 0
	for _, ok := range []bool{req.HL7 != "", len(req.FHIR) > 0, req.Event != nil} {
		if ok {
			given++
		}
	}
	if given != 1 {
		return nil, &InvalidInputError{"give exactly one of hl7, fhir or event"}
	}
	var ev *ingest.Event
	var err error
	switch {
	case req.Event != nil:
		ev = req.Event
	case dec == nil:
		return nil, &InvalidInputError{"this server decodes event JSON only"}
	case req.HL7 != "":
		ev, err = dec.DecodeInput(ctx, "hl7", []byte(req.HL7))
	default:
		ev, err = dec.DecodeInput(ctx, "fhir", req.FHIR)
	}
	if err != nil {
		return nil, err
	}
	if ev.Source == "" {
		ev.Source = "dry-run"
	}
	if ev.SourceID == "" {
		ev.SourceID = "dry-run"
	}
	if err := ev.Validate(); err != nil {
		return nil, &InvalidInputError{"event: " + err.Error()}
	}
	return ev, nil
}

// InvalidInputError is a dry-run input that cannot be evaluated.
type InvalidInputError struct{ Reason string }

func (e *InvalidInputError) Error() string { return e.Reason }

// UserError marks the error as safe to show the caller.
func (e *InvalidInputError) UserError() {}

func (a *API) dryRun(c *gin.Context) {
	var req DryRunRequest
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, 2<<20))
	if err != nil || json.Unmarshal(body, &req) != nil {
		httpx.BadRequest(c, "invalid JSON body: {\"hl7\"|\"fhir\"|\"event\": ..., \"at\": RFC3339}")
		return
	}
	ctx := c.Request.Context()
	ev, err := DecodeDryRunInput(ctx, req, a.decoder)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	at := a.now()
	if req.At != nil {
		at = *req.At
	}
	res, err := RunDryRun(ctx, a.db, a.router, ev, a.pseudo, at)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

// errRollback ends a dry run's transaction without committing.
var errRollback = errors.New("dry run: roll back")

// RunDryRun evaluates ev in a transaction that is always rolled back, so
// nothing is written whatever happens.
func RunDryRun(ctx context.Context, d *db.DB, router *Router, ev *ingest.Event, pseudo Pseudonymizer, at time.Time) (*DryRunResult, error) {
	var res *DryRunResult
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if res, err = router.DryRun(ctx, tx, ev, pseudo, at); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		return nil, err
	}
	return res, nil
}

func (a *API) listAlerts(c *gin.Context) {
	limit, err := strconv.Atoi(c.DefaultQuery("limit", "100"))
	if err != nil || limit < 1 || limit > 1000 {
		httpx.BadRequest(c, "limit must be 1..1000")
		return
	}
	alerts, err := ListAlerts(c.Request.Context(), a.db, c.Query("state"), limit)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if alerts == nil {
		alerts = []Alert{}
	}
	c.JSON(http.StatusOK, gin.H{"alerts": alerts})
}

func (a *API) getAlert(c *gin.Context) {
	al, err := GetAlert(c.Request.Context(), a.db, nil, c.Param("id"), "")
	if err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	c.JSON(http.StatusOK, al)
}
