package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// TestBrowserDashboard drives the dashboard in Debian's chromium through
// playwright-core (tests/browser). Under CI=true the browser and the npm
// packages must be present; elsewhere the test skips without them.
func TestBrowserDashboard(t *testing.T) {
	script, _ := filepath.Abs("../../tests/browser/dashboard.mjs")
	modules := filepath.Join(filepath.Dir(script), "node_modules", "playwright-core")
	for _, need := range []string{"/usr/bin/chromium", modules} {
		if _, err := os.Stat(need); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/test.sh installs it)", need)
			}
			t.Skipf("%s is missing; run scripts/test.sh to install the browser test tools", need)
		}
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "central.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\ndata_dir: %s\n", addr, dir)), 0o600)
	cmd := exec.Command(petrelBin, "central", "--config", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	url, ca := "https://"+addr, filepath.Join(dir, "pki", "ca.crt")
	if err := waitForFile(ca); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(t.Context(), url, ca, 20*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "admin.password")
	tok := strings.TrimSpace(cli{t: t, env: []string{"PETREL_CA_CERT=" + ca}}.ok("login", "--url", url, "--password-file", pwFile, "--print-token"))
	shots := os.Getenv("PETREL_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	node := exec.Command("node", script)
	node.Env = append(os.Environ(), "PETREL_URL="+url, "PETREL_TOKEN="+tok, "PETREL_ADMIN_PASSWORD_FILE="+pwFile,
		"PETREL_SCREENSHOTS="+shots, "NODE_EXTRA_CA_CERTS="+ca)
	out, err := node.CombinedOutput()
	t.Logf("browser test:\n%s", out)
	if err != nil || !strings.Contains(string(out), "PASS: dashboard") {
		t.Fatalf("browser test failed: %v", err)
	}
}
