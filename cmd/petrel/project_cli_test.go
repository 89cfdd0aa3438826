package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// The project verbs and user create --project against a site controller
// run in the test (no lab).
func TestProjectCLI(t *testing.T) {
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	c := cli{t: t, env: []string{"PETREL_URL=" + s.Shell().URL(), "PETREL_TOKEN=" + servertest.AdminToken(t, s),
		"PETREL_CA_CERT=" + s.Shell().CACert, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("tenant-password-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("project", "create", "tenant-a", "--description", "first tenant")
	c.exit(1, "project", "create", "tenant-a")
	if out := c.ok("project", "list"); !strings.Contains(out, "admin") || !strings.Contains(out, "first tenant") {
		t.Errorf("project list:\n%s", out)
	}
	if msg := c.exit(1, "user", "create", "tina", "--role", "operator", "--project", "tenant-z", "--password-file", pwFile); !strings.Contains(msg, "project") {
		t.Errorf("user create in an unknown project said %q", msg)
	}
	c.ok("user", "create", "tina", "--role", "operator", "--project", "tenant-a", "--password-file", pwFile)
	if out := c.ok("user", "list", "--project", "tenant-a"); !strings.Contains(out, "tina") || !strings.Contains(out, "tenant-a") || strings.Contains(out, "admin ") {
		t.Errorf("user list --project tenant-a:\n%s", out)
	}
	if msg := c.exit(1, "project", "delete", "tenant-a"); !strings.Contains(msg, "users") {
		t.Errorf("deleting a project with users said %q", msg)
	}
	c.ok("user", "delete", "tina")
	c.ok("project", "delete", "tenant-a")
	c.exit(1, "project", "show", "tenant-a")
}
