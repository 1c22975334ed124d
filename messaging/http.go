package messaging

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
)

// API serves device enrolment, the device stream and message responses.
type API struct {
	db      *db.DB
	engine  *Engine
	gateway *Gateway
}

// NewAPI wires the messaging HTTP API.
func NewAPI(d *db.DB, e *Engine, g *Gateway) *API { return &API{db: d, engine: e, gateway: g} }

// RegisterRoutes adds the messaging routes to an authenticated router.
func (a *API) RegisterRoutes(r gin.IRouter) {
	people := auth.Require(auth.RoleAdmin, auth.RoleClinician)
	r.POST("/v1/devices", people, a.enrol)
	r.GET("/v1/devices", people, a.listDevices)
	r.POST("/v1/enrolment-codes", people, a.issueCode)
	r.POST("/v1/devices/:id/lost", people, a.wipe(WipeLost))
	r.POST("/v1/devices/:id/wipe", auth.Require(auth.RoleAdmin), a.wipe(WipeRevoked))
	r.POST("/v1/users/:id/offboard", auth.Require(auth.RoleAdmin), a.offboard)
	r.PUT("/v1/devices/me/key", auth.Require(auth.RoleDevice), a.rotateKey)
	r.GET("/v1/devices/stream", auth.Require(auth.RoleDevice), a.gateway.Stream)
	r.POST("/v1/messages/:id/response", auth.Require(auth.RoleDevice), a.respond)
	legal := auth.Require(auth.RoleAdmin, auth.RoleAuditor)
	r.POST("/v1/legal-holds", legal, a.placeHold)
	r.GET("/v1/legal-holds", legal, a.listHolds)
	r.GET("/v1/legal-holds/:id", legal, a.getHold)
	r.POST("/v1/legal-holds/:id/release", legal, a.releaseHold)
	r.PUT("/v1/policies/:id/accepts-required", auth.Require(auth.RoleAdmin), a.setAcceptsRequired)
}

// RegisterPublicRoutes adds the routes that carry their own credential: a
// new device enrols with a one-time code instead of a bearer token.
func (a *API) RegisterPublicRoutes(r gin.IRouter) {
	r.POST("/v1/devices/enrol", a.enrolWithCode)
}

type enrolRequest struct {
	UserID    string `json:"user_id"` // admins enrol for anyone; clinicians only for themselves
	Name      string `json:"name"`
	Suite     string `json:"suite"`
	PublicKey []byte `json:"public_key"` // base64
}

type enrolResponse struct {
	Device Device `json:"device"`
	Token  string `json:"token"` // the device credential, shown once
}

