// Package ids makes identifiers: a short type prefix, then a time-ordered,
// random, URL-safe body, so ids sort roughly by creation and never collide
// across nodes.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

var enc = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// New returns prefix + "_" + 26 characters (48 bits of milliseconds, 80 random bits).
func New(prefix string) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return prefix + "_" + enc.EncodeToString(b[:])
}

// Secret returns n random bytes as a URL-safe string, for tokens and codes.
func Secret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(enc.EncodeToString(b))
}
