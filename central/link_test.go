package central_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// interval is the sites' update interval in these tests: short, so offline
// detection (3 intervals) is quick, but not so short that a loaded machine
// running -race drops links (100 ms did: gaps of 300-900 ms at load 8).
const interval = 250 * time.Millisecond

type fleet struct {
	c     *central.Central
	admin *client.Client
	dir   string
}

func startCentral(t *testing.T) fleet {
	t.Helper()
	return startCentralEvery(t, interval)
}

// startCentralEvery is startCentral with sites' update interval every.
func startCentralEvery(t *testing.T, every time.Duration) fleet {
	t.Helper()
	shell := servertest.Shell(t)
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: "127.0.0.1:0", UpdateInterval: every})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	return fleet{c: c, admin: plainClient(t, c, servertest.AdminToken(t, c)), dir: shell.DataDir}
}

// plainClient does not validate responses against central's document:
// relayed answers follow the site's.
func plainClient(t *testing.T, c servertest.Daemon, token string) *client.Client {
	cl, err := client.New(client.Config{URL: c.Shell().URL(), Token: token, HTTPClient: servertest.HTTPClient(t, c)})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// siteFiles registers a site at central and has central issue its
// certificate (the site's key stays here).
func (f fleet) siteFiles(t *testing.T, name string) (cert, key string) {
	t.Helper()
	if err := f.admin.Do(context.Background(), http.MethodPost, "/v1/subclouds", nil,
		central.CreateSubcloudRequest{Name: name, Shape: inventory.Simplex}, nil); err != nil {
		t.Fatal(err)
	}
	return f.certify(t, name)
}

// certify asks central for a site certificate, as a site being set up does.
func (f fleet) certify(t *testing.T, name string) (cert, key string) {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	var creds central.SiteCredentials
	if err := f.admin.Do(context.Background(), http.MethodPost, "/v1/subclouds/"+name+"/certificate", nil,
		central.SiteCertificateRequest{CSR: string(csrPEM)}, &creds); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	os.WriteFile(cert, []byte(creds.Certificate), 0o600)
	os.WriteFile(key, keyPEM, 0o600)
	return cert, key
}

func (f fleet) issue(t *testing.T, name string) (cert, key string) {
	ca, err := pki.LoadCA(filepath.Join(f.dir, central.FleetCADir))
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssueClient(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	if err := is.Write(cert, key); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

type runningSite struct {
	*subcloud.Subcloud
	stop func()
}

func (f fleet) startSite(t *testing.T, name, cert, key string) runningSite {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: name, Shape: inventory.Simplex, Shell: servertest.Shell(t),
		Central: &subcloud.HomeConfig{Addr: f.c.SiteAddr().String(), CACert: f.c.Shell().CACert, CertFile: cert, KeyFile: key,
			PublicKeyFile: filepath.Join(f.dir, central.RelayPublicKey), Interval: interval}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return runningSite{s, stop}
}

func (f fleet) waitAvailability(t *testing.T, site string, want central.Availability) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		var sc central.Subcloud
		if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/"+site, nil, nil, &sc); err == nil && sc.Availability == want {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	t.Fatalf("subcloud %s never became %s", site, want)
	return 0
}

func TestDialHomeAndRelay(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	cert, key := f.siteFiles(t, "site-a")
	site := f.startSite(t, "site-a", cert, key)
	f.waitAvailability(t, "site-a", central.Online)

	// Reads through the relay, with central's credentials only.
	var hosts rest.List[inventory.Host]
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/hosts", nil, nil, &hosts); err != nil {
		t.Fatalf("relayed GET /v1/hosts: %v", err)
	}
	var ver struct{ Daemon, Site string }
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/version", nil, nil, &ver); err != nil || ver.Site != "site-a" {
		t.Fatalf("relayed GET /v1/version = %+v, %v", ver, err)
	}
	// A write through the relay is done as central:admin; the site's audit log says so.
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/api/v1/join-tokens", nil, map[string]any{}, nil); err != nil {
		t.Fatalf("relayed POST as admin: %v", err)
	}
	evs, _, _ := site.Shell().Events.Events(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"type": "audit"}})
	if len(evs) == 0 || evs[0].User != "central:admin" || evs[0].Action != "createJoinToken" {
		t.Errorf("site audit events = %+v; want createJoinToken by central:admin", evs)
	}
	// A reader at central can read but not write at the site.
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "rita", Role: auth.Reader, Password: "reader-password"}, nil); err != nil {
		t.Fatal(err)
	}
	var it auth.IssuedToken
	plainClient(t, f.c, "").Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: "rita", Password: "reader-password"}, &it)
	rita := plainClient(t, f.c, it.Token)
	if err := rita.Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/hosts", nil, nil, nil); err != nil {
		t.Errorf("reader relayed read: %v", err)
	}
	if err := rita.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/api/v1/join-tokens", nil, map[string]any{}, nil); !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader relayed write: %v; want forbidden at the site", err)
	}
	// No credentials: refused at central.
	if err := plainClient(t, f.c, "").Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/hosts", nil, nil, nil); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("relay without a token: %v", err)
	}
	// Paths that try to escape.
	hc := servertest.HTTPClient(t, f.c)
	tok := servertest.AdminToken(t, f.c)
	for _, p := range []string{"/v1/subclouds/site-a/api/v1/../../../v1/users", "/v1/subclouds/site-a/api/v1/%2e%2e/users",
		"/v1/subclouds/site-a/api//etc/passwd", "/v1/subclouds/site-a/api/v1%2fusers"} {
		req, _ := http.NewRequest(http.MethodGet, f.c.Shell().URL()+p, nil)
		req.URL.Opaque = "" // keep the path exactly as written
		req.URL.RawPath = req.URL.EscapedPath()
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s = %d; want 400", p, resp.StatusCode)
		}
	}
	// An unknown site: 404; a registered site that is not connected: 503.
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-zz/api/v1/hosts", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("relay to an unknown site: %v", err)
	}

	// Cut the site off: offline after three silent intervals, never sooner.
	site.stop()
	took := f.waitAvailability(t, "site-a", central.Offline)
	t.Logf("offline %s after the site stopped (3 intervals of %s)", took, interval)
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-a/api/v1/hosts", nil, nil, nil); !errors.Is(err, errs.Unavailable) {
		t.Errorf("relay to a disconnected site: %v; want unavailable", err)
	}
	// It comes back by itself.
	f.startSite(t, "site-a", cert, key)
	f.waitAvailability(t, "site-a", central.Online)
}

