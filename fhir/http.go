package fhir

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/fhir/decode"
	"github.com/clarion-health/clarion/fhir/outbound"
	"github.com/clarion-health/clarion/internal/auth"
)

// maxBody bounds a request body (a transaction Bundle of a few thousand
// Observations fits).
const maxBody = 16 << 20

// RegisterRoutes adds the FHIR interface under /fhir. It carries its own
// authentication (bearer token + SMART scopes, refusals as
// OperationOutcome): register it on the engine, not on a group that
// already authenticates. GET /fhir/metadata is public.
func (a *API) RegisterRoutes(r gin.IRouter) {
	r.GET("/fhir/metadata", a.negotiate, a.metadata)
	g := r.Group("/fhir", a.negotiate, auth.ScopeMiddleware(a.db, a.deny))
	g.POST("", a.postBase)
	g.POST("/subscription-notification/:subscription", a.notification)
	g.Any("/:type", a.typeLevel)
	g.Any("/:type/:id", a.instanceLevel)
}

// RegisterAdminRoutes adds the subscription configuration API to an
// authenticated router (admins only).
func (a *API) RegisterAdminRoutes(r gin.IRouter) {
	admin := auth.Require(auth.RoleAdmin)
	r.PUT("/v1/fhir/subscriptions/:id", admin, a.putSubscription)
	r.GET("/v1/fhir/subscriptions", admin, a.listSubscriptions)
}

// deny answers an authentication or authorization failure.
func (a *API) deny(c *gin.Context, status int, reason string) {
	code := decode.CodeSecurity
	if status == http.StatusForbidden {
		code = decode.CodeForbidden
	}
	a.fail(c, &decode.Error{Status: status, Issues: []decode.Issue{{Severity: "error", Code: code, Diagnostics: reason}}})
}

// write answers with a resource.
func (a *API) write(c *gin.Context, status int, body []byte) {
	c.Data(status, outbound.ContentType, body)
}

// fail answers a refusal as an OperationOutcome.
func (a *API) fail(c *gin.Context, derr *decode.Error) {
	a.write(c, derr.Status, outbound.Marshal(outbound.OperationOutcome(derr.Issues...)))
}

// internal answers a server fault: details only in the log.
func (a *API) internal(c *gin.Context, err error) {
	a.log.Error("fhir request failed", "method", c.Request.Method, "route", c.FullPath(), "error", err)
	a.fail(c, decode.Errorf(http.StatusInternalServerError, decode.CodeProcessing, "", "internal error; retry later"))
}

// failOr answers err: a *decode.Error as itself, anything else as 500.
func (a *API) failOr(c *gin.Context, err error) {
	var derr *decode.Error
	if errors.As(err, &derr) {
		a.fail(c, derr)
		return
	}
	a.internal(c, err)
}

// negotiate honours _format and the media types: JSON only; XML (or any
// other format) is refused with 415.
func (a *API) negotiate(c *gin.Context) {
	if f := c.Query("_format"); f != "" {
		switch strings.ToLower(f) {
		case "json", "application/json", "application/fhir+json", "application/json+fhir":
		default:
			a.fail(c, decode.Errorf(http.StatusUnsupportedMediaType, decode.CodeNotSupported, "_format",
				"Clarion speaks FHIR JSON only (_format=json)"))
			c.Abort()
			return
		}
	}
	if acc := c.GetHeader("Accept"); acc != "" && strings.Contains(acc, "xml") && !strings.Contains(acc, "json") &&
		!strings.Contains(acc, "*/*") {
		a.fail(c, decode.Errorf(http.StatusUnsupportedMediaType, decode.CodeNotSupported, "Accept",
			"Clarion speaks FHIR JSON only (application/fhir+json)"))
		c.Abort()
		return
	}
	if c.Request.Method == http.MethodPost || c.Request.Method == http.MethodPut {
		if ct := c.GetHeader("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			switch {
			case err == nil && (mt == "application/fhir+json" || mt == "application/json" || mt == "application/json+fhir"):
			default:
				a.fail(c, decode.Errorf(http.StatusUnsupportedMediaType, decode.CodeNotSupported, "Content-Type",
					"send application/fhir+json (or application/json); XML is not supported"))
				c.Abort()
				return
			}
		}
	}
	c.Next()
}

func (a *API) baseURL(c *gin.Context) string {
	if a.base != "" {
		return a.base
	}
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	}
	if p := c.GetHeader("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + c.Request.Host + "/fhir"
}

func (a *API) metadata(c *gin.Context) {
	a.write(c, http.StatusOK, outbound.Marshal(outbound.CapabilityStatement(a.baseURL(c), a.version, a.now())))
}

func readBody(c *gin.Context) ([]byte, *decode.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, decode.Errorf(http.StatusRequestEntityTooLarge, decode.CodeTooCostly, "",
				"the body exceeds %d bytes", maxBody)
		}
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeStructure, "", "the body could not be read")
	}
	if len(body) == 0 {
		return nil, decode.Errorf(http.StatusBadRequest, decode.CodeStructure, "", "the body is empty: send a FHIR resource")
	}
	return body, nil
}

