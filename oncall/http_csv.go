package oncall

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/internal/httpx"
)

// maxCSVBytes bounds an import.
const maxCSVBytes = 4 << 20

// importCSV answers POST /v1/roster/import[?confirm_gap=true] with a
// text/csv body: every row is applied in one transaction, or none is.
func (a *API) importCSV(c *gin.Context) {
	ctx := c.Request.Context()
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, maxCSVBytes+1))
	if err != nil {
		httpx.BadRequest(c, "unreadable body")
		return
	}
	if len(body) > maxCSVBytes {
		c.JSON(http.StatusRequestEntityTooLarge, gin.H{"error": fmt.Sprintf("at most %d bytes", maxCSVBytes)})
		return
	}
	zones, err := unitZones(ctx, a.db, "")
	if err != nil {
		a.fail(c, err)
		return
	}
	rows, err := ParseRosterCSV(bytesReader(body), zones)
	if err != nil {
		a.fail(c, err)
		return
	}
	by, e := actor(c), Edit{Now: a.now(), ConfirmGap: c.Query("confirm_gap") == "true"}
	touched := map[RoleKey]bool{}
	var results []Result
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, r := range rows {
			res, err := applyCSVRow(c, tx, by, r, e)
			var gap *GapError
			var inv *InvalidError
			switch {
			case errors.As(err, &gap):
				return &csvGapError{line: r.Line, gap: gap}
			case errors.Is(err, ErrForbidden):
				return fmt.Errorf("line %d: %w", r.Line, err)
			case errors.As(err, &inv):
				return &CSVError{[]LineError{{r.Line, inv.Field, inv.Reason}}}
			case err != nil:
				return err
			}
			touched[res.Key] = true
			results = append(results, res)
		}
		return nil
	})
	var cg *csvGapError
	if errors.As(err, &cg) {
		c.JSON(http.StatusConflict, gin.H{"error": fmt.Sprintf("line %d: %s", cg.line, cg.gap.Error()), "line": cg.line, "gaps": cg.gap.Gaps})
		return
	}
	if err != nil {
		a.fail(c, err)
		return
	}
	for k := range touched {
		a.index.Changed(ctx, k.UnitID, k.Role)
	}
	c.JSON(http.StatusOK, gin.H{"applied": len(results), "results": results})
}

type csvGapError struct {
	line int
	gap  *GapError
}

func (e *csvGapError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.gap) }

func applyCSVRow(c *gin.Context, tx *sql.Tx, by Actor, r CSVRow, e Edit) (Result, error) {
	ctx := c.Request.Context()
	if err := CanEdit(ctx, tx, by, r.UnitID); err != nil {
		return Result{}, err
	}
	if r.Kind == CSVShift {
		s, err := AddShift(ctx, tx, by, Shift{UnitID: r.UnitID, Role: r.Role, UserID: r.UserID, Start: r.Start, End: r.End})
		return Result{Key: RoleKey{r.UnitID, r.Role}, ID: s.ID}, err
	}
	_, res, err := AddOverride(ctx, tx, by, Override{UnitID: r.UnitID, Role: r.Role, Kind: r.Kind, UserID: r.UserID,
		ReplacesUserID: r.ReplacesUserID, Start: r.Start, End: r.End}, e)
	return res, err
}

// exportCSV answers GET /v1/roster/export?unit=U[&from][&to][&resolved=true]:
// the unit's explicit shifts and overrides overlapping the window, in the
// import format; with resolved=true, the computed holders instead.
func (a *API) exportCSV(c *gin.Context) {
	ctx := c.Request.Context()
	unit := c.Query("unit")
	if unit == "" {
		httpx.BadRequest(c, "unit is required")
		return
	}
	if !a.scoped(c, unit) {
		return
	}
	now := a.now()
	from, ok := queryTime(c, "from", now)
	if !ok {
		return
	}
	to, ok := queryTime(c, "to", from.Add(CoverageWindow))
	if !ok {
		return
	}
	if !to.After(from) || to.Sub(from) > 366*24*time.Hour {
		httpx.BadRequest(c, "to must be after from, by at most a year")
		return
	}
	rosters, zones, err := loadRosters(ctx, a.db, rosterFilter{unitID: unit, from: from, to: to})
	if err != nil {
		a.fail(c, err)
		return
	}
	rows := exportRows(rosters, from, to, c.Query("resolved") == "true")
	c.Header("Content-Disposition", fmt.Sprintf(`attachment; filename="roster-%s.csv"`, unit))
	c.Status(http.StatusOK)
	c.Header("Content-Type", "text/csv; charset=utf-8")
	if err := WriteRosterCSV(c.Writer, rows, zones); err != nil {
		a.log.Error("roster export", "error", err)
	}
}
