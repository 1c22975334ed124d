// Package httpx holds the small HTTP conventions every API package shares:
// JSON errors, and telling a caller's mistake (4xx, with the field) from a
// server fault (5xx, details only in the log).
package httpx

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
)

// UserError is implemented by validation errors whose text is safe to show
// the caller (it names a field and a reason, never PHI).
type UserError interface {
	error
	UserError()
}

// Fail answers err: 422 for a UserError, 404 for a not-found error, else 500.
func Fail(c *gin.Context, log *slog.Logger, err error, notFoundErrs ...error) {
	var ue UserError
	switch {
	case errors.As(err, &ue):
		c.JSON(http.StatusUnprocessableEntity, gin.H{"error": ue.Error()})
		return
	}
	for _, nf := range notFoundErrs {
		if errors.Is(err, nf) {
			c.JSON(http.StatusNotFound, gin.H{"error": "not found"})
			return
		}
	}
	log.Error("request failed", "method", c.Request.Method, "route", c.FullPath(), "error", err)
	c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
}

// BadRequest answers 400 with a message.
func BadRequest(c *gin.Context, msg string) {
	c.JSON(http.StatusBadRequest, gin.H{"error": msg})
}
