package messaging

import (
	"database/sql"
	"errors"
	"net/http"

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
	r.POST("/v1/devices", auth.Require(auth.RoleAdmin, auth.RoleClinician), a.enrol)
	r.GET("/v1/devices/stream", auth.Require(auth.RoleDevice), a.gateway.Stream)
	r.POST("/v1/messages/:id/response", auth.Require(auth.RoleDevice), a.respond)
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

func (a *API) respond(c *gin.Context) {
	var req struct {
		Response string `json:"response"`
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid JSON body"})
		return
	}
	state, err := a.engine.Respond(c.Request.Context(), auth.From(c).Subject, c.Param("id"), req.Response)
	var inv *InvalidError
	switch {
	case errors.As(err, &inv):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": inv.Error()})
	case errors.Is(err, ErrNotYours):
		c.JSON(http.StatusNotFound, gin.H{"error": "no such message for this device"})
	case err != nil:
		c.JSON(http.StatusInternalServerError, gin.H{"error": "response not recorded"})
	default:
		c.JSON(http.StatusOK, gin.H{"message_id": c.Param("id"), "alert_state": state})
	}
}
