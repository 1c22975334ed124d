package atrest

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// digestNonce is reserved for deriving digest keys: AES-GCM under it, over
// zero bytes, yields the AES-CTR key stream of counters 2 and 3, a
// pseudorandom function of the key (AES as a PRF). Seal draws its nonces at
// random, so meeting this one is a 2^-96 event.
var digestNonce = []byte("clarion-dgst")

// digestKey derives the HMAC key for digests under the at-rest key id. Every
// key of the keyring, not only the current one, can derive its digest key,
// so a digest made before a key rotation can still be checked after it.
func (k *Keyring) digestKey(id string) ([]byte, error) {
	gcm, ok := k.aeads[id]
	if !ok {
		return nil, fmt.Errorf("atrest: digest key %q: %w", id, ErrOpen)
	}
	stream := gcm.Seal(nil, digestNonce, make([]byte, 32), []byte("clarion digest key v1"))[:32]
	return hkdf.Key(sha256.New, stream, nil, "clarion message digest v1", 32)
}

// Digest returns a keyed digest (HMAC-SHA256, hex) of data under the
// current key, and that key's id. It lets an audit check a claimed text
// against what was sent without the server keeping the text: the digest
// reveals nothing to whoever lacks the at-rest key.
func (k *Keyring) Digest(data []byte) (keyID, digest string, err error) {
	key, err := k.digestKey(k.current)
	if err != nil {
		return "", "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return k.current, hex.EncodeToString(m.Sum(nil)), nil
}

// VerifyDigest reports whether digest (from Digest under keyID) is the
// digest of data; it fails when keyID is no longer in the keyring.
func (k *Keyring) VerifyDigest(keyID, digest string, data []byte) (bool, error) {
	key, err := k.digestKey(keyID)
	if err != nil {
		return false, err
	}
	want, err := hex.DecodeString(digest)
	if err != nil {
		return false, nil
	}
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return hmac.Equal(m.Sum(nil), want), nil
}
