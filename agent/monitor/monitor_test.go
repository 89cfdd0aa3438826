package monitor_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/inventory"
)

func TestHysteresis(t *testing.T) {
	for name, tc := range map[string]struct {
		th    monitor.Threshold
		steps []float64 // -1: a gap
		want  []bool    // asserted after each step
	}{
		"three in a row raise": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 3},
			[]float64{95, 95, 95, 100},
			[]bool{false, false, true, true}},
		"a spike does not alarm": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 3},
			[]float64{99, 99, 50, 99, 99, 89.9, 99},
			[]bool{false, false, false, false, false, false, false}},
		"raise level is inclusive": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 1},
			[]float64{89.99, 90},
			[]bool{false, true}},
		"stays raised between the levels, clears at the clear level": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 1},
			[]float64{91, 85, 80.01, 89, 80, 85, 90},
			[]bool{true, true, true, true, false, false, true}},
		"a gap breaks a run but keeps an alarm": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 2},
			[]float64{95, -1, 95, 95, -1, -1, 85, 70},
			[]bool{false, false, false, true, true, true, true, false}},
		"after clearing, a new run is needed": {monitor.Threshold{Raise: 90, Clear: 80, Samples: 2},
			[]float64{95, 95, 10, 95, 10, 95, 95},
			[]bool{false, true, false, false, false, false, true}},
	} {
		t.Run(name, func(t *testing.T) {
			h := monitor.NewHysteresis(tc.th)
			prev := false
			for i, pct := range tc.steps {
				var changed bool
				if pct < 0 {
					h.Gap()
				} else {
					changed = h.Observe(pct)
				}
				if got := h.Asserted(); got != tc.want[i] {
					t.Fatalf("step %d (%g): Asserted() = %v; want %v", i, pct, got, tc.want[i])
				}
				if changed != (tc.want[i] != prev) {
					t.Fatalf("step %d (%g): Observe() changed = %v; want %v", i, pct, changed, tc.want[i] != prev)
				}
				prev = tc.want[i]
			}
		})
	}
}