func (a *API) enrol(c *gin.Context) {
	p := auth.From(c)
	var req enrolRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	if p.Role == auth.RoleClinician {
		if req.UserID != "" && req.UserID != p.Subject {
			c.JSON(http.StatusForbidden, gin.H{"error": "clinicians enrol devices only for themselves"})
			return
		}
		req.UserID = p.Subject
	}
	now, ctx := a.engine.now(), c.Request.Context()
	var out enrolResponse
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE id = $1`, req.UserID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return &InvalidError{"user_id", "unknown user"}
		}
		dev, err := RegisterDevice(ctx, tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role},
			Device{UserID: req.UserID, Name: req.Name, Suite: req.Suite, PublicKey: req.PublicKey}, now)
		if err != nil {
			return err
		}
		out.Device = dev
		out.Token, err = auth.Issue(ctx, tx, auth.KindDevice, dev.ID, auth.RoleDevice, now)
		return err
	})
	var inv *InvalidError
	switch {
	case errors.As(err, &inv):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": inv.Error(), "field": inv.Field})
	case err != nil:
		c.JSON(http.StatusInternalServerError, gin.H{"error": "enrolment failed"})
	default:
		c.JSON(http.StatusCreated, out)
	}
}

// forUser resolves whose devices a request may touch: admins name anyone,
// clinicians only themselves.
func forUser(c *gin.Context, requested string) (string, bool) {
	p := auth.From(c)
	if p.Role == auth.RoleAdmin {
		return requested, requested != ""
	}
	return p.Subject, requested == "" || requested == p.Subject
}

func (a *API) issueCode(c *gin.Context) {
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	user, ok := forUser(c, req.UserID)
	if !ok {
		c.JSON(http.StatusForbidden, gin.H{"error": "clinicians issue codes only for themselves; admins must name user_id"})
		return
	}
	p, ctx, now := auth.From(c), c.Request.Context(), a.engine.now()
	var code string
	var expires time.Time
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := userExists(ctx, tx, user); err != nil {
			return err
		}
		var err error
		code, expires, err = IssueEnrolmentCode(ctx, tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role}, user, now)
		return err
	})
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusCreated, gin.H{"code": code, "user_id": user, "expires_at": expires.UTC()})
}

func (a *API) enrolWithCode(c *gin.Context) {
	var req struct {
		Code      string `json:"code"`
		Name      string `json:"name"`
		Suite     string `json:"suite"`
		PublicKey []byte `json:"public_key"`
	}
	if err := c.ShouldBindJSON(&req); err != nil || req.Code == "" {
		c.JSON(http.StatusBadRequest, gin.H{"error": "a JSON body with code, suite and public_key is required"})
		return
	}
	ctx, now := c.Request.Context(), a.engine.now()
	var out enrolResponse
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out.Device, out.Token, err = EnrolWithCode(ctx, tx, req.Code, Device{Name: req.Name, Suite: req.Suite, PublicKey: req.PublicKey}, now)
		return err
	})
	if errors.Is(err, ErrCodeInvalid) {
		c.JSON(http.StatusUnauthorized, gin.H{"error": err.Error()})
		return
	}
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusCreated, out)
}

func (a *API) listDevices(c *gin.Context) {
	user, ok := forUser(c, c.Query("user_id"))
	if !ok {
		c.JSON(http.StatusForbidden, gin.H{"error": "clinicians list only their own devices; admins must name user_id"})
		return
	}
	devs, err := ListDevices(c.Request.Context(), a.db, user)
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"user_id": user, "devices": devs})
}

func (a *API) rotateKey(c *gin.Context) {
	var req struct {
		Suite     string `json:"suite"`
		PublicKey []byte `json:"public_key"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	ctx, now, id := c.Request.Context(), a.engine.now(), auth.From(c).Subject
	err := a.db.InTx(ctx, func(tx *sql.Tx) error { return RotateKey(ctx, tx, id, req.Suite, req.PublicKey, now) })
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"device_id": id, "suite": req.Suite})
}

// wipe handles a revocation (admin) or a loss report (the owner or an admin).
func (a *API) wipe(reason string) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, ctx, now, id := auth.From(c), c.Request.Context(), a.engine.now(), c.Param("id")
		var wiped bool
		err := a.db.InTx(ctx, func(tx *sql.Tx) error {
			dev, err := GetDevice(ctx, tx, id)
			if err != nil {
				return err
			}
			if p.Role != auth.RoleAdmin && dev.UserID != p.Subject {
				return ErrNotFound // do not reveal other users' devices
			}
			wiped, err = RequestWipe(ctx, tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role}, id, reason, now)
			return err
		})
		if a.fail(c, err) {
			return
		}
		a.engine.waker.WakeDevices([]string{id}) // a live connection is told at once
		c.JSON(http.StatusAccepted, gin.H{"device_id": id, "wipe_requested": wiped, "reason": reason})
	}
}

// offboard wipes every active device of a user.
func (a *API) offboard(c *gin.Context) {
	p, ctx, now, user := auth.From(c), c.Request.Context(), a.engine.now(), c.Param("id")
	var wiped []string
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		devs, err := ListDevices(ctx, tx, user)
		if err != nil {
			return err
		}
		for _, d := range devs {
			ok, err := RequestWipe(ctx, tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role}, d.ID, WipeOffboarded, now)
			if err != nil {
				return err
			}
			if ok {
				wiped = append(wiped, d.ID)
			}
		}
		return nil
	})
	if a.fail(c, err) {
		return
	}
	a.engine.waker.WakeDevices(wiped)
	if wiped == nil {
		wiped = []string{}
	}
	c.JSON(http.StatusAccepted, gin.H{"user_id": user, "devices_wiped": wiped})
}

