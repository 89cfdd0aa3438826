package central

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/linkproto"
)

// links holds the live dial-home session of each site. Central never dials
// a site: every call into a site opens a stream on its session.
type links struct {
	mu       sync.Mutex
	sessions map[string]*yamux.Session

	admitOnce sync.Once
	admitCh   chan struct{}
	waiting   atomic.Int64 // links waiting for a slot
}

// Admission control: a reconnect storm (every site after a central
// restart) is taken maxAdmitting links at a time, from the TLS handshake
// to the link's registration; the rest wait up to admitWait, then are
// closed and retry with their backoff. The API and established links keep
// their share of CPU and database connections meanwhile.
const (
	maxAdmitting = 64
	// admitWait is how long a link waits for a slot before it is closed
	// (the site then retries after its backoff). Long enough that a
	// central restart's storm queues rather than pushes sites into long
	// backoffs; shorter than a site's dial timeout (subcloud/homelink.go).
	admitWait = 25 * time.Second
)

// admit takes an admission slot; release gives it back (once).
func (l *links) admit(ctx context.Context) (release func(), err error) {
	l.admitOnce.Do(func() { l.admitCh = make(chan struct{}, maxAdmitting) })
	select {
	case l.admitCh <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-l.admitCh }) }, nil
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case l.admitCh <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-l.admitCh }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errors.New("central: too many links being admitted; the site retries")
	}
}

// storm reports links waiting for an admission slot: a reconnect storm.
func (l *links) storm() bool { return l.waiting.Load() > 0 }

func (l *links) get(site string) *yamux.Session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessions[site]
}

// put makes s the site's session and closes the one it replaces.
func (l *links) put(site string, s *yamux.Session) {
	l.mu.Lock()
	old := l.sessions[site]
	l.sessions[site] = s
	l.mu.Unlock()
	if old != nil && old != s {
		old.Close()
	}
}

// drop forgets s if it is still the site's session.
func (l *links) drop(site string, s *yamux.Session) {
	l.mu.Lock()
	if l.sessions[site] == s {
		delete(l.sessions, site)
	}
	l.mu.Unlock()
}

func (l *links) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sessions {
		s.Close()
	}
	clear(l.sessions)
}

// yamuxConfig is the session configuration on both ends of a link.
func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}

