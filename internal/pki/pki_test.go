package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/pki"
)

func TestCAIssuesVerifiableCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	again, err := pki.LoadOrCreateCA(dir, "other")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("LoadOrCreateCA twice made a new CA (%v)", err)
	}
	pool, err := pki.CertPool(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer("central", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := parse(t, srv.CertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("server certificate does not verify for 127.0.0.1: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"}); err == nil {
		t.Error("server certificate verifies for a name it was not issued for")
	}
	cli, err := ca.IssueClient("machine-1234", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc := parse(t, cli.CertPEM)
	if _, err := cc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cc.Subject.CommonName != "machine-1234" {
		t.Errorf("client certificate: CN %q, verify %v", cc.Subject.CommonName, err)
	}
	// A certificate from another CA does not verify.
	other, _ := pki.LoadOrCreateCA(t.TempDir(), "other CA")
	foreign, _ := other.IssueServer("x", []string{"localhost"}, nil, time.Hour)
	if _, err := parse(t, foreign.CertPEM).Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err == nil {
		t.Error("a foreign CA's certificate verifies against our CA")
	}
}

func parse(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNoKeyUsage: NoKeyUsage leaves out the key usage extension (libvirtd
// refuses ECDSA certificates whose critical key usage lacks
// keyEncipherment) and keeps the extended key usage; by default a
// certificate has digitalSignature only.
func TestNoKeyUsage(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ca.IssueClient("a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := parse(t, plain.CertPEM).KeyUsage; got != x509.KeyUsageDigitalSignature {
		t.Errorf("IssueClient key usage = %v; want digitalSignature", got)
	}
	srv, err := ca.IssueServer("h", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, pki.NoKeyUsage)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.IssueClient("a", time.Hour, pki.NoKeyUsage)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cert *x509.Certificate
		eku  x509.ExtKeyUsage
	}{{parse(t, srv.CertPEM), x509.ExtKeyUsageServerAuth}, {parse(t, cli.CertPEM), x509.ExtKeyUsageClientAuth}} {
		for _, ext := range c.cert.Extensions {
			if ext.Id.Equal([]int{2, 5, 29, 15}) {
				t.Errorf("%s has a key usage extension; want none", c.cert.Subject)
			}
		}
		if len(c.cert.ExtKeyUsage) != 1 || c.cert.ExtKeyUsage[0] != c.eku {
			t.Errorf("%s extended key usage = %v; want [%v]", c.cert.Subject, c.cert.ExtKeyUsage, c.eku)
		}
	}
}

// TestIssuePeer: a peer certificate verifies as a server certificate for
// its IP and as a client certificate.
func TestIssuePeer(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.CertPool(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ca.IssuePeer("m0", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, peer.CertPEM)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("peer certificate for usage %v: %v", eku, err)
		}
	}
	if c.Subject.CommonName != "m0" {
		t.Errorf("peer certificate CN = %q; want m0", c.Subject.CommonName)
	}
}
