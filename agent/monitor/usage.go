package monitor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Usage is one reading of a host's resource counters. A part that could
// not be read is nil (or absent from Filesystems), and Missing says why.
// It is also the body of a lab chassis' GET /v1/usage.
type Usage struct {
	At          time.Time    `json:"at"` // when the counters were read
	CPU         *CPU         `json:"cpu,omitempty"`
	Memory      *Memory      `json:"memory,omitempty"`
	Filesystems []Filesystem `json:"filesystems,omitempty"`
	Missing     []string     `json:"missing,omitempty"`
}

// CPU is a cgroup's CPU time and what it may use.
type CPU struct {
	UsageUsec uint64  `json:"usage_usec"` // CPU time used since the group was created (cpu.stat)
	CPUs      float64 `json:"cpus"`       // capacity: cpu.max quota/period, else the CPUs it may run on
}

// Memory is a cgroup's memory in use and its limit.
type Memory struct {
	UsedBytes  uint64 `json:"used_bytes"`
	LimitBytes uint64 `json:"limit_bytes"` // memory.max, or the machine's MemTotal when unlimited
	// Source tells how UsedBytes was measured: "memory.current"; "meminfo"
	// (the whole machine: MemTotal - MemAvailable); or "rss" (the sum of
	// the resident sets of the group's processes, when the memory
	// controller is not enabled for the group — shared pages count once
	// per process).
	Source string `json:"source"`
}

// Filesystem is the space of the file system holding a path.
type Filesystem struct {
	Name      string `json:"name"` // entity value, e.g. software-root
	Path      string `json:"path"`
	UsedBytes uint64 `json:"used_bytes"`
	SizeBytes uint64 `json:"size_bytes"` // used + available to unprivileged users, as df counts
}

// Percent is the used share of the CPUs over the interval since prev, in
// percent of the capacity (0-100); ok is false when the two readings do
// not make an interval (first reading, counter reset, clock step).
func (c CPU) Percent(prev CPU, since time.Duration) (pct float64, ok bool) {
	if since <= 0 || c.UsageUsec < prev.UsageUsec || c.CPUs <= 0 {
		return 0, false
	}
	used := float64(c.UsageUsec - prev.UsageUsec)
	return clampPct(100 * used / (float64(since.Microseconds()) * c.CPUs)), true
}

// Percent is the used share of the limit (0-100).
func (m Memory) Percent() (float64, bool) {
	if m.LimitBytes == 0 {
		return 0, false
	}
	return clampPct(100 * float64(m.UsedBytes) / float64(m.LimitBytes)), true
}

// Percent is the used share of the file system (0-100), as df shows it.
func (f Filesystem) Percent() (float64, bool) {
	if f.SizeBytes == 0 {
		return 0, false
	}
	return clampPct(100 * float64(f.UsedBytes) / float64(f.SizeBytes)), true
}

func clampPct(p float64) float64 {
	if math.IsNaN(p) || p < 0 {
		return 0
	}
	return min(p, 100)
}

// Cgroup reads the CPU and memory counters of one cgroup v2 group.
type Cgroup struct {
	// Dir is the group's directory (a lab host: <cgroup v2 mount>/P/S/H).
	// The hierarchy's root directory stands for the whole machine.
	Dir string
	// ProcRoot and SysRoot are where /proc and /sys are; "" means the real
	// ones. Tests point them at fixture trees.
	ProcRoot, SysRoot string
}

// maxRSSProcs bounds the processes summed when memory falls back to "rss".
const maxRSSProcs = 4096

// Read fills u.CPU and u.Memory, or names in u.Missing what it could not
// read.
func (c Cgroup) Read(u *Usage) {
	proc, sys := orDefault(c.ProcRoot, "/proc"), orDefault(c.SysRoot, "/sys")
	if cpu, err := c.readCPU(sys); err != nil {
		u.Missing = append(u.Missing, "cpu: "+err.Error())
	} else {
		u.CPU = &cpu
	}
	if mem, err := c.readMemory(proc); err != nil {
		u.Missing = append(u.Missing, "memory: "+err.Error())
	} else {
		u.Memory = &mem
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (c Cgroup) file(name string) string { return filepath.Join(c.Dir, name) }

func (c Cgroup) readCPU(sys string) (CPU, error) {
	stat, err := os.ReadFile(c.file("cpu.stat"))
	if err != nil {
		return CPU{}, err
	}
	usage, err := keyed(stat, "usage_usec")
	if err != nil {
		return CPU{}, fmt.Errorf("%s: %w", c.file("cpu.stat"), err)
	}
	cpus, err := c.cpuSet(sys)
	if err != nil {
		return CPU{}, err
	}
	// cpu.max exists only where the cpu controller is enabled for the group.
	if b, err := os.ReadFile(c.file("cpu.max")); err == nil {
		quota, period, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
		if !ok {
			return CPU{}, fmt.Errorf("%s: want QUOTA PERIOD, have %q", c.file("cpu.max"), b)
		}
		if quota != "max" {
			q, err1 := strconv.ParseFloat(quota, 64)
			p, err2 := strconv.ParseFloat(period, 64)
			if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
				return CPU{}, fmt.Errorf("%s: want QUOTA PERIOD, have %q", c.file("cpu.max"), b)
			}
			cpus = min(cpus, q/p)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return CPU{}, err
	}
	return CPU{UsageUsec: usage, CPUs: cpus}, nil
}

// cpuSet counts the CPUs the group may run on: cpuset.cpus.effective when
// the cpuset controller is enabled for it, else the machine's online CPUs.
func (c Cgroup) cpuSet(sys string) (float64, error) {
	path := c.file("cpuset.cpus.effective")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		path = filepath.Join(sys, "devices/system/cpu/online")
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return 0, err
	}
	n, err := countCPUList(strings.TrimSpace(string(b)))
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s: no CPUs in %q", path, b)
	}
	return float64(n), nil
}

