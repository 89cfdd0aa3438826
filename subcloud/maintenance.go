package subcloud

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/hostmgr"
	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// HeartbeatConfig turns on host maintenance's heartbeat (file key
// heartbeat:). Absent: hosts are not pulsed.
type HeartbeatConfig struct {
	Port   int    `json:"port"`   // UDP port agents answer on; default 2112
	Period string `json:"period"` // default 100ms (at least 100ms)
	// Listen is this controller's address on each network pulses go out
	// from (mgmt, cluster); default: the address of the interface named
	// after the network.
	Listen map[string]string `json:"listen"`
	Grace  string            `json:"grace"` // G: default 5s, at least 3s
	// StepTimeout is how long each recovery step (reboot, BMC reset,
	// power-cycle, power-on) gets to bring the host back; default 60s.
	StepTimeout string `json:"step_timeout"`
}

// DefaultHeartbeatPort is where agents answer pulses.
const DefaultHeartbeatPort = 2112

// HeartbeatKeyFile holds the site's heartbeat secret (0600): each host's
// key is derived from it and the host's identity.
const HeartbeatKeyFile = "heartbeat.key"

var networksByName = map[string]heartbeat.Network{"mgmt": heartbeat.Mgmt, "cluster": heartbeat.Cluster}

// maintenance is the site's host maintenance: the heartbeat monitor and
// the recovery runner.
type maintenance struct {
	port    int
	secret  []byte
	monitor *heartbeat.Monitor
	runner  *hostmgr.Runner

	mu      sync.Mutex
	tracked map[string]heartbeat.Target // host ID -> what the monitor pulses
}

func (s *Subcloud) newMaintenance(cfg *HeartbeatConfig) (*maintenance, error) {
	if cfg == nil {
		return nil, nil
	}
	m := &maintenance{port: cfg.Port, tracked: map[string]heartbeat.Target{}}
	if m.port == 0 {
		m.port = DefaultHeartbeatPort
	}
	var err error
	if m.secret, err = loadOrCreateSecret(filepath.Join(s.cfg.Shell.DataDir, HeartbeatKeyFile)); err != nil {
		return nil, err
	}
	var period, grace time.Duration
	if cfg.Period != "" {
		if period, err = time.ParseDuration(cfg.Period); err != nil || period < heartbeat.MinPeriod {
			return nil, fmt.Errorf("config: heartbeat.period %q: want a duration of at least 100ms", cfg.Period)
		}
	}
	if cfg.Grace != "" {
		if grace, err = time.ParseDuration(cfg.Grace); err != nil || grace < 3*time.Second {
			return nil, fmt.Errorf("config: heartbeat.grace %q: want a duration of at least 3s", cfg.Grace)
		}
	}
	var step time.Duration
	if cfg.StepTimeout != "" {
		if step, err = time.ParseDuration(cfg.StepTimeout); err != nil || step < 5*time.Second {
			return nil, fmt.Errorf("config: heartbeat.step_timeout %q: want a duration of at least 5s", cfg.StepTimeout)
		}
	}
	listen := map[heartbeat.Network]netip.AddrPort{}
	for name, n := range networksByName {
		addr := cfg.Listen[name]
		if addr == "" {
			if addr = interfaceAddr(name); addr == "" {
				continue // no such network here
			}
		}
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("config: heartbeat.listen.%s %q: not an IP address", name, addr)
		}
		listen[n] = netip.AddrPortFrom(ip, 0)
	}
	for name := range cfg.Listen {
		if _, ok := networksByName[name]; !ok {
			return nil, fmt.Errorf("config: heartbeat.listen: unknown network %q (mgmt, cluster)", name)
		}
	}
	if len(listen) == 0 {
		return nil, errors.New("config: heartbeat: no network to pulse on (no interface named mgmt or cluster, and no heartbeat.listen)")
	}
	if m.runner, err = hostmgr.NewRunner(hostmgr.RunnerConfig{Site: s.cfg.Site, Timing: hostmgr.Timing{Grace: grace, StepTimeout: step},
		Hosts: hostUpdater{s}, Alarms: s.shell.Alarms, BMC: s.bmcFor, AgentReboot: s.agentReboot, WithdrawCommands: s.withdrawCommands,
		HoldsActive: s.holdsActive, HostDown: s.hostDown,
		Logger: s.log.With("component", "hostmgr")}); err != nil {
		return nil, err
	}
	if m.monitor, err = heartbeat.NewMonitor(heartbeat.MonitorConfig{Listen: listen, Period: period,
		OnChange: m.runner.Heartbeat, Logger: s.log.With("component", "heartbeat")}); err != nil {
		return nil, fmt.Errorf("subcloud: heartbeat: %w", err)
	}
	return m, nil
}