func TestConfig(t *testing.T) {
	c := monitor.Config{}.WithDefaults()
	if c.Interval != 10*time.Second || c.CPU != (monitor.Threshold{Raise: 90, Clear: 80, Samples: 3}) ||
		c.Memory != (monitor.Threshold{Raise: 90, Clear: 80, Samples: 1}) ||
		c.Filesystem != (monitor.Threshold{Raise: 90, Clear: 85, Samples: 1}) {
		t.Errorf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	// Only the zero fields take defaults.
	c = monitor.Config{CPU: monitor.Threshold{Raise: 70, Clear: 60}}.WithDefaults()
	if c.CPU != (monitor.Threshold{Raise: 70, Clear: 60, Samples: 3}) {
		t.Errorf("CPU with raise and clear set = %+v; want samples defaulted only", c.CPU)
	}
	for name, bad := range map[string]monitor.Config{
		"clear above raise":  {CPU: monitor.Threshold{Raise: 70, Clear: 75}},
		"clear equals raise": {Memory: monitor.Threshold{Raise: 80, Clear: 80}},
		"raise above 100":    {Filesystem: monitor.Threshold{Raise: 101}},
		"negative clear":     {CPU: monitor.Threshold{Clear: -1}},
		"too many samples":   {CPU: monitor.Threshold{Samples: 1000}},
		"interval too short": {Interval: time.Millisecond},
	} {
		if _, err := monitor.New(bad, func(context.Context) (monitor.Usage, error) { return monitor.Usage{}, nil }, slog.Default()); err == nil {
			t.Errorf("New(%s) succeeded; want an error", name)
		}
	}
}

// script is a Reader that returns usages set by the test.
type script struct {
	mu  sync.Mutex
	u   monitor.Usage
	err error
}

func (s *script) set(u monitor.Usage, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.u, s.err = u, err
}

func (s *script) read(context.Context) (monitor.Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.u, s.err
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// host is a simulated host with 2 CPUs, 8 GiB and a 100 GiB software root.
type host struct {
	at      time.Time
	cpuUsec uint64
}

// next advances 10 s in which the host used cpuPct of its 2 CPUs.
func (h *host) next(cpuPct, memPct, fsPct float64) monitor.Usage {
	h.at = h.at.Add(10 * time.Second)
	h.cpuUsec += uint64(cpuPct / 100 * 2 * 10e6)
	return monitor.Usage{At: h.at,
		CPU:         &monitor.CPU{UsageUsec: h.cpuUsec, CPUs: 2},
		Memory:      &monitor.Memory{UsedBytes: uint64(memPct / 100 * (8 << 30)), LimitBytes: 8 << 30, Source: "memory.current"},
		Filesystems: []monitor.Filesystem{{Name: "software-root", Path: "/srv/petrel", UsedBytes: uint64(fsPct / 100 * (100 << 30)), SizeBytes: 100 << 30}}}
}

func ids(as []inventory.ResourceAlarm) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.AlarmID+"/"+a.Resource)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMonitorSamples(t *testing.T) {
	sc := &script{}
	m, err := monitor.New(monitor.Config{}, sc.read, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h := &host{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	step := func(cpu, mem, fs float64, want ...string) {
		t.Helper()
		sc.set(h.next(cpu, mem, fs), nil)
		if err := m.Sample(ctx); err != nil {
			t.Fatalf("Sample() = %v", err)
		}
		if got := ids(m.Asserted()); !equal(got, want) {
			t.Fatalf("after cpu %g%%, memory %g%%, fs %g%%: Asserted() = %v; want %v (readings %+v)", cpu, mem, fs, got, want, m.Last())
		}
	}
	changed := func() bool {
		select {
		case <-m.Changed():
			return true
		default:
			return false
		}
	}
	step(10, 10, 10) // the first CPU reading only sets the base
	near := func(got, want float64) bool { return got > want-0.01 && got < want+0.01 }
	if r := m.Last(); r.CPU.Valid || !r.Memory.Valid || !near(r.Memory.Percent, 10) || !near(r.Filesystems["software-root"].Percent, 10) {
		t.Errorf("first readings = %+v; want no CPU yet, memory 10%%, fs 10%%", r)
	}
	step(95, 10, 10)
	if r := m.Last(); !r.CPU.Valid || !near(r.CPU.Percent, 95) {
		t.Errorf("CPU reading = %+v; want 95%%", r.CPU)
	}
	step(95, 10, 10)
	if changed() {
		t.Error("Changed() fired before any alarm changed")
	}
	step(95, 10, 10, "100.101/")
	if !changed() {
		t.Error("Changed() did not fire when 100.101 was asserted")
	}
	a := m.Asserted()[0]
	if a.Fields["threshold"] != "90" || len(a.Fields) != 1 {
		t.Errorf("100.101 fields = %v; want threshold 90 only", a.Fields)
	}
	// Memory and file system need one reading; both are listed sorted.
	step(95, 91, 92, "100.101/", "100.103/", "100.104/filesystem=software-root")
	fs := m.Asserted()[2]
	if fs.Fields["filesystem"] != "/srv/petrel" || fs.Fields["threshold"] != "90" {
		t.Errorf("100.104 fields = %v; want filesystem /srv/petrel, threshold 90", fs.Fields)
	}
	// Between the levels nothing clears; at the clear levels each clears.
	step(85, 85, 86, "100.101/", "100.103/", "100.104/filesystem=software-root")
	step(79, 79, 86, "100.104/filesystem=software-root")
	// A failed read is a gap: the asserted alarm stays.
	sc.set(monitor.Usage{}, errors.New("chassis unreachable"))
	if err := m.Sample(ctx); err == nil {
		t.Error("Sample() with a failing reader = nil; want its error")
	}
	if got := ids(m.Asserted()); !equal(got, []string{"100.104/filesystem=software-root"}) {
		t.Errorf("after a failed read: Asserted() = %v; want the file system alarm kept", got)
	}
	// A reading without memory (not available) is a gap for memory; the
	// file system at 50% clears.
	u := h.next(10, 0, 50)
	u.Memory, u.Missing = nil, []string{"memory: no memory controller"}
	sc.set(u, nil)
	m.Sample(ctx)
	if got := m.Asserted(); len(got) != 0 {
		t.Errorf("Asserted() = %v; want none", got)
	}
	// The counter going backwards (the cgroup was recreated) is no reading.
	u = h.next(50, 10, 10)
	u.CPU.UsageUsec = 5
	sc.set(u, nil)
	m.Sample(ctx)
	if m.Last().CPU.Valid {
		t.Errorf("CPU reading over a counter reset = %+v; want none", m.Last().CPU)
	}
}

// TestMonitorRun drives Run under a fake clock: 100.101 is asserted after
// three ticks of high CPU and withdrawn after one tick of low CPU.
func TestMonitorRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &host{at: time.Now()}
		var mu sync.Mutex
		cpu := 99.0
		read := func(context.Context) (monitor.Usage, error) {
			mu.Lock()
			defer mu.Unlock()
			// The fake clock advances as Run waits: report the CPU time
			// used over the real (virtual) interval.
			now := time.Now()
			h.cpuUsec += uint64(cpu / 100 * 2 * float64(now.Sub(h.at).Microseconds()))
			h.at = now
			return monitor.Usage{At: now, CPU: &monitor.CPU{UsageUsec: h.cpuUsec, CPUs: 2}}, nil
		}
		m, err := monitor.New(monitor.Config{Interval: time.Second}, read, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(ctx) }()
		synctest.Wait() // the first sample: a base only
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := m.Asserted(); len(got) != 0 {
			t.Fatalf("after 2 high readings: Asserted() = %v; want none yet", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-m.Changed():
		default:
			t.Fatal("no change after 3 high readings")
		}
		if got := ids(m.Asserted()); !equal(got, []string{"100.101/"}) {
			t.Fatalf("after 3 high readings: Asserted() = %v; want 100.101", got)
		}
		mu.Lock()
		cpu = 5
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := m.Asserted(); len(got) != 0 {
			t.Fatalf("after a low reading: Asserted() = %v; want none", got)
		}
		cancel()
		<-done
	})
}

// TestAssertedFields: thresholds are given with at most two decimals, and
// a path the site would refuse is replaced by the file system's name.
func TestAssertedFields(t *testing.T) {
	long := "/" + strings.Repeat("x", 300)
	sc := &script{}
	sc.set(monitor.Usage{At: time.Now(), Filesystems: []monitor.Filesystem{{Name: "software-root", Path: long, UsedBytes: 99, SizeBytes: 100}}}, nil)
	m, err := monitor.New(monitor.Config{Filesystem: monitor.Threshold{Raise: 100.0 / 3, Clear: 10}}, sc.read, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.Sample(t.Context())
	as := m.Asserted()
	if len(as) != 1 || as[0].Fields["threshold"] != "33.33" || as[0].Fields["filesystem"] != "software-root" {
		t.Errorf("Asserted() = %+v; want threshold 33.33 and the file system's name for its over-long path", as)
	}
	if err := inventory.ValidateResourceAlarms("alarms", as); err != nil {
		t.Errorf("the site would refuse %+v: %v", as, err)
	}
}
