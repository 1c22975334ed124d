package oncall

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/httpx"
)

// confirm is the part of an edit request that accepts a gap.
type confirm struct {
	ConfirmGap bool `json:"confirm_gap"`
}

// rosterEdit runs fn in a transaction and, once it commits, refreshes the
// index for the unit-role it touched. fn must call CanEdit for the unit.
func (a *API) rosterEdit(c *gin.Context, confirmGap bool, fn func(tx *sql.Tx, e Edit) (Result, error)) (Result, bool) {
	ctx := c.Request.Context()
	var res Result
	err := a.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		res, err = fn(tx, Edit{Now: a.now(), ConfirmGap: confirmGap})
		return err
	})
	if err != nil {
		a.fail(c, err)
		return res, false
	}
	a.index.Changed(ctx, res.Key.UnitID, res.Key.Role)
	return res, true
}

// entryKey returns the unit-role of a stored roster entry; table is a
// constant from the handlers.
func entryKey(ctx context.Context, q Queryer, table, id string) (RoleKey, error) {
	var k RoleKey
	err := q.QueryRowContext(ctx, `SELECT unit_id, role FROM `+table+` WHERE id = $1`, id).Scan(&k.UnitID, &k.Role)
	if errors.Is(err, sql.ErrNoRows) {
		return k, fmt.Errorf("%s %q: %w", table, id, ErrNotFound)
	}
	return k, err
}

// deleteEntry is the common DELETE handler: scope check, then del.
func (a *API) deleteEntry(c *gin.Context, table string, del func(ctx context.Context, tx Queryer, by Actor, id string, e Edit) (Result, error)) {
	ctx := c.Request.Context()
	res, ok := a.rosterEdit(c, c.Query("confirm_gap") == "true", func(tx *sql.Tx, e Edit) (Result, error) {
		k, err := entryKey(ctx, tx, table, c.Param("id"))
		if err != nil {
			return Result{}, err
		}
		if err := CanEdit(ctx, tx, actor(c), k.UnitID); err != nil {
			return Result{}, err
		}
		return del(ctx, tx, actor(c), c.Param("id"), e)
	})
	if ok {
		c.JSON(http.StatusOK, res)
	}
}

func (a *API) addShift(c *gin.Context) {
	var s Shift
	if err := c.ShouldBindJSON(&s); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	ctx := c.Request.Context()
	_, ok := a.rosterEdit(c, false, func(tx *sql.Tx, e Edit) (res Result, err error) {
		if err := s.Validate(); err != nil {
			return res, err
		}
		if err := CanEdit(ctx, tx, actor(c), s.UnitID); err != nil {
			return res, err
		}
		s, err = AddShift(ctx, tx, actor(c), s)
		return Result{Key: RoleKey{s.UnitID, s.Role}, ID: s.ID}, err
	})
	if ok {
		c.JSON(http.StatusCreated, s)
	}
}

func (a *API) deleteShift(c *gin.Context) { a.deleteEntry(c, "shifts", DeleteShift) }

func (a *API) putRotation(c *gin.Context) {
	var req struct {
		Rotation
		confirm
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	ctx := c.Request.Context()
	req.Rotation.ID = c.Param("id")
	res, ok := a.rosterEdit(c, req.ConfirmGap, func(tx *sql.Tx, e Edit) (Result, error) {
		if err := CanEdit(ctx, tx, actor(c), req.Rotation.UnitID); err != nil {
			return Result{}, err
		}
		return PutRotation(ctx, tx, actor(c), req.Rotation, e)
	})
	if ok {
		c.JSON(http.StatusOK, gin.H{"rotation": req.Rotation, "result": res})
	}
}

func (a *API) listRotations(c *gin.Context) {
	rots, err := ListRotations(c.Request.Context(), a.db, c.Query("unit"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rots)
}

func (a *API) deleteRotation(c *gin.Context) { a.deleteEntry(c, "rotations", DeleteRotation) }

func (a *API) addOverride(c *gin.Context) {
	var req struct {
		Override
		confirm
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	ctx := c.Request.Context()
	o := req.Override
	res, ok := a.rosterEdit(c, req.ConfirmGap, func(tx *sql.Tx, e Edit) (res Result, err error) {
		if err := CanEdit(ctx, tx, actor(c), o.UnitID); err != nil {
			return res, err
		}
		o, res, err = AddOverride(ctx, tx, actor(c), o, e)
		return res, err
	})
	if ok {
		c.JSON(http.StatusCreated, gin.H{"override": o, "result": res})
	}
}

func (a *API) deleteOverride(c *gin.Context) { a.deleteEntry(c, "roster_overrides", DeleteOverride) }

func (a *API) addSwap(c *gin.Context) {
	var req struct {
		Swap
		confirm
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	ctx := c.Request.Context()
	s := req.Swap
	res, ok := a.rosterEdit(c, req.ConfirmGap, func(tx *sql.Tx, e Edit) (res Result, err error) {
		if err := CanEdit(ctx, tx, actor(c), s.UnitID); err != nil {
			return res, err
		}
		s, res, err = AddSwap(ctx, tx, actor(c), s, e)
		return res, err
	})
	if ok {
		c.JSON(http.StatusCreated, gin.H{"swap": s, "result": res})
	}
}

func (a *API) deleteSwap(c *gin.Context) { a.deleteEntry(c, "roster_swaps", DeleteSwap) }

func (a *API) putTemporary(c *gin.Context) {
	var req struct {
		TemporarySchedule
		confirm
	}
	if err := c.ShouldBindJSON(&req); err != nil {
		httpx.BadRequest(c, "invalid JSON body")
		return
	}
	ctx := c.Request.Context()
	ts := req.TemporarySchedule
	ts.ID = c.Param("id")
	res, ok := a.rosterEdit(c, req.ConfirmGap, func(tx *sql.Tx, e Edit) (Result, error) {
		if err := CanEdit(ctx, tx, actor(c), ts.UnitID); err != nil {
			return Result{}, err
		}
		return PutTemporarySchedule(ctx, tx, actor(c), ts, e)
	})
	if ok {
		c.JSON(http.StatusOK, gin.H{"temporary_schedule": ts, "result": res})
	}
}

func (a *API) deleteTemporary(c *gin.Context) {
	a.deleteEntry(c, "temporary_schedules", DeleteTemporarySchedule)
}
