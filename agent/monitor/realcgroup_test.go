package monitor_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/inventory"
)

// realCgroup creates a cgroup v2 group for the test under the machine's
// hierarchy and removes it after the test. Without cgroup v2 or root the
// test is skipped, but under CI=true that is a failure.
func realCgroup(t *testing.T) string {
	t.Helper()
	need := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI must run this test as root on a machine with cgroup v2)", why)
		}
		t.Skip(why)
	}
	root, err := monitor.CgroupV2Root()
	if err != nil {
		need(err.Error())
	}
	if os.Geteuid() != 0 {
		need("creating a cgroup needs root")
	}
	dir := filepath.Join(root, fmt.Sprintf("petrel-monitor-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The processes are gone (each is killed and waited for in its own
		// cleanup, which runs first); a group empties a moment later.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	})
	return dir
}

// burn starts a process that spins on one CPU inside the cgroup dir (placed
// there at creation), and kills it after the test.
func burn(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a CPU burner in %s: %v", dir, err)
	}
	t.Cleanup(func() { stop(cmd) })
	return cmd
}

func stop(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// TestRealCgroupCPU burns CPU in a real cgroup v2 group and watches the
// monitor's reading rise above a threshold, 100.101 be asserted, and
// withdrawn once the burner is gone. Where the cpu controller is enabled
// for the group, a cpu.max quota of half a CPU is its capacity; otherwise
// (a hybrid machine: cpu is a v1 controller) the machine's CPUs are.
func TestRealCgroupCPU(t *testing.T) {
	dir := realCgroup(t)
	if _, err := os.Stat(filepath.Join(dir, "cpu.max")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), []byte("50000 100000"), 0); err != nil {
			t.Fatalf("set cpu.max: %v", err)
		}
	} else {
		t.Logf("no cpu controller for %s: capacity is the machine's CPUs", dir)
	}
	read := func(context.Context) (monitor.Usage, error) {
		u := monitor.Usage{At: time.Now()}
		monitor.Cgroup{Dir: dir}.Read(&u)
		return u, nil
	}
	u, _ := read(t.Context())
	if u.CPU == nil {
		t.Fatalf("no CPU counters in %s: %v", dir, u.Missing)
	}
	// One spinning process uses at most one CPU: expect min(1, capacity)
	// of the capacity, and raise at half of that (the machine is shared).
	expect := 100 * min(1, u.CPU.CPUs) / u.CPU.CPUs
	raise := expect / 2
	th := monitor.Threshold{Raise: raise, Clear: raise / 2, Samples: 2}
	m, err := monitor.New(monitor.Config{CPU: th}, read, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("capacity %g CPUs: a burner should show about %.0f%%; raise at %.1f%%, clear at %.1f%%", u.CPU.CPUs, expect, raise, th.Clear)

	cmd := burn(t, dir)
	asserted := func() bool {
		for _, a := range m.Asserted() {
			if a.AlarmID == inventory.AlarmCPU {
				return true
			}
		}
		return false
	}
	// Sample every 200 ms, as Run would with that interval, until the
	// alarm is asserted or the deadline passes.
	poll := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s; last reading %+v", what, m.Last())
			}
			time.Sleep(200 * time.Millisecond) // the sampling interval, within a deadline
			if err := m.Sample(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.Sample(t.Context())
	poll("CPU alarm asserted while burning", asserted)
	r := m.Last()
	t.Logf("burning: CPU %.1f%% of capacity; memory %+v", r.CPU.Percent, r.Memory)
	if !r.CPU.Valid || r.CPU.Percent < raise {
		t.Errorf("CPU reading while asserted = %+v; want at least %.1f%%", r.CPU, raise)
	}
	if u, _ := read(t.Context()); u.Memory == nil || u.Memory.UsedBytes == 0 {
		t.Errorf("memory of the group with a process in it = %+v (missing %v); want some", u.Memory, u.Missing)
	}
	stop(cmd)
	poll("CPU alarm withdrawn after the burner stopped", func() bool { return !asserted() })
	t.Logf("stopped: CPU %.1f%%", m.Last().CPU.Percent)
}
