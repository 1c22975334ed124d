package oncall

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/httpx"
)

// unitRole reads the required unit and role query parameters.
func unitRole(c *gin.Context) (string, string, bool) {
	unit, role := c.Query("unit"), c.Query("role")
	if unit == "" || role == "" {
		httpx.BadRequest(c, "unit and role are required")
		return "", "", false
	}
	return unit, role, true
}

// whoIsOn answers GET /v1/oncall?unit=U&role=R[&at=RFC3339] from the index.
func (a *API) whoIsOn(c *gin.Context) {
	at, ok := queryTime(c, "at", a.now())
	if !ok {
		return
	}
	unit, role, ok := unitRole(c)
	if !ok {
		return
	}
	users, err := a.index.HoldersAt(c.Request.Context(), unit, role, at)
	if err != nil {
		a.fail(c, err)
		return
	}
	if users == nil {
		users = []string{}
	}
	c.JSON(http.StatusOK, gin.H{"unit": unit, "role": role, "at": at.UTC(), "holders": users})
}

// nextShifts answers GET /v1/oncall/next?unit=U&role=R[&n=10][&after=T].
func (a *API) nextShifts(c *gin.Context) {
	unit, role, ok := unitRole(c)
	if !ok {
		return
	}
	n, ok := queryInt(c, "n", 10, 1, 500)
	if !ok {
		return
	}
	after, ok := queryTime(c, "after", a.now())
	if !ok {
		return
	}
	shifts, err := a.index.NextShifts(c.Request.Context(), unit, role, after, n)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"unit": unit, "role": role, "shifts": shifts})
}

// timeline answers GET /v1/oncall/timeline?unit=U&role=R[&from][&to]: the
// holders segment by segment (empty where nobody holds it), from the
// database, for up to 62 days.
func (a *API) timeline(c *gin.Context) {
	unit, role, ok := unitRole(c)
	if !ok {
		return
	}
	now := a.now()
	from, ok := queryTime(c, "from", now)
	if !ok {
		return
	}
	to, ok := queryTime(c, "to", from.Add(7*24*time.Hour))
	if !ok {
		return
	}
	if !to.After(from) || to.Sub(from) > 62*24*time.Hour {
		httpx.BadRequest(c, "to must be after from, by at most 62 days")
		return
	}
	r, err := loadRoster(c.Request.Context(), a.db, unit, role, from, to)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"unit": unit, "role": role, "segments": r.Timeline(from, to)})
}

// userShifts answers GET /v1/users/:id/shifts[?from][&to]; a clinician
// sees only their own.
func (a *API) userShifts(c *gin.Context) {
	p := auth.From(c)
	user := c.Param("id")
	if p.Role == auth.RoleClinician && p.Subject != user {
		c.JSON(http.StatusForbidden, gin.H{"error": "clinicians see their own shifts only"})
		return
	}
	now := a.now()
	from, ok := queryTime(c, "from", now)
	if !ok {
		return
	}
	to, ok := queryTime(c, "to", now.Add(14*24*time.Hour))
	if !ok {
		return
	}
	shifts, err := a.index.UserShifts(c.Request.Context(), user, from, to)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"user_id": user, "shifts": shifts})
}

// scoped checks that a scheduler names a unit assigned to them; admins and
// auditors see every unit.
func (a *API) scoped(c *gin.Context, unit string) bool {
	p := auth.From(c)
	if p.Role != auth.RoleScheduler {
		return true
	}
	if unit == "" {
		httpx.BadRequest(c, "unit is required")
		return false
	}
	if err := CanEdit(c.Request.Context(), a.db, actor(c), unit); err != nil {
		a.fail(c, err)
		return false
	}
	return true
}

// coverage answers GET /v1/coverage[?unit=U][&days=14].
func (a *API) coverage(c *gin.Context) {
	unit := c.Query("unit")
	if !a.scoped(c, unit) {
		return
	}
	days, ok := queryInt(c, "days", int(CoverageWindow/(24*time.Hour)), 1, 62)
	if !ok {
		return
	}
	now := a.now()
	rep, err := CoverageReport(c.Request.Context(), a.db, unit, now, now.Add(time.Duration(days)*24*time.Hour))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rep)
}

// unitNotices answers GET /v1/coverage/notices[?unit=U][&open=true].
func (a *API) unitNotices(c *gin.Context) {
	unit := c.Query("unit")
	if !a.scoped(c, unit) {
		return
	}
	ns, err := ListNotices(c.Request.Context(), a.db, NoticeFilter{UnitID: unit, OpenOnly: c.Query("open") == "true"})
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ns)
}

// myNotices answers GET /v1/notices: the caller's own notices.
func (a *API) myNotices(c *gin.Context) {
	p := auth.From(c)
	if p.Kind != auth.KindUser {
		c.JSON(http.StatusForbidden, gin.H{"error": "notices are for users"})
		return
	}
	ns, err := ListNotices(c.Request.Context(), a.db, NoticeFilter{RecipientID: p.Subject, OpenOnly: c.Query("open") == "true"})
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ns)
}
