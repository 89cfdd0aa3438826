package central_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/subcloud/witness"
)

const witnessInterval = 50 * time.Millisecond

// runWitnessCentral starts central on shell with the witness's lease TTL
// and sites dialing listen; stop stops it and waits.
func runWitnessCentral(t *testing.T, shell server.Config, listen string, ttl time.Duration) (fleet, func()) {
	t.Helper()
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: listen, UpdateInterval: interval,
		WitnessLeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	<-c.Shell().Ready()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return fleet{c: c, admin: plainClient(t, c, servertest.AdminToken(t, c)), dir: shell.DataDir}, stop
}

type controller struct {
	*witness.Client
	stop func()
}

// startController runs a controller's witness client with the site's
// certificate; stop ends it and waits.
func startController(t *testing.T, f fleet, addr, cert, key, site, name string, role witness.Role, epoch uint64) controller {
	t.Helper()
	tlsCfg, err := witness.TLSConfig(cert, key, f.c.Shell().CACert, "")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := witness.New(witness.Config{CentralAddr: addr, TLS: tlsCfg, Site: site, Controller: name,
		Interval: witnessInterval, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cl.Set(role, epoch, epoch*10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cl.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return controller{cl, stop}
}

// waitState polls c's witness state until ok accepts it.
func waitState(t *testing.T, c controller, what string, ok func(st witness.State, reachable bool) bool) witness.State {
	t.Helper()
	var st witness.State
	var reachable bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) { // polling with a deadline
		if st, reachable, _ = c.State(); ok(st, reachable) {
			return st
		}
	}
	t.Fatalf("witness state never %s: last %+v (peer %+v), reachable %v", what, st, st.Peer, reachable)
	return st
}

func reachable(st witness.State, ok bool) bool { return ok }

func claim(t *testing.T, c controller, epoch uint64, reason string) witness.Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := c.Claim(ctx, epoch, epoch*10, reason)
	if err != nil {
		t.Fatalf("Claim(%d) = %v", epoch, err)
	}
	return g
}

func wantRefused(t *testing.T, g witness.Grant, reason string) {
	t.Helper()
	if g.Granted || g.Reason != reason {
		t.Fatalf("claim answered %+v; want refused %q", g, reason)
	}
}

func wantGranted(t *testing.T, g witness.Grant, holder string, epoch uint64) {
	t.Helper()
	if !g.Granted || g.Holder != holder || g.HolderEpoch != epoch {
		t.Fatalf("claim answered %+v; want granted to %s at epoch %d", g, holder, epoch)
	}
}

// TestWitnessTakeover: two controllers of a site renew; the standby's
// claim is refused while the active renews, and granted with the next
// epoch once the active's lease has run out; the old active then learns
// it was superseded. The site's dial-home link is never disturbed.
func TestWitnessTakeover(t *testing.T) {
	const ttl = 600 * time.Millisecond
	f, _ := runWitnessCentral(t, servertest.Shell(t), "127.0.0.1:0", ttl)
	ctx := context.Background()
	addr := f.c.SiteAddr().String()
	cert, key := f.siteFiles(t, "site-a")
	site := f.startSite(t, "site-a", cert, key)
	f.waitAvailability(t, "site-a", central.Online)
	// Watch the dial-home link for the whole test: it must never drop.
	var dropped atomic.Bool
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			if !site.Link().Connected {
				dropped.Store(true)
			}
			time.Sleep(2 * time.Millisecond) // sampling the link's state
		}
	}()

	c0 := startController(t, f, addr, cert, key, "site-a", "controller-0", witness.Starting, 0)
	c1 := startController(t, f, addr, cert, key, "site-a", "controller-1", witness.Standby, 0)
	waitState(t, c0, "reachable", reachable)
	waitState(t, c1, "reachable", reachable)

	// No holder yet: the first claim is granted.
	wantGranted(t, claim(t, c0, 1, "first boot"), "controller-0", 1)
	c0.Set(witness.Active, 1, 10)
	c1.Set(witness.Standby, 1, 10)
	waitState(t, c1, "showing controller-0 active", func(st witness.State, _ bool) bool {
		return st.Holder == "controller-0" && st.HolderEpoch == 1 && st.Peer != nil && st.Peer.Name == "controller-0" &&
			st.Peer.Role == witness.Active && !st.Peer.LeaseExpired && st.Peer.SeenAgoMs >= 0
	})
	waitState(t, c0, "showing controller-1 standby", func(st witness.State, _ bool) bool {
		return st.Peer != nil && st.Peer.Name == "controller-1" && st.Peer.Role == witness.Standby && !st.Superseded
	})

	// While controller-0 renews as active, controller-1 may not take over.
	wantRefused(t, claim(t, c1, 2, "peer silent on the cluster network"), witness.RefusedHolderAlive)
	wantRefused(t, claim(t, c1, 1, "same epoch"), witness.RefusedStaleEpoch)

	// controller-0 dies: after its lease, the claim is granted.
	c0.stop()
	stopped := time.Now()
	var g witness.Grant
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // polling with a deadline
		if g = claim(t, c1, 2, "peer silent on every network"); g.Granted {
			break
		}
		wantRefused(t, g, witness.RefusedHolderAlive)
		if time.Now().After(deadline) {
			t.Fatal("controller-1's claim never granted after controller-0 stopped")
		}
	}
	took := time.Since(stopped)
	wantGranted(t, g, "controller-1", 2)
	// The lease ran from controller-0's last renew, at most one interval
	// before it stopped.
	if took < ttl-witnessInterval {
		t.Errorf("granted %v after the holder stopped; want at least the lease TTL %v less one renew interval", took, ttl)
	}
	t.Logf("takeover granted %v after the active's witness client stopped (lease TTL %v)", took.Round(time.Millisecond), ttl)
	c1.Set(witness.Active, 2, 20)

	// Every grant is in central's event log.
	evs, _, err := f.c.Shell().Events.Events(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"alarm_id": central.LogWitnessGrant}})
	if err != nil || len(evs) != 2 || evs[0].EntityInstanceID != "subcloud=site-a" {
		t.Fatalf("witness grant events = %+v, %v; want 2 for subcloud=site-a", evs, err)
	}
	t.Logf("newest grant event: %s", evs[0].ReasonText)

	// controller-0 comes back still believing it is active at epoch 1:
	// its first answer says it was superseded.
	c0 = startController(t, f, addr, cert, key, "site-a", "controller-0", witness.Active, 1)
	st := waitState(t, c0, "superseded", func(st witness.State, ok bool) bool { return ok && st.Superseded })
	if st.Holder != "controller-1" || st.HolderEpoch != 2 {
		t.Errorf("the old active's state = %+v; want holder controller-1 at epoch 2", st)
	}
	c0.Set(witness.Standby, 1, 10)
	waitState(t, c0, "not superseded as standby", func(st witness.State, ok bool) bool { return ok && !st.Superseded })

	// controller-1 dies too; controller-0 has not caught up with epoch 2.
	c1.stop()
	waitState(t, c0, "peer lease expired", func(st witness.State, _ bool) bool {
		return st.Peer != nil && st.Peer.Name == "controller-1" && st.Peer.LeaseExpired
	})
	wantRefused(t, claim(t, c0, 3, "peer gone"), witness.RefusedLacksEpoch)
	c0.Set(witness.Standby, 2, 20) // replication caught up
	wantGranted(t, claim(t, c0, 3, "peer gone"), "controller-0", 3)

	stopWatch()
	<-watched
	if dropped.Load() || !site.Link().Connected {
		t.Errorf("the site's dial-home link dropped while its controllers used the witness")
	}
	var ver struct{ Site string }
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/version", nil, nil, &ver); err != nil || ver.Site != "site-a" {
		t.Errorf("relay to site-a after the witness sessions: %+v, %v", ver, err)
	}
	f.waitAvailability(t, "site-a", central.Online)
}

