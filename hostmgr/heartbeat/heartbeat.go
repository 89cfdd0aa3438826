package heartbeat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
)

// State is a host's heartbeat on one network.
type State uint8

const (
	OK       State = iota // replies arrive
	Degraded              // DegradeAfter consecutive misses
	Lost                  // LostAfter consecutive misses: suspect the host
)

func (s State) String() string {
	return [...]string{"ok", "degraded", "lost"}[s]
}

// Brief §4 defaults.
const (
	DefaultPeriod       = 100 * time.Millisecond
	MinPeriod           = 100 * time.Millisecond
	DefaultDegradeAfter = 5
	DefaultLostAfter    = 10
)

// NewKey returns a random per-host key.
func NewKey() []byte {
	k := make([]byte, keyLength)
	_, _ = rand.Read(k)
	return k
}

// Change is a host's heartbeat state changing on one network.
type Change struct {
	Host    uuid.UUID
	Network Network
	State   State
	Misses  int
	At      time.Time
}

// Limits are the miss thresholds.
type Limits struct {
	DegradeAfter, LostAfter int
}

func (l *Limits) defaults() {
	if l.DegradeAfter <= 0 {
		l.DegradeAfter = DefaultDegradeAfter
	}
	if l.LostAfter <= l.DegradeAfter {
		l.LostAfter = max(DefaultLostAfter, l.DegradeAfter+1)
	}
}

type linkKey struct {
	host    uuid.UUID
	network Network
}

// link is one host on one network: the outstanding pulse and the misses
// since the last answer.
type link struct {
	sent, acked uint64
	misses      int
	state       State
	heard       bool // answered at least once: its first answer is reported
	fresh       bool // no pulse sent yet
}

// tracker counts misses; it does no I/O, so its rules are tested directly.
type tracker struct {
	limits Limits
	links  map[linkKey]*link
}

func newTracker(l Limits) *tracker {
	l.defaults()
	return &tracker{limits: l, links: map[linkKey]*link{}}
}

func (t *tracker) stateOf(misses int) State {
	switch {
	case misses >= t.limits.LostAfter:
		return Lost
	case misses >= t.limits.DegradeAfter:
		return Degraded
	}
	return OK
}

// tick closes the period of k's outstanding pulse (a miss if unanswered)
// and returns the next pulse's sequence number and a change, if any.
func (t *tracker) tick(k linkKey, now time.Time) (uint64, *Change) {
	l := t.links[k]
	if l == nil {
		// A random first number: answers recorded in an earlier run (the
		// key outlives a controller restart) never match this run's pulses.
		var b [4]byte
		_, _ = rand.Read(b[:])
		start := uint64(binary.BigEndian.Uint32(b[:])) << 16
		l = &link{sent: start, acked: start, fresh: true}
		t.links[k] = l
	}
	var ch *Change
	if !l.fresh && l.acked < l.sent {
		l.misses++
		if s := t.stateOf(l.misses); s != l.state {
			l.state = s
			ch = &Change{Host: k.host, Network: k.network, State: s, Misses: l.misses, At: now}
		}
	}
	l.fresh = false
	l.sent++
	return l.sent, ch
}

// reply records an answer to pulse seq. Only the outstanding pulse counts:
// a late answer to an older one, or a replay, changes nothing.
func (t *tracker) reply(k linkKey, seq uint64, now time.Time) *Change {
	l := t.links[k]
	if l == nil || seq != l.sent || seq <= l.acked {
		return nil
	}
	l.acked = seq
	l.misses = 0
	if l.state != OK || !l.heard {
		l.heard = true
		l.state = OK
		return &Change{Host: k.host, Network: k.network, State: OK, At: now}
	}
	return nil
}

// forget drops a host's links.
func (t *tracker) forget(host uuid.UUID) {
	for k := range t.links {
		if k.host == host {
			delete(t.links, k)
		}
	}
}

// Target is a host the monitor pulses: its key and its address on each
// network.
type Target struct {
	Host  uuid.UUID
	Key   []byte
	Addrs map[Network]netip.AddrPort
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Listen is the controller's own address on each network pulses go
	// out from (port 0: any).
	Listen map[Network]netip.AddrPort
	Period time.Duration // default 100 ms, at least 100 ms
	Limits Limits
	// OnChange gets every change of a host's state on a network, in order,
	// from the monitor's goroutine; it must not block for long.
	OnChange func(Change)
	Logger   *slog.Logger
}

// Monitor pulses every target on each network every period.
type Monitor struct {
	cfg   MonitorConfig
	conns map[Network]*net.UDPConn

	mu      sync.Mutex
	targets map[uuid.UUID]Target
	track   *tracker
}

// NewMonitor binds the monitor's sockets; Run pulses.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if len(cfg.Listen) == 0 || cfg.OnChange == nil || cfg.Logger == nil {
		return nil, errors.New("heartbeat: Listen, OnChange and Logger are required")
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultPeriod
	}
	if cfg.Period < MinPeriod {
		return nil, errors.New("heartbeat: the period is at least 100 ms")
	}
	m := &Monitor{cfg: cfg, conns: map[Network]*net.UDPConn{}, targets: map[uuid.UUID]Target{}, track: newTracker(cfg.Limits)}
	for n, ap := range cfg.Listen {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			m.close()
			return nil, err
		}
		m.conns[n] = c
	}
	return m, nil
}