// dialSession opens a site's mutual-TLS connection to central's site
// listener with a certificate, and a yamux session on it; closing the
// session closes the connection.
func dialSession(t *testing.T, f fleet, cert, key string) (*yamux.Session, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(f.c.Shell().CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", f.c.SiteAddr().String(), &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "central"})
	if err != nil {
		return nil, err
	}
	sess, err := yamux.Client(conn, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return sess, nil
}

// dialAs connects to central's site listener with a certificate and sends hello.
func dialAs(t *testing.T, f fleet, cert, key, hello string) (linkproto.Message, error) {
	t.Helper()
	sess, err := dialSession(t, f, cert, key)
	if err != nil {
		return linkproto.Message{}, err
	}
	defer sess.Close()
	ctl, err := sess.Open()
	if err != nil {
		return linkproto.Message{}, err
	}
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeHello, Site: hello, Protocols: []int{linkproto.Current}}); err != nil {
		return linkproto.Message{}, err
	}
	ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	return linkproto.Read(ctl)
}

func TestLinkIdentityIsTheCertificate(t *testing.T) {
	f := startCentral(t)
	cert, key := f.siteFiles(t, "site-a")
	f.siteFiles(t, "site-b")
	if m, err := dialAs(t, f, cert, key, "site-a"); err != nil || m.Type != linkproto.TypeWelcome || m.Protocol != linkproto.Current {
		t.Errorf("site-a as site-a: %+v, %v; want welcome", m, err)
	}
	// A site speaking for another site is refused.
	if m, err := dialAs(t, f, cert, key, "site-b"); err == nil && m.Type == linkproto.TypeWelcome {
		t.Errorf("site-a claiming site-b was welcomed")
	}
	// A certificate for a subcloud central does not know: refused.
	ucert, ukey := f.issue(t, "site-unknown")
	if m, err := dialAs(t, f, ucert, ukey, "site-unknown"); err == nil && m.Type == linkproto.TypeWelcome {
		t.Errorf("an unregistered site was welcomed")
	}
	// A certificate from the fleet CA that central did not issue through
	// its API (so never recorded) is refused; so is a superseded one.
	rcert, rkey := f.issue(t, "site-a")
	if m, err := dialAs(t, f, rcert, rkey, "site-a"); err == nil && m.Type == linkproto.TypeWelcome {
		t.Errorf("an unrecorded site-a certificate was welcomed")
	}
	newCert, newKey := f.certify(t, "site-a")
	if m, err := dialAs(t, f, cert, key, "site-a"); err == nil && m.Type == linkproto.TypeWelcome {
		t.Errorf("site-a's revoked (superseded) certificate was welcomed")
	}
	if m, err := dialAs(t, f, newCert, newKey, "site-a"); err != nil || m.Type != linkproto.TypeWelcome {
		t.Errorf("site-a's new certificate: %+v, %v; want welcome", m, err)
	}
	// A certificate from another CA: the TLS handshake fails.
	other, _ := pki.LoadOrCreateCA(t.TempDir(), "not the fleet")
	is, _ := other.IssueClient("site-a", time.Hour)
	dir := t.TempDir()
	is.Write(filepath.Join(dir, "c"), filepath.Join(dir, "k"))
	if m, err := dialAs(t, f, filepath.Join(dir, "c"), filepath.Join(dir, "k"), "site-a"); err == nil && m.Type == linkproto.TypeWelcome {
		t.Errorf("a certificate from another CA was welcomed")
	}
	var sc central.Subcloud
	f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/site-b", nil, nil, &sc)
	if sc.Availability != central.Offline {
		t.Errorf("site-b = %s after a spoofed hello; want offline", sc.Availability)
	}
}

