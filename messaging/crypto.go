// Package messaging seals alert messages to each recipient's devices,
// delivers them over WebSocket, records receipts and answers, and runs the
// durable escalation timers.
package messaging

import (
	"crypto/hpke"
	"errors"
	"fmt"
)

// Suites a device may register. Every device must support SuiteX25519; the
// post-quantum hybrid is used where the device offers it.
const (
	SuiteX25519   = "DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/AES-256-GCM"
	SuiteXWing    = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
	kemX25519     = 0x0020
	kemMLKEM768X2 = 0x647a
)

// ErrUnsupportedSuite is returned for a suite Clarion does not speak.
var ErrUnsupportedSuite = errors.New("unsupported HPKE suite")

func kemFor(suite string) (hpke.KEM, error) {
	switch suite {
	case SuiteX25519:
		return hpke.NewKEM(kemX25519)
	case SuiteXWing:
		return hpke.MLKEM768X25519(), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedSuite, suite)
}

// MessageInfo is the HPKE info string: it binds a ciphertext to one message
// and one device, so a body sealed for one cannot be replayed as another.
func MessageInfo(messageID, deviceID string) []byte {
	return []byte("clarion/v1 message " + messageID + " device " + deviceID)
}

// ParsePublicKey checks a device's public key for its suite.
func ParsePublicKey(suite string, pub []byte) error {
	kem, err := kemFor(suite)
	if err != nil {
		return err
	}
	if _, err := kem.NewPublicKey(pub); err != nil {
		return fmt.Errorf("public key for %s: %w", suite, err)
	}
	return nil
}

// Seal encrypts plaintext to a device's public key: the result is the
// encapsulated key followed by the AEAD ciphertext (RFC 9180 single-shot).
func Seal(suite string, pub, info, plaintext []byte) ([]byte, error) {
	kem, err := kemFor(suite)
	if err != nil {
		return nil, err
	}
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, plaintext)
}

// Open decrypts what Seal produced, with the device's private key.
func Open(suite string, priv, info, sealed []byte) ([]byte, error) {
	kem, err := kemFor(suite)
	if err != nil {
		return nil, err
	}
	sk, err := kem.NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, sealed)
}

// GenerateKey makes a device key pair for suite.
func GenerateKey(suite string) (priv, pub []byte, err error) {
	kem, err := kemFor(suite)
	if err != nil {
		return nil, nil, err
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	priv, err = sk.Bytes()
	if err != nil {
		return nil, nil, err
	}
	return priv, sk.PublicKey().Bytes(), nil
}