// serveLinks accepts sites' connections until ctx ends.
func (c *Central) serveLinks(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.links.closeAll()
	go func() { <-ctx.Done(); c.siteLn.Close() }()
	for {
		conn, err := c.siteLn.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("site listener", "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.serveLink(ctx, conn); err != nil && ctx.Err() == nil {
				c.log.Info("site link ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// ErrSiteIdentity reports a site presenting an identity central does not
// accept: an unknown site, or one speaking for another.
var ErrSiteIdentity = errors.New("central: site identity refused")

// serveLink runs one site's connection: identity from its certificate,
// hello/welcome, then updates and acks; relayed calls use other streams.
// A witness_hello instead makes it a controller's witness session
// (witness.go).
func (c *Central) serveLink(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	step := c.admitTimer()
	release, err := c.links.admit(ctx)
	if err != nil {
		return err
	}
	defer release()
	step("slot")
	tc := conn.(*tls.Conn)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	step("handshake")
	chain := tc.ConnectionState().PeerCertificates
	site := siteOf(chain)
	if err := c.currentCertificate(ctx, site, chain); err != nil {
		return err
	}
	step("certificate")
	sess, err := yamux.Server(conn, yamuxConfig(c.log))
	if err != nil {
		return err
	}
	defer sess.Close()
	ctl, err := acceptWithin(sess, 10*time.Second)
	if err != nil {
		return fmt.Errorf("control stream: %w", err)
	}
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	hello, err := linkproto.Read(ctl)
	if err == nil && hello.Type == linkproto.TypeWitnessHello {
		// A duplex controller's witness session: never the site's link.
		release()
		return c.serveWitness(ctx, sess, ctl, site, chain, hello)
	}
	if err != nil || hello.Type != linkproto.TypeHello {
		return fmt.Errorf("hello: %v %w", hello.Type, err)
	}
	if hello.Site != site {
		// Everything a site sends is bound to its certificate.
		c.log.Warn("site spoke for another site", "certificate", site, "claimed", hello.Site)
		_ = linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: "hello names another site", SentAt: time.Now().UTC()})
		return fmt.Errorf("%w: certificate %s, hello %s", ErrSiteIdentity, site, hello.Site)
	}
	step("hello")
	proto, ok := linkproto.Choose(hello.Protocols)
	if !ok {
		_ = linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: fmt.Sprintf("no common protocol: central speaks %d", linkproto.Current), SentAt: time.Now().UTC()})
		return fmt.Errorf("site %s offers protocols %v", site, hello.Protocols)
	}
	// Seq tells the site what central holds: if its summary has not changed
	// since, it resyncs with a keepalive instead of resending it. EventSeq
	// is where the site's event log resumes.
	evSeq, err := c.eventCursor(ctx, site, hello.Epoch, hello.EventSeq)
	if err != nil {
		return fmt.Errorf("event cursor: %w", err)
	}
	step("cursor")
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWelcome, Protocol: proto,
		Seq: c.recordedSeq(site), EventSeq: evSeq, SentAt: time.Now().UTC()}); err != nil {
		return err
	}
	// Check the certificate again and register the link under linkMu:
	// re-issuing or deleting cannot slip between the two.
	c.linkMu.Lock()
	if err := c.currentCertificate(ctx, site, chain); err != nil {
		c.linkMu.Unlock()
		return err
	}
	c.links.put(site, sess)
	c.linkMu.Unlock()
	c.sync.linkUp(site)
	defer c.links.drop(site, sess)
	// The streams the site opens from now on fetch synced images' bytes
	// (blobs.go); serving ends with the session.
	blobs := &http.Server{Handler: c.blobs.handler(site), ReadHeaderTimeout: 10 * time.Second}
	blobsDone := make(chan struct{})
	go func() { defer close(blobsDone); blobs.Serve(sess) }()
	defer func() { blobs.Close(); <-blobsDone }()
	c.log.Info("site connected", "site", site, "protocol", proto, "remote", conn.RemoteAddr().String())
	step("register")
	c.seen(ctx, site, nil)
	step("online")
	release() // admitted: the link is registered and recorded online

	// The site's event records are applied off the read loop, so a long
	// backlog never delays the updates that keep the site online.
	var wmu sync.Mutex
	write := func(m linkproto.Message) error {
		wmu.Lock()
		defer wmu.Unlock()
		m.SentAt = time.Now().UTC()
		return linkproto.Write(ctl, m)
	}
	batches := make(chan []faultmgr.Record, 8)
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		for recs := range batches {
			n, err := c.applyEvents(ctx, site, hello.Epoch, recs)
			if err != nil {
				c.log.Warn("closing a site's link: its records were not applied", "site", site, "err", err)
				_ = write(linkproto.Message{Type: linkproto.TypeGoodbye, Reason: err.Error()})
				sess.Close()
				for range batches { // drain until the reader stops
				}
				return
			}
			if err := write(linkproto.Message{Type: linkproto.TypeEventsAck, EventSeq: n}); err != nil {
				sess.Close()
			}
		}
	}()
	defer func() { close(batches); <-applied }()

	throttle := c.newLinkThrottle(site)
	for {
		// Past the tracker's silence a link is dead: one that only lost a
		// few updates stays.
		ctl.SetReadDeadline(time.Now().Add(c.tracker.silence() + c.tracker.interval))
		m, err := linkproto.Read(ctl)
		if err != nil {
			return err
		}
		// A site over its limits is read no faster than they allow.
		if err := throttle.admit(ctx, len(m.Records)); err != nil {
			return err
		}
		switch m.Type {
		case linkproto.TypeEvents:
			select {
			case batches <- m.Records:
			case <-applied:
				return errors.New("records refused")
			}
			continue
		case linkproto.TypeUpdate:
		default:
			continue
		}
		c.seen(ctx, site, m.Summary)
		if m.Summary != nil {
			c.recordSeq(site, m.Seq)
		}
		if err := write(linkproto.Message{Type: linkproto.TypeAck, Seq: m.Seq}); err != nil {
			return err
		}
	}
}

// admitTimer returns a function that records the time since its last
// call (or since admitTimer) as the named admission step.
func (c *Central) admitTimer() func(step string) {
	last := time.Now()
	return func(step string) {
		now := time.Now()
		c.admitSteps.WithLabelValues(step).Observe(now.Sub(last).Seconds())
		last = now
	}
}

// currentCertificate checks that site is registered and chain's leaf is
// the certificate central last issued it. The serial comes from the
// certificate cache, read from the registry on a miss: a reconnect storm
// checks every link twice, once under linkMu (measured: a registry read
// there, 30 ms on a loaded machine, capped admission at ~30 links/s).
func (c *Central) currentCertificate(ctx context.Context, site string, chain []*x509.Certificate) error {
	serial, ok := c.certs.get(site)
	if !ok {
		gen := c.certs.generation()
		sc, err := c.Subclouds.Subcloud(ctx, site)
		if err != nil {
			c.log.Warn("refused a site certificate for an unknown subcloud", "site", site)
			return fmt.Errorf("%w: %q is not a registered subcloud", ErrSiteIdentity, site)
		}
		if sc.Certificate != nil {
			serial = sc.Certificate.Serial
		}
		c.certs.put(site, serial, gen)
	}
	if serial == "" || chain[0].SerialNumber.Text(16) != serial {
		c.log.Warn("refused a revoked or superseded site certificate", "site", site)
		return fmt.Errorf("%w: %s presented a certificate that is not its current one", ErrSiteIdentity, site)
	}
	return nil
}

