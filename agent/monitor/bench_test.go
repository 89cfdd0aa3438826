package monitor_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
)

// benchSample measures one Monitor.Sample reading through read: the CPU
// one reading costs the agent (at the default 10 s interval, 100 µs per
// sample is 0.001 % of a CPU).
func benchSample(b *testing.B, read monitor.Reader) {
	m, err := monitor.New(monitor.Config{}, read, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSample: a host's cgroup files (cpu.stat, cpu.max, memory.current,
// memory.max, cpuset) in a temporary directory, plus statfs.
func BenchmarkSample(b *testing.B) {
	dir := b.TempDir()
	write(b, dir, "proc/meminfo", "MemTotal:        8388608 kB\nMemAvailable:    2097152 kB\n")
	write(b, dir, "cg/cgroup.type", "domain\n")
	write(b, dir, "cg/cpu.stat", "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
	write(b, dir, "cg/cpu.max", "200000 100000\n")
	write(b, dir, "cg/cpuset.cpus.effective", "0-3\n")
	write(b, dir, "cg/memory.current", "1073741824\n")
	write(b, dir, "cg/memory.max", "max\n")
	cg := monitor.Cgroup{Dir: filepath.Join(dir, "cg"), ProcRoot: filepath.Join(dir, "proc")}
	benchSample(b, func(context.Context) (monitor.Usage, error) {
		u := monitor.Usage{At: time.Now()}
		cg.Read(&u)
		fs, err := monitor.Statfs("software-root", dir)
		u.Filesystems = append(u.Filesystems, fs)
		return u, err
	})
}

// BenchmarkSampleMachine reads this machine as a real host's agent does:
// the root of the cgroup v2 hierarchy, /proc/meminfo, statfs of /.
func BenchmarkSampleMachine(b *testing.B) {
	root, err := monitor.CgroupV2Root()
	if err != nil {
		b.Skip(err)
	}
	cg := monitor.Cgroup{Dir: root}
	benchSample(b, func(context.Context) (monitor.Usage, error) {
		u := monitor.Usage{At: time.Now()}
		cg.Read(&u)
		fs, err := monitor.Statfs("software-root", "/")
		u.Filesystems = append(u.Filesystems, fs)
		return u, err
	})
}
