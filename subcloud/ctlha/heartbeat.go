package ctlha

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Beat is one heartbeat: the sender's state, on one network.
type Beat struct {
	Site string  `json:"site"`
	From string  `json:"from"`
	Net  Network `json:"net"` // the network it was sent on (a datagram replayed onto another is refused)
	// Boot is random per process start; Seq increases per datagram within
	// a boot.
	Boot  string `json:"boot"`
	Seq   uint64 `json:"seq"`
	Role  Role   `json:"role"`
	Epoch uint64 `json:"epoch"`
	LSN   uint64 `json:"lsn"`
	Sync  bool   `json:"sync"`
	// Witness: the sender's witness lease was valid (WitnessView.LeaseValid).
	Witness bool `json:"witness"`
	// PeerWitness: the last beat the sender heard from its peer said the
	// peer's lease was valid, or it has heard none. A controller that
	// loses both its peer and the witness defers to the witness then
	// rather than race at the BMC (docs/ha.md D26, D57); the peer reads
	// this before it acts on the witness's word alone (D80-D82).
	PeerWitness bool `json:"peer_witness"`
	// NoPeerBMC: the sender has no BMC of its peer to use, so it never
	// races at the BMC (D62). Absent (an earlier version): it may.
	NoPeerBMC bool `json:"no_peer_bmc,omitempty"`
	// Handoff names the controller the sender stepped down for (a swact);
	// that controller takes it as the swact to itself.
	Handoff string `json:"handoff,omitempty"`
	// Force: the handoff is a forced swact (the target takes over without
	// having replayed everything: docs/ha.md F3).
	Force        bool  `json:"force,omitempty"`
	SentUnixNano int64 `json:"sent_unix_nano"`
}

// BeatState is what a controller publishes in its beats (Heartbeat.Set).
type BeatState struct {
	Role        Role
	Epoch       uint64
	LSN         uint64
	Sync        bool
	Witness     bool
	PeerWitness bool
	NoPeerBMC   bool
	Handoff     string
	Force       bool
}

// PeerState is what the heartbeats tell of the peer (Heartbeat.Peer).
type PeerState struct {
	// Links: a beat arrived on the network within LostAfter.
	Links map[Network]bool
	// LostFor: how long the peer has been silent on every network (0
	// while any is fresh; since Run started if never heard).
	LostFor time.Duration
	Last    *Beat     // the last beat accepted (nil: none yet)
	LastAt  time.Time // when it arrived
}

// Key files.
const keySize = 32

var (
	// ErrInsecureKey: the key file is readable by group or others.
	ErrInsecureKey = errors.New("ctlha: heartbeat key file must not be readable by group or others (mode 0600)")
	// ErrBadKey: the key file does not hold 32 bytes.
	ErrBadKey = errors.New("ctlha: heartbeat key file must hold exactly 32 bytes")
)

// CreateKeyFile writes a new shared heartbeat key (32 random bytes, mode
// 0600) to path; it refuses to overwrite an existing file.
func CreateKeyFile(path string) error {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	return nil
}

// ReadKeyFile reads a heartbeat key, refusing one readable by group or
// others.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s (mode %04o): %w", path, fi.Mode().Perm(), ErrInsecureKey)
	}
	key, err := io.ReadAll(io.LimitReader(f, keySize+1))
	if err != nil {
		return nil, fmt.Errorf("ctlha: heartbeat key: %w", err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("%s: %d bytes: %w", path, len(key), ErrBadKey)
	}
	return key, nil
}

// macKey derives the heartbeat MAC key from the shared key, so the file
// may key other things too without the uses mixing.
func macKey(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("petrel/ctlha/heartbeat/v1"))
	return m.Sum(nil)
}

// seal encodes b and appends its HMAC-SHA256.
func seal(key []byte, b Beat) ([]byte, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(body), nil
}

// unseal checks a datagram's MAC and decodes it.
func unseal(key, pkt []byte) (Beat, string) {
	if len(pkt) <= sha256.Size {
		return Beat{}, "short"
	}
	body, sum := pkt[:len(pkt)-sha256.Size], pkt[len(pkt)-sha256.Size:]
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), sum) {
		return Beat{}, "mac"
	}
	var b Beat
	if err := json.Unmarshal(body, &b); err != nil {
		return Beat{}, "json"
	}
	return b, ""
}

