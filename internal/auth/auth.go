// Package auth issues and checks bearer tokens and enforces roles on the
// HTTP API. Tokens are random; only their SHA-256 is stored.
package auth

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/clarion-health/clarion/audit"
	"github.com/clarion-health/clarion/internal/db"
	"github.com/clarion-health/clarion/internal/ids"
)

// Roles. A token carries exactly one.
const (
	RoleAdmin       = "admin"       // configures units, users, rules, policies, devices
	RoleScheduler   = "scheduler"   // edits rosters
	RoleClinician   = "clinician"   // a nurse or physician: enrols own devices, reads alerts
	RoleDevice      = "device"      // a device credential: receives and answers messages
	RoleIntegration = "integration" // a sending system
	RoleAuditor     = "auditor"     // reads and verifies the audit log
	RoleAnalyst     = "analyst"     // an integration analyst: inspects inbound messages, raw ones included
)

// Roles lists every role, for validation.
var Roles = []string{RoleAdmin, RoleScheduler, RoleClinician, RoleDevice, RoleIntegration, RoleAuditor, RoleAnalyst}

// Token kinds say what the subject is.
const (
	KindUser        = "user"
	KindDevice      = "device"
	KindIntegration = "integration"
)

// ErrUnauthenticated means no valid token was presented.
var ErrUnauthenticated = errors.New("unauthenticated")

// Principal is the authenticated caller.
type Principal struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject"` // user id, device id or integration name
	Role    string `json:"role"`
}

// Queryer is a *sql.DB or *sql.Tx.
type Queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Issue creates a token for subject with role and returns it; it is shown
// once and never stored in clear.
func Issue(ctx context.Context, tx Queryer, kind, subject, role string, now time.Time) (string, error) {
	if !slices.Contains(Roles, role) {
		return "", fmt.Errorf("unknown role %q", role)
	}
	token := "clr_" + ids.Secret(24)
	_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (hash, kind, subject, role, created_at) VALUES ($1, $2, $3, $4, $5)`,
		hash(token), kind, subject, role, now.UnixMicro())
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return token, nil
}

// Lookup returns the principal for a token that exists and is not revoked.
func Lookup(ctx context.Context, q Queryer, token string) (Principal, error) {
	var p Principal
	err := q.QueryRowContext(ctx, `SELECT kind, subject, role FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL`,
		hash(token)).Scan(&p.Kind, &p.Subject, &p.Role)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrUnauthenticated
	}
	if err != nil {
		return p, fmt.Errorf("token lookup: %w", err)
	}
	return p, nil
}

// RevokeSubject revokes every token of a subject (a wiped device, say).
func RevokeSubject(ctx context.Context, tx Queryer, kind, subject string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = $1 WHERE kind = $2 AND subject = $3 AND revoked_at IS NULL`,
		now.UnixMicro(), kind, subject)
	if err != nil {
		return fmt.Errorf("revoke tokens: %w", err)
	}
	return nil
}

const principalKey = "clarion.principal"

// Middleware authenticates every request with "Authorization: Bearer" and
// answers 401 otherwise. A refused request is audited (route and source
// address, never the token presented).
func Middleware(d *db.DB) gin.HandlerFunc {
	used := newUseLog(15 * time.Minute)
	return func(c *gin.Context) {
		token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
		if !ok || token == "" {
			auditFailure(c, d, "missing_token")
			c.Header("WWW-Authenticate", `Bearer realm="clarion"`)
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "missing bearer token"})
			return
		}
		p, err := Lookup(c.Request.Context(), d, strings.TrimSpace(token))
		if errors.Is(err, ErrUnauthenticated) {
			auditFailure(c, d, "invalid_token")
			c.Header("WWW-Authenticate", `Bearer realm="clarion", error="invalid_token"`)
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid or revoked token"})
			return
		}
		if err != nil {
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"error": "authentication unavailable"})
			return
		}
		c.Set(principalKey, p)
		if used.due(p, time.Now()) {
			auditUse(c, d, p)
		}
		c.Next()
	}
}

// useLog throttles "token used" audit records to one per principal per
// window: enough to show who used the API when, without one audit write
// per request.
type useLog struct {
	mu     sync.Mutex
	window time.Duration
	last   map[Principal]time.Time
}

func newUseLog(window time.Duration) *useLog {
	return &useLog{window: window, last: map[Principal]time.Time{}}
}

func (u *useLog) due(p Principal, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.last[p]; ok && now.Sub(t) < u.window {
		return false
	}
	if len(u.last) > 100_000 { // bounded: forget everyone rather than grow forever
		clear(u.last)
	}
	u.last[p] = now
	return true
}

func auditUse(c *gin.Context, d *db.DB, p Principal) {
	ctx := c.Request.Context()
	_ = d.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, audit.Entry{ActorType: p.Kind, ActorID: p.Subject, ActorRole: p.Role,
			Action: "auth.token_used", ObjectType: "route", ObjectID: c.Request.Method + " " + c.FullPath(),
			SourceAddr: c.RemoteIP(), CorrelationID: p.Subject})
		return err
	})
}

func auditFailure(c *gin.Context, d *db.DB, reason string) {
	ctx := c.Request.Context()
	_ = d.InTx(ctx, func(tx *sql.Tx) error {
		err := audit.Append(ctx, tx, audit.Entry{ActorType: "anonymous", Action: "auth.failed",
			ObjectType: "route", ObjectID: c.Request.Method + " " + c.FullPath(), Outcome: "failure",
			SourceAddr: c.RemoteIP(), Detail: map[string]any{"reason": reason}})
		return err
	})
}

// Require lets the request through only for the listed roles (403 otherwise).
func Require(roles ...string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !slices.Contains(roles, From(c).Role) {
			c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"error": "role not permitted for this operation"})
			return
		}
		c.Next()
	}
}

// From returns the request's principal (zero when unauthenticated).
func From(c *gin.Context) Principal {
	p, _ := c.Get(principalKey)
	pr, _ := p.(Principal)
	return pr
}