// TestRelayKeepsSitesApart alternates relayed calls between two sites: each
// must reach its own site (the transport pools connections per site).
func TestRelayKeepsSitesApart(t *testing.T) {
	f := startCentral(t)
	for _, name := range []string{"site-a", "site-b"} {
		cert, key := f.siteFiles(t, name)
		f.startSite(t, name, cert, key)
		f.waitAvailability(t, name, central.Online)
	}
	for i := range 20 {
		name := []string{"site-a", "site-b"}[i%2]
		var ver struct{ Site string }
		if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/"+name+"/api/v1/version", nil, nil, &ver); err != nil || ver.Site != name {
			t.Fatalf("call %d to %s reached %q: %v", i, name, ver.Site, err)
		}
	}
}

// TestCentralRestartSitesReconnect restarts central on the same data
// directory and site port: every site reconnects by itself and the registry
// (and what sites wrote) survives.
func TestCentralRestartSitesReconnect(t *testing.T) {
	shell := servertest.Shell(t)
	ctx := context.Background()
	start := func(listen string) (*central.Central, context.CancelFunc, chan struct{}) {
		return runCentral(t, shell, listen)
	}
	c1, stop1, done1 := start("127.0.0.1:0")
	siteAddr := c1.SiteAddr().String()
	f := fleet{c: c1, admin: plainClient(t, c1, servertest.AdminToken(t, c1)), dir: shell.DataDir}
	for _, name := range []string{"site-a", "site-b"} {
		cert, key := f.siteFiles(t, name)
		f.startSite(t, name, cert, key)
		f.waitAvailability(t, name, central.Online)
	}
	stop1()
	<-done1

	shell.Listen = "127.0.0.1:0"
	c2, stop2, done2 := start(siteAddr)
	t.Cleanup(func() { stop2(); <-done2 })
	f2 := fleet{c: c2, admin: plainClient(t, c2, servertest.AdminToken(t, c2)), dir: shell.DataDir}
	// Until they reconnect, the sites stay online (grace), never offline.
	t0 := time.Now()
	for _, name := range []string{"site-a", "site-b"} {
		for {
			var sc central.Subcloud
			if err := f2.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+name, nil, nil, &sc); err != nil || sc.Availability != central.Online {
				t.Fatalf("%s after central restarted: %s, %v; want online throughout", name, sc.Availability, err)
			}
			var ver struct{ Site string }
			if err := f2.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+name+"/api/v1/version", nil, nil, &ver); err == nil && ver.Site == name {
				break // relinked
			}
			if time.Since(t0) > 20*time.Second {
				t.Fatalf("%s did not reconnect within 20 s", name)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
	t.Logf("both sites relinked %s after central restarted", time.Since(t0).Round(time.Millisecond))
}

// cutter is a TCP proxy whose connections a test can cut.
type cutter struct {
	ln    net.Listener
	down  atomic.Bool // refuse new connections: a partition
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			if c.down.Load() {
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
}

// TestReconnectResyncsBySequence: when a link drops and nothing changed at
// the site, the reconnect carries no summary (central already holds it).
func TestReconnectResyncsBySequence(t *testing.T) {
	// Intervals of 500 ms: a loaded machine (CI) can starve a site for
	// 3 × 100 ms, and a site central marked offline rightly resends its
	// summary, which is not what this test is about.
	const every = 500 * time.Millisecond
	f := startCentralEvery(t, every)
	cert, key := f.siteFiles(t, "site-a")
	proxy := newCutter(t, f.c.SiteAddr().String())
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-a", Shape: inventory.Simplex, Shell: servertest.Shell(t),
		Central: &subcloud.HomeConfig{Addr: proxy.ln.Addr().String(), CACert: f.c.Shell().CACert, CertFile: cert, KeyFile: key,
			PublicKeyFile: filepath.Join(f.dir, central.RelayPublicKey), Interval: every}})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	f.waitAvailability(t, "site-a", central.Online)
	waitLink := func(want bool) {
		deadline := time.Now().Add(10 * time.Second)
		for s.Link().Connected != want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
		if s.Link().Connected != want {
			t.Fatalf("link connected = %v; want %v", !want, want)
		}
	}
	waitLink(true)
	// Central marks the site online at connect, before its first summary;
	// the summary is the site's first update, and central records its
	// sequence before it acknowledges it: cut only once it has.
	for deadline := time.Now().Add(10 * time.Second); (s.Link().SummariesSent == 0 || s.Link().LastAcked == 0) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	before := s.Link().SummariesSent
	proxy.cut()
	waitLink(false)
	waitLink(true)
	// Let a few update intervals pass on the new link.
	acked := s.Link().LastAcked
	deadline := time.Now().Add(15 * time.Second)
	for s.Link().LastAcked < acked+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if after := s.Link().SummariesSent; after != before {
		t.Errorf("summaries sent: %d before the drop, %d after reconnecting with nothing changed; want no resend", before, after)
	}
	var sc central.Subcloud
	f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/site-a", nil, nil, &sc)
	if sc.Availability != central.Online {
		t.Errorf("site-a = %s after a brief drop; want online", sc.Availability)
	}
}

