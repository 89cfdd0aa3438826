package heartbeat

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestTrackerRules: degraded after 5 consecutive misses, lost after 10;
// only an answer to the outstanding pulse counts; one answer restores ok.
func TestTrackerRules(t *testing.T) {
	tr := newTracker(Limits{})
	k := linkKey{uuid.New(), Mgmt}
	now := time.Unix(0, 0)
	var got []State
	tickN := func(n int) {
		for range n {
			if _, ch := tr.tick(k, now); ch != nil {
				got = append(got, ch.State)
			}
		}
	}
	first, _ := tr.tick(k, now) // the first pulse out, at a random number
	if first < 1<<16 {
		t.Errorf("first sequence number %d; want a random start", first)
	}
	if ch := tr.reply(k, first, now); ch == nil || ch.State != OK {
		t.Errorf("the first answer: %+v; want it reported ok", ch)
	}
	tickN(1)
	if ch := tr.reply(k, first+1, now); ch != nil {
		t.Errorf("an answer while ok changed the state: %+v", ch)
	}
	tickN(5) // pulses 3..7 out; 3..6 missed (4 misses)
	if len(got) != 0 {
		t.Fatalf("changes after 4 misses: %v", got)
	}
	tickN(1) // the 5th miss
	if len(got) != 1 || got[0] != Degraded {
		t.Fatalf("after 5 misses: %v; want [degraded]", got)
	}
	tickN(5) // the 10th miss
	if len(got) != 2 || got[1] != Lost {
		t.Fatalf("after 10 misses: %v; want lost", got)
	}
	seq := tr.links[k].sent
	if ch := tr.reply(k, seq-1, now); ch != nil {
		t.Errorf("a late answer to an older pulse counted: %+v", ch)
	}
	if ch := tr.reply(k, seq, now); ch == nil || ch.State != OK {
		t.Fatalf("an answer to the outstanding pulse: %+v; want ok", ch)
	}
	if ch := tr.reply(k, seq, now); ch != nil {
		t.Errorf("a replayed answer counted: %+v", ch)
	}
	tickN(1)
	if tr.links[k].misses != 0 {
		t.Errorf("misses %d after an answered pulse", tr.links[k].misses)
	}
}

// TestFrameAuthentication: a frame sealed with another key, for another
// host or altered in flight does not open.
func TestFrameAuthentication(t *testing.T) {
	key, other := NewKey(), NewKey()
	h := uuid.New()
	f := frame{kind: kindPulse, network: Cluster, seq: 42, host: h}
	b := f.seal(key)
	keyOf := func(x uuid.UUID) []byte {
		if x == h {
			return key
		}
		return nil
	}
	if g, err := open(b, keyOf); err != nil || g != f {
		t.Fatalf("open = %+v, %v", g, err)
	}
	if _, err := open(f.seal(other), keyOf); err == nil {
		t.Error("a frame sealed with another key opened")
	}
	bad := append([]byte{}, b...)
	bad[10] ^= 1 // the sequence number
	if _, err := open(bad, keyOf); err == nil {
		t.Error("an altered frame opened")
	}
	g := frame{kind: kindPulse, network: Mgmt, seq: 1, host: uuid.New()}
	if _, err := open(g.seal(key), keyOf); err == nil {
		t.Error("a frame for an unknown host opened")
	}
	if _, err := open(b[:20], keyOf); err == nil {
		t.Error("a short frame opened")
	}
}

type changes struct {
	mu  sync.Mutex
	all []Change
}

func (c *changes) add(ch Change) { c.mu.Lock(); c.all = append(c.all, ch); c.mu.Unlock() }

func (c *changes) last(h uuid.UUID, n Network) (State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.all) - 1; i >= 0; i-- {
		if c.all[i].Host == h && c.all[i].Network == n {
			return c.all[i].State, true
		}
	}
	return OK, false
}

// TestMonitorOverUDP: real datagrams on loopback. A silent host is lost
// after 10 periods on that network only; it is ok again at its first
// answer; a host with the wrong key is never heard.
func TestMonitorOverUDP(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	mgmt, cluster := netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.2:0")
	var seen changes
	m, err := NewMonitor(MonitorConfig{Listen: map[Network]netip.AddrPort{Mgmt: mgmt, Cluster: cluster},
		OnChange: seen.add, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	start := func(host uuid.UUID, key []byte, nets map[Network]netip.AddrPort) (*Responder, context.CancelFunc) {
		r, err := NewResponder(ResponderConfig{Host: host, Key: key, Listen: nets, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(context.Background())
		rdone := make(chan struct{})
		go func() { defer close(rdone); r.Run(rctx) }()
		stop := func() { rcancel(); <-rdone }
		t.Cleanup(stop)
		return r, stop
	}
	good, bad := uuid.New(), uuid.New()
	goodKey := NewKey()
	r, _ := start(good, goodKey, map[Network]netip.AddrPort{Mgmt: mgmt, Cluster: cluster})
	rc, stopCluster := start(good, goodKey, map[Network]netip.AddrPort{Cluster: netip.MustParseAddrPort("127.0.0.3:0")})
	rb, _ := start(bad, NewKey(), map[Network]netip.AddrPort{Mgmt: mgmt})
	// The good host answers on mgmt from its first responder, on cluster from a second one we can stop.
	m.Set(Target{Host: good, Key: goodKey, Addrs: map[Network]netip.AddrPort{Mgmt: r.Addr(Mgmt), Cluster: rc.Addr(Cluster)}})
	m.Set(Target{Host: bad, Key: NewKey(), Addrs: map[Network]netip.AddrPort{Mgmt: rb.Addr(Mgmt)}})
	waitFor := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		t0 := time.Now()
		for !cond() {
			if time.Since(t0) > limit {
				t.Fatalf("%s: not within %s; changes %+v", what, limit, seen.all)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
		return time.Since(t0)
	}
	waitFor("the host with the wrong key lost", 5*time.Second, func() bool { s, ok := seen.last(bad, Mgmt); return ok && s == Lost })
	if s, _ := seen.last(good, Mgmt); s != OK {
		t.Errorf("a healthy host: %s; %+v", s, seen.all)
	}
	stopCluster()
	took := waitFor("cluster lost", 5*time.Second, func() bool { s, ok := seen.last(good, Cluster); return ok && s == Lost })
	t.Logf("cluster silent: lost after %s (10 periods of 100 ms)", took.Round(10*time.Millisecond))
	if s, _ := seen.last(good, Mgmt); s != OK {
		t.Errorf("losing the cluster network changed mgmt: %+v", seen.all)
	}
	start(good, goodKey, map[Network]netip.AddrPort{Cluster: rc.Addr(Cluster)})
	waitFor("cluster ok again", 5*time.Second, func() bool { s, _ := seen.last(good, Cluster); return s == OK })
}
