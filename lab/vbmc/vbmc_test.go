package vbmc

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-edge/petrel/agent/monitor"
)

// TestUsage: the chassis serves its host's cgroup counters to the host's
// agent.
func TestUsage(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"cg/cgroup.type":                "domain\n",
		"cg/cpu.stat":                   "usage_usec 5000000\nuser_usec 1\n",
		"cg/cpu.max":                    "100000 100000\n",
		"cg/memory.current":             "1048576\n",
		"cg/memory.max":                 "max\n",
		"proc/meminfo":                  "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n",
		"sys/devices/system/cpu/online": "0-7\n",
	}
	for rel, content := range files {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := &Chassis{cgroup: monitor.Cgroup{Dir: filepath.Join(root, "cg"), ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys")}}
	rec := httptest.NewRecorder()
	c.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/usage", nil))
	var u monitor.Usage
	if err := json.Unmarshal(rec.Body.Bytes(), &u); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/usage = %d %s, %v", rec.Code, rec.Body, err)
	}
	if u.At.IsZero() || u.CPU == nil || u.CPU.UsageUsec != 5000000 || u.CPU.CPUs != 1 ||
		u.Memory == nil || u.Memory.UsedBytes != 1<<20 || u.Memory.LimitBytes != 2<<20 || len(u.Missing) != 0 {
		t.Errorf("GET /v1/usage = %+v (cpu %+v, memory %+v); want 5 s of CPU of 1 CPU, 1 MiB of 2 MiB", u, u.CPU, u.Memory)
	}
}
