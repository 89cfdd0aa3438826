package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// The subcloud lifecycle and subcloud-group verbs against a central run in
// the test (no lab).
func TestSubcloudLifecycleCLI(t *testing.T) {
	c, err := central.New(context.Background(), central.Config{Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	run := cli{t: t, env: []string{"PETREL_URL=" + c.Shell().URL(), "PETREL_TOKEN=" + servertest.AdminToken(t, c),
		"PETREL_CA_CERT=" + c.Shell().CACert, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	dir := t.TempDir()
	values := filepath.Join(dir, "site-a.yml")
	doc := "system_mode: duplex\nlocation: Oslo\nmanagement_subnet: 192.168.204.0/24\nmanagement_gateway_address: 192.168.204.1\n" +
		"external_oam_subnet: 10.10.10.0/24\nexternal_oam_gateway_address: 10.10.10.1\nexternal_oam_floating_address: 10.10.10.2\n"
	if err := os.WriteFile(values, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte(doc+"ansible_become: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	run.ok("subcloud-group", "create", "north", "--apply-type", "parallel", "--max-parallel", "20")
	if out := run.ok("subcloud-group", "list"); !strings.Contains(out, "Default") || !strings.Contains(out, "north") {
		t.Errorf("subcloud-group list:\n%s", out)
	}
	run.exit(2, "subcloud", "add", "site-a", "--bootstrap-values", values) // --bootstrap-address missing
	if msg := run.exit(1, "subcloud", "add", "site-a", "--bootstrap-address", "10.10.10.3", "--bootstrap-values", bad); !strings.Contains(msg, "bootstrap_values.ansible_become") {
		t.Errorf("add with an ansible_ key said %q", msg)
	}
	out := run.ok("-o", "json", "subcloud", "add", "site-a", "--bootstrap-address", "10.10.10.3", "--bootstrap-values", values, "--group", "north")
	var sc central.Subcloud
	if err := json.Unmarshal([]byte(out), &sc); err != nil || sc.Shape != "duplex" || sc.Group != "north" || sc.Location != "Oslo" || sc.BootstrapAddress != "10.10.10.3" {
		t.Errorf("subcloud add -o json = %s (%v)", out, err)
	}
	if msg := run.exit(1, "subcloud", "add", "site-b", "--bootstrap-address", "10.10.10.3", "--bootstrap-values", values); !strings.Contains(msg, "site-a") {
		t.Errorf("add on a used bootstrap address said %q", msg)
	}
	run.ok("subcloud", "update", "site-a", "--description", "wind farm 7")
	if out := run.ok("subcloud", "show", "site-a"); !strings.Contains(out, "wind farm 7") || !strings.Contains(out, "north") {
		t.Errorf("subcloud show:\n%s", out)
	}
	if out := run.ok("subcloud", "list", "--group", "north"); !strings.Contains(out, "site-a") {
		t.Errorf("subcloud list --group north:\n%s", out)
	}
	if msg := run.exit(1, "subcloud", "manage", "site-a"); !strings.Contains(msg, "online") {
		t.Errorf("manage an offline subcloud said %q", msg)
	}
	if msg := run.exit(1, "subcloud-group", "delete", "north"); !strings.Contains(msg, "subclouds") {
		t.Errorf("deleting a group with members said %q", msg)
	}
	run.exit(1, "subcloud-group", "delete", "Default")
	run.ok("subcloud-group", "update", "north", "--name", "south", "--max-parallel", "5")
	if out := run.ok("-o", "json", "subcloud-group", "show", "south"); !strings.Contains(out, `"max_parallel_subclouds": 5`) || !strings.Contains(out, `"subclouds": 1`) {
		t.Errorf("subcloud-group show south:\n%s", out)
	}
	run.ok("subcloud", "delete", "site-a")
	run.ok("subcloud-group", "delete", "south")
}
