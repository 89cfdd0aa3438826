package libvirt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/pki"
)

// TestTLS runs a private libvirtd with a TLS listener only (a random
// 127.x address, port 16514) and checks both sides of the mutual
// authentication: a client whose certificate the daemon's CA signed and
// whose DN is allowed connects and lists domains; a client with no
// certificate, with one from another CA, or with a DN not on the list is
// refused (ErrCertRefused); the client refuses a daemon whose certificate
// names another address, or comes from another CA; plain TCP finds no
// listener; qemu+tls without a TLS configuration is ErrNoTLSConfig.
func TestTLS(t *testing.T) {
	need(t)
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "test libvirt CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadOrCreateCA(filepath.Join(dir, "other-ca"), "another CA")
	if err != nil {
		t.Fatal(err)
	}
	addr := net.IPv4(127, byte(1+rand.IntN(250)), byte(rand.IntN(256)), byte(2+rand.IntN(250)))
	srv, err := ca.IssueServer("hv-0", nil, []net.IP{addr}, time.Hour, pki.NoKeyUsage)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, is pki.Issued) (string, string) {
		t.Helper()
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := is.Write(c, k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	srvCert, srvKey := write("server", srv)
	good, err := ca.IssueClient("petrel-site-east", time.Hour, pki.NoKeyUsage)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := libvirtd.Config{Dir: filepath.Join(dir, "libvirtd"), ListenAddr: addr.String(),
		TLS: &libvirtd.TLSConfig{CAFile: filepath.Join(dir, "ca", pki.CACertFile), CertFile: srvCert, KeyFile: srvKey,
			AllowedDN: []string{subject(t, good)}}}
	d, err := libvirtd.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if fi, err := os.Stat(filepath.Join(d.Dir(), "etc", "pki", "serverkey.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("daemon's copy of the key: %v, %v; want mode 0600", fi, err)
	}
	conf, _ := os.ReadFile(filepath.Join(d.Dir(), "etc", "libvirtd.conf"))
	for _, want := range []string{"listen_tls = 1\n", "listen_tcp = 0\n", `tls_port = "16514"`, "tls_no_verify_certificate = 0\n",
		`auth_tls = "none"`, `key_file = "/etc/libvirt/pki/serverkey.pem"`} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("libvirtd.conf lacks %q:\n%s", want, conf)
		}
	}

	uri := libvirtd.TLSURI(addr.String())
	clientTLS := func(c *pki.Issued, roots *x509.CertPool) *tls.Config {
		tc := &tls.Config{RootCAs: roots}
		if c != nil {
			pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		return tc
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)

	// The daemon answers ~at once, but its TLS listener may lag its unix
	// socket by a moment: wait for the good client.
	var drv *Driver
	for deadline := time.Now().Add(30 * time.Second); ; {
		drv, err = DialOptions(ctx, uri, Options{TLS: clientTLS(&good, roots)})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("DialOptions(%s, allowed client) = %v; want a connection; daemon log:\n%s", uri, err, d.LogTail())
	}
	doms, err := drv.List(ctx)
	if err != nil || len(doms) != 0 {
		t.Errorf("List over TLS = %v, %v; want none", doms, err)
	}
	if v, err := drv.Version(ctx); err != nil || v == "" {
		t.Errorf("Version over TLS = %q, %v", v, err)
	}
	drv.Close()

	// The daemon refuses these clients.
	strangerCA, err := other.IssueClient("petrel-site-east", time.Hour, pki.NoKeyUsage) // same DN, another CA
	if err != nil {
		t.Fatal(err)
	}
	wrongDN, err := ca.IssueClient("petrel-site-west", time.Hour, pki.NoKeyUsage) // our CA, another site
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cert *pki.Issued
	}{{"no certificate", nil}, {"certificate from another CA", &strangerCA}, {"DN not allowed", &wrongDN}} {
		drv, err := DialOptions(ctx, uri, Options{TLS: clientTLS(c.cert, roots)})
		if err == nil {
			drv.Close()
			t.Errorf("DialOptions(%s): connected; want refused", c.name)
			continue
		}
		if !errors.Is(err, ErrCertRefused) {
			t.Errorf("DialOptions(%s) = %v; want ErrCertRefused", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
	}

	// The client refuses a daemon whose certificate does not name the
	// address dialled (the URI names 127.0.0.9; the connection goes to
	// the daemon), or that another CA signed.
	lying := strings.Replace(uri, addr.String(), "127.0.0.9", 1)
	redirect := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, network, net.JoinHostPort(addr.String(), "16514"))
	}
	var hostErr x509.HostnameError
	if drv, err := DialOptions(ctx, lying, Options{TLS: clientTLS(&good, roots), DialContext: redirect}); err == nil {
		drv.Close()
		t.Errorf("DialOptions(%s → daemon for %s) connected; want the certificate refused", lying, addr)
	} else if !errors.As(err, &hostErr) {
		t.Errorf("DialOptions(%s → daemon for %s) = %v; want an x509.HostnameError", lying, addr, err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(other.CertPEM)
	var authErr x509.UnknownAuthorityError
	if drv, err := DialOptions(ctx, uri, Options{TLS: clientTLS(&good, otherRoots)}); err == nil {
		drv.Close()
		t.Errorf("DialOptions(%s) trusting another CA connected; want the certificate refused", uri)
	} else if !errors.As(err, &authErr) {
		t.Errorf("DialOptions(%s) trusting another CA = %v; want an x509.UnknownAuthorityError", uri, err)
	}

	// No plain TCP listener; no TLS configuration, no qemu+tls.
	if drv, err := Dial(ctx, libvirtd.TCPURI(addr.String())); err == nil {
		drv.Close()
		t.Errorf("Dial(%s) connected; want no TCP listener", libvirtd.TCPURI(addr.String()))
	}
	if _, err := Dial(ctx, uri); !errors.Is(err, ErrNoTLSConfig) {
		t.Errorf("Dial(%s) without TLS = %v; want ErrNoTLSConfig", uri, err)
	}
}

// subject is the subject DN of an issued certificate as libvirtd's
// tls_allowed_dn_list matches it.
func subject(t *testing.T, is pki.Issued) string {
	t.Helper()
	pair, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	dn, err := libvirtd.SubjectDN(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "O=Petrel,CN=" + c.Subject.CommonName; dn != want {
		t.Fatalf("SubjectDN(%s) = %q; want %q", c.Subject, dn, want)
	}
	return dn
}