func (m *Monitor) close() {
	for _, c := range m.conns {
		c.Close()
	}
}

// Addr is the monitor's bound address on network n.
func (m *Monitor) Addr(n Network) netip.AddrPort {
	if c := m.conns[n]; c != nil {
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return netip.AddrPort{}
}

// Set adds or replaces a target.
func (m *Monitor) Set(t Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.targets[t.Host] = t
}

// Remove stops pulsing a host.
func (m *Monitor) Remove(host uuid.UUID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.targets, host)
	m.track.forget(host)
}

func (m *Monitor) keyOf(host uuid.UUID) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.targets[host].Key
}

// Run pulses until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.close()
	var wg sync.WaitGroup
	changes := make(chan Change, 1024)
	for n, c := range m.conns {
		wg.Add(1)
		go func() { defer wg.Done(); m.receive(n, c, changes) }()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range changes {
			m.cfg.OnChange(ch)
		}
	}()
	defer func() { m.close(); wg.Wait(); close(changes); <-done }()
	tick := time.NewTicker(m.cfg.Period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			m.pulse(now, changes)
		}
	}
}

// pulse closes the period for every link and sends the next pulses.
func (m *Monitor) pulse(now time.Time, changes chan<- Change) {
	type out struct {
		c    *net.UDPConn
		to   netip.AddrPort
		data []byte
	}
	var outs []out
	var chs []Change
	m.mu.Lock()
	for _, t := range m.targets {
		for n, to := range t.Addrs {
			c := m.conns[n]
			if c == nil {
				continue
			}
			seq, ch := m.track.tick(linkKey{t.Host, n}, now)
			if ch != nil {
				chs = append(chs, *ch)
			}
			outs = append(outs, out{c, to, frame{kind: kindPulse, network: n, seq: seq, host: t.Host}.seal(t.Key)})
		}
	}
	m.mu.Unlock()
	for _, ch := range chs { // outside the lock: OnChange may call Set or Remove
		changes <- ch
	}
	for _, o := range outs {
		if _, err := o.c.WriteToUDPAddrPort(o.data, o.to); err != nil {
			m.cfg.Logger.Debug("pulse not sent", "to", o.to.String(), "err", err)
		}
	}
}

func (m *Monitor) receive(n Network, c *net.UDPConn, changes chan<- Change) {
	buf := make([]byte, 512)
	for {
		k, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f, err := open(buf[:k], m.keyOf)
		if err != nil || f.kind != kindReply || f.network != n {
			continue // not authentic, or not an answer on this network
		}
		var ch *Change
		m.mu.Lock()
		t, ok := m.targets[f.host]
		if ok && t.Addrs[n].Addr() == from.Addr().Unmap() {
			ch = m.track.reply(linkKey{f.host, n}, f.seq, time.Now())
		}
		m.mu.Unlock()
		if ch != nil {
			changes <- *ch
		}
	}
}

// AnyNetwork, as a Responder's Listen key, answers pulses of every network
// on one socket (a wildcard address: replies leave through the network the
// pulse came from).
const AnyNetwork Network = 0

// ResponderConfig configures a host's answering side.
type ResponderConfig struct {
	Host   uuid.UUID
	Key    []byte
	Listen map[Network]netip.AddrPort // the host's address on each network, or AnyNetwork
	Logger *slog.Logger
}

// Responder answers authentic pulses for its host.
type Responder struct {
	cfg   ResponderConfig
	conns map[Network]*net.UDPConn
}

// NewResponder binds the host's sockets.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if len(cfg.Key) != keyLength || len(cfg.Listen) == 0 || cfg.Logger == nil {
		return nil, errors.New("heartbeat: a 32-byte Key, Listen and Logger are required")
	}
	r := &Responder{cfg: cfg, conns: map[Network]*net.UDPConn{}}
	for n, ap := range cfg.Listen {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			for _, c := range r.conns {
				c.Close()
			}
			return nil, err
		}
		r.conns[n] = c
	}
	return r, nil
}

// Addr is the responder's bound address on network n.
func (r *Responder) Addr(n Network) netip.AddrPort {
	if c := r.conns[n]; c != nil {
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return netip.AddrPort{}
}

// Run answers until ctx ends.
func (r *Responder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for n, c := range r.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			keyOf := func(h uuid.UUID) []byte {
				if h == r.cfg.Host {
					return r.cfg.Key
				}
				return nil
			}
			for {
				k, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				f, err := open(buf[:k], keyOf)
				if err != nil || f.kind != kindPulse || (f.network != n && n != AnyNetwork) {
					continue
				}
				f.kind = kindReply
				if _, err := c.WriteToUDPAddrPort(f.seal(r.cfg.Key), from); err != nil {
					r.cfg.Logger.Debug("heartbeat reply not sent", "err", err)
				}
			}
		}()
	}
	<-ctx.Done()
	for _, c := range r.conns {
		c.Close()
	}
	wg.Wait()
	return nil
}
