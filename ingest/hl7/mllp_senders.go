package hl7

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
)

// SenderBinding ties a sender identity (a client certificate name, or a
// source address) to the MSH-3^MSH-4 values it may send as.
type SenderBinding struct {
	// Identity names the sender in logs and audit records, e.g. "lab-gateway".
	Identity string `json:"identity" yaml:"identity"`
	// ClientCert matches the verified client certificate's subject CN or
	// any of its SANs (DNS, URI, e-mail, IP). Needs mutual TLS.
	ClientCert string `json:"client_cert,omitempty" yaml:"client_cert,omitempty"`
	// Address matches the peer's source IP ("10.1.2.3"), IP and port
	// ("10.1.2.3:5000") or network ("10.1.2.0/24").
	Address string `json:"address,omitempty" yaml:"address,omitempty"`
	// Allow lists the MSH-3^MSH-4 values (namespace ids, component 1 of
	// each) this identity may send as, e.g. "LAB^GHH". "*" after the caret
	// allows any facility for that application ("LAB^*").
	Allow []string `json:"allow" yaml:"allow"`
}

// Senders is the sender-binding configuration. A nil *Senders binds
// nothing: any peer may send as any MSH-3^MSH-4 (the embedded demo's
// default; the server warns at start).
type Senders struct {
	Bindings []SenderBinding `json:"senders" yaml:"senders"`
	nets     []*net.IPNet    // parsed Address networks, by binding index (nil when not a network)
}

// ConfigError names the configuration entry and field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "mllp senders: " + e.Field + ": " + e.Reason }

// UserError marks the text as safe to show the operator.
func (e *ConfigError) UserError() {}

// NewSenders validates bindings into a configuration.
func NewSenders(bindings ...SenderBinding) (*Senders, error) {
	s := &Senders{Bindings: bindings}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadSenders reads a sender-binding file: YAML when its name ends in
// .yaml or .yml, else JSON.
func LoadSenders(path string) (*Senders, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mllp senders: %w", err)
	}
	ext := strings.ToLower(filepath.Ext(path))
	return ParseSenders(b, ext == ".yaml" || ext == ".yml")
}

// ParseSenders decodes and validates a sender-binding document.
func ParseSenders(b []byte, isYAML bool) (*Senders, error) {
	var s Senders
	if isYAML {
		if err := yaml.UnmarshalWithOptions(b, &s, yaml.Strict()); err != nil {
			return nil, &ConfigError{Field: "senders", Reason: "not valid YAML: " + firstLine(err.Error())}
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, &ConfigError{Field: "senders", Reason: "not valid JSON: " + err.Error()}
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (s *Senders) validate() error {
	if len(s.Bindings) == 0 {
		return &ConfigError{Field: "senders", Reason: "at least one binding is required"}
	}
	s.nets = make([]*net.IPNet, len(s.Bindings))
	seen := map[string]bool{}
	for i, b := range s.Bindings {
		field := func(f string) string { return fmt.Sprintf("senders[%d].%s", i, f) }
		switch {
		case strings.TrimSpace(b.Identity) == "":
			return &ConfigError{field("identity"), "is required"}
		case seen[b.Identity]:
			return &ConfigError{field("identity"), "is used twice"}
		case b.ClientCert == "" && b.Address == "":
			return &ConfigError{field("client_cert"), "client_cert or address is required"}
		case len(b.Allow) == 0:
			return &ConfigError{field("allow"), "at least one MSH-3^MSH-4 value is required"}
		}
		seen[b.Identity] = true
		for j, a := range b.Allow {
			if app, _, ok := strings.Cut(a, "^"); !ok || app == "" {
				return &ConfigError{fmt.Sprintf("senders[%d].allow[%d]", i, j), `must be "APP^FACILITY" (or "APP^*")`}
			}
		}
		if b.Address != "" {
			n, err := parseAddress(b.Address)
			if err != nil {
				return &ConfigError{field("address"), err.Error()}
			}
			s.nets[i] = n
		}
	}
	return nil
}

// parseAddress accepts an IP, IP:port or CIDR; it returns the network for
// a CIDR and nil otherwise.
func parseAddress(a string) (*net.IPNet, error) {
	if strings.Contains(a, "/") {
		_, n, err := net.ParseCIDR(a)
		if err != nil {
			return nil, fmt.Errorf("not a valid network")
		}
		return n, nil
	}
	host := a
	if h, _, err := net.SplitHostPort(a); err == nil {
		host = h
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("not an IP address, IP:port or network")
	}
	return nil, nil
}

// Identify returns the binding the peer's credentials select. A binding
// with both ClientCert and Address needs both to match. When several
// match, a certificate binding wins over an address one, and an IP:port
// binding over an IP or network one; ties go to the first listed. ok is
// false when none matches.
func (s *Senders) Identify(p Peer) (b SenderBinding, ok bool) {
	if s == nil {
		return SenderBinding{}, false
	}
	var ip net.IP
	port := ""
	if p.Addr != nil {
		host, pt, err := net.SplitHostPort(p.Addr.String())
		if err == nil {
			ip, port = net.ParseIP(host), pt
		}
	}
	best, bestRank := -1, 0
	for i, b := range s.Bindings {
		rank := 0
		if b.ClientCert != "" {
			if !slices.Contains(p.CertNames, b.ClientCert) {
				continue
			}
			rank += 10
		}
		if b.Address != "" {
			r := s.addressRank(i, ip, port)
			if r == 0 {
				continue
			}
			rank += r
		}
		if rank > bestRank {
			best, bestRank = i, rank
		}
	}
	if best < 0 {
		return SenderBinding{}, false
	}
	return s.Bindings[best], true
}

// addressRank is 2 when binding i's IP:port matches, 1 when its IP or
// network does, 0 otherwise.
func (s *Senders) addressRank(i int, ip net.IP, port string) int {
	if ip == nil || i >= len(s.nets) {
		return 0
	}
	a := s.Bindings[i].Address
	switch {
	case s.nets[i] != nil:
		if s.nets[i].Contains(ip) {
			return 1
		}
	case net.ParseIP(a) != nil:
		if net.ParseIP(a).Equal(ip) {
			return 1
		}
	default: // IP:port
		h, pt, _ := net.SplitHostPort(a)
		if net.ParseIP(h).Equal(ip) && pt == port {
			return 2
		}
	}
	return 0
}

// Allows reports whether the binding may send as source ("APP^FACILITY").
func (b SenderBinding) Allows(source string) bool {
	app, _, _ := strings.Cut(source, "^")
	for _, a := range b.Allow {
		if a == source || a == app+"^*" {
			return true
		}
	}
	return false
}
