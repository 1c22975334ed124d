package audit_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clarion-health/clarion/audit"
)

func TestSigningKeyFile(t *testing.T) {
	t.Setenv(audit.EnvSigningKey, "")
	dir := t.TempDir()
	if s, err := audit.ExistingSigner(dir); s != nil || err != nil {
		t.Fatalf("a verifier must not mint a key: %v %v", s, err)
	}
	s1, err := audit.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, audit.SigningKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	s2, err := audit.ExistingSigner(dir)
	if err != nil || !s2.Public().Equal(s1.Public()) {
		t.Fatal("the key changed on reload")
	}
	seed := make([]byte, 32)
	seed[0] = 7
	t.Setenv(audit.EnvSigningKey, base64.StdEncoding.EncodeToString(seed))
	s3, err := audit.LoadSigner(dir)
	if err != nil || !s3.Public().Equal(ed25519.NewKeyFromSeed(seed).Public()) {
		t.Fatal("the environment does not override the file")
	}
	t.Setenv(audit.EnvSigningKey, "c2hvcnQ=")
	if _, err := audit.LoadSigner(dir); err == nil {
		t.Fatal("a short key was accepted")
	}
}

func TestPublicKeyRoundTripAndSignature(t *testing.T) {
	s := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	keys, err := audit.ParsePublicKeys("# Clarion audit key\n" + audit.FormatPublicKey(s.Public()) + "\n\n")
	if err != nil || len(keys) != 1 || !keys[0].Equal(s.Public()) {
		t.Fatalf("round trip: %v %v", keys, err)
	}
	c := s.Sign(42, "abc", time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC))
	if !c.Verify(keys) {
		t.Fatal("own signature does not verify")
	}
	for name, mutate := range map[string]func(*audit.Checkpoint){
		"seq":  func(c *audit.Checkpoint) { c.Seq++ },
		"hash": func(c *audit.Checkpoint) { c.Hash = "abd" },
		"time": func(c *audit.Checkpoint) { c.At = c.At.Add(time.Microsecond) },
	} {
		bad := c
		mutate(&bad)
		if bad.Verify(keys) {
			t.Errorf("a checkpoint with another %s verifies", name)
		}
	}
	var ie *audit.InvalidError
	if _, err := audit.ParsePublicKeys("rsa:AAAA"); !errors.As(err, &ie) {
		t.Fatalf("bad prefix: %v", err)
	}
}

func FuzzParsePublicKeys(f *testing.F) {
	s := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, 32)))
	for _, seed := range []string{audit.FormatPublicKey(s.Public()), "# c\n\n" + audit.FormatPublicKey(s.Public()), "ed25519:", "ed25519:AAAA", "x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := audit.ParsePublicKeys(text)
		if err != nil {
			return
		}
		for _, k := range keys {
			if len(k) != ed25519.PublicKeySize {
				t.Fatalf("key of %d bytes accepted", len(k))
			}
		}
	})
}
