package libvirtd

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/pki"
)

// TestConf: libvirtd.conf for a daemon without a listener, with plain TCP
// and with TLS (TLS only, the copied files by their paths in the daemon's
// mount namespace, client certificates verified, the allowed DNs).
func TestConf(t *testing.T) {
	for _, c := range []struct {
		name      string
		cfg       Config
		want, not []string
	}{
		{"no listener", Config{HostUUID: "u"}, []string{"listen_tls = 0\n", "listen_tcp = 0\n"}, []string{"listen_addr"}},
		{"tcp", Config{HostUUID: "u", ListenAddr: "10.0.0.1"},
			[]string{"listen_tls = 0\n", "listen_tcp = 1\n", `listen_addr = "10.0.0.1"`, `auth_tcp = "none"`}, []string{"tls_port"}},
		{"tls", Config{HostUUID: "u", ListenAddr: "10.0.0.1", TLS: &TLSConfig{AllowedDN: []string{"O=Petrel,CN=a", "O=Petrel,CN=b"}}},
			[]string{"listen_tls = 1\n", "listen_tcp = 0\n", `tls_port = "16514"`, `listen_addr = "10.0.0.1"`,
				`ca_file = "/etc/libvirt/pki/cacert.pem"`, `cert_file = "/etc/libvirt/pki/servercert.pem"`,
				`key_file = "/etc/libvirt/pki/serverkey.pem"`, "tls_no_verify_certificate = 0\n", `auth_tls = "none"`,
				`tls_allowed_dn_list = ["O=Petrel,CN=a", "O=Petrel,CN=b"]`}, []string{"auth_tcp"}},
	} {
		conf := libvirtdConf(c.cfg)
		for _, w := range c.want {
			if !strings.Contains(conf, w) {
				t.Errorf("%s: libvirtd.conf lacks %q:\n%s", c.name, w, conf)
			}
		}
		for _, n := range c.not {
			if strings.Contains(conf, n) {
				t.Errorf("%s: libvirtd.conf has %q:\n%s", c.name, n, conf)
			}
		}
	}
	if got, want := TLSURI("10.88.0.10"), "qemu+tls://10.88.0.10:16514/system"; got != want {
		t.Errorf("TLSURI = %q; want %q", got, want)
	}
}

// TestInstallTLS: the files are checked before the daemon starts (a
// server certificate the CA signed, its key 0600, DNs that fit in
// libvirtd.conf) and copied into etc/pki with the key 0600; the DN is in
// libvirt's order.
func TestInstallTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadOrCreateCA(filepath.Join(dir, "other"), "other CA")
	if err != nil {
		t.Fatal(err)
	}
	write := func(ca *pki.CA, name string, client bool) (string, string, *x509.Certificate) {
		t.Helper()
		var is pki.Issued
		var err error
		if client {
			is, err = ca.IssueClient(name, time.Hour, pki.NoKeyUsage)
		} else {
			is, err = ca.IssueServer(name, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, pki.NoKeyUsage)
		}
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := is.Write(c, k); err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(is.CertPEM)
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c, k, cert
	}
	caFile := filepath.Join(dir, "ca", pki.CACertFile)
	cert, key, _ := write(ca, "hv", false)
	strayCert, strayKey, _ := write(other, "stray", false)
	clientCert, clientKey, client := write(ca, "petrel-site-a", true)
	dn, err := SubjectDN(client)
	if err != nil || dn != "O=Petrel,CN=petrel-site-a" {
		t.Errorf("SubjectDN = %q, %v; want O=Petrel,CN=petrel-site-a", dn, err)
	}
	openKey := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(key)
	if err := os.WriteFile(openKey, b, 0o640); err != nil {
		t.Fatal(err)
	}
	good := TLSConfig{CAFile: caFile, CertFile: cert, KeyFile: key, AllowedDN: []string{dn}}
	daemon := filepath.Join(dir, "daemon")
	if err := installTLS(daemon, &good); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"serverkey.pem": 0o600, "servercert.pem": 0o644, "cacert.pem": 0o644} {
		if fi, err := os.Stat(filepath.Join(daemon, "etc", "pki", name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("etc/pki/%s: %v, %v; want mode %04o", name, fi, err, mode)
		}
	}
	for _, c := range []struct {
		name string
		edit func(*TLSConfig)
	}{
		{"no allowed DN", func(c *TLSConfig) { c.AllowedDN = nil }},
		{"a quote in a DN", func(c *TLSConfig) { c.AllowedDN = []string{`CN=a"]`} }},
		{"a newline in a DN", func(c *TLSConfig) { c.AllowedDN = []string{"CN=a\nlisten_tcp = 1"} }},
		{"certificate from another CA", func(c *TLSConfig) { c.CertFile, c.KeyFile = strayCert, strayKey }},
		{"client certificate", func(c *TLSConfig) { c.CertFile, c.KeyFile = clientCert, clientKey }},
		{"certificate and key not a pair", func(c *TLSConfig) { c.KeyFile = clientKey }},
		{"key readable by group", func(c *TLSConfig) { c.KeyFile = openKey }},
		{"missing CA", func(c *TLSConfig) { c.CAFile = filepath.Join(dir, "nope") }},
	} {
		bad := good
		c.edit(&bad)
		if err := installTLS(filepath.Join(dir, "bad"), &bad); err == nil {
			t.Errorf("installTLS(%s) = nil; want an error", c.name)
		}
	}
}
