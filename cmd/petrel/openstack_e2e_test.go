package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/hypervisors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/petrel-edge/petrel/lab"
)

// openstackOnTheLab drives a real lab site's OpenStack-compatible API
// with real clients over real VMs: the Debian `openstack` CLI (token
// auth, compute API 2.37) creates, rebuilds, live-migrates and deletes a
// server, and
// gophercloud (token auth) lists the servers the native API made and the
// hypervisors. want are the names of servers that exist already.
func openstackOnTheLab(t *testing.T, lf *lab.File, site cli, want ...string) {
	t.Helper()
	bin, err := exec.LookPath("openstack")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the openstack CLI is missing (python3-openstackclient)")
		}
		t.Log("skipping the openstack CLI part: not installed")
	}
	s := lf.Sites[0]
	osc := func(args ...string) string {
		t.Helper()
		if bin == "" {
			return ""
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--os-auth-url", s.URL + "/identity/v3", "--os-auth-type", "token",
			"--os-project-name", "admin", "--os-project-domain-name", "Default", "--os-cacert", lf.CACert,
			"--os-compute-api-version", "2.37"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8", "OS_TOKEN=" + s.Token,
			"OS_CLIENT_CONFIG_FILE=/nonexistent", "PYTHONDONTWRITEBYTECODE=1"}
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("openstack %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
		}
		t.Logf("openstack %s: %.1f s", strings.Join(args, " "), time.Since(start).Seconds())
		return out.String()
	}
	if bin != "" {
		osc("server", "create", "--image", "petrel-test", "--flavor", "m1.tiny", "--nic", "none", "--wait", "vm-os")
		var sv map[string]any
		json.Unmarshal([]byte(osc("server", "show", "vm-os", "-f", "json")), &sv)
		if sv["status"] != "ACTIVE" || sv["OS-EXT-SRV-ATTR:host"] == "" {
			t.Errorf("openstack server show vm-os: %v", sv)
		}
		if out := site.ok("server", "show", "vm-os", "-o", "json"); !strings.Contains(out, `"active"`) {
			t.Errorf("petrel server show of the OpenStack-made server:\n%s", out)
		}
		osc("server", "rebuild", "--image", "petrel-test-v2", "--wait", "vm-os")
		if out := site.ok("server", "show", "vm-os", "-o", "json"); !strings.Contains(out, `"petrel-test-v2"`) {
			t.Errorf("after openstack server rebuild:\n%s", out)
		}
		// A live migration through Nova's os-migrateLive.
		var before struct {
			Host string `json:"host"`
		}
		json.Unmarshal([]byte(site.ok("server", "show", "vm-os", "-o", "json")), &before)
		target := "controller-0"
		if before.Host == target {
			target = "controller-1"
		}
		osc("server", "migrate", "--live-migration", "--host", target, "--wait", "vm-os")
		if out := site.ok("server", "show", "vm-os", "-o", "json"); !strings.Contains(out, `"host": "`+target+`"`) || !strings.Contains(out, `"phase": "done"`) {
			t.Errorf("after openstack server migrate --live-migration --host %s:\n%s", target, out)
		}
		if out := osc("hypervisor", "list", "-f", "json"); strings.Count(out, "controller-") != 2 {
			t.Errorf("openstack hypervisor list:\n%s", out)
		}
	}

	// gophercloud, token auth, over the lab's TLS.
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(lf.CACert)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("lab CA %s: %v", lf.CACert, err)
	}
	ctx := context.Background()
	p, err := openstack.NewClient(s.URL + "/identity/v3")
	if err != nil {
		t.Fatal(err)
	}
	p.HTTPClient = http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if err := openstack.Authenticate(ctx, p, gophercloud.AuthOptions{IdentityEndpoint: s.URL + "/identity/v3", TokenID: s.Token}); err != nil {
		t.Fatalf("gophercloud token auth: %v", err)
	}
	cc, err := openstack.NewComputeV2(p, gophercloud.EndpointOpts{Region: s.Name})
	if err != nil {
		t.Fatal(err)
	}
	cc.Microversion = "2.37"
	pages, err := servers.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svs, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, sv := range svs {
		got[sv.Name] = sv.Status
	}
	if bin != "" {
		want = append(want, "vm-os")
	}
	for _, name := range want {
		if got[name] != "ACTIVE" {
			t.Errorf("gophercloud servers: %s is %q; all: %v", name, got[name], got)
		}
	}
	hpages, err := hypervisors.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hvs, err := hypervisors.ExtractHypervisors(hpages)
	if err != nil || len(hvs) != 2 {
		t.Errorf("gophercloud hypervisors: %d, %v", len(hvs), err)
	}
	if bin != "" {
		osc("server", "delete", "--wait", "vm-os")
		if out := site.ok("server", "list"); strings.Contains(out, "vm-os") {
			t.Errorf("vm-os still listed after openstack server delete:\n%s", out)
		}
	}
}
