// Package monitor is the host agent's resource monitor. Every Interval it
// reads the CPU and memory use of the host's own cgroup and the space used
// on the file system of its software root, and asserts the resource alarms
// 100.101 (CPU), 100.103 (memory) and 100.104 (file system) with
// hysteresis: an alarm is asserted after Samples consecutive readings at or
// above its raise level and withdrawn at the first reading at or below its
// clear level. The agent carries the alarms it asserts to the site
// controller in its reports; the site raises and clears them.
//
// How a host's counters are read is the platform's business: a real host
// reads its cgroup v2 files and statfs (Cgroup, Statfs), a lab host asks
// its chassis, which reads the host's cgroup from outside the host's mount
// namespace.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/inventory"
)

// Threshold is when one resource's alarm is asserted and withdrawn.
type Threshold struct {
	Raise   float64 `json:"raise"`   // percent: asserted at or above, after Samples readings
	Clear   float64 `json:"clear"`   // percent: withdrawn at or below
	Samples int     `json:"samples"` // consecutive readings at or above Raise before asserting
}

// Validate checks 0 < Clear < Raise <= 100 and 1 <= Samples <= 100.
func (t Threshold) Validate() error {
	if !(t.Clear > 0 && t.Clear < t.Raise && t.Raise <= 100) {
		return fmt.Errorf("want 0 < clear < raise <= 100, have raise %g, clear %g", t.Raise, t.Clear)
	}
	if t.Samples < 1 || t.Samples > 100 {
		return fmt.Errorf("samples %d: want 1 to 100", t.Samples)
	}
	return nil
}

// Config configures a Monitor. Zero fields take the defaults.
type Config struct {
	Interval   time.Duration // between readings; default 10 s
	CPU        Threshold     // default raise 90, clear 80, 3 samples
	Memory     Threshold     // default raise 90, clear 80, 1 sample
	Filesystem Threshold     // default raise 90, clear 85, 1 sample
}

// DefaultInterval is the time between readings unless configured.
const DefaultInterval = 10 * time.Second

// The default thresholds. CPU needs three readings in a row (30 s at the
// default interval) so that a burst does not alarm; memory and file
// systems fill up rather than spike.
var (
	defaultCPU        = Threshold{Raise: 90, Clear: 80, Samples: 3}
	defaultMemory     = Threshold{Raise: 90, Clear: 80, Samples: 1}
	defaultFilesystem = Threshold{Raise: 90, Clear: 85, Samples: 1}
)

// WithDefaults fills zero fields with the defaults.
func (c Config) WithDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	fill := func(t *Threshold, def Threshold) {
		if t.Raise == 0 {
			t.Raise = def.Raise
		}
		if t.Clear == 0 {
			t.Clear = def.Clear
		}
		if t.Samples == 0 {
			t.Samples = def.Samples
		}
	}
	fill(&c.CPU, defaultCPU)
	fill(&c.Memory, defaultMemory)
	fill(&c.Filesystem, defaultFilesystem)
	return c
}

// Validate checks a configuration with its defaults filled in.
func (c Config) Validate() error {
	if c.Interval < 100*time.Millisecond {
		return fmt.Errorf("monitor: interval %s: want at least 100ms", c.Interval)
	}
	for _, r := range []struct {
		name string
		t    Threshold
	}{{"cpu", c.CPU}, {"memory", c.Memory}, {"filesystem", c.Filesystem}} {
		if err := r.t.Validate(); err != nil {
			return fmt.Errorf("monitor: %s: %w", r.name, err)
		}
	}
	return nil
}

// Hysteresis is the state of one resource's alarm: asserted after
// Samples consecutive readings at or above Raise, withdrawn at the first
// reading at or below Clear. Readings between the two levels change
// nothing but break a run of high readings.
type Hysteresis struct {
	t        Threshold
	above    int // consecutive readings at or above Raise while not asserted
	asserted bool
}

// NewHysteresis returns the state of an alarm that is not asserted.
func NewHysteresis(t Threshold) *Hysteresis { return &Hysteresis{t: t} }

// Observe takes one reading (percent) and reports whether the alarm's
// state changed.
func (h *Hysteresis) Observe(pct float64) (changed bool) {
	if h.asserted {
		if pct <= h.t.Clear {
			h.asserted, h.above = false, 0
			return true
		}
		return false
	}
	if pct < h.t.Raise {
		h.above = 0
		return false
	}
	h.above++
	if h.above >= h.t.Samples {
		h.asserted, h.above = true, 0
		return true
	}
	return false
}

// Gap records a missing reading: it breaks a run of high readings and
// leaves an asserted alarm asserted.
func (h *Hysteresis) Gap() { h.above = 0 }

// Asserted reports whether the alarm is asserted.
func (h *Hysteresis) Asserted() bool { return h.asserted }

// Reader reads the host's counters; it is the agent platform's Usage.
type Reader func(ctx context.Context) (Usage, error)

// Reading is one resource's last computed use.
type Reading struct {
	Percent float64
	Valid   bool // false: no reading (not available, or the first CPU reading)
}

// Readings are the last computed uses.
type Readings struct {
	At          time.Time
	CPU         Reading
	Memory      Reading
	Filesystems map[string]Reading // by name
}

// Monitor samples a host's resources and keeps which alarms it asserts.
type Monitor struct {
	cfg     Config
	read    Reader
	log     *slog.Logger
	changed chan struct{}

	mu       sync.Mutex // guards the fields below
	cpu, mem *Hysteresis
	fs       map[string]*fsState
	prevCPU  *CPU // the previous CPU counters, for the next interval
	prevAt   time.Time
	last     Readings
	problem  string // the last reading problem logged, to log each once
}

