package hl7

import (
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/ingest"
	"github.com/clarion-health/clarion/internal/auth"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/httpx"
)

// API lets integration analysts (and admins) see what arrived: message
// metadata (no PHI), and a raw message on request, each view audited.
type API struct {
	db    *db.DB
	store *ingest.Store
	log   *slog.Logger
	now   func() time.Time
}

// NewAPI returns the inbound-message API.
func NewAPI(d *db.DB, store *ingest.Store, log *slog.Logger, now func() time.Time) *API {
	return &API{db: d, store: store, log: log, now: now}
}

// RegisterRoutes adds the routes to r, which must already authenticate.
func (a *API) RegisterRoutes(r gin.IRouter) {
	g := r.Group("/v1/hl7", auth.Require(auth.RoleAnalyst, auth.RoleAdmin))
	g.GET("/messages", a.list)
	g.GET("/messages/:id/raw", a.raw)
}

const maxListLimit = 500

// queryError is a bad query parameter; it names the parameter.
type queryError struct{ field, reason string }

func (e *queryError) Error() string { return e.field + ": " + e.reason }
func (e *queryError) UserError()    {}

func (a *API) list(c *gin.Context) {
	state := c.Query("state")
	switch state {
	case "", ingest.StatePending, ingest.StateProcessed, ingest.StateFailed, ingest.StateRejected:
	default:
		httpx.Fail(c, a.log, &queryError{"state", "must be pending, processed, failed or rejected"})
		return
	}
	limit := 100
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListLimit {
			httpx.Fail(c, a.log, &queryError{"limit", "must be a number from 1 to " + strconv.Itoa(maxListLimit)})
			return
		}
		limit = n
	}
	msgs, err := a.store.ListMessages(c.Request.Context(), a.db, state, limit)
	if err != nil {
		httpx.Fail(c, a.log, err)
		return
	}
	if msgs == nil {
		msgs = []ingest.MessageInfo{}
	}
	c.JSON(http.StatusOK, gin.H{"messages": msgs})
}

// raw answers the decrypted raw message. The view is audited (who, which
// message) in the transaction that reads it, so nobody sees a raw message
// without a record of it.
func (a *API) raw(c *gin.Context) {
	ctx, id, p := c.Request.Context(), c.Param("id"), auth.From(c)
	var raw []byte
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		if raw, err = a.store.Raw(ctx, tx, id); err != nil {
			return err
		}
		err = audit.Append(ctx, tx, audit.Entry{At: a.now(), ActorType: p.Kind, ActorID: p.Subject,
			ActorRole: p.Role, Action: "hl7.raw_viewed", ObjectType: "raw_message", ObjectID: id, CorrelationID: id,
			SourceAddr: c.ClientIP()})
		return err
	})
	switch {
	case errors.Is(err, ingest.ErrRawPurged):
		c.JSON(http.StatusGone, gin.H{"error": "raw message purged after its retention"})
	case err != nil:
		httpx.Fail(c, a.log, err, ingest.ErrNotFound)
	default:
		// HL7 separates segments with CR; the analyst's tools expect it kept.
		c.Data(http.StatusOK, "x-application/hl7-v2+er7", raw)
	}
}
