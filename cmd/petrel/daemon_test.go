package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// TestDaemonsStopCleanlyOnSIGTERM starts each daemon from a config file,
// waits until it is ready, sends SIGTERM and expects exit 0, with every log
// line JSON.
func TestDaemonsStopCleanlyOnSIGTERM(t *testing.T) {
	for _, tc := range []struct{ daemon, extra string }{
		{"central", ""},
		{"subcloud", "site: site-t\nshape: duplex\n"},
	} {
		t.Run(tc.daemon, func(t *testing.T) {
			dir := t.TempDir()
			port := freePort(t)
			cfg := filepath.Join(dir, "cfg.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("%slisten: 127.0.0.1:%d\ndata_dir: %s\nlog_level: debug\n", tc.extra, port, dir)), 0o600)
			var logs bytes.Buffer
			cmd := exec.Command(petrelBin, tc.daemon, "--config", cfg)
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					<-done
				}
			})
			url := fmt.Sprintf("https://127.0.0.1:%d", port)
			alive := func() bool {
				select {
				case err := <-done:
					done <- err
					return false
				default:
					return true
				}
			}
			if err := waitForFile(filepath.Join(dir, "pki", "ca.crt")); err != nil {
				t.Fatalf("%v; log:\n%s", err, logs.String())
			}
			if err := lab.WaitReady(t.Context(), url, filepath.Join(dir, "pki", "ca.crt"), 20*time.Second, alive); err != nil {
				t.Fatalf("%s not ready: %v; log:\n%s", tc.daemon, err, logs.String())
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s after SIGTERM: %v; want exit 0", tc.daemon, err)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("%s still running 15 s after SIGTERM", tc.daemon)
			}
			sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["level"] == nil || m["msg"] == nil {
					t.Errorf("log line is not slog JSON: %s", sc.Text())
				}
			}
		})
	}
}

func TestDaemonRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key": "listen: 127.0.0.1:0\ndata_dir: " + dir + "\nlisten_addr: x\n",
		"no data dir": "listen: 127.0.0.1:0\n",
		"bad level":   "listen: 127.0.0.1:0\ndata_dir: " + dir + "\nlog_level: loud\n",
	} {
		cfg := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(cfg, []byte(body), 0o600)
		out, err := exec.Command(petrelBin, "central", "--config", cfg).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("%s: %v; want exit 1\n%s", name, err, out)
		}
	}
}

// TestAgentRefusesBadMonitorConfig: the agent checks its monitor settings
// before it does anything.
func TestAgentRefusesBadMonitorConfig(t *testing.T) {
	dir := t.TempDir()
	base := "site_url: https://127.0.0.1:1\nca_cert: " + filepath.Join(dir, "ca.crt") + "\nstate_dir: " + dir +
		"\nplatform: lab\nlab: {software_root: " + dir + "}\n"
	for name, tc := range map[string]struct{ body, says string }{
		"clear above raise": {base + "monitor: {cpu: {raise: 70, clear: 75}}\n", "monitor: cpu"},
		"unknown key":       {base + "monitor: {cpu: {raise: 95, hysteresis: 5}}\n", "hysteresis"},
		"bad interval":      {base + "monitor: {interval: soon}\n", "monitor.interval"},
	} {
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		os.WriteFile(cfg, []byte(tc.body), 0o600)
		out, err := exec.Command(petrelBin, "agent", "--config", cfg).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(string(out), tc.says) {
			t.Errorf("%s: %v; want a refusal saying %q\n%s", name, err, tc.says, out)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitForFile(path string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		<-time.After(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}
