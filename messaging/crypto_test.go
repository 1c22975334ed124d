package messaging

import (
	"bytes"
	"testing"
)

func TestSealOpenPerDevice(t *testing.T) {
	for _, suite := range []string{SuiteX25519, SuiteXWing} {
		t.Run(suite, func(t *testing.T) {
			privA, pubA, err := GenerateKey(suite)
			if err != nil {
				t.Fatal(err)
			}
			privB, _, err := GenerateKey(suite)
			if err != nil {
				t.Fatal(err)
			}
			info := MessageInfo("msg_1", "dev_a")
			sealed, err := Seal(suite, pubA, info, []byte("K 6.9 HH bed 12"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(sealed, []byte("6.9")) {
				t.Fatal("plaintext visible")
			}
			if pt, err := Open(suite, privA, info, sealed); err != nil || string(pt) != "K 6.9 HH bed 12" {
				t.Fatalf("owner cannot open: %q %v", pt, err)
			}
			if _, err := Open(suite, privB, info, sealed); err == nil {
				t.Fatal("another device's key opened the message")
			}
			if _, err := Open(suite, privA, MessageInfo("msg_2", "dev_a"), sealed); err == nil {
				t.Fatal("opened under another message id (replay)")
			}
			tampered := append([]byte(nil), sealed...)
			tampered[len(tampered)-3] ^= 0x40
			if _, err := Open(suite, privA, info, tampered); err == nil {
				t.Fatal("tampered ciphertext opened")
			}
		})
	}
}
