package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/swpatch"
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

// The fleet strategy verbs against central run in the test (no lab): a
// patch built, signed and uploaded with the CLI; usage errors exit 2; a
// fleet strategy over one registered subcloud that never dials home fails
// that site after the offline wait, shown per site in the table and the
// JSON; abort and delete end it.
func TestFleetStrategyCLI(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "patch.key"), filepath.Join(dir, "patch.pub")
	if err := swpatch.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := central.New(ctx, central.Config{Shell: servertest.Shell(t), PatchPublicKey: pub,
		FleetPoll: 20 * time.Millisecond, FleetOfflineWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	cl := cli{t: t, env: []string{"PETREL_URL=" + c.Shell().URL(), "PETREL_TOKEN=" + servertest.AdminToken(t, c),
		"PETREL_CA_CERT=" + c.Shell().CACert, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	motd := filepath.Join(dir, "motd")
	os.WriteFile(motd, []byte("hello\n"), 0o644)
	archive := filepath.Join(dir, "p.patch")
	cl.ok("patch", "build", "--id", "P-1", "--version", "99.0.0", "--file", motd+":etc/motd", "--key", priv, "--out", archive)
	cl.ok("patch", "upload", archive)
	if out := cl.ok("patch", "list"); !strings.Contains(out, "P-1") {
		t.Errorf("patch list at central:\n%s", out)
	}

	cl.exit(2, "strategy", "create", "--group", "Default")
	cl.exit(2, "strategy", "create", "--fleet")
	cl.exit(2, "strategy", "create", "--fleet", "--patch", "P-1", "--site", "site-a")
	if msg := cl.exit(1, "strategy", "create", "--fleet", "--patch", "P-2"); !strings.Contains(msg, "not uploaded") {
		t.Errorf("create with a patch not uploaded said %q", msg)
	}
	if msg := cl.exit(1, "strategy", "create", "--fleet", "--patch", "P-1"); !strings.Contains(msg, "no managed subcloud") {
		t.Errorf("create over no subcloud said %q", msg)
	}
	if err := c.Subclouds.CreateSubcloud(ctx, central.Subcloud{Name: "site-a", Shape: inventory.Simplex, Availability: central.Offline,
		Management: central.Managed, Status: central.StatusOffline}); err != nil {
		t.Fatal(err)
	}
	if out := cl.ok("strategy", "create", "--fleet", "--patch", "P-1", "--max-parallel", "2", "--stop-on-failure"); !strings.Contains(out, "SITE") ||
		!strings.Contains(out, "site-a") || !strings.Contains(out, "max-parallel 2, stop-on-failure true") {
		t.Errorf("create printed:\n%s", out)
	}
	cl.ok("strategy", "apply")
	out := cl.ok("strategy", "show", "--watch", "50ms")
	if !strings.Contains(out, "apply-failed") || !strings.Contains(out, "unreachable") {
		t.Errorf("show --watch ended with:\n%s", out)
	}
	js := cl.ok("strategy", "show", "-o", "json")
	for _, want := range []string{`"scope":"fleet"`, `"target":"site-a"`, `"site":{`, `"phase":"done"`} {
		if !strings.Contains(strings.ReplaceAll(js, " ", ""), want) {
			t.Errorf("show -o json lacks %s:\n%s", want, js)
		}
	}
	cl.ok("strategy", "abort")
	if out := cl.ok("strategy", "show", "--watch", "50ms"); !strings.Contains(out, "): aborted") {
		t.Errorf("after abort, show --watch ended with:\n%s", out)
	}
	cl.ok("strategy", "delete")
	cl.ok("patch", "delete", "P-1")
}
