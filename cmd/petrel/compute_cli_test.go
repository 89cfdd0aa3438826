package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// The image and flavor verbs against a site controller run in the test (no
// lab): upload a qcow2-looking and a raw file, list, show, delete.
func TestImageAndFlavorCLI(t *testing.T) {
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	c := cli{t: t, env: []string{"PETREL_URL=" + s.Shell().URL(), "PETREL_TOKEN=" + servertest.AdminToken(t, s),
		"PETREL_CA_CERT=" + s.Shell().CACert, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(raw, []byte(strings.Repeat("raw disk bytes ", 100000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(qcow, []byte(compute.QCOW2Magic+strings.Repeat("\x00", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}

	var im compute.Image
	if err := json.Unmarshal([]byte(c.ok("image", "create", "base", "--file", raw, "--public", "-o", "json")), &im); err != nil {
		t.Fatal(err)
	}
	if im.Status != compute.ImageActive || im.DiskFormat != compute.FormatRaw || im.Visibility != compute.Public || im.Size != 1500000 {
		t.Errorf("image create = %+v", im)
	}
	if out := c.ok("image", "create", "--name", "q", "--file", qcow); !strings.Contains(out, "qcow2") || !strings.Contains(out, "active") {
		t.Errorf("image create --name q:\n%s", out)
	}
	if msg := c.exit(1, "image", "create", "bad", "--file", qcow, "--disk-format", "raw"); !strings.Contains(msg, "qcow2") {
		t.Errorf("a qcow2 file as raw: %s", msg)
	}
	c.exit(2, "image", "create", "nofile")
	c.exit(1, "image", "create", "base", "--file", raw) // the name is taken
	out := c.ok("image", "list")
	if !strings.Contains(out, "base") || !strings.Contains(out, "q ") {
		t.Errorf("image list:\n%s", out)
	}
	if out := c.ok("image", "show", "base"); !strings.Contains(out, im.Checksum) {
		t.Errorf("image show:\n%s", out)
	}
	c.ok("image", "delete", "base")
	c.exit(1, "image", "show", "base")

	c.ok("flavor", "create", "m1.tiny", "--vcpus", "1", "--ram", "128", "--disk", "1", "--public")
	c.exit(2, "flavor", "create", "m1.none", "--vcpus", "1")
	if msg := c.exit(1, "flavor", "create", "m1.huge", "--vcpus", "65", "--ram", "128", "--disk", "1"); !strings.Contains(msg, "vcpus") {
		t.Errorf("vcpus 65: %s", msg)
	}
	if out := c.ok("flavor", "list", "-o", "json"); !strings.Contains(out, `"ram_mib": 128`) && !strings.Contains(out, `"ram_mib":128`) {
		t.Errorf("flavor list -o json:\n%s", out)
	}
	c.ok("flavor", "delete", "m1.tiny")
	if out := c.ok("flavor", "list"); strings.Contains(out, "m1.tiny") {
		t.Errorf("flavor list after delete:\n%s", out)
	}
}
