package hl7

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and
// client certificates by common name, made in-process for each test.
type pki struct {
	t      testing.TB
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	serial int64
	dir    string // where files writes the PEM files
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &pki{t: t, ca: ca, caKey: key, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1,
		dir: t.TempDir()}
}

// issue makes a leaf certificate signed by the CA.
func (p *pki) issue(cn string, server bool, dns ...string) tls.Certificate {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: dns,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// files writes the server's certificate, key and the client CA as PEM
// files, as an operator would configure them.
func (p *pki) files(dir string) TLSFiles {
	p.t.Helper()
	srv := p.issue("clarion.test", true)
	keyDER, err := x509.MarshalECPrivateKey(srv.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		p.t.Fatal(err)
	}
	f := TLSFiles{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"),
		ClientCAFile: filepath.Join(dir, "ca.pem")}
	write := func(name string, b []byte) {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	write(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}))
	write(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	write(f.ClientCAFile, p.caPEM)
	return f
}

// clientConfig trusts the CA and presents cert (none when cert is nil).
func (p *pki) clientConfig(cert *tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func TestLoadTLSConfig(t *testing.T) {
	p := newPKI(t)
	f := p.files(t.TempDir())
	cfg, err := LoadTLSConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("mTLS not configured: %+v", cfg)
	}
	f.ClientCAFile = ""
	if cfg, err = LoadTLSConfig(f); err != nil || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("plain TLS: %v, %v", cfg.ClientAuth, err)
	}
	bad := []TLSFiles{
		{CertFile: f.CertFile},
		{CertFile: f.CertFile, KeyFile: filepath.Join(t.TempDir(), "missing")},
		{CertFile: f.CertFile, KeyFile: f.KeyFile, ClientCAFile: f.KeyFile}, // no certificate in it
		{CertFile: f.CertFile, KeyFile: f.KeyFile, ClientCAFile: filepath.Join(t.TempDir(), "missing")},
	}
	for i, b := range bad {
		if _, err := LoadTLSConfig(b); err == nil {
			t.Errorf("case %d: want error", i)
		}
	}
}

func TestCertNames(t *testing.T) {
	p := newPKI(t)
	c := p.issue("lab-gw", false, "lab.example.org")
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}
	if got := certNames(cs); got != nil {
		t.Errorf("unverified chain gave names %v", got)
	}
	cs.VerifiedChains = [][]*x509.Certificate{{c.Leaf, p.ca}}
	got := certNames(cs)
	if len(got) != 2 || got[0] != "lab-gw" || got[1] != "lab.example.org" {
		t.Errorf("names = %v", got)
	}
}
