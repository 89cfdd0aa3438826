package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// TestAgentJoinsThroughTheCLI: an operator makes a join token, a real agent
// process joins with it, and the host is listed, assigned and deleted.
func TestAgentJoinsThroughTheCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-sx=simplex")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	tok := strings.TrimSpace(site.ok("host", "join-token", "create", "--ttl", "10m", "--description", "e2e"))

	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "join.token"), []byte(tok+"\n"), 0o600)
	os.WriteFile(filepath.Join(work, "profile.yaml"), []byte("cores: 16\nnuma_nodes: 2\nmemory_mib: 65536\n"+
		"pci_devices:\n- {address: '0000:3b:00.0', vendor: '10de', device: '20b5', class: '0302'}\n"), 0o600)
	cfg := fmt.Sprintf("site_url: %s\nca_cert: %s\njoin_token_file: %s\nstate_dir: %s\nprofile: %s\nplatform: lab\n"+
		"lab: {software_root: %s}\ncheck_interval: 200ms\n",
		lf.Sites[0].URL, lf.CACert, filepath.Join(work, "join.token"), filepath.Join(work, "state"),
		filepath.Join(work, "profile.yaml"), filepath.Join(work, "root"))
	os.WriteFile(filepath.Join(work, "agent.yaml"), []byte(cfg), 0o600)
	ag := exec.Command(petrelBin, "agent", "--config", filepath.Join(work, "agent.yaml"))
	ag.Stderr = os.Stderr
	start := time.Now()
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Process.Kill(); ag.Wait() })

	// T11: the new host is listed, unprovisioned, with its inventory.
	var hosts struct {
		Items []struct {
			UUID, Name, Personality, Provisioning string
			Inventory                             struct {
				Cores int
				PCI   []struct{ Vendor string } `json:"pci_devices"`
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		json.Unmarshal([]byte(site.ok("host", "list", "--provisioning", "unprovisioned", "-o", "json")), &hosts)
		if len(hosts.Items) == 1 && hosts.Items[0].Inventory.Cores == 16 {
			break
		}
		<-time.After(50 * time.Millisecond)
	}
	if len(hosts.Items) != 1 || hosts.Items[0].Provisioning != "unprovisioned" || hosts.Items[0].Personality != "" ||
		len(hosts.Items[0].Inventory.PCI) != 1 {
		t.Fatalf("unprovisioned hosts after the agent started: %+v", hosts.Items)
	}
	t.Logf("host inventoried %s after the agent process started (T11 target 5 s)", time.Since(start).Round(time.Millisecond))
	id := hosts.Items[0].UUID

	// The join token is spent.
	if out := site.ok("host", "join-token", "list"); !strings.Contains(out, id) {
		t.Errorf("join-token list does not show it used by %s:\n%s", id, out)
	}
	site.exit(1, "host", "assign", id, "--personality", "router")
	site.ok("host", "assign", id, "--personality", "worker", "--hostname", "worker-9")
	var h map[string]any
	json.Unmarshal([]byte(site.ok("host", "show", "worker-9", "-o", "json")), &h)
	if h["personality"] != "worker" || h["provisioning"] != "provisioned" || h["inventory"] == nil {
		t.Errorf("host show worker-9 = %v", h)
	}
	site.ok("host", "delete", "worker-9")
	site.exit(1, "host", "show", "worker-9")
}