// TestWitnessGrantSurvivesRestart: a grant is durable; after a restart,
// central counts the holder alive for a lease from its start (it has not
// heard it yet), then grants the peer.
func TestWitnessGrantSurvivesRestart(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	shell := servertest.Shell(t)
	f, stop := runWitnessCentral(t, shell, "127.0.0.1:0", ttl)
	addr := f.c.SiteAddr().String()
	cert, key := f.siteFiles(t, "site-a")
	c0 := startController(t, f, addr, cert, key, "site-a", "controller-0", witness.Standby, 4)
	waitState(t, c0, "reachable", reachable)
	wantGranted(t, claim(t, c0, 5, "first"), "controller-0", 5)
	c0.stop()
	stop()

	shell.Listen = "127.0.0.1:0"
	restarted := time.Now()
	f, _ = runWitnessCentral(t, shell, addr, ttl)
	c1 := startController(t, f, addr, cert, key, "site-a", "controller-1", witness.Standby, 5)
	st := waitState(t, c1, "reachable", reachable)
	if st.Holder != "controller-0" || st.HolderEpoch != 5 || st.Peer == nil || st.Peer.Name != "controller-0" || st.Peer.SeenAgoMs != -1 {
		t.Fatalf("state after central restarted = %+v (peer %+v); want holder controller-0 at 5, not heard yet", st, st.Peer)
	}
	var g witness.Grant
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // polling with a deadline
		if g = claim(t, c1, 6, "peer not heard"); g.Granted {
			break
		}
		wantRefused(t, g, witness.RefusedHolderAlive)
		if time.Now().After(deadline) {
			t.Fatal("controller-1's claim never granted after central restarted")
		}
	}
	wantGranted(t, g, "controller-1", 6)
	if took := time.Since(restarted); took < ttl {
		t.Errorf("granted %v after central restarted; want at least the lease TTL %v", took, ttl)
	}
}

