package routing

import (
	"database/sql"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// API serves rules and alerts.
type API struct {
	db  *db.DB
	log *slog.Logger
	now func() time.Time
}

// NewAPI wires the routing HTTP API.
func NewAPI(d *db.DB, log *slog.Logger, now func() time.Time) *API {
	return &API{db: d, log: log, now: now}
}

// RegisterRoutes adds the routing routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	r.PUT("/v1/rules/:id", auth.Require(auth.RoleAdmin), a.putRule)
	readers := auth.Require(auth.RoleAdmin, auth.RoleClinician, auth.RoleAuditor)
	r.GET("/v1/alerts", readers, a.listAlerts)
	r.GET("/v1/alerts/:id", readers, a.getAlert)
}

func (a *API) putRule(c *gin.Context) {
	var rule Rule
	if err := c.ShouldBindJSON(&rule); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	rule.ID = c.Param("id")
	p := auth.From(c)
	err := a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		return PutRule(c.Request.Context(), tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role}, rule, a.now())
	})
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, rule)
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
