package ctlha

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const (
	testInterval  = 20 * time.Millisecond
	testLostAfter = 300 * time.Millisecond
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func keyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "heartbeat.key")
	if err := CreateKeyFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// newHB binds a heartbeat for self on 127.0.0.1 (mgmt) and 127.0.0.2
// (cluster), ports from :0.
func newHB(t *testing.T, self, peer, key string, mod ...func(*HeartbeatConfig)) *Heartbeat {
	t.Helper()
	cfg := HeartbeatConfig{
		Site: "site-dx", Self: self, Peer: peer, KeyFile: key,
		Local:    map[Network]string{NetMgmt: "127.0.0.1:0", NetCluster: "127.0.0.2:0"},
		Interval: testInterval, LostAfter: testLostAfter,
	}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := NewHeartbeat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// run runs h until the test ends (or stop is called) and checks Run's
// result.
func run(t *testing.T, h *Heartbeat) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func point(t *testing.T, from, to *Heartbeat) {
	t.Helper()
	for _, n := range []Network{NetMgmt, NetCluster} {
		if err := from.SetPeerAddr(n, to.LocalAddr(n)); err != nil {
			t.Fatal(err)
		}
	}
}

func pair(t *testing.T) (a, b *Heartbeat) {
	t.Helper()
	key := keyFile(t)
	a, b = newHB(t, c0, c1, key), newHB(t, c1, c0, key)
	point(t, a, b)
	point(t, b, a)
	return a, b
}

func bothUp(p PeerState) bool { return p.Links[NetMgmt] && p.Links[NetCluster] }

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func TestKeyFile(t *testing.T) {
	p := keyFile(t)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Errorf("key file mode %04o size %d; want 0600, 32 bytes", fi.Mode().Perm(), fi.Size())
	}
	if err := CreateKeyFile(p); !errors.Is(err, os.ErrExist) {
		t.Errorf("CreateKeyFile(existing) = %v; want ErrExist", err)
	}
	if _, err := ReadKeyFile(p); err != nil {
		t.Errorf("ReadKeyFile = %v", err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(p); !errors.Is(err, ErrInsecureKey) {
		t.Errorf("ReadKeyFile(0640) = %v; want ErrInsecureKey", err)
	}
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(short); !errors.Is(err, ErrBadKey) {
		t.Errorf("ReadKeyFile(10 bytes) = %v; want ErrBadKey", err)
	}
	if _, err := NewHeartbeat(HeartbeatConfig{Site: "s", Self: c0, Peer: c1, KeyFile: short, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}}); !errors.Is(err, ErrBadKey) {
		t.Errorf("NewHeartbeat(bad key) = %v; want ErrBadKey", err)
	}
}

func TestHeartbeatsSeeEachOtherOnBothNetworks(t *testing.T) {
	a, b := pair(t)
	b.Set(BeatState{Role: RoleStandby, Epoch: 5, LSN: 100, Sync: true, Witness: true})
	run(t, a)
	run(t, b)
	waitFor(t, "controller-0 to hear controller-1 on both networks as a synchronous standby", func() bool {
		p := a.Peer()
		return bothUp(p) && p.Last != nil && p.Last.Role == RoleStandby && p.Last.Sync && p.Last.Witness
	})
	waitFor(t, "controller-1 to hear controller-0 on both networks", func() bool { return bothUp(b.Peer()) })
	p := a.Peer()
	if p.LostFor != 0 || p.Last.From != c1 || p.Last.Site != "site-dx" || p.Last.Boot != b.Boot() || p.Last.Epoch != 5 || p.LastAt.IsZero() {
		t.Errorf("Peer() = %+v, last %+v", p, *p.Last)
	}
	if r := a.Rejected(); len(r) != 0 {
		t.Errorf("Rejected() = %v; want none", r)
	}
}

func TestSetIsSentAtOnce(t *testing.T) {
	key := keyFile(t)
	slow := func(c *HeartbeatConfig) { c.Interval, c.LostAfter = 10*time.Second, 30*time.Second }
	a, b := newHB(t, c0, c1, key, slow), newHB(t, c1, c0, key, slow)
	point(t, a, b)
	point(t, b, a)
	run(t, a)
	run(t, b)
	waitFor(t, "the first beat", func() bool { return a.Peer().Last != nil })
	drain(a.Changed())
	start := time.Now()
	b.Set(BeatState{Role: RoleActive, Epoch: 6})
	select {
	case <-a.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled after the peer's role changed")
	}
	if got := a.Peer().Last; got.Role != RoleActive || got.Epoch != 6 {
		t.Errorf("Last = %+v; want active at epoch 6", *got)
	}
	if d := time.Since(start); d >= 10*time.Second {
		t.Errorf("the change took %s: it waited for the tick", d)
	}
	// A swact handoff travels the same way.
	b.Set(BeatState{Role: RoleSteppingDown, Epoch: 6, Handoff: c0})
	select {
	case <-a.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled after the peer handed off")
	}
	if got := a.Peer().Last; got.Role != RoleSteppingDown || got.Handoff != c0 {
		t.Errorf("Last = %+v; want stepping-down with a handoff to %s", *got, c0)
	}
	// An LSN-only change rides the next tick.
	b.Set(BeatState{Role: RoleSteppingDown, Epoch: 6, Handoff: c0, LSN: 7})
	time.Sleep(200 * time.Millisecond) // proving an absence: nothing may arrive in this window
	if got := a.Peer().Last; got.LSN != 0 {
		t.Errorf("an LSN-only change was sent at once: %+v", *got)
	}
}

func TestClosedSocketLosesThatNetworkOnly(t *testing.T) {
	a, b := pair(t)
	run(t, a)
	run(t, b)
	waitFor(t, "both networks up", func() bool { return bothUp(a.Peer()) })
	drain(a.Changed())
	b.closeNet(NetCluster)
	select {
	case <-a.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled for the lost network")
	}
	waitFor(t, "cluster lost", func() bool { return !a.Peer().Links[NetCluster] })
	p := a.Peer()
	if !p.Links[NetMgmt] || p.LostFor != 0 {
		t.Errorf("Peer() = %+v; want mgmt still fresh and LostFor 0", p)
	}
	b.closeNet(NetMgmt)
	waitFor(t, "both lost", func() bool { p := a.Peer(); return !p.Links[NetMgmt] && p.LostFor >= testLostAfter })
}

func TestWrongKeyIsRejected(t *testing.T) {
	a := newHB(t, c0, c1, keyFile(t))
	b := newHB(t, c1, c0, keyFile(t)) // another key
	point(t, b, a)
	run(t, a)
	run(t, b)
	waitFor(t, "bad MACs counted", func() bool { return a.Rejected()["mac"] >= 3 })
	if p := a.Peer(); p.Last != nil || p.Links[NetMgmt] || p.Links[NetCluster] {
		t.Errorf("Peer() = %+v; want nothing heard", p)
	}
}

// sender sends crafted datagrams to a heartbeat's mgmt socket.
type sender struct {
	t    *testing.T
	key  []byte
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newSender(t *testing.T, keyPath string, to *Heartbeat) *sender {
	key, err := ReadKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr, err := net.ResolveUDPAddr("udp", to.LocalAddr(NetMgmt))
	if err != nil {
		t.Fatal(err)
	}
	return &sender{t: t, key: macKey(key), conn: c, to: addr}
}

func (s *sender) sendRaw(pkt []byte) {
	if _, err := s.conn.WriteToUDP(pkt, s.to); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sender) seal(b Beat) []byte {
	pkt, err := seal(s.key, b)
	if err != nil {
		s.t.Fatal(err)
	}
	return pkt
}

func crafted(boot string, seq uint64, sent int64) Beat {
	return Beat{Site: "site-dx", From: c1, Net: NetMgmt, Boot: boot, Seq: seq, Role: RoleStandby, SentUnixNano: sent}
}

func TestReplaysAndForgeriesAreRejected(t *testing.T) {
	key := keyFile(t)
	// A long LostAfter: the crafted boot stays fresh however slow the machine.
	a := newHB(t, c0, c1, key, func(c *HeartbeatConfig) { c.Interval, c.LostAfter = time.Second, time.Minute })
	run(t, a)
	s := newSender(t, key, a)
	accepted := func(boot string, seq uint64) func() bool {
		return func() bool { p := a.Peer(); return p.Last != nil && p.Last.Boot == boot && p.Last.Seq == seq }
	}
	rejected := func(why string, n uint64) func() bool {
		return func() bool { return a.Rejected()[why] == n }
	}
	first := s.seal(crafted("boot-1", 10, 1000))
	// (The current boot stays fresh throughout: a boot sent earlier is
	// refused only then; see TestFreshnessOnAFakeClock.)
	s.sendRaw(first)
	waitFor(t, "the first beat accepted", accepted("boot-1", 10))

	s.sendRaw(first)
	waitFor(t, "the same datagram again refused as a replay", rejected("replay", 1))
	s.sendRaw(s.seal(crafted("boot-1", 9, 1001)))
	waitFor(t, "an older seq refused as a replay", rejected("replay", 2))

	forged := s.seal(crafted("boot-1", 11, 1002))
	forged[5] ^= 1
	s.sendRaw(forged)
	waitFor(t, "a tampered datagram refused", rejected("mac", 1))
	s.sendRaw([]byte("short"))
	waitFor(t, "a short datagram refused", rejected("short", 1))

	for why, b := range map[string]Beat{
		"site":     {Site: "site-other", From: c1, Net: NetMgmt, Boot: "boot-1", Seq: 20},
		"self":     {Site: "site-dx", From: c0, Net: NetMgmt, Boot: "boot-1", Seq: 21},
		"stranger": {Site: "site-dx", From: "controller-9", Net: NetMgmt, Boot: "boot-1", Seq: 22},
		"net":      {Site: "site-dx", From: c1, Net: NetCluster, Boot: "boot-1", Seq: 23},
	} {
		s.sendRaw(s.seal(b))
		waitFor(t, "a beat refused for "+why, rejected(why, 1))
	}

	// A restart: a new boot sent later is accepted, its seq from 1; the
	// old boot is retired, and a boot sent earlier is refused.
	s.sendRaw(s.seal(crafted("boot-2", 1, 2000)))
	waitFor(t, "the new boot accepted", accepted("boot-2", 1))
	s.sendRaw(s.seal(crafted("boot-1", 12, 3000)))
	waitFor(t, "the retired boot refused", rejected("old-boot", 1))
	s.sendRaw(s.seal(crafted("boot-0", 1, 500)))
	waitFor(t, "a boot sent before the current one refused", rejected("old-boot", 2))
	s.sendRaw(s.seal(crafted("boot-2", 2, 2001)))
	waitFor(t, "the current boot goes on", accepted("boot-2", 2))
}

func TestRestartWithNewBootIsAccepted(t *testing.T) {
	key := keyFile(t)
	a, b := newHB(t, c0, c1, key), newHB(t, c1, c0, key)
	point(t, a, b)
	point(t, b, a)
	run(t, a)
	stopB := run(t, b)
	waitFor(t, "controller-1 heard", func() bool { p := a.Peer(); return p.Last != nil && p.Last.Boot == b.Boot() })
	stopB()

	b2 := newHB(t, c1, c0, key)
	point(t, b2, a)
	point(t, a, b2)
	b2.Set(BeatState{Role: RoleStarting})
	run(t, b2)
	waitFor(t, "controller-1's new boot heard on both networks", func() bool {
		p := a.Peer()
		return p.Last != nil && p.Last.Boot == b2.Boot() && bothUp(p)
	})
	if b2.Boot() == b.Boot() {
		t.Errorf("two starts share boot %s", b.Boot())
	}
	// The new boot's beats are never refused as replays. (A beat of the
	// old boot still in flight when the new one was heard is refused as
	// old-boot, rightly: CI saw one under load.)
	if r := a.Rejected(); r["replay"] != 0 {
		t.Errorf("Rejected() = %v; the restart's beats were refused as replays", r)
	}
}

// TestFreshnessOnAFakeClock: freshness and LostFor follow the injected
// clock exactly (no sockets in play: beats are handed to accept).
func TestFreshnessOnAFakeClock(t *testing.T) {
	key := keyFile(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	h := newHB(t, c0, c1, key, func(c *HeartbeatConfig) { c.Now, c.LostAfter = clock, 600*time.Millisecond })
	t.Cleanup(h.closeAll)
	h.started = clock()
	k, _ := ReadKeyFile(key)
	pkt := func(n Network, seq uint64) []byte {
		b := crafted("boot-1", seq, int64(seq))
		b.Net = n
		p, err := seal(macKey(k), b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	advance(250 * time.Millisecond)
	if p := h.Peer(); p.LostFor != 250*time.Millisecond || p.Last != nil {
		t.Errorf("never heard: Peer() = %+v; want LostFor 250ms since start", p)
	}
	h.accept(NetMgmt, pkt(NetMgmt, 1))
	h.accept(NetCluster, pkt(NetCluster, 2))
	advance(400 * time.Millisecond)
	h.accept(NetMgmt, pkt(NetMgmt, 3))
	advance(300 * time.Millisecond) // cluster heard 700 ms ago, mgmt 300 ms ago
	if p := h.Peer(); !p.Links[NetMgmt] || p.Links[NetCluster] || p.LostFor != 0 {
		t.Errorf("Peer() = %+v; want mgmt fresh, cluster lost, LostFor 0", p)
	}
	advance(500 * time.Millisecond)
	if p := h.Peer(); p.Links[NetMgmt] || p.LostFor != 800*time.Millisecond {
		t.Errorf("Peer() = %+v; want both lost, LostFor 800ms", p)
	}
	// The peer restarts with its clock stepped back (its beats claim an
	// earlier time than its last boot's): refused while that boot was
	// fresh, accepted once it has been silent for LostAfter.
	back := crafted("boot-2", 1, 0)
	bp, err := seal(macKey(k), back)
	if err != nil {
		t.Fatal(err)
	}
	h.accept(NetMgmt, bp)
	if p := h.Peer(); p.Last.Boot != "boot-2" || h.Rejected()["old-boot"] != 0 {
		t.Errorf("after silence, a new boot with an earlier clock: Last %+v, rejected %v; want accepted", *p.Last, h.Rejected())
	}
}

func TestNewHeartbeatValidates(t *testing.T) {
	key := keyFile(t)
	for name, cfg := range map[string]HeartbeatConfig{
		"no peer":           {Site: "s", Self: c0, KeyFile: key, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}},
		"self is peer":      {Site: "s", Self: c0, Peer: c0, KeyFile: key, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}},
		"no network":        {Site: "s", Self: c0, Peer: c1, KeyFile: key},
		"lost before beat":  {Site: "s", Self: c0, Peer: c1, KeyFile: key, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}, Interval: time.Second, LostAfter: time.Second},
		"unbindable":        {Site: "s", Self: c0, Peer: c1, KeyFile: key, Local: map[Network]string{NetMgmt: "192.0.2.1:0"}},
		"bad peer address":  {Site: "s", Self: c0, Peer: c1, KeyFile: key, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}, PeerAddrs: map[Network]string{NetMgmt: "nowhere"}},
		"peer on no socket": {Site: "s", Self: c0, Peer: c1, KeyFile: key, Local: map[Network]string{NetMgmt: "127.0.0.1:0"}, PeerAddrs: map[Network]string{NetCluster: "127.0.0.1:9"}},
	} {
		if h, err := NewHeartbeat(cfg); err == nil {
			h.closeAll()
			t.Errorf("NewHeartbeat(%s) = nil error", name)
		}
	}
}