type fsState struct {
	h    *Hysteresis
	path string
}

// New returns a monitor reading through read. cfg's zero fields take the
// defaults.
func New(cfg Config, read Reader, log *slog.Logger) (*Monitor, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if read == nil || log == nil {
		return nil, errors.New("monitor: a reader and a logger are required")
	}
	return &Monitor{cfg: cfg, read: read, log: log, changed: make(chan struct{}, 1),
		cpu: NewHysteresis(cfg.CPU), mem: NewHysteresis(cfg.Memory), fs: map[string]*fsState{}}, nil
}

// Config is the monitor's configuration, defaults filled in.
func (m *Monitor) Config() Config { return m.cfg }

// Changed receives a value after a sample changed the set of asserted
// alarms (at most one pending).
func (m *Monitor) Changed() <-chan struct{} { return m.changed }

// Run samples at once and then every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.Interval)
		_ = m.Sample(sctx) // logged by Sample; the next tick tries again
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sample reads the counters once and updates the alarms' states. A failed
// read is a gap for every resource.
func (m *Monitor) Sample(ctx context.Context) error {
	u, err := m.read(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.cpu.Gap()
		m.mem.Gap()
		for _, f := range m.fs {
			f.h.Gap()
		}
		m.prevCPU = nil
		m.last = Readings{At: time.Now()}
		m.report("reading resources failed", err.Error())
		return err
	}
	if u.At.IsZero() {
		u.At = time.Now()
	}
	m.report("some resources cannot be read", strings.Join(u.Missing, "; "))
	if m.observe(u) {
		select {
		case m.changed <- struct{}{}:
		default:
		}
	}
	return nil
}

// report logs a reading problem when it differs from the last one logged.
func (m *Monitor) report(msg, problem string) {
	if problem == m.problem {
		return
	}
	m.problem = problem
	if problem == "" {
		m.log.Info("resources readable again")
		return
	}
	m.log.Warn(msg, "problem", problem)
}

// observe applies one reading; it reports whether an alarm changed.
func (m *Monitor) observe(u Usage) bool {
	changed := false
	step := func(id string, h *Hysteresis, r Reading, what string) {
		if !r.Valid {
			h.Gap()
			return
		}
		if h.Observe(r.Percent) {
			changed = true
			if h.Asserted() {
				m.log.Warn("resource alarm asserted", "alarm_id", id, "resource", what, "percent", round1(r.Percent),
					"raise", h.t.Raise)
			} else {
				m.log.Info("resource alarm withdrawn", "alarm_id", id, "resource", what, "percent", round1(r.Percent),
					"clear", h.t.Clear)
			}
		}
	}
	last := Readings{At: u.At, Filesystems: make(map[string]Reading, len(u.Filesystems))}
	if u.CPU != nil && m.prevCPU != nil {
		last.CPU.Percent, last.CPU.Valid = u.CPU.Percent(*m.prevCPU, u.At.Sub(m.prevAt))
	}
	m.prevCPU, m.prevAt = u.CPU, u.At
	step(inventory.AlarmCPU, m.cpu, last.CPU, "cpu")
	if u.Memory != nil {
		last.Memory.Percent, last.Memory.Valid = u.Memory.Percent()
	}
	step(inventory.AlarmMemory, m.mem, last.Memory, "memory")
	seen := make(map[string]bool, len(u.Filesystems))
	for _, f := range u.Filesystems {
		st := m.fs[f.Name]
		if st == nil {
			st = &fsState{h: NewHysteresis(m.cfg.Filesystem)}
			m.fs[f.Name] = st
		}
		st.path = f.Path
		var r Reading
		r.Percent, r.Valid = f.Percent()
		last.Filesystems[f.Name] = r
		seen[f.Name] = true
		step(inventory.AlarmFilesystem, st.h, r, "filesystem "+f.Name)
	}
	for name, st := range m.fs {
		if !seen[name] {
			st.h.Gap()
		}
	}
	m.last = last
	return changed
}

func round1(p float64) float64 { return float64(int(p*10+0.5)) / 10 }

// Last returns the readings of the last sample.
func (m *Monitor) Last() Readings {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.last
	r.Filesystems = make(map[string]Reading, len(m.last.Filesystems))
	for k, v := range m.last.Filesystems {
		r.Filesystems[k] = v
	}
	return r
}

// Asserted lists the alarms the monitor asserts, sorted by alarm ID and
// resource; never nil.
func (m *Monitor) Asserted() []inventory.ResourceAlarm {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []inventory.ResourceAlarm{}
	// At most two decimals: the site accepts thresholds of up to 8 characters.
	pct := func(p float64) string { return strconv.FormatFloat(math.Round(p*100)/100, 'f', -1, 64) }
	if m.cpu.Asserted() {
		out = append(out, inventory.ResourceAlarm{AlarmID: inventory.AlarmCPU,
			Fields: map[string]string{"threshold": pct(m.cfg.CPU.Raise)}})
	}
	if m.mem.Asserted() {
		out = append(out, inventory.ResourceAlarm{AlarmID: inventory.AlarmMemory,
			Fields: map[string]string{"threshold": pct(m.cfg.Memory.Raise)}})
	}
	for name, st := range m.fs {
		if st.h.Asserted() {
			label := st.path // the reason names the path, unless the site would refuse it
			if !inventory.ValidFilesystemField(label) {
				label = name
			}
			out = append(out, inventory.ResourceAlarm{AlarmID: inventory.AlarmFilesystem, Resource: "filesystem=" + name,
				Fields: map[string]string{"threshold": pct(m.cfg.Filesystem.Raise), "filesystem": label}})
		}
	}
	return inventory.SortResourceAlarms(out)
}
