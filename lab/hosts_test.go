package lab

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/subcloud"
)

// TestHypervisorHosts: workers and the all-in-one controllers of simplex
// and duplex sites run VMs (their own libvirtd); multi-server controllers
// and bare hosts do not.
func TestHypervisorHosts(t *testing.T) {
	want := map[string]bool{
		"sx/controller-0": true, "dx/controller-0": true, "dx/controller-1": true,
		"std/controller-0": false, "std/controller-1": false, "std/worker-0": true, "std/worker-1": true,
	}
	sites := []SiteSpec{{Name: "sx", Shape: inventory.Simplex}, {Name: "dx", Shape: inventory.Duplex},
		{Name: "std", Shape: inventory.MultiServer, Workers: 2}}
	n := 0
	for i, sp := range sites {
		for _, h := range hostsOf(sp, i) {
			n++
			if w, ok := want[sp.Name+"/"+h.Name]; !ok || h.Hypervisor != w {
				t.Errorf("%s/%s: hypervisor = %v; want %v (listed: %v)", sp.Name, h.Name, h.Hypervisor, w, ok)
			}
		}
	}
	if n != len(want) {
		t.Errorf("%d hosts; want %d", n, len(want))
	}
	if runsVMs(inventory.MultiServer, inventory.PersonalityNone) {
		t.Error("a bare host runs VMs")
	}
	// Only a lab with a hypervisor host needs the test images.
	if !specsRunVMs(sites) {
		t.Error("specsRunVMs(default lab) = false; want true")
	}
	if noVMs := []SiteSpec{{Name: "std", Shape: inventory.MultiServer}}; specsRunVMs(noVMs) {
		t.Error("specsRunVMs(multi-server without workers) = true; want false")
	}
}

