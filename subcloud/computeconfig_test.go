package subcloud

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/pki"
)

// TestComputeConfigTLS: the compute section's libvirt URI and TLS files
// are checked when the configuration is loaded. qemu+tls needs readable
// files that make a valid pair (the key 0600) and becomes the default
// when they are given; qemu+tcp stays the default without them and is
// refused with them; a qemu+tls URI without them is a configuration error.
func TestComputeConfigTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca", pki.CACertFile)
	issue := func(name string, validity time.Duration) (string, string) {
		t.Helper()
		is, err := ca.IssueClient(name, validity, pki.NoKeyUsage)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := is.Write(c, k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	cert, key := issue("petrel-site-a", time.Hour)
	otherCert, _ := issue("petrel-site-b", time.Hour)
	expired, expiredKey := issue("old", -time.Minute)
	openKey := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(key)
	if err := os.WriteFile(openKey, b, 0o644); err != nil {
		t.Fatal(err)
	}
	good := &LibvirtTLS{CAFile: caFile, CertFile: cert, KeyFile: key}

	for _, c := range []struct {
		name    string
		cfg     *ComputeConfig
		wantURI string
		wantTLS bool
	}{
		{"no compute section", nil, InsecureLibvirtURI, false},
		{"tls, default URI", &ComputeConfig{TLS: good}, DefaultLibvirtURI, true},
		{"tls, URI without port", &ComputeConfig{LibvirtURI: "qemu+tls://{mgmt}/system", TLS: good}, "qemu+tls://{mgmt}/system", true},
		{"tcp, lab only", &ComputeConfig{LibvirtURI: InsecureLibvirtURI}, InsecureLibvirtURI, false},
	} {
		cs, err := c.cfg.setup()
		if err != nil {
			t.Errorf("%s: setup() = %v", c.name, err)
			continue
		}
		if cs.uri != c.wantURI || (cs.tls != nil) != c.wantTLS || cs.mc.Connect == nil {
			t.Errorf("%s: setup() = uri %q, tls %v; want %q, %v", c.name, cs.uri, cs.tls != nil, c.wantURI, c.wantTLS)
		}
		if cs.tls != nil && (len(cs.tls.Certificates) != 1 || cs.tls.RootCAs == nil || cs.tls.MinVersion < tls.VersionTLS12) {
			t.Errorf("%s: client TLS = %+v; want a certificate, the CA and TLS 1.2+", c.name, cs.tls)
		}
	}

	for _, c := range []struct {
		name    string
		cfg     *ComputeConfig
		wantErr error // beyond non-nil
	}{
		{"qemu+tls without tls", &ComputeConfig{LibvirtURI: DefaultLibvirtURI}, nil},
		{"tls with qemu+tcp", &ComputeConfig{LibvirtURI: InsecureLibvirtURI, TLS: good}, nil},
		{"other transport", &ComputeConfig{LibvirtURI: "qemu+ssh://{mgmt}/system", TLS: good}, nil},
		{"no {mgmt}", &ComputeConfig{LibvirtURI: "qemu+tls://10.0.0.1/system", TLS: good}, nil},
		{"missing key_file", &ComputeConfig{TLS: &LibvirtTLS{CAFile: caFile, CertFile: cert}}, nil},
		{"unreadable CA", &ComputeConfig{TLS: &LibvirtTLS{CAFile: filepath.Join(dir, "nope.crt"), CertFile: cert, KeyFile: key}}, fs.ErrNotExist},
		{"unreadable key", &ComputeConfig{TLS: &LibvirtTLS{CAFile: caFile, CertFile: cert, KeyFile: filepath.Join(dir, "nope.key")}}, fs.ErrNotExist},
		{"certificate and key not a pair", &ComputeConfig{TLS: &LibvirtTLS{CAFile: caFile, CertFile: otherCert, KeyFile: key}}, nil},
		{"CA file not a certificate", &ComputeConfig{TLS: &LibvirtTLS{CAFile: key, CertFile: cert, KeyFile: key}}, nil},
		{"key readable by others", &ComputeConfig{TLS: &LibvirtTLS{CAFile: caFile, CertFile: cert, KeyFile: openKey}}, nil},
		{"expired certificate", &ComputeConfig{TLS: &LibvirtTLS{CAFile: caFile, CertFile: expired, KeyFile: expiredKey}}, nil},
	} {
		_, err := c.cfg.setup()
		if err == nil || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
			t.Errorf("%s: setup() = %v; want an error (%v)", c.name, err, c.wantErr)
			continue
		}
		t.Logf("%s: %v", c.name, err)
	}
}