// TestRelayEdges: a subcloud named "api" relays correctly, and relayed
// answers cannot set cookies or run script in central's origin.
func TestRelayEdges(t *testing.T) {
	f := startCentral(t)
	cert, key := f.siteFiles(t, "api")
	f.startSite(t, "api", cert, key)
	f.waitAvailability(t, "api", central.Online)
	var ver struct{ Site string }
	if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/api/api/v1/version", nil, nil, &ver); err != nil || ver.Site != "api" {
		t.Errorf("relay to a subcloud named api: %+v, %v", ver, err)
	}
	req, _ := http.NewRequest(http.MethodGet, f.c.Shell().URL()+"/v1/subclouds/api/api/v1/openapi.yaml", nil)
	req.Header.Set("Authorization", "Bearer "+servertest.AdminToken(t, f.c))
	resp, err := servertest.HTTPClient(t, f.c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("relayed answer %d headers %v; want sandbox CSP, nosniff, no cookies", resp.StatusCode, resp.Header)
	}
}

// TestSiteAlarmsReachCentral: a site's alarms set its alarm summary and
// status at central within moments, and clearing them restores ok.
func TestSiteAlarmsReachCentral(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	cert, key := f.siteFiles(t, "site-a")
	site := f.startSite(t, "site-a", cert, key)
	f.waitAvailability(t, "site-a", central.Online)
	status := func(want central.Status) central.Subcloud {
		t.Helper()
		var sc central.Subcloud
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/site-a", nil, nil, &sc) == nil && sc.Status == want {
				return sc
			}
		}
		t.Fatalf("site-a status %s; want %s", sc.Status, want)
		return sc
	}
	if _, _, err := site.Shell().Alarms.Raise(ctx, "200.004", "host=worker-1", nil); err != nil {
		t.Fatal(err)
	}
	if sc := status(central.StatusCritical); sc.AlarmSummary.Critical != 1 {
		t.Errorf("alarm summary at central = %+v", sc.AlarmSummary)
	}
	site.Shell().Alarms.Clear(ctx, "200.004", "host=worker-1")
	site.Shell().Alarms.Raise(ctx, "100.103", "host=worker-1", map[string]string{"threshold": "90"})
	status(central.StatusDegraded)
	site.Shell().Alarms.Clear(ctx, "100.103", "host=worker-1")
	status(central.StatusOK)
}

// runCentral starts central on shell (its store and data dir, so a test
// can start it again after stopping it) with sites dialing listen, and
// waits until it serves; cancel stops it, done closes when it has.
func runCentral(t *testing.T, shell server.Config, listen string) (*central.Central, context.CancelFunc, chan struct{}) {
	t.Helper()
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: listen, UpdateInterval: interval, RestartGrace: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(cctx) }()
	<-c.Shell().Ready()
	return c, cancel, done
}