// TestHostLibvirtTLS: the files lab up writes for libvirt over TLS. Each
// hypervisor host's libvirtd listens with TLS only, on its mgmt address,
// with a certificate from the lab CA for that address, and admits only
// its own site's controller; each site controller's configuration reaches
// its hosts over qemu+tls with its own client certificate and passes the
// site's configuration checks. Keys are 0600.
func TestHostLibvirtTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "lab CA"); err != nil {
		t.Fatal(err)
	}
	pool, err := pki.CertPool(filepath.Join(dir, "ca", pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(dir, "petrel")
	if err := os.WriteFile(binary, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sites := []SiteSpec{{Name: "dx", Shape: inventory.Duplex}, {Name: "std", Shape: inventory.MultiServer, Workers: 1}}
	dns := map[string]string{}
	for i, sp := range sites {
		lc, err := siteLibvirtClient(dir, sp.Name)
		if err != nil {
			t.Fatal(err)
		}
		dns[sp.Name] = lc.DN
		for _, h := range hostsOf(sp, i) {
			h.Libvirt = lc
			if _, err := prepareHost(dir, "pltest", binary, h, h.Name, "https://site", nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dns["dx"] != "O=Petrel,CN=petrel-site-dx" || dns["dx"] == dns["std"] {
		t.Fatalf("site controllers' DNs = %v; want O=Petrel,CN=petrel-site-<site>, one per site", dns)
	}
	mode := func(path string) os.FileMode {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	for i, sp := range sites {
		// The site controller (controller-0).
		ctl := pathsOf(dir, sp.Name, "controller-0")
		var fc subcloud.FileConfig
		b, err := os.ReadFile(ctl.f("subcloud.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &fc); err != nil {
			t.Fatal(err)
		}
		if fc.Compute == nil || fc.Compute.LibvirtURI != "qemu+tls://{mgmt}:16514/system" || fc.Compute.TLS == nil {
			t.Fatalf("%s controller's compute section = %+v; want qemu+tls with the site's certificate", sp.Name, fc.Compute)
		}
		if _, err := subcloud.ConfigFromFile(fc, server.Config{}); err != nil {
			t.Errorf("%s controller's configuration: %v", sp.Name, err)
		}
		if filepath.Dir(fc.Compute.TLS.KeyFile) != ctl.f("pki/libvirt-client") || filepath.Base(fc.Compute.TLS.CAFile) != "cacert.pem" ||
			filepath.Base(fc.Compute.TLS.CertFile) != "clientcert.pem" || filepath.Base(fc.Compute.TLS.KeyFile) != "clientkey.pem" {
			t.Errorf("%s controller's libvirt files = %+v; want cacert.pem, clientcert.pem, clientkey.pem in pki/libvirt-client (a pkipath)", sp.Name, fc.Compute.TLS)
		}
		if m := mode(fc.Compute.TLS.KeyFile); m != 0o600 {
			t.Errorf("%s controller's libvirt key mode = %04o; want 0600", sp.Name, m)
		}
		// Its hypervisor hosts.
		for _, h := range hostsOf(sp, i) {
			p := pathsOf(dir, sp.Name, h.Name)
			if !h.Hypervisor {
				if _, err := os.Stat(p.f("libvirtd.yaml")); err == nil {
					t.Errorf("%s/%s runs no VMs but has a libvirtd.yaml", sp.Name, h.Name)
				}
				continue
			}
			var lc libvirtd.Config
			b, err := os.ReadFile(p.f("libvirtd.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &lc); err != nil {
				t.Fatal(err)
			}
			mgmt, _ := hostnet.Addr(hostnet.Mgmt, i, h.Index)
			cluster, _ := hostnet.Addr(hostnet.Cluster, i, h.Index)
			// The site's controller, and the site's own hosts (peer-to-peer
			// live migration), are admitted: no other site's.
			want := []string{dns[sp.Name], "O=Petrel,CN=petrel-host-" + sp.Name + "-*"}
			if lc.ListenAddr != mgmt.String() || lc.MigrationAddr != cluster.String() || lc.TLS == nil || !slices.Equal(lc.TLS.AllowedDN, want) {
				t.Errorf("%s/%s libvirtd.yaml = %+v (tls %+v); want TLS on %s admitting %q, migrations on %s", sp.Name, h.Name, lc, lc.TLS, mgmt, want, cluster)
				continue
			}
			if m := mode(lc.TLS.KeyFile); m != 0o600 {
				t.Errorf("%s/%s libvirtd key mode = %04o; want 0600", sp.Name, h.Name, m)
			}
			if m := mode(lc.TLS.PeerKeyFile); m != 0o600 {
				t.Errorf("%s/%s libvirtd peer key mode = %04o; want 0600", sp.Name, h.Name, m)
			}
			certPEM, _ := os.ReadFile(lc.TLS.CertFile)
			block, _ := pem.Decode(certPEM)
			if block == nil {
				t.Fatalf("%s: no PEM certificate", lc.TLS.CertFile)
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: mgmt.String()}); err != nil {
				t.Errorf("%s/%s libvirtd certificate for %s: %v", sp.Name, h.Name, mgmt, err)
			}
			if cert.Subject.CommonName != h.Name || len(cert.IPAddresses) != 1 || addrOf(cert) != mgmt {
				t.Errorf("%s/%s libvirtd certificate: CN %q, IPs %v; want CN %s, IP %s", sp.Name, h.Name, cert.Subject.CommonName, cert.IPAddresses, h.Name, mgmt)
			}
		}
	}
}

func addrOf(c *x509.Certificate) netip.Addr {
	a, _ := netip.AddrFromSlice(c.IPAddresses[0])
	return a.Unmap()
}

// A multi-server site's etcd has three members (controller-0 in the site
// controller, controller-1 and worker-0 as petrel etcd), a simplex site
// one; every member's certificate is from the site's own etcd CA.
func TestSiteEtcdMembers(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "lab CA"); err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(dir, "petrel")
	if err := os.WriteFile(binary, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sites := []SiteSpec{{Name: "sx", Shape: inventory.Simplex}, {Name: "std", Shape: inventory.MultiServer, Workers: 2}}
	for i, sp := range sites {
		lc, err := siteLibvirtClient(dir, sp.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hostsOf(sp, i) {
			h.Libvirt = lc
			if _, err := prepareHost(dir, "pltest", binary, h, h.Name, "https://site", nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(site, host, file string, v any) bool {
		b, err := os.ReadFile(pathsOf(dir, site, host).f(file))
		if err != nil {
			return false
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
		return true
	}
	var fc subcloud.FileConfig
	read("std", "controller-0", "subcloud.yaml", &fc)
	if fc.Etcd == nil || len(fc.Etcd.InitialCluster) != 3 || !slices.Equal(fc.Etcd.Endpoints, []string{fc.Etcd.ClientAddr}) || fc.Etcd.TLS == nil {
		t.Fatalf("std controller-0's etcd = %+v; want a member of three, its client on its own member, with its TLS files", fc.Etcd)
	}
	if !strings.Contains(fc.Etcd.TLS.CAFile, filepath.Join("ca-etcd", "std")) {
		t.Errorf("etcd CA %s; want the site's own", fc.Etcd.TLS.CAFile)
	}
	for host, member := range map[string]bool{"controller-1": true, "worker-0": true, "worker-1": false} {
		var ec subcloud.EtcdConfig
		if got := read("std", host, "etcd.yaml", &ec); got != member {
			t.Errorf("std/%s holds an etcd member: %v; want %v", host, got, member)
		}
		if member && (ec.InitialCluster[host] != ec.PeerAddr || len(ec.InitialCluster) != 3) {
			t.Errorf("std/%s etcd = %+v; want itself in a cluster of three", host, ec)
		}
	}
	fc = subcloud.FileConfig{}
	read("sx", "controller-0", "subcloud.yaml", &fc)
	if fc.Etcd == nil || len(fc.Etcd.InitialCluster) != 0 || len(fc.Etcd.Endpoints) != 1 {
		t.Errorf("sx controller-0's etcd = %+v; want one member alone", fc.Etcd)
	}
}
