package hl7

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of the listener's TLS configuration.
type TLSFiles struct {
	CertFile string // server certificate chain
	KeyFile  string // its private key
	// ClientCAFile, when set, switches on mutual TLS: every client must
	// present a certificate issued by one of these CAs, and the
	// certificate's names identify the sender (see Senders).
	ClientCAFile string
}

// LoadTLSConfig builds the listener's TLS configuration (TLS 1.2 or later).
func LoadTLSConfig(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("mllp tls: both a certificate and a key file are required")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("mllp tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("mllp tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mllp tls: client CA file %s holds no PEM certificate", f.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certNames lists the names a verified client certificate asserts: its
// subject CN, then its DNS, URI, e-mail and IP SANs.
func certNames(cs tls.ConnectionState) []string {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil // unverified certificates identify nobody
	}
	c := cs.PeerCertificates[0]
	var names []string
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	names = append(names, c.DNSNames...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	names = append(names, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}
