package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// SMART-style scopes for the FHIR interface. A token may carry scopes of
// the form system/<ResourceType|*>.<access>, where access is SMART v1's
// read, write or *, or SMART v2's letters c (create), r (read), u (update),
// d (delete), s (search). read = rs, write = cud, * = cruds. Clarion's FHIR
// clients are systems, so user/ and patient/ scopes are refused.

// Access is one SMART v2 interaction letter.
type Access byte

// The interactions a scope can permit.
const (
	AccessCreate Access = 'c'
	AccessRead   Access = 'r'
	AccessUpdate Access = 'u'
	AccessDelete Access = 'd'
	AccessSearch Access = 's'
)

// Scope is one parsed scope.
type Scope struct {
	Resource string // a resource type, or "*"
	Access   string // the permitted letters, in cruds order
	raw      string
}

func (s Scope) String() string { return s.raw }

// Allows reports whether s permits access to resourceType.
func (s Scope) Allows(resourceType string, a Access) bool {
	return (s.Resource == "*" || s.Resource == resourceType) && strings.IndexByte(s.Access, byte(a)) >= 0
}

// Scopes is what a token may do through the FHIR interface.
type Scopes []Scope

// Allows reports whether any scope permits access to resourceType.
func (ss Scopes) Allows(resourceType string, a Access) bool {
	return slices.ContainsFunc(ss, func(s Scope) bool { return s.Allows(resourceType, a) })
}

// Covers reports whether every interaction need names is permitted.
func (ss Scopes) Covers(need Scope) bool {
	for i := 0; i < len(need.Access); i++ {
		if !ss.Allows(need.Resource, Access(need.Access[i])) {
			return false
		}
	}
	return true
}

// String is the space-separated form stored with the token.
func (ss Scopes) String() string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.raw
	}
	return strings.Join(parts, " ")
}

// InvalidScopeError names the scope that cannot be parsed; its text is
// safe to show the caller.
type InvalidScopeError struct {
	Scope, Reason string
}

func (e *InvalidScopeError) Error() string { return fmt.Sprintf("scopes: %q: %s", e.Scope, e.Reason) }

// UserError marks the error as safe to show the caller.
func (e *InvalidScopeError) UserError() {}

// ParseScope parses one scope.
func ParseScope(raw string) (Scope, error) {
	bad := func(reason string) (Scope, error) { return Scope{}, &InvalidScopeError{Scope: raw, Reason: reason} }
	rest, ok := strings.CutPrefix(raw, "system/")
	if !ok {
		return bad("only system/ scopes are supported (system/<Type|*>.<read|write|*|cruds>)")
	}
	res, acc, ok := strings.Cut(rest, ".")
	if !ok || res == "" || acc == "" {
		return bad("want system/<Type|*>.<read|write|*|cruds>")
	}
	if res != "*" {
		for i, r := range res {
			if !(r >= 'A' && r <= 'Z' || i > 0 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')) {
				return bad("the resource type must be a FHIR type name or *")
			}
		}
	}
	switch acc {
	case "read":
		acc = "rs"
	case "write":
		acc = "cud"
	case "*":
		acc = "cruds"
	default:
		// SMART v2: letters in the order c r u d s, each at most once.
		last := -1
		for i := 0; i < len(acc); i++ {
			pos := strings.IndexByte("cruds", acc[i])
			if pos <= last {
				return bad("access must be read, write, * or SMART v2 letters in the order cruds")
			}
			last = pos
		}
	}
	return Scope{Resource: res, Access: acc, raw: raw}, nil
}

// ParseScopes parses a space- or comma-separated list; "" is no scopes.
func ParseScopes(s string) (Scopes, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
	out := make(Scopes, 0, len(fields))
	for _, f := range fields {
		sc, err := ParseScope(f)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(out, func(o Scope) bool { return o.raw == sc.raw }) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// IssueWithScopes creates a token like Issue and records its scopes in the
// same transaction.
func IssueWithScopes(ctx context.Context, tx Queryer, kind, subject, role string, scopes Scopes, now time.Time) (string, error) {
	token, err := Issue(ctx, tx, kind, subject, role, now)
	if err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE api_tokens SET scopes = $1 WHERE hash = $2`, scopes.String(), hash(token)); err != nil {
		return "", fmt.Errorf("issue token scopes: %w", err)
	}
	return token, nil
}

// LookupWithScopes returns the principal and scopes of a token that exists
// and is not revoked.
func LookupWithScopes(ctx context.Context, q Queryer, token string) (Principal, Scopes, error) {
	var p Principal
	var raw string
	err := q.QueryRowContext(ctx, `SELECT kind, subject, role, scopes FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL`,
		hash(token)).Scan(&p.Kind, &p.Subject, &p.Role, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return p, nil, ErrUnauthenticated
	}
	if err != nil {
		return p, nil, fmt.Errorf("token lookup: %w", err)
	}
	// A stored scope that no longer parses is dropped, never widened.
	var out Scopes
	for _, f := range strings.Fields(raw) {
		if sc, err := ParseScope(f); err == nil {
			out = append(out, sc)
		}
	}
	return p, out, nil
}

// DenyFunc answers a refused request (the FHIR interface answers with an
// OperationOutcome); status is 401, 403 or 503.
type DenyFunc func(c *gin.Context, status int, reason string)

const scopesKey = "clarion.scopes"

// ScopeMiddleware authenticates "Authorization: Bearer" like Middleware
// and also loads the token's scopes; refusals go through deny.
func ScopeMiddleware(q Queryer, deny DenyFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			c.Header("WWW-Authenticate", `Bearer realm="clarion"`)
			deny(c, http.StatusUnauthorized, "missing bearer token")
			c.Abort()
			return
		}
		p, scopes, err := LookupWithScopes(c.Request.Context(), q, strings.TrimSpace(token))
		if errors.Is(err, ErrUnauthenticated) {
			c.Header("WWW-Authenticate", `Bearer realm="clarion", error="invalid_token"`)
			deny(c, http.StatusUnauthorized, "invalid or revoked token")
			c.Abort()
			return
		}
		if err != nil {
			deny(c, http.StatusServiceUnavailable, "authentication unavailable")
			c.Abort()
			return
		}
		c.Set(principalKey, p)
		c.Set(scopesKey, scopes)
		c.Next()
	}
}

// RequireScope lets the request through only when the caller's scopes
// cover need (e.g. "system/Observation.write"); 403 through deny otherwise.
// It panics on a malformed need: that is a programming error.
func RequireScope(need string, deny DenyFunc) gin.HandlerFunc {
	sc, err := ParseScope(need)
	if err != nil {
		panic(err)
	}
	return func(c *gin.Context) {
		if !ScopesFrom(c).Covers(sc) {
			c.Header("WWW-Authenticate", `Bearer realm="clarion", error="insufficient_scope", scope="`+need+`"`)
			deny(c, http.StatusForbidden, "this interaction needs scope "+need)
			c.Abort()
			return
		}
		c.Next()
	}
}

// ScopesFrom returns the request's scopes (none when unauthenticated).
func ScopesFrom(c *gin.Context) Scopes {
	v, _ := c.Get(scopesKey)
	s, _ := v.(Scopes)
	return s
}