// certCache holds the serial of each site's current certificate ("" for
// none) as central last read it from the registry. Whatever changes a
// subcloud's certificate or removes the subcloud does so under linkMu and
// then forgets the site; an entry read before a forget is never stored
// after it (the generation), so a check under linkMu never sees a serial
// older than the registry's.
type certCache struct {
	mu      sync.Mutex
	gen     uint64
	serials map[string]string
}

func (cc *certCache) get(site string) (string, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s, ok := cc.serials[site]
	return s, ok
}

func (cc *certCache) generation() uint64 {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.gen
}

// put stores site's serial read since generation gen, unless something
// was forgotten meanwhile.
func (cc *certCache) put(site, serial string, gen uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.gen != gen {
		return
	}
	if cc.serials == nil {
		cc.serials = map[string]string{}
	}
	cc.serials[site] = serial
}

// forget drops site's entry; callers hold linkMu, after the registry write.
func (cc *certCache) forget(site string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	delete(cc.serials, site)
}

func acceptWithin(sess *yamux.Session, d time.Duration) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := sess.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(d):
		sess.Close()
		return nil, errors.New("timed out")
	}
}

func siteOf(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return ""
	}
	return chain[0].Subject.CommonName
}

// seen records an update from site: the tracker first, then the registry.
func (c *Central) seen(ctx context.Context, site string, sum *linkproto.Summary) {
	now := time.Now().UTC()
	tn, err := c.tracker.Seen(site, now)
	if err != nil {
		return
	}
	if tn == nil && sum == nil && now.Sub(c.lastWrite(site)) < 30*time.Second {
		return // a keepalive from an online site: no write needed
	}
	// Recorded in the registry off this goroutine: the link's read loop
	// never waits for the database.
	c.wroteAt(site, now)
	c.linkw.queue(site, now, sum, func(r linkWritten) {
		switch {
		case r.err != nil:
			c.wroteAt(site, time.Time{}) // the next keepalive writes again
			if ctx.Err() == nil {
				c.log.Error("recording a site update failed", "site", site, "err", r.err)
			}
		case r.ok:
			c.stream.Publish("subcloud", r.sc)
		}
	})
	if tn != nil {
		c.log.Info("subcloud online", "site", site, "reason", tn.Reason)
		if _, err := c.shell.Alarms.Clear(ctx, "280.001", "subcloud="+site); err != nil {
			c.log.Error("clearing 280.001 failed", "site", site, "err", err)
		}
	}
}

// availabilityNow is the tracker's current view of site (or def if it no
// longer tracks it): registry writes record that, so racing writers converge.
func (c *Central) availabilityNow(site string, def Availability) Availability {
	if a, _, ok := c.tracker.Availability(site); ok {
		return a
	}
	return def
}

// sweep marks silent sites offline, once per second until ctx ends.
func (c *Central) sweep(ctx context.Context) error {
	tick := time.NewTicker(c.tracker.interval / 5)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			c.markOffline(ctx, c.tracker.Sweep(now.UTC()))
		}
	}
}

// markOffline records the sweep's transitions in one transaction, then
// publishes them and raises 280.001 for each site that was online.
func (c *Central) markOffline(ctx context.Context, tns []Transition) {
	if len(tns) == 0 {
		return
	}
	names := make([]string, len(tns))
	for i, tn := range tns {
		names[i] = tn.Site
	}
	updated, err := c.Subclouds.UpdateSubclouds(ctx, names, func(sc *Subcloud) error {
		// The tracker's state now, not the transition's: an update that
		// arrived meanwhile must not be overwritten.
		sc.Availability = c.availabilityNow(sc.Name, Offline)
		sc.Status = StatusOf(sc.Availability, sc.AlarmSummary)
		return nil
	})
	if err != nil {
		c.log.Error("recording offline failed", "sites", len(names), "err", err)
	}
	for _, sc := range updated {
		c.stream.Publish("subcloud", sc)
	}
	for _, tn := range tns {
		c.log.Warn("subcloud offline", "site", tn.Site, "reason", tn.Reason)
		if tn.From == Online {
			if _, _, err := c.shell.Alarms.Raise(ctx, "280.001", "subcloud="+tn.Site, nil); err != nil {
				c.log.Error("raising 280.001 failed", "site", tn.Site, "err", err)
			}
		}
	}
}
