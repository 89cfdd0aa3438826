// Package pki is Petrel's small internal certificate authority: it creates a
// CA on first use, issues server certificates for daemons (and, later, client
// certificates bound to a machine identity), and builds TLS configurations
// that trust only that CA.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA is a certificate authority with its signing key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// LoadOrCreateCA loads the CA kept in dir, creating it (key mode 0600) when
// dir holds none.
func LoadOrCreateCA(dir, commonName string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if _, err := os.Stat(certPath); err == nil {
		return LoadCA(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Petrel"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	// Key first: a CA certificate on disk always has its key beside it.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(certPath, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return nil, err
	}
	return LoadCA(dir)
}

// LoadCA loads the CA kept in dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA in %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("pki: %s does not hold a CA", dir)
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: signer}, nil
}

// Issued is a certificate and its private key, PEM-encoded.
type Issued struct {
	CertPEM []byte
	KeyPEM  []byte
}

// An IssueOption adjusts a certificate before the CA signs it.
type IssueOption func(*x509.Certificate)

// NoKeyUsage leaves out the key usage extension (so it restricts nothing),
// for peers that apply GnuTLS-era checks, such as libvirtd: it refuses a
// certificate whose key usage, marked critical as here, lacks
// keyEncipherment, which RFC 5480 does not allow for the ECDSA keys this
// CA issues. The extended key usage (server or client) stays.
func NoKeyUsage(c *x509.Certificate) { c.KeyUsage = 0 }

// IssueServer issues a server certificate for the given DNS names and IPs.
func (ca *CA) IssueServer(commonName string, dnsNames []string, ips []net.IP, validity time.Duration, opts ...IssueOption) (Issued, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, Organization: []string{"Petrel"}},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, validity, opts...)
}

// IssuePeer issues a certificate valid for both server and client
// authentication, for daemons that serve and dial their own kind with one
// identity (the members of an etcd cluster: each serves its peers and
// clients and dials the other members).
func (ca *CA) IssuePeer(commonName string, dnsNames []string, ips []net.IP, validity time.Duration, opts ...IssueOption) (Issued, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, Organization: []string{"Petrel"}},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, validity, opts...)
}

// IssueClient issues a client certificate whose common name is the identity
// it is bound to (a machine identity, a site name).
func (ca *CA) IssueClient(identity string, validity time.Duration, opts ...IssueOption) (Issued, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: identity, Organization: []string{"Petrel"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, validity, opts...)
}

// SignClientCSR signs a client certificate for a key that never leaves its
// owner: the CSR's signature is checked, and the certificate names identity
// (whatever the CSR asked) with org as its organizational unit. It returns
// the certificate (PEM) and its serial number (hex).
func (ca *CA) SignClientCSR(csrPEM []byte, identity, org string, validity time.Duration) ([]byte, string, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, "", errors.New("pki: not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("pki: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("pki: certificate request signature: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: identity, Organization: []string{"Petrel"}, OrganizationalUnit: []string{org}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, "", fmt.Errorf("pki: sign %s: %w", identity, err)
	}
	return pemBlock("CERTIFICATE", der), tmpl.SerialNumber.Text(16), nil
}

func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration, opts ...IssueOption) (Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: issue %s: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return Issued{}, err
	}
	return Issued{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// Write stores the certificate (0644) and key (0600).
func (is Issued) Write(certPath, keyPath string) error {
	if err := atomicfile.Write(keyPath, is.KeyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, is.CertPEM, 0o644)
}

// CertPool returns a pool holding the PEM certificates in file.
func CertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// ServerTLS returns a server TLS configuration (TLS 1.2 or later).
func ServerTLS(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: server certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(errors.New("pki: no randomness: " + err.Error()))
	}
	return n
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// NewCSR makes a key and a certificate request for commonName; the key
// stays with its owner, the request goes to the CA.
func NewCSR(commonName string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return keyPEM, pemBlock("CERTIFICATE REQUEST", der), nil
}
