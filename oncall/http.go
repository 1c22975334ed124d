package oncall

import (
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// API serves units, users, shifts, policies and on-call lookups.
type API struct {
	db  *db.DB
	log *slog.Logger
	now func() time.Time
}

// NewAPI wires the on-call HTTP API.
func NewAPI(d *db.DB, log *slog.Logger, now func() time.Time) *API {
	return &API{db: d, log: log, now: now}
}

// RegisterRoutes adds the on-call routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	admin := auth.Require(auth.RoleAdmin)
	r.PUT("/v1/units/:id", admin, a.putUnit)
	r.PUT("/v1/users/:id", admin, a.putUser)
	r.PUT("/v1/policies/:id", admin, a.putPolicy)
	r.POST("/v1/shifts", auth.Require(auth.RoleAdmin, auth.RoleScheduler), a.addShift)
	r.GET("/v1/oncall", auth.Require(auth.RoleAdmin, auth.RoleScheduler, auth.RoleClinician, auth.RoleAuditor), a.whoIsOn)
}

func actor(c *gin.Context) Actor {
	p := auth.From(c)
	return Actor{Type: p.Kind, ID: p.Subject, Role: p.Role}
}

// edit binds the JSON body into v and runs fn in a transaction.
func (a *API) edit(c *gin.Context, v any, status int, fn func(tx *sql.Tx) error) {
	if err := c.ShouldBindJSON(v); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	if err := a.db.InTx(c.Request.Context(), fn); err != nil {
		httpx.Fail(c, a.log, err, ErrNotFound)
		return
	}
	c.JSON(status, v)
}

func (a *API) putUnit(c *gin.Context) {
	var u Unit
	a.edit(c, &u, http.StatusOK, func(tx *sql.Tx) error {
		u.ID = c.Param("id")
		return PutUnit(c.Request.Context(), tx, actor(c), u)
	})
}

func (a *API) putUser(c *gin.Context) {
	var u User
	a.edit(c, &u, http.StatusOK, func(tx *sql.Tx) error {
		u.ID = c.Param("id")
		return PutUser(c.Request.Context(), tx, actor(c), u)
	})
}

func (a *API) putPolicy(c *gin.Context) {
	var p Policy
	a.edit(c, &p, http.StatusOK, func(tx *sql.Tx) error {
		p.ID = c.Param("id")
		return PutPolicy(c.Request.Context(), tx, actor(c), p)
	})
}

func (a *API) addShift(c *gin.Context) {
	var s Shift
	a.edit(c, &s, http.StatusCreated, func(tx *sql.Tx) (err error) {
		s, err = AddShift(c.Request.Context(), tx, actor(c), s)
		return err
	})
}

// whoIsOn answers GET /v1/oncall?unit=U&role=R[&at=RFC3339].
func (a *API) whoIsOn(c *gin.Context) {
	at := a.now()
	if s := c.Query("at"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			httpx.BadRequest(c, "at must be an RFC 3339 time")
			return
		}
		at = t
	}
	unit, role := c.Query("unit"), c.Query("role")
	if unit == "" || role == "" {
		httpx.BadRequest(c, "unit and role are required")
		return
	}
	users, err := HoldersAt(c.Request.Context(), a.db, unit, role, at)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if users == nil {
		users = []string{}
	}
	c.JSON(http.StatusOK, gin.H{"unit": unit, "role": role, "at": at.UTC(), "holders": users})
}