// run pulses and recovers until ctx ends.
func (m *maintenance) run(ctx context.Context, s *Subcloud) error {
	done := make(chan struct{})
	go func() { defer close(done); _ = m.runner.Run(ctx) }()
	// Every host the inventory knows is watched from the start.
	for after := ""; ; {
		hosts, next, err := s.Hosts.Hosts(ctx, rest.ListOptions{Limit: rest.MaxLimit, After: after})
		if err != nil {
			s.log.Error("host maintenance: reading the inventory failed", "err", err)
			break
		}
		for _, h := range hosts {
			m.watch(h)
		}
		if next == "" {
			break
		}
		after = next
	}
	err := m.monitor.Run(ctx)
	<-done
	return err
}

// key is a host's heartbeat key: derived from the site's secret, so it
// survives a controller restart without being stored per host.
func (m *maintenance) key(hostID string) []byte {
	mac := hmac.New(sha256.New, m.secret)
	mac.Write([]byte("petrel-heartbeat-v1:" + hostID))
	return mac.Sum(nil)
}

// ack is what a host's agent needs to answer pulses.
func (m *maintenance) ack(hostID string) *inventory.HeartbeatConfig {
	if m == nil {
		return nil
	}
	return &inventory.HeartbeatConfig{Key: base64.StdEncoding.EncodeToString(m.key(hostID)), Port: m.port}
}

// watch pulses a host on every network it has an address on (an interface
// named after the network), once its agent has reported them.
func (m *maintenance) watch(h inventory.Host) {
	if m == nil {
		return
	}
	id, err := uuid.Parse(h.UUID)
	if err != nil {
		return
	}
	t := heartbeat.Target{Host: id, Key: m.key(h.UUID), Addrs: map[heartbeat.Network]netip.AddrPort{}}
	for _, nic := range h.Inventory.NICs {
		n, ok := networksByName[nic.Name]
		if !ok || m.monitor.Addr(n) == (netip.AddrPort{}) {
			continue
		}
		for _, a := range nic.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() {
				t.Addrs[n] = netip.AddrPortFrom(p.Addr(), uint16(m.port))
				break
			}
		}
	}
	if len(t.Addrs) == 0 {
		return
	}
	m.mu.Lock()
	old, had := m.tracked[h.UUID]
	m.tracked[h.UUID] = t
	m.mu.Unlock()
	if had && sameAddrs(old.Addrs, t.Addrs) {
		return
	}
	m.monitor.Set(t)
	var nets []heartbeat.Network
	for n := range t.Addrs {
		nets = append(nets, n)
	}
	m.runner.Track(h.UUID, nets)
}

// forget stops pulsing a deleted host.
func (m *maintenance) forget(hostID string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.tracked, hostID)
	m.mu.Unlock()
	if id, err := uuid.Parse(hostID); err == nil {
		m.monitor.Remove(id)
	}
	m.runner.Forget(hostID)
}

func sameAddrs(a, b map[heartbeat.Network]netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// interfaceAddr is the first IPv4 address of the interface named name.
func interfaceAddr(name string) string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// loadOrCreateSecret reads a 0600 secret file, creating it (32 random
// bytes) on first start.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("subcloud: %s is readable by others (mode %v); want 0600", path, fi.Mode().Perm())
		}
		if len(b) != 32 {
			return nil, fmt.Errorf("subcloud: %s: want 32 bytes", path)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, atomicfile.Write(path, b, 0o600)
}

// hostUpdater is the inventory as host management writes it.
type hostUpdater struct{ s *Subcloud }

func (u hostUpdater) Host(ctx context.Context, id string) (inventory.Host, error) {
	return u.s.Hosts.Host(ctx, id)
}

func (u hostUpdater) UpdateHost(ctx context.Context, id string, fn func(*inventory.Host) error) (inventory.Host, error) {
	for attempt := 0; ; attempt++ {
		h, err := u.s.Hosts.Host(ctx, id)
		if err != nil {
			return inventory.Host{}, err
		}
		if err := fn(&h); err != nil {
			return inventory.Host{}, err
		}
		out, err := u.s.Hosts.PutHost(ctx, h, h.Rev)
		if errors.Is(err, inventory.ErrStale) && attempt < 5 {
			continue
		}
		return out, err
	}
}
