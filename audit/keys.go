package audit

import (
	"crypto/ed25519"
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

// EnvSigningKey carries the checkpoint signing key (base64 of the 32-byte
// Ed25519 seed). Nodes sharing one database should share it, or give every
// node's public key to the verifier.
const EnvSigningKey = "CLARION_AUDIT_SIGNING_KEY"

// SigningKeyFile is the key's file name in the data directory.
const SigningKeyFile = "audit-signing.key"

// publicKeyPrefix starts an exported public key line.
const publicKeyPrefix = "ed25519:"

// Signer signs checkpoints.
type Signer struct {
	priv ed25519.PrivateKey
}

// NewSigner wraps a private key.
func NewSigner(priv ed25519.PrivateKey) *Signer { return &Signer{priv: priv} }

// Public is the key an auditor verifies with.
func (s *Signer) Public() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// LoadSigner reads the key from CLARION_AUDIT_SIGNING_KEY or else from
// dataDir/audit-signing.key, creating that file (mode 0600) on first use.
func LoadSigner(dataDir string) (*Signer, error) {
	if v := os.Getenv(EnvSigningKey); v != "" {
		return parseSeed(v)
	}
	path := filepath.Join(dataDir, SigningKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		_, _ = rand.Read(seed)
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
		// O_EXCL: two processes starting together must not each write a key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadSigner(dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(seed) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("audit key: write: %w", werr)
		}
		return NewSigner(ed25519.NewKeyFromSeed(seed)), nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: read: %w", err)
	}
	return parseSeed(string(b))
}

// ExistingSigner is LoadSigner without creating a key: (nil, nil) when
// there is none. Verifiers use it so that checking never mints a key.
func ExistingSigner(dataDir string) (*Signer, error) {
	if os.Getenv(EnvSigningKey) != "" {
		return LoadSigner(dataDir)
	}
	if _, err := os.Stat(filepath.Join(dataDir, SigningKeyFile)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return LoadSigner(dataDir)
}

func parseSeed(s string) (*Signer, error) {
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit key: want base64 of %d bytes", ed25519.SeedSize)
	}
	return NewSigner(ed25519.NewKeyFromSeed(seed)), nil
}

// FormatPublicKey writes a public key as one line, "ed25519:<base64>", the
// form ParsePublicKeys reads back.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKeys reads public keys, one "ed25519:<base64>" per line; blank
// lines and lines starting with # are skipped.
func ParsePublicKeys(text string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b64, ok := strings.CutPrefix(line, publicKeyPrefix)
		if !ok {
			return nil, &InvalidError{fmt.Sprintf("public key line %d", i+1), "must start with " + publicKeyPrefix}
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, &InvalidError{fmt.Sprintf("public key line %d", i+1),
				fmt.Sprintf("want base64 of %d bytes", ed25519.PublicKeySize)}
		}
		out = append(out, ed25519.PublicKey(b))
	}
	return out, nil
}
