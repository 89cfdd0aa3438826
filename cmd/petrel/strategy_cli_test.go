package main

import (
	"context"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// The strategy verbs against a site controller run in the test (no lab,
// no hosts): usage errors exit 2, a site without an applied patch has
// nothing to plan (exit 1, saying so), and show of a strategy that does
// not exist is not found.
func TestStrategyCLI(t *testing.T) {
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	c := cli{t: t, env: []string{"PETREL_URL=" + s.Shell().URL(), "PETREL_TOKEN=" + servertest.AdminToken(t, s),
		"PETREL_CA_CERT=" + s.Shell().CACert, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	c.exit(2, "strategy", "show", "extra")
	c.exit(2, "strategy", "create", "--max-parallel-worker-hosts", "many")
	if msg := c.exit(1, "strategy", "create", "--type", "patch"); !strings.Contains(msg, "apply a patch first") {
		t.Errorf("create with nothing applied said %q", msg)
	}
	if msg := c.exit(1, "strategy", "create", "--worker-apply-type", "sideways"); !strings.Contains(msg, "worker_apply_type") {
		t.Errorf("create with a bad apply type said %q", msg)
	}
	if msg := c.exit(1, "strategy", "show"); !strings.Contains(msg, "not found") {
		t.Errorf("show without a strategy said %q", msg)
	}
	if msg := c.exit(1, "strategy", "show", "--type", "upgrade"); !strings.Contains(msg, "type") {
		t.Errorf("show --type upgrade said %q", msg)
	}
	if msg := c.exit(1, "strategy", "apply"); !strings.Contains(msg, "not found") {
		t.Errorf("apply without a strategy said %q", msg)
	}
}
