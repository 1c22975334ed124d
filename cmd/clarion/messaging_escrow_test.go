package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clarion-health/clarion/messaging"
)

func TestEscrowKeygen(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "escrow.key"), filepath.Join(dir, "escrow.pub")
	var out, errOut strings.Builder
	if err := runEscrow(t.Context(), []string{"keygen", "--out", key, "--public-out", pub}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(key)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", info, err)
	}
	printed, err := messaging.ParseEscrowPublicKey([]byte(out.String()))
	if err != nil || printed.Suite != messaging.SuiteXWing {
		t.Fatalf("printed public key: %+v %v", printed, err)
	}
	fromFile, err := loadEscrowPublicKey(pub)
	if err != nil || fromFile.KeyID != printed.KeyID {
		t.Fatalf("public key file: %+v %v", fromFile, err)
	}
	b, _ := os.ReadFile(key)
	priv, err := messaging.ParseEscrowPrivateKey(b)
	if err != nil || priv.KeyID != printed.KeyID {
		t.Fatalf("private key: %v", err)
	}
	if err := runEscrow(t.Context(), []string{"keygen", "--out", key}, &out, &errOut); err == nil {
		t.Fatal("keygen overwrote an existing key")
	}
	// open refuses a key file others can read, before touching any store.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	err = runEscrow(t.Context(), []string{"open", "--data-dir", dir, "--key", key, "--message", "msg_x", "--actor", "a"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("open with a 0644 key: %v", err)
	}
}
