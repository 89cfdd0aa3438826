package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/servicemgr"
)

// TestLabObserve runs `petrel demo-service` on two hosts (network
// namespaces the test creates, named in a lab.json of its own) and
// `petrel lab observe` over them: exit 0 and the active's line with one
// active, exit 1 and a violation with two. Nothing leaves the test's
// namespaces.
func TestLabObserve(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestLabObserve needs root (network namespaces); CI must run it as root")
		}
		t.Skip("needs root: creates network namespaces")
	}
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "obs" + hex.EncodeToString(b)
	dir := t.TempDir()
	site := lab.SiteEntry{Name: "s", Hosts: []lab.HostEntry{}}
	stateDirs := map[string]string{}
	for i, host := range []string{"a", "b"} {
		ns := prefix + "-" + host
		addr := fmt.Sprintf("10.89.254.%d", 10+i)
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
		mustRun(t, "ip", "-n", ns, "addr", "add", addr+"/32", "dev", "lo")
		stateDirs[host] = t.TempDir()
		startDemoService(t, ns, host, addr+":8080", stateDirs[host])
		site.Hosts = append(site.Hosts, lab.HostEntry{Name: host, Netns: ns,
			Addresses: map[string]string{"mgmt": fmt.Sprintf("10.88.254.%d", 10+i), "cluster": addr}})
	}
	mustRun(t, "ip", "-n", prefix+"-a", "addr", "add", "10.89.254.100/32", "dev", "lo")
	raw, _ := json.Marshal(lab.File{Version: 1, Dir: dir, Sites: []lab.SiteEntry{site}})
	if err := os.WriteFile(filepath.Join(dir, "lab.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	role := func(host string, r servicemgr.Role, epoch uint64) {
		b, _ := json.Marshal(servicemgr.RoleFile{Host: host, Group: "web", Role: r, Epoch: epoch})
		if err := atomicfile.Write(filepath.Join(stateDirs[host], "role.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	observe := func(extra ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(petrelBin, append([]string{"lab", "observe", "--dir", dir, "--site", "s", "--group", "web",
			"--port", "8080", "--floating", "10.89.254.100", "--for", "700ms"}, extra...)...)
		out, err := cmd.Output()
		if err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		t.Logf("petrel %s:\n%s", strings.Join(cmd.Args[1:], " "), out)
		return string(out), cmd.ProcessState.ExitCode()
	}

	role("a", servicemgr.RoleActive, 3)
	role("b", servicemgr.RoleStandby, 3)
	out, code := observe()
	if code != 0 || !strings.Contains(out, "actives: a@3  10.89.254.100: a\n") || !strings.Contains(out, "0 violation(s)") {
		t.Errorf("lab observe with one active: exit %d, output:\n%s\nwant exit 0, a@3 holding the address, no violation", code, out)
	}

	role("b", servicemgr.RoleActive, 3)
	out, code = observe()
	if code != 1 || !strings.Contains(out, "VIOLATION too-many-actives: 2 actives, at most 1 allowed: a@3 b@3") {
		t.Errorf("lab observe with two actives: exit %d, output:\n%s\nwant exit 1 and a too-many-actives violation", code, out)
	}
	out, code = observe("-o", "json")
	var summary struct {
		Rounds     int
		Violations []struct{ Kind, Detail string }
	}
	if err := json.Unmarshal([]byte(out), &summary); err != nil || code != 1 || summary.Rounds == 0 ||
		len(summary.Violations) != 1 || summary.Violations[0].Kind != "too-many-actives" {
		t.Errorf("lab observe -o json with two actives: exit %d, %+v (%v); want exit 1 and one too-many-actives violation", code, summary, err)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startDemoService runs `petrel demo-service` inside namespace ns until the
// test ends, and returns once it listens.
func startDemoService(t *testing.T, ns, host, listen, stateDir string) {
	t.Helper()
	// ip netns exec execs petrel in place: the process is petrel's.
	cmd := exec.Command("ip", "netns", "exec", ns, petrelBin, "demo-service", "--listen", listen, "--state-dir", stateDir)
	cmd.Env = []string{"PETREL_HOST=" + host, "PETREL_GROUP=web"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("demo-service in %s still running 5 s after SIGTERM: killed", ns)
			cmd.Process.Kill()
			<-done
		}
	})
	listening := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), `"msg":"listening"`) {
				close(listening)
				said = true
			}
		}
		cmd.Wait()
	}()
	select {
	case <-listening:
	case <-done:
		t.Fatalf("demo-service in %s exited before listening", ns)
	case <-time.After(20 * time.Second):
		t.Fatalf("demo-service in %s not listening after 20 s", ns)
	}
}
