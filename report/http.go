package report

import (
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// DefaultPeriod is the period of a report that gives no from.
const DefaultPeriod = 24 * time.Hour

// API serves GET /v1/reports/response.
type API struct {
	db  *db.DB
	log *slog.Logger
	now func() time.Time
}

// NewAPI wires the reporting API.
func NewAPI(d *db.DB, log *slog.Logger, now func() time.Time) *API {
	return &API{db: d, log: log, now: now}
}

// RegisterRoutes adds the report route. Auditors and admins see every
// grouping; clinicians (charge nurses among them) see every grouping but
// by user: one nurse's response times are a matter for management, not
// for peers.
func (a *API) RegisterRoutes(r gin.IRouter) {
	r.GET("/v1/reports/response", auth.Require(auth.RoleAuditor, auth.RoleAdmin, auth.RoleClinician), a.response)
}

// ParseParams reads from, to (RFC 3339) and group_by; to defaults to now,
// from to DefaultPeriod before to, group_by to unit.
func ParseParams(from, to, groupBy string, now time.Time) (Params, error) {
	p := Params{To: now, GroupBy: groupBy}
	if p.GroupBy == "" {
		p.GroupBy = ByUnit
	}
	var err error
	if to != "" {
		if p.To, err = time.Parse(time.RFC3339Nano, to); err != nil {
			return p, &InvalidError{"to", "must be an RFC 3339 time"}
		}
	}
	p.From = p.To.Add(-DefaultPeriod)
	if from != "" {
		if p.From, err = time.Parse(time.RFC3339Nano, from); err != nil {
			return p, &InvalidError{"from", "must be an RFC 3339 time"}
		}
	}
	return p, p.Validate()
}

func (a *API) response(c *gin.Context) {
	ctx := c.Request.Context()
	now := a.now()
	p, err := ParseParams(c.Query("from"), c.Query("to"), c.Query("group_by"), now)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	who := auth.From(c)
	if p.GroupBy == ByUser && who.Role == auth.RoleClinician {
		c.JSON(http.StatusForbidden, gin.H{"error": "role not permitted to report by user"})
		return
	}
	// Escalations are counted from audit records: link the ones committed
	// since the Chainer's last poll first.
	if err := audit.ChainAll(ctx, a.db); err != nil {
		a.log.Warn("audit chain before read", "error", err)
	}
	rep, err := Compute(ctx, a.db, p, now)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, audit.Entry{At: now, ActorType: who.Kind, ActorID: who.Subject, ActorRole: who.Role,
			Action: "report.viewed", ObjectType: "report", ObjectID: "response", SourceAddr: c.RemoteIP(),
			Detail: map[string]any{"from": p.From.UTC().Format(time.RFC3339), "to": p.To.UTC().Format(time.RFC3339),
				"group_by": p.GroupBy, "samples": rep.Total.Samples}})
		return err
	})
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, rep)
}
