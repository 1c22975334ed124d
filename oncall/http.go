package oncall

import (
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// API serves units, users, teams, rosters, policies, on-call lookups,
// coverage, CSV import and export, and iCalendar feeds.
type API struct {
	db    *db.DB
	index *Index
	log   *slog.Logger
	now   func() time.Time
}

// NewAPI wires the on-call HTTP API with an index of its own that is never
// loaded, so every query reads the database. Prefer NewAPIWithIndex.
func NewAPI(d *db.DB, log *slog.Logger, now func() time.Time) *API {
	return NewAPIWithIndex(d, log, now, NewIndex(d, now, IndexOptions{Log: log}))
}

// NewAPIWithIndex wires the on-call HTTP API. idx answers resolution
// queries and is told of every roster edit after it commits.
func NewAPIWithIndex(d *db.DB, log *slog.Logger, now func() time.Time, idx *Index) *API {
	return &API{db: d, index: idx, log: log, now: now}
}

// RegisterRoutes adds the on-call routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	admin := auth.Require(auth.RoleAdmin)
	editors := auth.Require(auth.RoleAdmin, auth.RoleScheduler)
	readers := auth.Require(auth.RoleAdmin, auth.RoleScheduler, auth.RoleClinician, auth.RoleAuditor)
	overseers := auth.Require(auth.RoleAdmin, auth.RoleScheduler, auth.RoleAuditor)

	r.PUT("/v1/units/:id", admin, a.putUnit)
	r.PUT("/v1/users/:id", admin, a.putUser)
	r.PUT("/v1/policies/:id", admin, a.putPolicy)
	r.GET("/v1/policies/:id", readers, a.getPolicy)
	r.PUT("/v1/teams/:id", admin, a.putTeam)
	r.GET("/v1/teams/:id", readers, a.getTeam)
	r.PUT("/v1/units/:id/schedulers/:user", admin, a.assignScheduler)
	r.DELETE("/v1/units/:id/schedulers/:user", admin, a.unassignScheduler)
	r.PUT("/v1/units/:id/roles/:role", editors, a.putUnitRole)
	r.GET("/v1/units/:id/roles", readers, a.listUnitRoles)

	r.POST("/v1/shifts", editors, a.addShift)
	r.DELETE("/v1/shifts/:id", editors, a.deleteShift)
	r.PUT("/v1/rotations/:id", editors, a.putRotation)
	r.GET("/v1/rotations", readers, a.listRotations)
	r.DELETE("/v1/rotations/:id", editors, a.deleteRotation)
	r.POST("/v1/overrides", editors, a.addOverride)
	r.DELETE("/v1/overrides/:id", editors, a.deleteOverride)
	r.POST("/v1/swaps", editors, a.addSwap)
	r.DELETE("/v1/swaps/:id", editors, a.deleteSwap)
	r.PUT("/v1/temporary-schedules/:id", editors, a.putTemporary)
	r.DELETE("/v1/temporary-schedules/:id", editors, a.deleteTemporary)
	r.POST("/v1/roster/import", editors, a.importCSV)
	r.GET("/v1/roster/export", overseers, a.exportCSV)

	r.GET("/v1/oncall", readers, a.whoIsOn)
	r.GET("/v1/oncall/next", readers, a.nextShifts)
	r.GET("/v1/oncall/timeline", readers, a.timeline)
	r.GET("/v1/users/:id/shifts", readers, a.userShifts)
	r.GET("/v1/coverage", overseers, a.coverage)
	r.GET("/v1/coverage/notices", overseers, a.unitNotices)
	r.GET("/v1/notices", readers, a.myNotices)

	r.POST("/v1/ical-tokens", readers, a.createFeedToken)
	r.DELETE("/v1/ical-tokens/:id", readers, a.revokeFeedToken)
}

// RegisterPublicRoutes adds the iCalendar feed, which carries its own
// credential (the secret in the URL) and so sits outside bearer auth.
func (a *API) RegisterPublicRoutes(r gin.IRouter) {
	r.GET("/ical/:token", a.feed)
}