// HeartbeatConfig configures a Heartbeat.
type HeartbeatConfig struct {
	Site string
	// Self and Peer: the two controllers' names.
	Self, Peer string
	// Local: the address (host:port) to bind on each network; the host is
	// the controller's own address there.
	Local map[Network]string
	// PeerAddrs: the peer's address on each network. A network without one
	// is listened on but not sent to until SetPeerAddr.
	PeerAddrs map[Network]string
	// KeyFile: the shared key (CreateKeyFile), mode 0600.
	KeyFile string
	// Interval between beats (default 100 ms).
	Interval time.Duration
	// LostAfter: a network without a beat this long is lost (default 600 ms).
	LostAfter time.Duration
	Logger    *slog.Logger // nil: discard
	// Now is the clock (nil: time.Now). Timers run on real time.
	Now func() time.Time
}

// Heartbeat sends this controller's beats to its peer on every network
// and tracks the peer's. HeartbeatConfig → NewHeartbeat (binds the
// sockets) → Run (owns every goroutine).
type Heartbeat struct {
	cfg     HeartbeatConfig
	log     *slog.Logger
	key     []byte
	boot    string
	conns   map[Network]*net.UDPConn
	nets    []Network
	changed chan struct{} // coalesced change signal
	kick    chan struct{} // send now (Set)
	rearm   chan struct{} // a network went fresh: recompute the expiry timer

	mu       sync.Mutex
	started  time.Time
	seq      uint64
	local    BeatState
	peerAddr map[Network]*net.UDPAddr
	closed   map[Network]bool
	heard    map[Network]time.Time // last accepted beat per network
	lastSeq  map[Network]uint64    // per network, for the peer's current boot
	peerBoot string
	bootSent int64           // highest SentUnixNano of the peer's current boot
	retired  map[string]bool // the peer's earlier boots
	last     *Beat
	lastAt   time.Time
	fresh    map[Network]bool // freshness as last notified
	rejected map[string]uint64
}

