package oncall

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/httpx"
)

// feedPast is how far back a feed reaches; it reaches forward to the
// index's horizon.
const feedPast = 7 * 24 * time.Hour

// mayManageFeed: a clinician for their own user feed, a scheduler for
// their units' unit-role feeds and any user feed, an admin for all.
func (a *API) mayManageFeed(c *gin.Context, ft FeedToken) error {
	p := auth.From(c)
	switch {
	case p.Role == auth.RoleAdmin:
		return nil
	case ft.Kind == FeedUser && p.Kind == auth.KindUser && p.Subject == ft.UserID:
		return nil
	case p.Role == auth.RoleScheduler && ft.Kind == FeedUser:
		return nil
	case p.Role == auth.RoleScheduler && ft.Kind == FeedUnitRole:
		return CanEdit(c.Request.Context(), a.db, actor(c), ft.UnitID)
	}
	return ErrForbidden
}

// createFeedToken answers POST /v1/ical-tokens {kind, user_id | unit_id, role}
// with the feed's path, shown once.
func (a *API) createFeedToken(c *gin.Context) {
	var ft FeedToken
	if err := c.ShouldBindJSON(&ft); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	if err := a.mayManageFeed(c, ft); err != nil {
		a.fail(c, err)
		return
	}
	var secret string
	err := a.db.InTx(c.Request.Context(), func(tx *sql.Tx) (err error) {
		ft, secret, err = CreateFeedToken(c.Request.Context(), tx, actor(c), ft, a.now())
		return err
	})
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"token": ft, "path": "/ical/" + secret + ".ics"})
}

// revokeFeedToken answers DELETE /v1/ical-tokens/:id.
func (a *API) revokeFeedToken(c *gin.Context) {
	ctx := c.Request.Context()
	ft, err := GetFeedToken(ctx, a.db, c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	if err := a.mayManageFeed(c, ft); err != nil {
		a.fail(c, err)
		return
	}
	err = a.db.InTx(ctx, func(tx *sql.Tx) error { return RevokeFeedToken(ctx, tx, actor(c), ft.ID, a.now()) })
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// feed answers GET /ical/<secret>.ics without bearer auth: the secret is
// the credential. An unknown or revoked secret is a plain 404.
func (a *API) feed(c *gin.Context) {
	ctx := c.Request.Context()
	secret := strings.TrimSuffix(c.Param("token"), ".ics")
	ft, err := LookupFeedToken(ctx, a.db, secret)
	if errors.Is(err, ErrNotFound) {
		c.String(http.StatusNotFound, "not found\n")
		return
	}
	if err != nil {
		a.fail(c, err)
		return
	}
	now := a.now()
	name, events, err := a.feedEvents(ctx, ft, now)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("Content-Type", "text/calendar; charset=utf-8")
	c.Header("Cache-Control", "private, max-age=300")
	c.Status(http.StatusOK)
	if err := WriteICal(c.Writer, name, events, now); err != nil {
		a.log.Error("ical feed", "error", err)
	}
}

// feedEvents lists a feed's shifts from a week ago to the horizon.
func (a *API) feedEvents(ctx context.Context, ft FeedToken, now time.Time) (string, []FeedEvent, error) {
	from, to := now.Add(-feedPast), now.Add(a.index.horizon)
	var shifts []UserShift
	var name string
	switch ft.Kind {
	case FeedUser:
		name = "On call: " + ft.UserID
		var err error
		if shifts, err = userShiftsFromDB(ctx, a.db, ft.UserID, from, to); err != nil {
			return "", nil, err
		}
	default:
		name = "On call: " + ft.Role + " " + ft.UnitID
		r, err := loadRoster(ctx, a.db, ft.UnitID, ft.Role, from, to)
		if err != nil {
			return "", nil, err
		}
		shifts = ShiftsOf(ft.UnitID, ft.Role, r.Timeline(from, to))
	}
	names, err := userNames(ctx, a.db)
	if err != nil {
		return "", nil, err
	}
	events := make([]FeedEvent, 0, len(shifts))
	for _, s := range shifts {
		summary := s.Role + " on " + s.UnitID
		if ft.Kind == FeedUnitRole {
			summary = s.Role + " " + s.UnitID + ": " + names[s.UserID]
		}
		events = append(events, FeedEvent{UID: EventUID(s), Summary: summary, Start: s.Start, End: s.End})
	}
	return name, events, nil
}

func userNames(ctx context.Context, q Queryer) (map[string]string, error) {
	out := map[string]string{}
	err := eachRow(ctx, q, `SELECT id, name FROM users`, nil, func(scan func(...any) error) error {
		var id, name string
		if err := scan(&id, &name); err != nil {
			return err
		}
		out[id] = name
		return nil
	})
	return out, err
}