func actor(c *gin.Context) Actor {
	p := auth.From(c)
	return Actor{Type: p.Kind, ID: p.Subject, Role: p.Role}
}

// fail answers err: 409 with the gaps for a *GapError, 403 for a unit out
// of a scheduler's scope, 422 with every line for a *CSVError, else as
// httpx.Fail does.
func (a *API) fail(c *gin.Context, err error) {
	var gap *GapError
	var bad *CSVError
	switch {
	case errors.As(err, &gap):
		c.JSON(http.StatusConflict, gin.H{"error": gap.Error(), "gaps": gap.Gaps})
	case errors.Is(err, ErrForbidden):
		c.JSON(http.StatusForbidden, gin.H{"error": err.Error()})
	case errors.As(err, &bad):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": bad.Error(), "lines": bad.Lines})
	default:
		httpx.Fail(c, a.log, err, ErrNotFound)
	}
}

// edit binds the JSON body into v and runs fn in a transaction.
func (a *API) edit(c *gin.Context, v any, status int, fn func(tx *sql.Tx) error) {
	if err := c.ShouldBindJSON(v); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	if err := a.db.InTx(c.Request.Context(), fn); err != nil {
		a.fail(c, err)
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
	if c.Writer.Status() == http.StatusOK {
		a.reloadIndex(c) // a zone change moves every shift of the unit
	}
}

func (a *API) reloadIndex(c *gin.Context) {
	if err := a.index.Reload(c.Request.Context()); err != nil {
		a.log.Error("on-call index reload", "error", err)
	}
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

func (a *API) getPolicy(c *gin.Context) {
	p, err := GetPolicy(c.Request.Context(), a.db, c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (a *API) putTeam(c *gin.Context) {
	var t Team
	a.edit(c, &t, http.StatusOK, func(tx *sql.Tx) error {
		t.ID = c.Param("id")
		return PutTeam(c.Request.Context(), tx, actor(c), t, a.now())
	})
}

func (a *API) getTeam(c *gin.Context) {
	t, err := GetTeam(c.Request.Context(), a.db, c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

func (a *API) assignScheduler(c *gin.Context) {
	err := a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		return AssignScheduler(c.Request.Context(), tx, actor(c), c.Param("user"), c.Param("id"), a.now())
	})
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"unit_id": c.Param("id"), "user_id": c.Param("user")})
}

func (a *API) unassignScheduler(c *gin.Context) {
	err := a.db.InTx(c.Request.Context(), func(tx *sql.Tx) error {
		return UnassignScheduler(c.Request.Context(), tx, actor(c), c.Param("user"), c.Param("id"), a.now())
	})
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (a *API) putUnitRole(c *gin.Context) {
	var ur UnitRole
	a.edit(c, &ur, http.StatusOK, func(tx *sql.Tx) error {
		ur.UnitID, ur.Role = c.Param("id"), c.Param("role")
		if err := CanEdit(c.Request.Context(), tx, actor(c), ur.UnitID); err != nil {
			return err
		}
		return PutUnitRole(c.Request.Context(), tx, actor(c), ur, a.now())
	})
	if c.Writer.Status() == http.StatusOK {
		a.index.Changed(c.Request.Context(), ur.UnitID, ur.Role)
	}
}

func (a *API) listUnitRoles(c *gin.Context) {
	roles, err := ListUnitRoles(c.Request.Context(), a.db, c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, roles)
}

// queryTime reads an optional RFC 3339 query parameter.
func queryTime(c *gin.Context, name string, def time.Time) (time.Time, bool) {
	s := c.Query(name)
	if s == "" {
		return def, true
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		httpx.BadRequest(c, name+" must be an RFC 3339 time")
		return t, false
	}
	return t, true
}

// queryInt reads an optional integer query parameter within [lo, hi].
func queryInt(c *gin.Context, name string, def, lo, hi int) (int, bool) {
	s := c.Query(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		httpx.BadRequest(c, name+" must be an integer from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi))
		return 0, false
	}
	return n, true
}