// NewHeartbeat validates cfg, reads the key and binds one UDP socket per
// network. It starts nothing: Run does.
func NewHeartbeat(cfg HeartbeatConfig) (*Heartbeat, error) {
	switch {
	case cfg.Site == "" || cfg.Self == "" || cfg.Peer == "":
		return nil, errors.New("ctlha: heartbeat: Site, Self and Peer are required")
	case cfg.Self == cfg.Peer:
		return nil, fmt.Errorf("ctlha: heartbeat: Self and Peer are both %q", cfg.Self)
	case len(cfg.Local) == 0:
		return nil, errors.New("ctlha: heartbeat: Local needs at least one network")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = 600 * time.Millisecond
	}
	if cfg.LostAfter <= cfg.Interval {
		return nil, fmt.Errorf("ctlha: heartbeat: LostAfter (%s) must exceed Interval (%s)", cfg.LostAfter, cfg.Interval)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := ReadKeyFile(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	bootID := make([]byte, 12)
	if _, err := rand.Read(bootID); err != nil {
		return nil, fmt.Errorf("ctlha: heartbeat boot id: %w", err)
	}
	h := &Heartbeat{
		cfg: cfg, log: log, key: macKey(key), boot: fmt.Sprintf("%x", bootID),
		conns:   map[Network]*net.UDPConn{},
		changed: make(chan struct{}, 1), kick: make(chan struct{}, 1), rearm: make(chan struct{}, 1),
		local:    BeatState{Role: RoleStarting},
		peerAddr: map[Network]*net.UDPAddr{}, closed: map[Network]bool{},
		heard: map[Network]time.Time{}, lastSeq: map[Network]uint64{},
		retired: map[string]bool{}, fresh: map[Network]bool{}, rejected: map[string]uint64{},
	}
	h.nets = slices.Sorted(maps.Keys(cfg.Local))
	for _, n := range h.nets {
		la, err := net.ResolveUDPAddr("udp", cfg.Local[n])
		if err == nil {
			var c *net.UDPConn
			if c, err = net.ListenUDP("udp", la); err == nil {
				h.conns[n] = c
			}
		}
		if err != nil {
			h.closeAll()
			return nil, fmt.Errorf("ctlha: heartbeat on %s: %w", n, err)
		}
	}
	for n, a := range cfg.PeerAddrs {
		if err := h.SetPeerAddr(n, a); err != nil {
			h.closeAll()
			return nil, err
		}
	}
	return h, nil
}

// Boot is this process's boot ID, carried in every beat.
func (h *Heartbeat) Boot() string { return h.boot }

// LocalAddr is the address bound on network n ("" if none).
func (h *Heartbeat) LocalAddr(n Network) string {
	if c := h.conns[n]; c != nil {
		return c.LocalAddr().String()
	}
	return ""
}

// SetPeerAddr sets where beats to the peer on network n go (a peer
// re-addressed, or both sides bound to port 0 in tests).
func (h *Heartbeat) SetPeerAddr(n Network, addr string) error {
	if h.conns[n] == nil {
		return fmt.Errorf("ctlha: heartbeat: no local socket on network %q", n)
	}
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("ctlha: heartbeat peer on %s: %w", n, err)
	}
	h.mu.Lock()
	h.peerAddr[n] = a
	h.mu.Unlock()
	return nil
}

// Set publishes this controller's state. A change other than the LSN
// alone is sent at once; the LSN rides the next beat.
func (h *Heartbeat) Set(s BeatState) {
	h.mu.Lock()
	old := h.local
	h.local = s
	h.mu.Unlock()
	old.LSN = s.LSN
	if old != s {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// Changed signals (coalesced: one pending signal at most) when a network
// goes fresh or lost, and when the peer's boot, role, epoch, sync or
// witness flag or handoff changes. Read Peer after it fires.
func (h *Heartbeat) Changed() <-chan struct{} { return h.changed }

// Peer returns what the heartbeats tell of the peer now.
func (h *Heartbeat) Peer() PeerState {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Now()
	ps := PeerState{Links: h.freshLocked(now), LastAt: h.lastAt}
	if h.last != nil {
		b := *h.last
		ps.Last = &b
	}
	for _, up := range ps.Links {
		if up {
			return ps
		}
	}
	since := h.started
	for _, t := range h.heard {
		if t.After(since) {
			since = t
		}
	}
	if !since.IsZero() {
		ps.LostFor = now.Sub(since)
	}
	return ps
}

// Rejected counts the datagrams dropped, by reason (short, mac, json,
// site, self, stranger, net, replay, old-boot).
func (h *Heartbeat) Rejected() map[string]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.rejected)
}

func (h *Heartbeat) freshLocked(now time.Time) map[Network]bool {
	out := make(map[Network]bool, len(h.nets))
	for _, n := range h.nets {
		t, ok := h.heard[n]
		out[n] = ok && now.Sub(t) < h.cfg.LostAfter
	}
	return out
}

func (h *Heartbeat) notify() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Run sends and receives beats until ctx ends, then closes the sockets.
// Every goroutine it starts has ended when it returns.
func (h *Heartbeat) Run(ctx context.Context) error {
	h.mu.Lock()
	h.started = h.cfg.Now()
	h.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	for _, n := range h.nets {
		g.Go(func() error { return h.receive(ctx, n) })
	}
	g.Go(func() error { return h.loop(ctx) })
	<-ctx.Done()
	h.closeAll()
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (h *Heartbeat) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, c := range h.conns {
		if !h.closed[n] {
			c.Close()
			h.closed[n] = true
		}
	}
}

// closeNet closes one network's socket, as a dead link would silence it
// (tests).
func (h *Heartbeat) closeNet(n Network) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.conns[n]; c != nil && !h.closed[n] {
		c.Close()
		h.closed[n] = true
	}
}

// loop sends a beat on every network each Interval and at once after a
// change, and marks networks lost when their last beat ages past
// LostAfter.
func (h *Heartbeat) loop(ctx context.Context) error {
	tick := time.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	h.send()
	for {
		h.reexpire(expiry)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			h.send()
		case <-h.kick:
			h.send()
		case <-expiry.C:
		case <-h.rearm:
		}
	}
}

// reexpire notifies freshness changes and arms the timer for the next
// network to expire.
func (h *Heartbeat) reexpire(t *time.Timer) {
	h.mu.Lock()
	now := h.cfg.Now()
	fresh := h.freshLocked(now)
	changed := !maps.Equal(fresh, h.fresh)
	h.fresh = fresh
	next := time.Duration(-1)
	for n, up := range fresh {
		if d := h.heard[n].Add(h.cfg.LostAfter).Sub(now); up && (next < 0 || d < next) {
			next = d
		}
	}
	h.mu.Unlock()
	if changed {
		h.notify()
	}
	if next < 0 {
		next = time.Hour
	}
	t.Reset(next + time.Millisecond)
}