func userExists(ctx context.Context, q Queryer, id string) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE id = $1`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return &InvalidError{"user_id", "unknown user"}
	}
	return nil
}

// fail answers err, if any, and reports whether it did.
func (a *API) fail(c *gin.Context, err error) bool {
	var inv *InvalidError
	switch {
	case err == nil:
		return false
	case errors.As(err, &inv):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": inv.Error(), "field": inv.Field})
	case errors.Is(err, ErrNotFound):
		c.JSON(http.StatusNotFound, gin.H{"error": "not found"})
	default:
		c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
	}
	return true
}

func (a *API) respond(c *gin.Context) {
	var req struct {
		Response string `json:"response"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	var ans Answer
	err := requireActive(c.Request.Context(), a.db, auth.From(c).Subject)
	if err == nil {
		ans, err = a.engine.RespondCount(c.Request.Context(), auth.From(c).Subject, c.Param("id"), req.Response)
	}
	var inv *InvalidError
	switch {
	case errors.Is(err, ErrDeviceRevoked):
		c.JSON(http.StatusForbidden, gin.H{"error": err.Error()})
	case errors.As(err, &inv):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": inv.Error()})
	case errors.Is(err, ErrNotYours):
		c.JSON(http.StatusNotFound, gin.H{"error": "no such message for this device"})
	case err != nil:
		c.JSON(http.StatusInternalServerError, gin.H{"error": "response not recorded"})
	default:
		c.JSON(http.StatusOK, gin.H{"message_id": c.Param("id"), "alert_state": ans.AlertState,
			"accepts": ans.Accepts, "accepts_required": ans.AcceptsRequired})
	}
}

func actorOf(c *gin.Context) audit.Entry {
	p := auth.From(c)
	return audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role, SourceAddr: c.ClientIP()}
}

func (a *API) placeHold(c *gin.Context) {
	var req struct {
		AlertID string `json:"alert_id"`
		UserID  string `json:"user_id"`
		Reason  string `json:"reason"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	ctx, now := c.Request.Context(), a.engine.now()
	var h LegalHold
	err := a.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		h, err = PlaceHold(ctx, tx, actorOf(c), LegalHold{AlertID: req.AlertID, UserID: req.UserID, Reason: req.Reason}, now)
		return err
	})
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusCreated, h)
}

func (a *API) listHolds(c *gin.Context) {
	holds, err := ListHolds(c.Request.Context(), a.db, c.Query("active") == "true")
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"legal_holds": holds})
}

func (a *API) getHold(c *gin.Context) {
	h, err := GetHold(c.Request.Context(), a.db, c.Param("id"))
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusOK, h)
}

func (a *API) releaseHold(c *gin.Context) {
	ctx, now := c.Request.Context(), a.engine.now()
	var h LegalHold
	var devices []string
	err := a.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		if h, err = ReleaseHold(ctx, tx, actorOf(c), c.Param("id"), now); err != nil {
			return err
		}
		devices, err = devicesCoveredBy(ctx, tx, h)
		return err
	})
	if a.fail(c, err) {
		return
	}
	// Connected devices holding messages that now expire are told at their
	// next expiry check (within a minute); the wake-up sends nothing new.
	a.engine.waker.WakeDevices(devices)
	c.JSON(http.StatusOK, h)
}

func (a *API) setAcceptsRequired(c *gin.Context) {
	var req struct {
		AcceptsRequired int `json:"accepts_required"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	ctx, now, id := c.Request.Context(), a.engine.now(), c.Param("id")
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		return SetPolicyAcceptsRequired(ctx, tx, actorOf(c), id, req.AcceptsRequired, now)
	})
	if a.fail(c, err) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"policy_id": id, "accepts_required": req.AcceptsRequired})
}
