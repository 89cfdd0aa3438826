package monitor_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
)

// fixture is a fake machine: /proc and /sys trees and a cgroup directory.
type fixture struct{ proc, sys, cg string }

func newFixture(t *testing.T) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{proc: filepath.Join(root, "proc"), sys: filepath.Join(root, "sys"), cg: filepath.Join(root, "cgroup", "petrel", "s", "h")}
	write(t, f.proc, "meminfo", "MemTotal:        8388608 kB\nMemFree:         1048576 kB\nMemAvailable:    2097152 kB\n")
	write(t, f.sys, "devices/system/cpu/online", "0-1,4-5\n")
	write(t, f.cg, "cgroup.type", "domain\n")
	write(t, f.cg, "cpu.stat", "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\nnr_periods 0\n")
	return f
}

func write(t testing.TB, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f fixture) read(dir string) monitor.Usage {
	var u monitor.Usage
	monitor.Cgroup{Dir: dir, ProcRoot: f.proc, SysRoot: f.sys}.Read(&u)
	return u
}

func TestCgroupCPU(t *testing.T) {
	f := newFixture(t)
	// No cpu controller for the group: the machine's online CPUs.
	u := f.read(f.cg)
	if u.CPU == nil || u.CPU.UsageUsec != 123456789 || u.CPU.CPUs != 4 {
		t.Fatalf("CPU without controllers = %+v (missing %v); want usage 123456789 µs on 4 CPUs", u.CPU, u.Missing)
	}
	// A cpuset narrows it; an unlimited cpu.max does not.
	write(t, f.cg, "cpuset.cpus.effective", "2-3\n")
	write(t, f.cg, "cpu.max", "max 100000\n")
	if u := f.read(f.cg); u.CPU == nil || u.CPU.CPUs != 2 {
		t.Errorf("CPU with cpuset 2-3 and cpu.max max = %+v; want 2 CPUs", u.CPU)
	}
	// A quota is the capacity: 150000/100000 = 1.5 CPUs.
	write(t, f.cg, "cpu.max", "150000 100000\n")
	if u := f.read(f.cg); u.CPU == nil || u.CPU.CPUs != 1.5 {
		t.Errorf("CPU with cpu.max 150000 100000 = %+v; want 1.5 CPUs", u.CPU)
	}
	// ... but never more than the CPUs it may run on.
	write(t, f.cg, "cpu.max", "800000 100000\n")
	if u := f.read(f.cg); u.CPU == nil || u.CPU.CPUs != 2 {
		t.Errorf("CPU with a quota of 8 CPUs on cpuset 2-3 = %+v; want 2 CPUs", u.CPU)
	}
	for _, bad := range []string{"garbage", "0 100000", "100 0", "-5 100000"} {
		write(t, f.cg, "cpu.max", bad)
		if u := f.read(f.cg); u.CPU != nil || !hasMissing(u, "cpu:") {
			t.Errorf("cpu.max %q: CPU = %+v, missing %v; want no CPU reading and a reason", bad, u.CPU, u.Missing)
		}
	}
	os.Remove(filepath.Join(f.cg, "cpu.max"))
	os.Remove(filepath.Join(f.cg, "cpu.stat"))
	if u := f.read(f.cg); u.CPU != nil || !hasMissing(u, "cpu:") {
		t.Errorf("without cpu.stat: CPU = %+v, missing %v; want no CPU reading and a reason", u.CPU, u.Missing)
	}
}