func (h *Heartbeat) send() {
	h.mu.Lock()
	type out struct {
		c   *net.UDPConn
		to  *net.UDPAddr
		pkt []byte
	}
	var outs []out
	for _, n := range h.nets {
		to := h.peerAddr[n]
		if to == nil || h.closed[n] {
			continue
		}
		h.seq++
		b := Beat{
			Site: h.cfg.Site, From: h.cfg.Self, Net: n, Boot: h.boot, Seq: h.seq,
			Role: h.local.Role, Epoch: h.local.Epoch, LSN: h.local.LSN, Sync: h.local.Sync, Witness: h.local.Witness, PeerWitness: h.local.PeerWitness, NoPeerBMC: h.local.NoPeerBMC,
			Handoff: h.local.Handoff, Force: h.local.Force, SentUnixNano: h.cfg.Now().UnixNano(),
		}
		pkt, err := seal(h.key, b)
		if err != nil {
			h.log.Error("heartbeat encode", "err", err)
			continue
		}
		outs = append(outs, out{h.conns[n], to, pkt})
	}
	h.mu.Unlock()
	for _, o := range outs {
		if _, err := o.c.WriteToUDP(o.pkt, o.to); err != nil {
			h.log.Debug("heartbeat send", "to", o.to.String(), "err", err)
		}
	}
}

func (h *Heartbeat) receive(ctx context.Context, n Network) error {
	c := h.conns[n]
	buf := make([]byte, 2048)
	for {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			h.log.Warn("heartbeat receive", "net", string(n), "err", err)
			time.Sleep(h.cfg.Interval) // no hot loop on a persistent error; Close ends the next read
			continue
		}
		h.accept(n, buf[:k])
	}
}

// accept checks one datagram from network n and records it.
func (h *Heartbeat) accept(n Network, pkt []byte) {
	b, why := unseal(h.key, pkt)
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Now()
	if why == "" {
		why = h.checkLocked(n, b, now)
	}
	if why != "" {
		h.rejected[why]++
		return
	}
	wasFresh := h.freshLocked(now)[n]
	notify := !wasFresh
	if b.Boot != h.peerBoot {
		if h.peerBoot != "" {
			h.retired[h.peerBoot] = true
			if len(h.retired) > 64 { // bounded: the oldest boots are older than any beat still in flight
				clear(h.retired)
				h.retired[h.peerBoot] = true
			}
		}
		h.peerBoot = b.Boot
		clear(h.lastSeq)
		notify = true
	}
	h.lastSeq[n] = b.Seq
	h.bootSent = max(h.bootSent, b.SentUnixNano)
	h.heard[n] = now
	if p := h.last; p != nil && (p.Role != b.Role || p.Epoch != b.Epoch || p.Sync != b.Sync || p.Witness != b.Witness || p.PeerWitness != b.PeerWitness || p.NoPeerBMC != b.NoPeerBMC || p.Handoff != b.Handoff || p.Force != b.Force) {
		notify = true
	}
	h.last, h.lastAt = &b, now
	if notify {
		h.notify()
		select {
		case h.rearm <- struct{}{}:
		default:
		}
	}
}

// checkLocked returns why a beat with a good MAC is refused ("" if not).
func (h *Heartbeat) checkLocked(n Network, b Beat, now time.Time) string {
	switch {
	case b.Site != h.cfg.Site:
		return "site"
	case b.From == h.cfg.Self:
		return "self"
	case b.From != h.cfg.Peer:
		return "stranger"
	case b.Net != n:
		return "net"
	case b.Boot == h.peerBoot:
		if b.Seq <= h.lastSeq[n] {
			return "replay"
		}
	case h.retired[b.Boot]:
		return "old-boot"
	case h.peerBoot != "" && b.SentUnixNano <= h.bootSent && !h.silentLocked(now):
		// A new boot must be later than the current one by the sender's own
		// clock, so a replay of an earlier boot is refused. Once the current
		// boot has been silent for LostAfter, a new one is accepted anyway:
		// a peer whose clock stepped back across its restart must not look
		// lost (and be fenced) while it runs.
		return "old-boot"
	}
	return ""
}

// silentLocked: no network heard the peer within LostAfter.
func (h *Heartbeat) silentLocked(now time.Time) bool {
	for _, up := range h.freshLocked(now) {
		if up {
			return false
		}
	}
	return true
}