// countCPUList counts the CPUs of a kernel CPU list such as "0-3,8,10-11".
func countCPUList(s string) (int, error) {
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, err
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, err
			}
		}
		if b < a {
			return 0, fmt.Errorf("bad CPU range %q", part)
		}
		n += b - a + 1
	}
	return n, nil
}

func (c Cgroup) readMemory(proc string) (Memory, error) {
	total, err := meminfo(proc, "MemTotal")
	if err != nil {
		return Memory{}, err
	}
	m := Memory{LimitBytes: total}
	cur, err := os.ReadFile(c.file("memory.current"))
	switch {
	case err == nil:
		if m.UsedBytes, err = strconv.ParseUint(strings.TrimSpace(string(cur)), 10, 64); err != nil {
			return Memory{}, fmt.Errorf("%s: %w", c.file("memory.current"), err)
		}
		m.Source = "memory.current"
		if b, err := os.ReadFile(c.file("memory.max")); err == nil {
			if v := strings.TrimSpace(string(b)); v != "max" {
				limit, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return Memory{}, fmt.Errorf("%s: %w", c.file("memory.max"), err)
				}
				m.LimitBytes = min(limit, total)
			}
		}
		return m, nil
	case !errors.Is(err, fs.ErrNotExist):
		return Memory{}, err
	}
	// No memory controller here. The root group has no cgroup.type: it is
	// the whole machine.
	if _, err := os.Stat(c.file("cgroup.type")); errors.Is(err, fs.ErrNotExist) {
		avail, err := meminfo(proc, "MemAvailable")
		if err != nil {
			return Memory{}, err
		}
		m.UsedBytes, m.Source = total-min(avail, total), "meminfo"
		return m, nil
	}
	rss, err := c.rss(proc)
	if err != nil {
		return Memory{}, err
	}
	m.UsedBytes, m.Source = rss, "rss"
	return m, nil
}

// rss sums the resident set sizes of the processes in the group and its
// descendants.
func (c Cgroup) rss(proc string) (uint64, error) {
	page := uint64(os.Getpagesize())
	var total uint64
	seen := 0
	err := filepath.WalkDir(c.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != c.Dir && errors.Is(err, fs.ErrNotExist) {
				return nil // a child group removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if path != c.Dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for pid := range strings.FieldsSeq(string(b)) {
			if seen++; seen > maxRSSProcs {
				return fmt.Errorf("more than %d processes", maxRSSProcs)
			}
			statm, err := os.ReadFile(filepath.Join(proc, pid, "statm"))
			if err != nil {
				continue // exited meanwhile
			}
			f := strings.Fields(string(statm))
			if len(f) < 2 {
				continue
			}
			if pages, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				total += pages * page
			}
		}
		return nil
	})
	return total, err
}

// meminfo reads one /proc/meminfo value, in bytes.
func meminfo(proc, key string) (uint64, error) {
	path := filepath.Join(proc, "meminfo")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, key, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}

// keyed reads the value of key in a flat-keyed cgroup file ("key value"
// lines).
func keyed(b []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", key)
}

// Statfs reads the space of the file system that holds path; name is the
// filesystem's name in alarm entities (e.g. software-root).
func Statfs(name, path string) (Filesystem, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Filesystem{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	return statfsUsage(name, path, st), nil
}

// statfsUsage computes used and size as df does: used = total - free,
// size = used + available to unprivileged users (blocks reserved for root
// count as neither).
func statfsUsage(name, path string, st unix.Statfs_t) Filesystem {
	bs := uint64(st.Bsize)
	if st.Frsize > 0 {
		bs = uint64(st.Frsize)
	}
	used := (st.Blocks - min(st.Bfree, st.Blocks)) * bs
	return Filesystem{Name: name, Path: path, UsedBytes: used, SizeBytes: used + st.Bavail*bs}
}

// cgroupV2Mounts are the usual cgroup v2 mount points: a pure v2 machine
// mounts it at /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified.
var cgroupV2Mounts = [...]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// ErrNoCgroup2 is returned when the machine has no cgroup v2 hierarchy
// where the monitor looks.
var ErrNoCgroup2 = errors.New("monitor: no cgroup v2 hierarchy")

// CgroupV2Root returns the machine's cgroup v2 mount: /sys/fs/cgroup on a
// pure v2 machine, /sys/fs/cgroup/unified on a hybrid one.
func CgroupV2Root() (string, error) {
	for _, p := range cgroupV2Mounts {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked at %s)", ErrNoCgroup2, strings.Join(cgroupV2Mounts[:], ", "))
}