func hasMissing(u monitor.Usage, prefix string) bool {
	for _, m := range u.Missing {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

func TestCgroupMemory(t *testing.T) {
	f := newFixture(t)
	// The memory controller: memory.current against memory.max.
	write(t, f.cg, "memory.current", "1073741824\n")
	write(t, f.cg, "memory.max", "2147483648\n")
	u := f.read(f.cg)
	if m := u.Memory; m == nil || m.UsedBytes != 1<<30 || m.LimitBytes != 2<<30 || m.Source != "memory.current" {
		t.Fatalf("Memory = %+v (missing %v); want 1 GiB of 2 GiB from memory.current", m, u.Missing)
	}
	if p, ok := u.Memory.Percent(); !ok || p != 50 {
		t.Errorf("Percent() = %g, %v; want 50", p, ok)
	}
	// Unlimited: the machine's memory is the limit (8 GiB).
	write(t, f.cg, "memory.max", "max\n")
	if m := f.read(f.cg).Memory; m == nil || m.LimitBytes != 8<<30 {
		t.Errorf("Memory with memory.max max = %+v; want the limit MemTotal (8 GiB)", m)
	}
	// A limit above the machine's memory is the machine's memory.
	write(t, f.cg, "memory.max", "999999999999999\n")
	if m := f.read(f.cg).Memory; m == nil || m.LimitBytes != 8<<30 {
		t.Errorf("Memory with a huge memory.max = %+v; want MemTotal", m)
	}
	// No memory controller in a child group: the resident sets of its
	// processes and those of its children.
	os.Remove(filepath.Join(f.cg, "memory.current"))
	os.Remove(filepath.Join(f.cg, "memory.max"))
	pg := uint64(os.Getpagesize())
	write(t, f.cg, "cgroup.procs", "101\n102\n103\n")
	write(t, filepath.Join(f.cg, "child"), "cgroup.procs", "201\n")
	write(t, f.proc, "101/statm", "5000 100 50 1 0 20 0\n")
	write(t, f.proc, "102/statm", "5000 200 50 1 0 20 0\n")
	// 103 exited between the listing and the read.
	write(t, f.proc, "201/statm", "5000 700 50 1 0 20 0\n")
	u = f.read(f.cg)
	if m := u.Memory; m == nil || m.UsedBytes != 1000*pg || m.LimitBytes != 8<<30 || m.Source != "rss" {
		t.Errorf("Memory without a controller = %+v (missing %v); want %d bytes (1000 pages) from rss", m, u.Missing, 1000*pg)
	}
	// The root group (no cgroup.type) is the whole machine:
	// MemTotal - MemAvailable.
	os.Remove(filepath.Join(f.cg, "cgroup.type"))
	if m := f.read(f.cg).Memory; m == nil || m.UsedBytes != 6<<30 || m.LimitBytes != 8<<30 || m.Source != "meminfo" {
		t.Errorf("Memory of the root group = %+v; want 6 GiB of 8 GiB from meminfo", m)
	}
	// Without meminfo nothing can be said.
	os.Remove(filepath.Join(f.proc, "meminfo"))
	if u := f.read(f.cg); u.Memory != nil || !hasMissing(u, "memory:") {
		t.Errorf("without meminfo: Memory = %+v, missing %v; want none and a reason", u.Memory, u.Missing)
	}
}

func TestCPUPercent(t *testing.T) {
	prev := monitor.CPU{UsageUsec: 1_000_000, CPUs: 2}
	for _, tc := range []struct {
		usage uint64
		cpus  float64
		since time.Duration
		want  float64
		ok    bool
	}{
		{usage: 11_000_000, cpus: 2, since: 10 * time.Second, want: 50, ok: true}, // 10 s of CPU in 10 s on 2 CPUs
		{usage: 6_000_000, cpus: 0.5, since: 10 * time.Second, want: 100, ok: true},
		{usage: 3_500_000, cpus: 0.5, since: 10 * time.Second, want: 50, ok: true},
		{usage: 1_000_000, cpus: 2, since: 10 * time.Second, want: 0, ok: true},
		{usage: 99_000_000, cpus: 2, since: 10 * time.Second, want: 100, ok: true}, // clamped
		{usage: 500, cpus: 2, since: 10 * time.Second, ok: false},                  // counter reset
		{usage: 2_000_000, cpus: 2, since: 0, ok: false},                           // no interval
		{usage: 2_000_000, cpus: 2, since: -time.Second, ok: false},                // clock step
		{usage: 2_000_000, cpus: 0, since: time.Second, ok: false},
	} {
		got, ok := monitor.CPU{UsageUsec: tc.usage, CPUs: tc.cpus}.Percent(prev, tc.since)
		if ok != tc.ok || (ok && (got < tc.want-1e-9 || got > tc.want+1e-9)) {
			t.Errorf("CPU{%d µs, %g CPUs}.Percent(1 s of CPU, %s) = %g, %v; want %g, %v", tc.usage, tc.cpus, tc.since, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStatfs(t *testing.T) {
	dir := t.TempDir()
	fs, err := monitor.Statfs("software-root", dir)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := fs.Percent()
	if fs.Name != "software-root" || fs.Path != dir || fs.SizeBytes == 0 || fs.UsedBytes > fs.SizeBytes || !ok || p < 0 || p > 100 {
		t.Errorf("Statfs(%s) = %+v, %g%%", dir, fs, p)
	}
	if _, err := monitor.Statfs("x", filepath.Join(dir, "missing")); err == nil {
		t.Error("Statfs of a missing path succeeded")
	}
}
