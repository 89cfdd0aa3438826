package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// TestLabHostsAddAndPower: add-host brings a bare host that is listed
// unprovisioned with its inventory; power-off silences a host (no process,
// links down); power-on boots it again from its active slot.
func TestLabHostsAddAndPower(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-std=multi-server:1")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)

	out := base.ok("lab", "add-host", "site-std")
	if !strings.Contains(out, "inventoried in") {
		t.Fatalf("add-host said:\n%s", out)
	}
	lf, _ = lab.Load(dir)
	added := lf.Sites[0].Hosts[len(lf.Sites[0].Hosts)-1]
	var h map[string]any
	json.Unmarshal([]byte(site.ok("host", "show", added.UUID, "-o", "json")), &h)
	inv, _ := h["inventory"].(map[string]any)
	if h["provisioning"] != "unprovisioned" || h["personality"] != "" || inv == nil || inv["cores"] == nil {
		t.Fatalf("added host = %v", h)
	}
	if pci, _ := inv["pci_devices"].([]any); len(pci) != 2 {
		t.Errorf("added host PCI devices = %v; want the profile's GPU and accelerator", inv["pci_devices"])
	}
	nics, _ := inv["nics"].([]any)
	if len(nics) != 2 {
		t.Errorf("added host NICs = %v; want mgmt and cluster with MACs", nics)
	}
	site.ok("host", "assign", added.UUID, "--personality", "worker", "--hostname", "worker-2")
	site.exit(1, "host", "assign", "no-such-host", "--personality", "worker")

	// The root namespace has no route to any lab address (network etiquette):
	// `ip route get` asks the kernel without sending anything.
	for _, h := range lf.Sites[0].Hosts {
		for _, a := range h.Addresses {
			out, err := exec.Command("ip", "route", "get", a).CombinedOutput()
			if err == nil && !strings.Contains(string(out), "blackhole") {
				t.Errorf("root namespace routes lab address %s: %s", a, out)
			}
		}
	}

	// The real platform refuses to exist inside a lab host, even when asked.
	hostCfg := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(hostCfg, []byte("site_url: https://10.88.0.10:8443\nca_cert: /dev/null\nstate_dir: /tmp\nplatform: host\n"), 0o600)
	refused, err := exec.Command("ip", "netns", "exec", lf.Sites[0].Hosts[2].Netns, petrelBin, "agent", "--config", hostCfg).CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "refuses to run under tests or the lab") {
		t.Errorf("agent with platform host inside a lab host: %v\n%s", err, refused)
	}

	// Power off worker-0: its processes die and its links go down.
	w := lf.Sites[0].Hosts[2]
	if w.Name != "worker-0" {
		t.Fatalf("third host is %s", w.Name)
	}
	pidsIn := func(ns string) []string {
		b, _ := exec.Command("ip", "netns", "pids", ns).Output()
		return strings.Fields(string(b))
	}
	if len(pidsIn(w.Netns)) < 2 {
		t.Fatalf("worker-0 runs %v; want host-init and the agent", pidsIn(w.Netns))
	}
	var before map[string]any
	json.Unmarshal([]byte(site.ok("host", "show", "worker-0", "-o", "json")), &before)
	// Locked, so host management leaves its power to the operator.
	site.ok("host", "lock", "worker-0")
	base.ok("lab", "fault", "power-off", "site-std/worker-0")
	if p := pidsIn(w.Netns); len(p) != 0 {
		t.Errorf("after power-off worker-0 still runs %v", p)
	}
	links, _ := exec.Command("ip", "-n", w.Netns, "-br", "link").Output()
	if strings.Contains(string(links), "UP ") {
		t.Errorf("after power-off links are up:\n%s", links)
	}
	base.ok("lab", "fault", "power-on", "site-std/worker-0")
	// It boots again, and its agent reports a new boot.
	deadline := time.Now().Add(20 * time.Second)
	var after map[string]any
	for time.Now().Before(deadline) {
		json.Unmarshal([]byte(site.ok("host", "show", "worker-0", "-o", "json")), &after)
		if after["boot_id"] != before["boot_id"] && after["boot_id"] != nil {
			break
		}
		<-time.After(100 * time.Millisecond)
	}
	if after["boot_id"] == before["boot_id"] {
		t.Errorf("worker-0 did not boot again after power-on (boot id %v)", after["boot_id"])
	}
	console, _ := os.ReadFile(filepath.Join(dir, "hosts", "site-std", "worker-0", "console.log"))
	if n := strings.Count(string(console), "boot from slot a"); n != 2 {
		t.Errorf("console shows %d boots; want 2:\n%s", n, console)
	}
	base.exit(1, "lab", "fault", "melt", "site-std/worker-0")

	// lab down leaves no namespace of this lab.
	base.ok("lab", "down")
	b, _ := exec.Command("ip", "netns", "list").Output()
	for _, s := range lf.Sites {
		for _, h := range s.Hosts {
			if strings.Contains(string(b), h.Netns) {
				t.Errorf("namespace %s survives lab down", h.Netns)
			}
		}
	}
}