func senderOf(c *gin.Context, via string) sender {
	p := auth.From(c)
	return sender{source: "fhir:" + p.Subject, actorID: p.Subject, role: p.Role, via: via}
}

// notAllowed answers 405 with the methods the resource type supports.
func (a *API) notAllowed(c *gin.Context, allow []string, what string) {
	if len(allow) > 0 {
		c.Header("Allow", strings.Join(allow, ", "))
	}
	a.fail(c, decode.Errorf(http.StatusMethodNotAllowed, decode.CodeNotSupported, "", "%s is not supported", what))
}

func (a *API) unknownType(c *gin.Context, typ string) {
	a.fail(c, decode.Errorf(http.StatusNotFound, decode.CodeNotSupported, "",
		"Clarion does not serve %q resources (see GET /fhir/metadata)", typ))
}

func allowed(s outbound.ResourceSupport, instance bool) []string {
	var out []string
	if instance {
		if s.Read {
			out = append(out, http.MethodGet)
		}
		return out
	}
	if s.Search {
		out = append(out, http.MethodGet)
	}
	if s.Create {
		out = append(out, http.MethodPost)
	}
	return out
}

// typeLevel dispatches [base]/Type: create (POST) and search (GET).
func (a *API) typeLevel(c *gin.Context) {
	typ := c.Param("type")
	s, ok := outbound.Lookup(typ)
	if !ok {
		a.unknownType(c, typ)
		return
	}
	switch {
	case c.Request.Method == http.MethodPost && s.Create:
		a.createOne(c, typ)
	case c.Request.Method == http.MethodGet && s.Search:
		a.search(c, typ)
	default:
		a.notAllowed(c, allowed(s, false), c.Request.Method+" [base]/"+typ)
	}
}

// instanceLevel dispatches [base]/Type/id: read only.
func (a *API) instanceLevel(c *gin.Context) {
	typ := c.Param("type")
	s, ok := outbound.Lookup(typ)
	if !ok {
		a.unknownType(c, typ)
		return
	}
	if c.Request.Method == http.MethodGet && s.Read {
		a.read(c, typ, c.Param("id"))
		return
	}
	a.notAllowed(c, allowed(s, true), c.Request.Method+" [base]/"+typ+"/[id]")
}

// createOne is POST [base]/Type (with If-None-Exist: conditional create).
func (a *API) createOne(c *gin.Context, typ string) {
	if !auth.ScopesFrom(c).Allows(typ, auth.AccessCreate) {
		a.deny(c, http.StatusForbidden, "creating "+typ+" needs scope system/"+typ+".write (or .c)")
		return
	}
	s := senderOf(c, "rest")
	body, derr := readBody(c)
	if derr != nil {
		a.fail(c, derr)
		return
	}
	res, err := a.dec.Decode(body)
	if err != nil {
		derr := asError(err)
		a.reject(c.Request.Context(), s, body, derr)
		a.fail(c, derr)
		return
	}
	if got := decode.TypeOf(res); got != typ {
		derr := decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, got,
			"the body is a %s; POST it to [base]/%s (this endpoint takes %s)", got, got, typ)
		a.reject(c.Request.Context(), s, body, derr)
		a.fail(c, derr)
		return
	}
	e := &entry{path: typ, raw: body, res: res, ifNoneExist: c.GetHeader("If-None-Exist")}
	if derr := a.prepare(e); derr != nil {
		a.reject(c.Request.Context(), s, body, derr)
		a.fail(c, derr)
		return
	}
	outs, err := a.commit(c.Request.Context(), s, []*entry{e})
	if err != nil {
		var derr *decode.Error
		if errors.As(err, &derr) {
			a.reject(c.Request.Context(), s, body, derr)
		}
		a.failOr(c, err)
		return
	}
	o := outs[0]
	base := a.baseURL(c)
	c.Header("Location", o.location(base))
	c.Header("ETag", `W/"1"`)
	c.Header("Last-Modified", o.at.UTC().Format(http.TimeFormat))
	switch prefer(c) {
	case "minimal":
		c.Status(o.status)
		c.Writer.WriteHeaderNow()
	case "OperationOutcome":
		msg := "created " + o.typ + "/" + outbound.ID(o.id)
		if o.duplicate {
			msg = "already created as " + o.typ + "/" + outbound.ID(o.id) + "; nothing done"
		}
		a.write(c, o.status, outbound.Marshal(outbound.Information(msg)))
	default:
		body, err := a.represent(e, o)
		if err != nil {
			a.internal(c, err)
			return
		}
		a.write(c, o.status, body)
	}
}

// prefer reads Prefer: return=minimal|representation|OperationOutcome.
func prefer(c *gin.Context) string {
	for _, p := range strings.Split(c.GetHeader("Prefer"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "return="); ok {
			return v
		}
	}
	return "representation"
}

func asError(err error) *decode.Error {
	var derr *decode.Error
	if errors.As(err, &derr) {
		return derr
	}
	return decode.Errorf(http.StatusBadRequest, decode.CodeInvalid, "", "the resource could not be decoded")
}

func statusText(code int) string { return strconv.Itoa(code) + " " + http.StatusText(code) }
