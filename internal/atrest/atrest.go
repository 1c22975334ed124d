// Package atrest seals data at rest (raw messages, events, alert bodies)
// with AES-256-GCM under a key identified by id, so keys can be rotated:
// new data uses the current key, old data opens with the key it names.
package atrest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrOpen is returned when sealed data cannot be opened: wrong key,
// unknown key id, or tampering.
var ErrOpen = errors.New("atrest: cannot open sealed data")

const version = 1

// Keyring holds the current key and any older keys still needed to open.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
	pseudo  []byte // HMAC key for opaque identifiers, derived from the current key
}

// NewKeyring builds a keyring from 32-byte keys by id; current names the key
// used to seal.
func NewKeyring(current string, keys map[string][]byte) (*Keyring, error) {
	k := &Keyring{current: current, aeads: map[string]cipher.AEAD{}}
	for id, key := range keys {
		if len(id) == 0 || len(id) > 255 {
			return nil, fmt.Errorf("atrest: key id %q: must be 1-255 bytes", id)
		}
		if len(key) != 32 {
			return nil, fmt.Errorf("atrest: key %q: need 32 bytes, got %d", id, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("atrest: %w", err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("atrest: %w", err)
		}
		k.aeads[id] = gcm
	}
	cur, ok := keys[current]
	if !ok {
		return nil, fmt.Errorf("atrest: current key %q not in keyring", current)
	}
	pseudo, err := hkdf.Key(sha256.New, cur, nil, "clarion pseudonym v1", 32)
	if err != nil {
		return nil, fmt.Errorf("atrest: %w", err)
	}
	k.pseudo = pseudo
	return k, nil
}

// Seal encrypts plaintext; aad binds it to its row (e.g. the row id) so a
// sealed value cannot be moved to another row unnoticed.
func (k *Keyring) Seal(plaintext, aad []byte) []byte {
	gcm := k.aeads[k.current]
	out := make([]byte, 0, 2+len(k.current)+gcm.NonceSize()+len(plaintext)+gcm.Overhead())
	out = append(out, version, byte(len(k.current)))
	out = append(out, k.current...)
	nonce := make([]byte, gcm.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return gcm.Seal(out, nonce, plaintext, aad)
}

// Open decrypts what Seal produced with the same aad.
func (k *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < 2 || sealed[0] != version {
		return nil, ErrOpen
	}
	n := int(sealed[1])
	if len(sealed) < 2+n {
		return nil, ErrOpen
	}
	gcm, ok := k.aeads[string(sealed[2:2+n])]
	if !ok {
		return nil, ErrOpen
	}
	rest := sealed[2+n:]
	if len(rest) < gcm.NonceSize()+gcm.Overhead() {
		return nil, ErrOpen
	}
	pt, err := gcm.Open(nil, rest[:gcm.NonceSize()], rest[gcm.NonceSize():], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Pseudonym maps an identifier that is PHI (a patient's MRN) to a stable
// opaque id safe for logs, audit and joins.
func (k *Keyring) Pseudonym(prefix, value string) string {
	m := hmac.New(sha256.New, k.pseudo)
	m.Write([]byte(value))
	return prefix + "_" + hex.EncodeToString(m.Sum(nil)[:12])
}

// EnvKey names the variable that carries the key ("id:base64" entries,
// comma-separated, the first being current). Several nodes sharing one
// database must share it.
const EnvKey = "CLARION_AT_REST_KEYS"

// Load reads keys from CLARION_AT_REST_KEYS, or else from dataDir/atrest.key,
// creating that file (mode 0600) with a fresh key on first start.
func Load(dataDir string) (*Keyring, error) {
	if spec := os.Getenv(EnvKey); spec != "" {
		return Parse(spec)
	}
	path := filepath.Join(dataDir, "atrest.key")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		spec := "k1:" + base64.StdEncoding.EncodeToString(key)
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("atrest: %w", err)
		}
		if err := os.WriteFile(path, []byte(spec+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("atrest: write key: %w", err)
		}
		return Parse(spec)
	}
	if err != nil {
		return nil, fmt.Errorf("atrest: read key: %w", err)
	}
	return Parse(strings.TrimSpace(string(b)))
}

// Parse reads "id:base64[,id:base64...]"; the first entry is current.
func Parse(spec string) (*Keyring, error) {
	keys := map[string][]byte{}
	current := ""
	for _, entry := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok {
			return nil, fmt.Errorf("atrest: key entry must be id:base64")
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("atrest: key %q: %w", id, err)
		}
		keys[id] = key
		if current == "" {
			current = id
		}
	}
	return NewKeyring(current, keys)
}
