package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/lab"
)

// TestServersInTheLab boots real QEMU guests on a duplex lab site (two
// all-in-one controllers, each with its own libvirtd) through the CLI:
// the images and flavors lab up seeded, anti-affinity across the hosts,
// stop/start/hard reboot/rebuild onto petrel-test-v2 (seen on the
// guest's console), a flavor larger than any host refused with nothing
// created, and the power loss of a hypervisor host: its server is
// recorded failed with 700.001, and when host management has the host
// back, shutoff with 700.004; it starts again. Then the OpenStack-compatible
// API with the openstack CLI and gophercloud, and everything is deleted.
func TestServersInTheLab(t *testing.T) {
	start := time.Now()
	base, site, lf := duplexVMLab(t, "site-c")
	t.Logf("lab up: %s", time.Since(start).Round(time.Millisecond))

	type serverView struct {
		ID, Name, Status, Task, Host, Fault string
		ImageName                           string `json:"image_name"`
	}
	show := func(name string) serverView {
		t.Helper()
		var sv serverView
		if err := json.Unmarshal([]byte(site.ok("server", "show", name, "-o", "json")), &sv); err != nil {
			t.Fatal(err)
		}
		return sv
	}
	waitServer := func(name, what string, limit time.Duration, cond func(serverView) bool) serverView {
		t.Helper()
		deadline := time.Now().Add(limit)
		var sv serverView
		for time.Now().Before(deadline) {
			if sv = show(name); cond(sv) {
				return sv
			}
			time.Sleep(200 * time.Millisecond) // polling with a deadline
		}
		t.Fatalf("server %s: not %s within %s; last %+v", name, what, limit, sv)
		return sv
	}
	// console waits until the guest's console holds want n times.
	console := func(name, want string, n int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		var out string
		for time.Now().Before(deadline) {
			out = site.ok("server", "console-log", name)
			if strings.Count(out, want) >= n {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Fatalf("console of %s: %q not seen %d times within 90s; it ends:\n%s", name, want, n, lastLines(out, 15))
	}
	alarmActive := func(id, serverID string) bool {
		return strings.Contains(site.ok("alarm", "list", "--alarm_id", id), "instance="+serverID)
	}

	// What lab up seeded.
	if out := site.ok("image", "list"); !strings.Contains(out, "petrel-test-v2") || !strings.Contains(out, "active") {
		t.Fatalf("seeded images:\n%s", out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := site.ok("hypervisor", "list")
		if strings.Count(out, " up ") == 2 && strings.Count(out, "enabled") == 2 {
			t.Logf("hypervisors up %s after lab up:\n%s", time.Since(start).Round(time.Millisecond), out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two hypervisors not up and enabled:\n%s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The site controller reaches them over mutually authenticated TLS
	// (qemu+tls, its own client certificate); the lab has no TCP listener.
	var hvs struct {
		Items []struct {
			Host  string
			State string
			URI   string `json:"hypervisor_uri"`
		}
	}
	if err := json.Unmarshal([]byte(site.ok("hypervisor", "list", "-o", "json")), &hvs); err != nil {
		t.Fatal(err)
	}
	for _, h := range hvs.Items {
		if !strings.HasPrefix(h.URI, "qemu+tls://") || !strings.HasSuffix(h.URI, ":16514/system") || h.State != "up" {
			t.Errorf("hypervisor %s: %s at %q; want up at qemu+tls://MGMT:16514/system", h.Host, h.State, h.URI)
		}
	}

	// A flavor larger than any host: refused, nothing created.
	site.ok("flavor", "create", "m1.huge", "--vcpus", "1", "--ram", "1048576", "--disk", "1")
	if errOut := site.exit(1, "server", "create", "big", "--image", "petrel-test", "--flavor", "m1.huge"); !strings.Contains(errOut, "no valid host") ||
		!strings.Contains(errOut, "controller-1: needs 1048576 MiB of memory") {
		t.Errorf("huge server: %s", errOut)
	}
	if out := site.ok("server", "list", "-o", "json"); strings.Contains(out, `"big"`) {
		t.Errorf("a refused server was recorded:\n%s", out)
	}

	// Two servers of an anti-affinity group land on different hosts.
	site.ok("server-group", "create", "ha", "--policy", "anti-affinity")
	start = time.Now()
	site.ok("server", "create", "vm-a", "--image", "petrel-test", "--flavor", "m1.tiny", "--group", "ha", "--wait")
	t.Logf("server create --wait (image copy, overlay, define, start): %s", time.Since(start).Round(time.Millisecond))
	site.ok("server", "create", "vm-b", "--image", "petrel-test", "--flavor", "m1.tiny", "--group", "ha", "--wait")
	a, b := show("vm-a"), show("vm-b")
	if a.Host == b.Host || a.Status != "active" || b.Status != "active" {
		t.Fatalf("anti-affinity: vm-a %+v, vm-b %+v", a, b)
	}
	start = time.Now()
	console("vm-a", "=== IMAGE v1 BOOTED", 1)
	t.Logf("vm-a banner %s after active", time.Since(start).Round(time.Millisecond))
	console("vm-a", "HEARTBEAT v1", 1)
	var st struct {
		State  string `json:"state"`
		RSSMiB int64  `json:"rss_mib"`
		CPU    uint64 `json:"cpu_time_ns"`
	}
	if err := json.Unmarshal([]byte(site.ok("server", "stats", "vm-a", "-o", "json")), &st); err != nil || st.State != "running" || st.RSSMiB < 16 || st.CPU == 0 {
		t.Errorf("server stats vm-a: %+v, %v", st, err)
	}
	if errOut := site.exit(1, "server-group", "delete", "ha"); !strings.Contains(errOut, "members") {
		t.Errorf("deleting a group with members: %s", errOut)
	}

	// Stop, start, hard reboot, rebuild onto v2.
	site.ok("server", "stop", "vm-a", "--wait")
	if sv := show("vm-a"); sv.Status != "shutoff" {
		t.Errorf("after stop: %+v", sv)
	}
	if errOut := site.exit(1, "server", "stop", "vm-a"); !strings.Contains(errOut, "shutoff") {
		t.Errorf("stopping a stopped server: %s", errOut)
	}
	site.ok("server", "start", "vm-a", "--wait")
	console("vm-a", "=== IMAGE v1 BOOTED", 2)
	site.ok("server", "reboot", "vm-a", "--hard", "--wait")
	console("vm-a", "=== IMAGE v1 BOOTED", 3)
	site.ok("server", "rebuild", "vm-a", "--image", "petrel-test-v2", "--wait")
	if sv := show("vm-a"); sv.ImageName != "petrel-test-v2" || sv.ID != a.ID || sv.Host != a.Host {
		t.Errorf("after rebuild: %+v (before %+v)", sv, a)
	}
	console("vm-a", "=== IMAGE v2 BOOTED", 1)
	console("vm-a", "INSTANCE-CREATED first-boot", 1) // a fresh disk: the guest's first boot on it
	if errOut := site.exit(1, "image", "delete", "petrel-test-v2"); !strings.Contains(errOut, "in use") {
		t.Errorf("deleting an image in use: %s", errOut)
	}

	// Power loss of the host that is not the site controller's.
	victim := a
	if victim.Host == "controller-0" {
		victim = b
	}
	base.ok("lab", "fault", "power-off", "site-c/"+victim.Host)
	// Host management has the host failed within ~1.5 s and powers it on
	// through its BMC ~0.5 s later, so the site may see it lost only
	// briefly, or only see it back with a new boot ID: either way the
	// server is recorded failed with its host (700.001 raised), then,
	// with its host back and its domain shut off, shutoff (700.001
	// cleared, 700.004 raised).
	sv := waitServer(victim.Name, "shutoff after the host's return", 120*time.Second, func(sv serverView) bool {
		return sv.Status == "shutoff" && strings.Contains(sv.Fault, victim.Host)
	})
	if ev := site.ok("event", "list", "--alarm-id", "700.001", "--entity", "instance="+victim.ID, "-o", "json"); !strings.Contains(ev, `"type": "set"`) || !strings.Contains(ev, `"type": "clear"`) {
		t.Errorf("700.001 events for the host's power loss:\n%s", ev)
	}
	if alarmActive("700.001", victim.ID) || !alarmActive("700.004", victim.ID) {
		t.Errorf("host back (%+v): 700.001 active %v, 700.004 active %v", sv, alarmActive("700.001", victim.ID), alarmActive("700.004", victim.ID))
	}
	site.ok("server", "start", victim.Name, "--wait")
	if alarmActive("700.004", victim.ID) {
		t.Error("700.004 still active after start")
	}
	if out := site.ok("event", "list", "--alarm-id", "700.101", "-o", "json"); !strings.Contains(out, victim.Name) {
		t.Errorf("no 700.101 log entries for %s", victim.Name)
	}

	// The same servers through the OpenStack-compatible API.
	openstackOnTheLab(t, lf, site, "vm-a", "vm-b")

	for _, name := range []string{"vm-a", "vm-b"} {
		site.ok("server", "delete", name, "--wait")
	}
	if out := site.ok("server", "list", "-o", "json"); strings.Contains(out, `"vm-`) {
		t.Errorf("servers left after delete:\n%s", out)
	}
	site.ok("server-group", "delete", "ha")
	site.ok("image", "delete", "petrel-test-v2")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// duplexVMLab brings up a lab with one duplex site named site (two
// all-in-one hosts, each with its own libvirtd), taken down when the test
// ends (the tail of both site controllers' logs is printed first if it
// failed). It returns the lab CLI, the site's CLI and lab.json. Without
// libvirt it skips, except under CI=true, where it fails.
func duplexVMLab(t *testing.T, site string) (base, siteCLI cli, lf *lab.File) {
	t.Helper()
	if err := libvirtd.Installed(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base = cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", site+"=duplex")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() { // runs before lab down
		if t.Failed() {
			for _, h := range []string{"controller-0", "controller-1"} {
				t.Logf("%s's site controller log ends:\n%s", h, tailFile(filepath.Join(dir, "hosts", site, h, "logs", "subcloud.log")))
			}
		}
	})
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return base, base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert), lf
}
