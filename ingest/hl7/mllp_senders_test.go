package hl7

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/clarion-health/clarion/internal/httpx"
)

const sendersYAML = `
senders:
  - identity: lab
    client_cert: lab.example.org
    allow: ["LAB^GHH", "LAB2^GHH"]
  - identity: adt-feed
    address: 10.1.2.3
    allow: ["EPIC^*"]
  - identity: adt-feed-port
    address: 10.1.2.3:5000
    allow: ["EPIC2^GHH"]
  - identity: monitors
    address: 10.20.0.0/16
    allow: ["MON_GW^ICU"]
  - identity: both
    client_cert: mon.example.org
    address: 10.30.0.1
    allow: ["MON2^ICU"]
`

func tcp(addr string) net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", addr)
	return a
}

func TestSenders(t *testing.T) {
	s, err := ParseSenders([]byte(sendersYAML), true)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		peer     Peer
		source   string
		identity string // "" when no binding matches
		allowed  bool
	}{
		{"cert CN", Peer{Addr: tcp("192.0.2.1:1"), CertNames: []string{"x", "lab.example.org"}}, "LAB2^GHH", "lab", true},
		{"cert as another sender", Peer{Addr: tcp("192.0.2.1:1"), CertNames: []string{"lab.example.org"}}, "EPIC^GHH", "lab", false},
		{"address, any facility", Peer{Addr: tcp("10.1.2.3:4000")}, "EPIC^OTHER", "adt-feed", true},
		{"address and port wins over address", Peer{Addr: tcp("10.1.2.3:5000")}, "EPIC2^GHH", "adt-feed-port", true},
		{"port binding does not allow the address's senders", Peer{Addr: tcp("10.1.2.3:5000")}, "EPIC^GHH", "adt-feed-port", false},
		{"network", Peer{Addr: tcp("10.20.7.9:1")}, "MON_GW^ICU", "monitors", true},
		{"cert and address both needed", Peer{Addr: tcp("10.30.0.1:1"), CertNames: []string{"mon.example.org"}}, "MON2^ICU", "both", true},
		{"cert without the address", Peer{Addr: tcp("10.30.0.2:1"), CertNames: []string{"mon.example.org"}}, "MON2^ICU", "", false},
		{"address without the cert", Peer{Addr: tcp("10.30.0.1:1")}, "MON2^ICU", "", false},
		{"unknown peer", Peer{Addr: tcp("192.0.2.1:1")}, "LAB^GHH", "", false},
		{"no address", Peer{}, "LAB^GHH", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := s.Identify(tc.peer)
			if ok != (tc.identity != "") || b.Identity != tc.identity {
				t.Fatalf("Identify = %q, %v; want %q", b.Identity, ok, tc.identity)
			}
			if ok && b.Allows(tc.source) != tc.allowed {
				t.Errorf("Allows(%s) = %v", tc.source, !tc.allowed)
			}
		})
	}
	var none *Senders
	if _, ok := none.Identify(Peer{Addr: tcp("10.1.2.3:1")}); ok {
		t.Error("nil Senders identified a peer")
	}
}

func TestLoadSenders(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := LoadSenders(write("s.yml", sendersYAML)); err != nil || len(s.Bindings) != 5 {
		t.Fatalf("yaml: %v", err)
	}
	js := `{"senders": [{"identity": "lab", "address": "127.0.0.1", "allow": ["LAB^GHH"]}]}`
	if s, err := LoadSenders(write("s.json", js)); err != nil || s.Bindings[0].Identity != "lab" {
		t.Fatalf("json: %v", err)
	}
	if _, err := LoadSenders(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}

	bad := []struct{ name, doc, field string }{
		{"empty", `{"senders": []}`, "senders"},
		{"unknown field", `{"senders": [{"identity": "a", "adress": "1.2.3.4", "allow": ["A^B"]}]}`, "senders"},
		{"no identity", `{"senders": [{"address": "1.2.3.4", "allow": ["A^B"]}]}`, "senders[0].identity"},
		{"twice", `{"senders": [{"identity": "a", "address": "1.2.3.4", "allow": ["A^B"]}, {"identity": "a", "address": "1.2.3.5", "allow": ["A^B"]}]}`, "senders[1].identity"},
		{"no credential", `{"senders": [{"identity": "a", "allow": ["A^B"]}]}`, "senders[0].client_cert"},
		{"no allow", `{"senders": [{"identity": "a", "address": "1.2.3.4"}]}`, "senders[0].allow"},
		{"allow without caret", `{"senders": [{"identity": "a", "address": "1.2.3.4", "allow": ["LAB"]}]}`, "senders[0].allow[0]"},
		{"bad address", `{"senders": [{"identity": "a", "address": "lab.local", "allow": ["A^B"]}]}`, "senders[0].address"},
		{"bad network", `{"senders": [{"identity": "a", "address": "10.0.0.0/99", "allow": ["A^B"]}]}`, "senders[0].address"},
		{"not json", `senders: []`, "senders"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSenders([]byte(tc.doc), false)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("err = %v, want a ConfigError on %s", err, tc.field)
			}
			var ue httpx.UserError
			if !errors.As(err, &ue) {
				t.Error("not a UserError")
			}
		})
	}
	if _, err := ParseSenders([]byte("senders: [unclosed"), true); err == nil {
		t.Error("bad YAML accepted")
	}
}

func FuzzParseSenders(f *testing.F) {
	f.Add([]byte(sendersYAML), true)
	f.Add([]byte(`{"senders": [{"identity": "lab", "address": "127.0.0.1:99", "allow": ["LAB^GHH"]}]}`), false)
	f.Fuzz(func(t *testing.T, doc []byte, isYAML bool) {
		s, err := ParseSenders(doc, isYAML)
		if err != nil {
			return
		}
		// A configuration that validates never panics on any peer.
		for _, p := range []Peer{{}, {Addr: tcp("127.0.0.1:99")}, {Addr: tcp("[::1]:5"), CertNames: []string{"lab"}}} {
			if b, ok := s.Identify(p); ok {
				b.Allows("LAB^GHH")
			}
		}
	})
}
