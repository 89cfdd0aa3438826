package witness_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/subcloud/witness"
)

func TestNewChecksConfig(t *testing.T) {
	ok := witness.Config{CentralAddr: "127.0.0.1:1", TLS: &tls.Config{}, Site: "site-a", Controller: "controller-0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := witness.New(ok); err != nil {
		t.Fatalf("New(%+v) = %v", ok, err)
	}
	for _, name := range []string{"", "controller", "controller-a", "host-0", "controller-0 "} {
		bad := ok
		bad.Controller = name
		if _, err := witness.New(bad); err == nil {
			t.Errorf("New with controller %q succeeded", name)
		}
	}
	bad := ok
	bad.TLS = nil
	if _, err := witness.New(bad); err == nil {
		t.Error("New without TLS succeeded")
	}
}

// fakeCentral answers witness sessions the way central does, with knobs:
// mute stops answering, drop closes every connection, refuse says goodbye
// to hellos.
type fakeCentral struct {
	ln      net.Listener
	mute    atomic.Bool
	refuse  atomic.Bool
	hellos  atomic.Int32
	mu      sync.Mutex
	renews  []linkproto.WitnessRenew
	claims  []linkproto.WitnessClaim
	conns   []net.Conn
	tlsConf *tls.Config // the client's
}

func newFakeCentral(t *testing.T) *fakeCentral {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer("central", []string{"central"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv.Write(filepath.Join(dir, "central.crt"), filepath.Join(dir, "central.key"))
	cli, err := ca.IssueClient("site-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli.Write(filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key"))
	serverTLS, err := pki.ServerTLS(filepath.Join(dir, "central.crt"), filepath.Join(dir, "central.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := pki.CertPool(filepath.Join(dir, "ca", pki.CACertFile))
	serverTLS.ClientCAs, serverTLS.ClientAuth = pool, tls.RequireAndVerifyClientCert
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := witness.TLSConfig(filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key"),
		filepath.Join(dir, "ca", pki.CACertFile), "")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCentral{ln: ln, tlsConf: clientTLS}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, conn)
			f.mu.Unlock()
			wg.Go(func() { f.serve(conn) })
		}
	})
	t.Cleanup(func() { ln.Close(); f.drop(); wg.Wait() })
	return f
}

func (f *fakeCentral) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *fakeCentral) serve(conn net.Conn) {
	defer conn.Close()
	sess, err := yamux.Server(conn, nil)
	if err != nil {
		return
	}
	defer sess.Close()
	ctl, err := sess.Accept()
	if err != nil {
		return
	}
	hello, err := linkproto.Read(ctl)
	if err != nil || hello.Type != linkproto.TypeWitnessHello {
		return
	}
	f.hellos.Add(1)
	if f.refuse.Load() {
		linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: "refused by the test"})
		return
	}
	linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWelcome, Protocol: linkproto.Current})
	var holder string
	var epoch uint64
	for {
		m, err := linkproto.Read(ctl)
		if err != nil {
			return
		}
		if f.mute.Load() {
			continue
		}
		switch m.Type {
		case linkproto.TypeWitnessRenew:
			f.mu.Lock()
			f.renews = append(f.renews, *m.Renew)
			f.mu.Unlock()
			linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWitnessState, Seq: m.Seq,
				State: &linkproto.WitnessState{Holder: holder, HolderEpoch: epoch}})
		case linkproto.TypeWitnessClaim:
			f.mu.Lock()
			f.claims = append(f.claims, *m.Claim)
			f.mu.Unlock()
			holder, epoch = m.Claim.Controller, m.Claim.Epoch
			linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWitnessGrant, Seq: m.Seq,
				Grant: &linkproto.WitnessGrant{Granted: true, Holder: holder, HolderEpoch: epoch}})
		}
	}
}

func (f *fakeCentral) lastRenew() (linkproto.WitnessRenew, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.renews) == 0 {
		return linkproto.WitnessRenew{}, 0
	}
	return f.renews[len(f.renews)-1], len(f.renews)
}

