// Package auditapi serves the audit log over HTTP to the auditor role (and
// admin): verification, queries with filters and paging, exports as JSON
// lines, CSV or a FHIR R4 AuditEvent Bundle, the checkpoints and the public
// keys. Every call is itself audited. It lives apart from package audit so
// that audit stays free of gin.
package auditapi

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// API serves /v1/audit/*.
type API struct {
	db       *db.DB
	keys     []ed25519.PublicKey
	observer string
	log      *slog.Logger
	now      func() time.Time
}

// New wires the audit API. keys are the trusted checkpoint keys (the
// node's own and any others); observer names this deployment in FHIR
// exports.
func New(d *db.DB, keys []ed25519.PublicKey, observer string, log *slog.Logger, now func() time.Time) *API {
	return &API{db: d, keys: keys, observer: observer, log: log, now: now}
}

// RegisterRoutes adds the audit routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	auditors := auth.Require(auth.RoleAuditor, auth.RoleAdmin)
	r.GET("/v1/audit/verify", auditors, a.linkPending, a.verify)
	r.GET("/v1/audit/records", auditors, a.linkPending, a.records)
	r.GET("/v1/audit/export", auditors, a.linkPending, a.export)
	r.GET("/v1/audit/checkpoints", auditors, a.checkpoints)
	r.GET("/v1/audit/public-keys", auditors, a.publicKeys)
}

// linkPending chains what has committed but not been linked yet, so an
// auditor reads everything up to the moment of asking, not up to the
// Chainer's last poll. A failure leaves the records for the Chainer.
func (a *API) linkPending(c *gin.Context) {
	if err := audit.ChainAll(c.Request.Context(), a.db); err != nil {
		a.log.Warn("audit chain before read", "error", err)
	}
}

// entry is the audit record of a call: who, from where, what.
func (a *API) entry(c *gin.Context, action, outcome string, detail map[string]any) audit.Entry {
	p := auth.From(c)
	// RemoteIP is the socket peer: X-Forwarded-For is the caller's to write.
	return audit.Entry{At: a.now(), ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role, Action: action,
		ObjectType: "audit_log", ObjectID: "chain", Outcome: outcome, SourceAddr: c.RemoteIP(), Detail: detail}
}

func (a *API) record(ctx context.Context, e audit.Entry) error {
	return a.db.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, e)
		return err
	})
}

// verify walks the chain and checkpoints; the check itself is audited with
// what it found.
func (a *API) verify(c *gin.Context) {
	ctx := c.Request.Context()
	res, verr := audit.VerifyAll(ctx, a.db, audit.VerifyOptions{Keys: a.keys, RequireSignatures: true})
	var prob *audit.Problem
	body := gin.H{"ok": verr == nil, "records": res.Records, "checkpoints": res.Checkpoints,
		"last_checkpoint": res.LastCheckpoint, "unanchored_records": res.Unanchored(),
		"signatures_checked": res.SignaturesChecked}
	switch {
	case errors.As(verr, &prob):
		if prob.Checkpoint {
			body["bad_checkpoint"] = prob.Seq
		} else {
			body["first_bad_record"] = prob.Seq
		}
		body["reason"] = prob.Reason
	case errors.Is(verr, audit.ErrNoTrustedKey):
		body["reason"] = verr.Error()
	case verr != nil:
		a.log.Error("audit verify", "error", verr)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "verification failed to run"})
		return
	}
	outcome := "success"
	if verr != nil {
		outcome = "failure"
	}
	detail := map[string]any{"records": res.Records, "checkpoints": res.Checkpoints}
	if prob != nil {
		detail["problem_seq"], detail["checkpoint"] = prob.Seq, prob.Checkpoint
	}
	if err := a.record(ctx, a.entry(c, "audit.verified", outcome, detail)); err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, body)
}

// records answers one page of records matching the filters; the query and
// how many records it returned are audited in the same transaction.
func (a *API) records(c *gin.Context) {
	ctx := c.Request.Context()
	f, err := audit.ParseFilter(c.Request.URL.Query())
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	var page audit.PageResult
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if page, err = audit.Query(ctx, tx, f); err != nil {
			return err
		}
		detail := f.Detail()
		detail["returned"] = len(page.Records)
		err = audit.Append(ctx, tx, a.entry(c, "audit.queried", "success", detail))
		return err
	})
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if page.Records == nil {
		page.Records = []audit.Record{}
	}
	c.JSON(http.StatusOK, page)
}

// export streams every record matching the filters, up to the chain head
// at the time of the request, in the requested format. The export is
// audited (committed) before the first byte goes out.
func (a *API) export(c *gin.Context) {
	ctx := c.Request.Context()
	q := c.Request.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = audit.FormatJSONLines
	}
	q.Del("format")
	f, err := audit.ParseFilter(q)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if format != audit.FormatJSONLines && format != audit.FormatCSV && format != audit.FormatFHIR {
		httpx.Fail(c, a.log, &audit.InvalidError{Field: "format", Reason: "must be jsonl, csv or fhir"})
		return
	}
	if f.Through, err = audit.Head(ctx, a.db); err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	detail := f.Detail()
	detail["format"] = format
	if err := a.record(ctx, a.entry(c, "audit.exported", "success", detail)); err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	f.Limit = audit.MaxPage
	c.Header("Content-Type", audit.ContentType(format))
	c.Header("Content-Disposition", fmt.Sprintf(`attachment; filename="clarion-audit-%d.%s"`, f.Through, extension(format)))
	c.Status(http.StatusOK)
	ex, err := audit.NewExporter(c.Writer, format, a.observer, a.now())
	if err == nil {
		err = audit.Each(ctx, a.db, f, ex.Write)
	}
	if err == nil {
		err = ex.Close()
	}
	if err != nil {
		// The status is sent: all that is left is to cut the body short.
		a.log.Error("audit export", "format", format, "error", err)
		c.Abort()
	}
}

func extension(format string) string {
	if format == audit.FormatFHIR {
		return "json"
	}
	return format
}

func (a *API) checkpoints(c *gin.Context) {
	ctx := c.Request.Context()
	var cps []audit.Checkpoint
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if cps, err = audit.Checkpoints(ctx, tx); err != nil {
			return err
		}
		e := a.entry(c, "audit.queried", "success", map[string]any{"checkpoints": len(cps)})
		e.ObjectType, e.ObjectID = "audit_checkpoint", "all"
		err = audit.Append(ctx, tx, e)
		return err
	})
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if cps == nil {
		cps = []audit.Checkpoint{}
	}
	c.JSON(http.StatusOK, gin.H{"checkpoints": cps})
}

// publicKeys answers the trusted keys, one "ed25519:<base64>" a line, the
// form `clarion audit verify --public-key` reads.
func (a *API) publicKeys(c *gin.Context) {
	var b strings.Builder
	for _, k := range a.keys {
		fmt.Fprintf(&b, "# key id %s\n%s\n", audit.KeyID(k), audit.FormatPublicKey(k))
	}
	c.Data(http.StatusOK, "text/plain; charset=utf-8", []byte(b.String()))
}
