package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
)

// fakeChassis serves GET /v1/usage on a unix socket, as a lab chassis does.
func fakeChassis(t *testing.T, u monitor.Usage) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vbmc.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(u) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestLabPlatformUsage(t *testing.T) {
	root := t.TempDir()
	at := time.Now().Add(-time.Second).Round(0)
	sock := fakeChassis(t, monitor.Usage{At: at, CPU: &monitor.CPU{UsageUsec: 42, CPUs: 2},
		Memory:      &monitor.Memory{UsedBytes: 1 << 20, LimitBytes: 1 << 30, Source: "rss"},
		Filesystems: []monitor.Filesystem{{Name: "not-mine", SizeBytes: 1}}})
	p, err := agent.NewLabPlatform(root, sock)
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if u.CPU == nil || u.CPU.UsageUsec != 42 || u.Memory == nil || u.Memory.Source != "rss" || !u.At.Equal(at) {
		t.Errorf("Usage() = %+v; want the chassis' CPU, memory and time", u)
	}
	// The software root is read here, never taken from the chassis.
	if len(u.Filesystems) != 1 || u.Filesystems[0].Name != agent.SoftwareRootFS || u.Filesystems[0].Path != root || u.Filesystems[0].SizeBytes == 0 {
		t.Errorf("Usage().Filesystems = %+v; want the software root %s", u.Filesystems, root)
	}
	// Without a chassis (or with one that is down): no CPU or memory, and why.
	for name, chassis := range map[string]string{"no chassis": "", "chassis down": filepath.Join(t.TempDir(), "gone.sock")} {
		p, _ := agent.NewLabPlatform(root, chassis)
		u, err := p.Usage(t.Context())
		if err != nil || u.CPU != nil || u.Memory != nil || len(u.Filesystems) != 1 || len(u.Missing) != 1 ||
			!strings.HasPrefix(u.Missing[0], "cpu, memory: ") {
			t.Errorf("%s: Usage() = %+v, %v; want only the software root, and the reason for the rest", name, u, err)
		}
	}
}

// TestHostPlatformUsage reads this machine (it only reads): the whole
// machine's cgroup and the root file system.
func TestHostPlatformUsage(t *testing.T) {
	var p agent.HostPlatform
	u, err := p.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Filesystems) != 1 || u.Filesystems[0].Path != "/" || u.Filesystems[0].SizeBytes == 0 {
		t.Errorf("Usage().Filesystems = %+v; want /", u.Filesystems)
	}
	if _, err := monitor.CgroupV2Root(); err != nil {
		t.Logf("no cgroup v2 here: %v", err)
		return
	}
	if u.CPU == nil || u.CPU.CPUs < 1 || u.Memory == nil || u.Memory.Source != "meminfo" || u.Memory.UsedBytes == 0 {
		t.Errorf("Usage() = CPU %+v, memory %+v (missing %v); want the machine's CPU time and meminfo", u.CPU, u.Memory, u.Missing)
	}
}

// BenchmarkLabSample is one monitor sample of a lab host: the agent asks
// its chassis over the unix socket, the chassis reads the host's cgroup
// files (here a fixture: cpu.stat, memory.current, memory.max, meminfo),
// and the agent statfs its software root. Both sides run in this process.
func BenchmarkLabSample(b *testing.B) {
	dir := b.TempDir()
	for rel, content := range map[string]string{
		"cg/cgroup.type":    "domain\n",
		"cg/cpu.stat":       "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\n",
		"cg/memory.current": "1073741824\n",
		"cg/memory.max":     "max\n",
		"proc/meminfo":      "MemTotal: 8388608 kB\nMemAvailable: 2097152 kB\n",
	} {
		agenttest.Write(b, dir, rel, content)
	}
	cg := monitor.Cgroup{Dir: filepath.Join(dir, "cg"), ProcRoot: filepath.Join(dir, "proc")}
	sock := filepath.Join(dir, "vbmc.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		u := monitor.Usage{At: time.Now()}
		cg.Read(&u)
		json.NewEncoder(w).Encode(u)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	p, err := agent.NewLabPlatform(dir, sock)
	if err != nil {
		b.Fatal(err)
	}
	m, err := monitor.New(monitor.Config{}, p.Usage, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	if r := m.Last(); !r.Memory.Valid || !r.CPU.Valid {
		b.Errorf("last readings = %+v; want CPU and memory", r)
	}
}