func run(t *testing.T, f *fakeCentral, interval time.Duration) *witness.Client {
	t.Helper()
	c, err := witness.New(witness.Config{CentralAddr: f.ln.Addr().String(), TLS: f.tlsConf, Site: "site-a",
		Controller: "controller-1", Interval: interval, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
	t.Fatalf("%s: not within %v", what, d)
	return 0
}

func isReachable(c *witness.Client) func() bool {
	return func() bool { _, ok, _ := c.State(); return ok }
}

// TestRenewsAndClaims: renews carry what Set said, a change goes out at
// once, and a claim is preceded by a renew and answered.
func TestRenewsAndClaims(t *testing.T) {
	f := newFakeCentral(t)
	// A long interval: only a Set can explain a renew within it.
	c := run(t, f, 2*time.Second)
	waitFor(t, 5*time.Second, "reachable", isReachable(c))
	c.Set(witness.Standby, 4, 400)
	took := waitFor(t, time.Second, "a renew with the new role", func() bool {
		r, _ := f.lastRenew()
		return r.Role == witness.Standby && r.Epoch == 4 && r.LSN == 400 && r.Controller == "controller-1"
	})
	t.Logf("a Set reached central %v later (interval 2 s)", took)

	c.Set(witness.Standby, 5, 500)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := c.Claim(ctx, 6, 500, "test")
	if err != nil || !g.Granted || g.Holder != "controller-1" || g.HolderEpoch != 6 {
		t.Fatalf("Claim = %+v, %v; want granted at 6", g, err)
	}
	if r, _ := f.lastRenew(); r.Epoch != 5 {
		t.Errorf("the renew before the claim said epoch %d; want 5", r.Epoch)
	}
	if st, _, _ := c.State(); st.Holder != "controller-1" || st.HolderEpoch != 6 {
		t.Errorf("State after the grant = %+v; want holder controller-1 at 6", st)
	}
}

// TestUnreachable: a central that stops answering makes the witness
// unreachable within 3 intervals, a claim fails when its context ends,
// and the client gives the silent session up and reconnects.
func TestUnreachable(t *testing.T) {
	f := newFakeCentral(t)
	const iv = 50 * time.Millisecond
	c := run(t, f, iv)
	waitFor(t, 5*time.Second, "reachable", isReachable(c))
	f.mute.Store(true)
	muted := time.Now()
	waitFor(t, 5*time.Second, "unreachable", func() bool { return !isReachable(c)() })
	if d := time.Since(muted); d > 3*iv+200*time.Millisecond {
		t.Errorf("unreachable %v after central went silent; want about 3 intervals (%v)", d, 3*iv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Claim(ctx, 1, 0, "silent central"); !errors.Is(err, witness.ErrUnreachable) {
		t.Errorf("Claim to a silent central = %v; want ErrUnreachable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Claim to a silent central took %v; want it bounded by its context (100 ms)", d)
	}
	// The silent session is given up; the next one is answered again.
	waitFor(t, 5*time.Second, "a second hello", func() bool { return f.hellos.Load() >= 2 })
	f.mute.Store(false)
	waitFor(t, 5*time.Second, "reachable again", isReachable(c))

	// A dropped connection: back within the backoff's cap.
	before := f.hellos.Load()
	f.drop()
	took := waitFor(t, 5*time.Second, "reconnected", func() bool { return f.hellos.Load() > before && isReachable(c)() })
	t.Logf("reconnected %v after the connection dropped", took)
}

// TestRefusedSession: a central that refuses the hello leaves the client
// unreachable and its claims failing at once; it keeps retrying.
func TestRefusedSession(t *testing.T) {
	f := newFakeCentral(t)
	f.refuse.Store(true)
	c := run(t, f, 50*time.Millisecond)
	waitFor(t, 5*time.Second, "three refused hellos", func() bool { return f.hellos.Load() >= 3 })
	if _, ok, _ := c.State(); ok {
		t.Error("a refused client reports the witness reachable")
	}
	if _, err := c.Claim(context.Background(), 1, 0, "refused"); !errors.Is(err, witness.ErrUnreachable) {
		t.Errorf("Claim while refused = %v; want ErrUnreachable", err)
	}
	f.refuse.Store(false)
	waitFor(t, 5*time.Second, "reachable once accepted", isReachable(c))
}