// dialWitness opens a witness session with a certificate and sends hello;
// it returns the control stream and central's answer.
func dialWitness(t *testing.T, f fleet, cert, key string, hello linkproto.Message) (net.Conn, linkproto.Message, error) {
	t.Helper()
	tlsCfg, err := witness.TLSConfig(cert, key, f.c.Shell().CACert, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", f.c.SiteAddr().String(), tlsCfg)
	if err != nil {
		return nil, linkproto.Message{}, err
	}
	t.Cleanup(func() { conn.Close() })
	sess, err := yamux.Client(conn, nil)
	if err != nil {
		return nil, linkproto.Message{}, err
	}
	t.Cleanup(func() { sess.Close() })
	ctl, err := sess.Open()
	if err != nil {
		return nil, linkproto.Message{}, err
	}
	hello.Type, hello.Protocols = linkproto.TypeWitnessHello, []int{linkproto.Current}
	if err := linkproto.Write(ctl, hello); err != nil {
		return nil, linkproto.Message{}, err
	}
	ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := linkproto.Read(ctl)
	return ctl, m, err
}

// TestWitnessIdentity: a witness session is the certificate's site's; a
// hello naming another site, a bad controller name, a renew for another
// controller, an unknown or superseded certificate are refused; one
// site's grant is not another's.
func TestWitnessIdentity(t *testing.T) {
	f, _ := runWitnessCentral(t, servertest.Shell(t), "127.0.0.1:0", time.Second)
	addr := f.c.SiteAddr().String()
	certA, keyA := f.siteFiles(t, "site-a")
	certB, keyB := f.siteFiles(t, "site-b")

	welcomed := func(cert, key string, hello linkproto.Message) bool {
		_, m, err := dialWitness(t, f, cert, key, hello)
		return err == nil && m.Type == linkproto.TypeWelcome
	}
	if !welcomed(certA, keyA, linkproto.Message{Site: "site-a", Controller: "controller-0"}) {
		t.Fatal("site-a's controller-0 was not welcomed")
	}
	if welcomed(certA, keyA, linkproto.Message{Site: "site-b", Controller: "controller-0"}) {
		t.Error("site-a's certificate speaking for site-b was welcomed")
	}
	for _, name := range []string{"", "controller-", "controller-x", "ctl-0", "controller-0/../1", "Controller-0"} {
		if welcomed(certA, keyA, linkproto.Message{Site: "site-a", Controller: name}) {
			t.Errorf("controller name %q was welcomed", name)
		}
	}
	ucert, ukey := f.issue(t, "site-unknown")
	if welcomed(ucert, ukey, linkproto.Message{Site: "site-unknown", Controller: "controller-0"}) {
		t.Error("an unregistered site's witness session was welcomed")
	}
	// A renew for another controller than the hello's ends the session.
	ctl, m, err := dialWitness(t, f, certA, keyA, linkproto.Message{Site: "site-a", Controller: "controller-0"})
	if err != nil || m.Type != linkproto.TypeWelcome {
		t.Fatalf("hello = %+v, %v", m, err)
	}
	linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWitnessRenew, Seq: 1,
		Renew: &linkproto.WitnessRenew{Controller: "controller-1", Role: linkproto.RoleActive, Epoch: 9}})
	if m, err := linkproto.Read(ctl); err == nil && m.Type != linkproto.TypeGoodbye {
		t.Errorf("a renew for another controller was answered %+v; want goodbye", m)
	}

	// A client with site-b's certificate configured as site-a never gets
	// through, while site-a's own controller does.
	wrong := startController(t, f, addr, certB, keyB, "site-a", "controller-1", witness.Active, 7)
	a0 := startController(t, f, addr, certA, keyA, "site-a", "controller-0", witness.Standby, 0)
	waitState(t, a0, "reachable", reachable)
	_, _, first := a0.State()
	waitState(t, a0, "renewed a few times", func(witness.State, bool) bool {
		_, ok, at := a0.State()
		return ok && at.Sub(first) > 5*witnessInterval
	})
	if _, ok, _ := wrong.State(); ok {
		t.Error("a controller with another site's certificate reached the witness")
	}
	if _, err := wrong.Claim(context.Background(), 8, 0, "impostor"); !errors.Is(err, witness.ErrUnreachable) {
		t.Errorf("Claim through a refused session = %v; want ErrUnreachable", err)
	}

	// site-b's grant is site-b's alone.
	b0 := startController(t, f, addr, certB, keyB, "site-b", "controller-0", witness.Standby, 0)
	waitState(t, b0, "reachable", reachable)
	wantGranted(t, claim(t, b0, 1, "site-b first"), "controller-0", 1)
	if st := waitState(t, a0, "renewed", reachable); st.Holder != "" || st.HolderEpoch != 0 {
		t.Errorf("site-a's state after site-b's grant = %+v; want no holder", st)
	}

	// A new certificate for site-a ends the sessions on the old one, and
	// the old one is refused from then on.
	f.certify(t, "site-a")
	waitState(t, a0, "unreachable after its certificate was superseded", func(_ witness.State, ok bool) bool { return !ok })
	if welcomed(certA, keyA, linkproto.Message{Site: "site-a", Controller: "controller-0"}) {
		t.Error("site-a's superseded certificate was welcomed")
	}
}
