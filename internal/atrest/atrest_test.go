package atrest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
)

func testKey(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func TestSealOpenRotate(t *testing.T) {
	old, err := Parse("k1:" + testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	sealed := old.Seal([]byte("K 6.9"), []byte("evt_1"))
	if bytes.Contains(sealed, []byte("K 6.9")) {
		t.Fatal("plaintext visible in sealed form")
	}
	rotated, err := Parse("k2:" + testKey(2) + ",k1:" + testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := rotated.Open(sealed, []byte("evt_1"))
	if err != nil || string(pt) != "K 6.9" {
		t.Fatalf("open after rotation = %q, %v", pt, err)
	}
	if _, err := rotated.Open(sealed, []byte("evt_2")); !errors.Is(err, ErrOpen) {
		t.Fatalf("open with other aad: %v, want ErrOpen", err)
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := rotated.Open(tampered, []byte("evt_1")); !errors.Is(err, ErrOpen) {
		t.Fatalf("open tampered: %v, want ErrOpen", err)
	}
}

func TestLoadCreatesKeyFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvKey, "")
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Pseudonym("pt", "123") != b.Pseudonym("pt", "123") {
		t.Fatal("pseudonym not stable across loads")
	}
	if pt, err := b.Open(a.Seal([]byte("x"), nil), nil); err != nil || string(pt) != "x" {
		t.Fatalf("reloaded key cannot open: %v", err)
	}
}
