package atrest

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestDigest(t *testing.T) {
	k1 := "k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32)))
	k2 := "k2:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("b", 32)))
	old, err := Parse(k1)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := Parse(k2 + "," + k1)
	if err != nil {
		t.Fatal(err)
	}
	kid, d, err := old.Digest([]byte("hello"))
	if err != nil || kid != "k1" || len(d) != 64 {
		t.Fatalf("Digest = %q, %q, %v", kid, d, err)
	}
	kid2, d2, _ := rotated.Digest([]byte("hello"))
	if kid2 != "k2" || d2 == d {
		t.Fatalf("rotated digest = %q %q; want key k2 and a different digest", kid2, d2)
	}
	tests := []struct {
		name        string
		ring        *Keyring
		kid, digest string
		data        string
		want        bool
		wantErr     bool
	}{
		{"same key", old, "k1", d, "hello", true, false},
		{"after rotation, old key still checks", rotated, "k1", d, "hello", true, false},
		{"other text", rotated, "k1", d, "hellO", false, false},
		{"garbage digest", old, "k1", "zz", "hello", false, false},
		{"unknown key", old, "k9", d, "hello", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := tc.ring.VerifyDigest(tc.kid, tc.digest, []byte(tc.data))
			if ok != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("VerifyDigest = %v, %v; want %v, err %v", ok, err, tc.want, tc.wantErr)
			}
		})
	}
}
