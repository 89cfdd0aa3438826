package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/egress"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sealed"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// env is a fault manager on a real SQLite store with a webhook manager
// delivering from its log.
type env struct {
	t        *testing.T
	store    *faultdb.Store
	alarms   *faultmgr.Manager
	box      *sealed.Box
	logs     *syncBuffer
	resolver *fakeResolver
	registry *prometheus.Registry
	cfg      webhook.Config
	hooks    *webhook.Manager
	stop     func() // stops hooks.Run and waits for it
}

func newEnv(t *testing.T, mod func(*webhook.Config)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := faultdb.Open(ctx, sqldbtest.Open(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, logs: &syncBuffer{}, resolver: &fakeResolver{names: map[string][]netip.Addr{}}}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(e.logs, tWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.alarms, err = faultmgr.NewManager(faultmgr.Config{Catalog: cat, Store: st, Site: "site-sx", Logger: logger}); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.alarms.Run(actx) }()
	t.Cleanup(func() { cancel(); <-done })
	if e.box, err = sealed.LoadOrCreate(t.TempDir() + "/" + sealed.KeyFile); err != nil {
		t.Fatal(err)
	}
	pol, _ := egress.NewPolicy(nil, nil)
	e.cfg = webhook.Config{Store: st, Log: st, Box: e.box, Policy: pol, Logger: logger.With("component", "webhook"),
		Resolver: e.resolver, Timeout: 5 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	return e
}

// start builds a webhook manager from e.cfg and runs it until stop or the
// end of the test.
func (e *env) start() {
	e.t.Helper()
	e.registry = prometheus.NewRegistry()
	cfg := e.cfg
	cfg.Registry = e.registry
	m, err := webhook.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.hooks = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("webhook Run() = %v", err)
			}
		})
	}
	e.t.Cleanup(e.stop)
}

func (e *env) create(target string, f *webhook.Filter) webhook.Created {
	e.t.Helper()
	c, err := e.hooks.Create(context.Background(), webhook.CreateRequest{URL: target, Filter: f}, "admin")
	if err != nil {
		e.t.Fatalf("Create(%s) = %v", target, err)
	}
	return c
}

func (e *env) raise(id, entity string) {
	e.t.Helper()
	if _, _, err := e.alarms.Raise(context.Background(), id, entity, nil); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) clear(id, entity string) {
	e.t.Helper()
	if _, err := e.alarms.Clear(context.Background(), id, entity); err != nil {
		e.t.Fatal(err)
	}
}

// matching returns the log's records the filter selects, in log order.
func (e *env) matching(f webhook.Filter) []faultmgr.Record {
	e.t.Helper()
	recs, err := e.store.After(context.Background(), 0, 100000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []faultmgr.Record
	for _, r := range recs {
		if f.Match(r.Event) {
			out = append(out, r)
		}
	}
	return out
}

// receiver is a webhook target that checks every delivery's signature.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	// answer decides the response to the n-th request (from 1); nil: 200.
	answer func(n int, w http.ResponseWriter) bool

	mu    sync.Mutex
	n     int
	all   []got // every request, in arrival order
	acked []got // the requests answered 2xx
}

type got struct {
	d       webhook.Delivery
	attempt int
	body    []byte
	header  http.Header
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// newClosingReceiver is a receiver that closes every connection after one
// request, so every delivery dials anew.
func newClosingReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.srv.Config.SetKeepAlivesEnabled(false)
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.n++
	n, secret := r.n, r.secret
	r.mu.Unlock()
	if secret != "" {
		if err := webhook.Verify(secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
			r.t.Errorf("delivery %s: %v", req.Header.Get(webhook.HeaderDelivery), err)
		}
	}
	var d webhook.Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		r.t.Errorf("delivery body %q: %v", body, err)
	}
	attempt, _ := strconv.Atoi(req.Header.Get(webhook.HeaderAttempt))
	g := got{d: d, attempt: attempt, body: body, header: req.Header.Clone()}
	r.mu.Lock()
	r.all = append(r.all, g)
	r.mu.Unlock()
	if r.answer != nil && !r.answer(n, w) {
		return
	}
	r.mu.Lock()
	r.acked = append(r.acked, g)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setSecret(s string) { r.mu.Lock(); r.secret = s; r.mu.Unlock() }

func (r *receiver) ackedCount() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.acked) }

func (r *receiver) snapshot() (all, acked []got) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]got(nil), r.all...), append([]got(nil), r.acked...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeliveryIsSignedAndVerifies(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	c := e.create(rcv.srv.URL+"/hook?source=petrel", nil)
	rcv.setSecret(c.Secret)
	if !strings.HasPrefix(c.Secret, webhook.SecretPrefix) || len(c.Secret) != len(webhook.SecretPrefix)+43 {
		t.Errorf("secret %q: want %s and 256 bits in base64url", c.Secret, webhook.SecretPrefix)
	}
	e.raise("200.004", "host=worker-1")
	waitFor(t, "the raise delivered", 10*time.Second, func() bool { return rcv.ackedCount() == 1 })

	_, acked := rcv.snapshot()
	d := acked[0].d
	if d.Type != webhook.DeliveryEvent || d.WebhookID != c.Webhook.ID || d.Event == nil || d.Event.Type != faultmgr.EventSet ||
		d.Event.AlarmID != "200.004" || d.Event.Severity != "critical" || d.Event.Site != "site-sx" || d.AlarmUUID == "" ||
		d.Epoch != e.store.Epoch() || d.Seq == 0 || d.DeliveryID != webhook.DeliveryID(c.Webhook.ID, d.Event.UUID) {
		t.Errorf("delivery = %+v, event %+v", d, d.Event)
	}
	// The signature as docs/webhooks.md tells a receiver to compute it.
	body, h := acked[0].body, acked[0].header
	mac := hmac.New(sha256.New, []byte(c.Secret))
	fmt.Fprintf(mac, "%s.%s.%s", h.Get("X-Petrel-Timestamp"), h.Get("X-Petrel-Delivery"), body)
	if want := "v1=" + hex.EncodeToString(mac.Sum(nil)); h.Get("X-Petrel-Signature") != want {
		t.Errorf("X-Petrel-Signature = %q; want %q", h.Get("X-Petrel-Signature"), want)
	}
	if h.Get("Content-Type") != "application/json" || h.Get(webhook.HeaderEvent) != "set" || h.Get(webhook.HeaderAttempt) != "1" ||
		h.Get(webhook.HeaderWebhook) != c.Webhook.ID {
		t.Errorf("headers = %v", h)
	}
	now := time.Now()
	if err := webhook.Verify(c.Secret, h, body, now, time.Minute); err != nil {
		t.Errorf("Verify(the delivery) = %v", err)
	}
	for name, check := range map[string]func() error{
		"tampered body": func() error { return webhook.Verify(c.Secret, h, append(bytes.Clone(body), ' '), now, time.Minute) },
		"other secret":  func() error { return webhook.Verify(webhook.NewSecret(), h, body, now, time.Minute) },
		"other delivery": func() error {
			h2 := h.Clone()
			h2.Set(webhook.HeaderDelivery, "another")
			return webhook.Verify(c.Secret, h2, body, now, time.Minute)
		},
	} {
		if err := check(); !errors.Is(err, webhook.ErrBadSignature) {
			t.Errorf("%s: Verify = %v; want ErrBadSignature", name, err)
		}
	}
	if err := webhook.Verify(c.Secret, h, body, now.Add(10*time.Minute), time.Minute); !errors.Is(err, webhook.ErrStale) {
		t.Errorf("Verify 10 minutes later = %v; want ErrStale", err)
	}
}

// TestOrderSurvivesAnOutage: the target fails with 500s and then with
// dropped connections before it recovers; every matching event arrives, in
// log order, with no gaps, and repeats only as retries of one delivery ID.
func TestOrderSurvivesAnOutage(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	rcv.answer = func(n int, w http.ResponseWriter) bool {
		switch {
		case n <= 25:
			w.WriteHeader(http.StatusInternalServerError)
			return false
		case n <= 40:
			c, _, _ := w.(http.Hijacker).Hijack() // the connection drops: no answer at all
			c.Close()
			return false
		case n <= 45:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return false
		}
		return true
	}
	filter := webhook.Filter{Severities: []faultmgr.Severity{faultmgr.Critical, faultmgr.Major}}
	c := e.create(rcv.srv.URL, &filter)
	rcv.setSecret(c.Secret)
	// Sets and clears of a few alarms, interleaved; minor and warning
	// alarms are filtered out.
	for i := range 12 {
		ent := fmt.Sprintf("host=worker-%d", i%3)
		e.raise("200.004", ent)
		e.raise("200.001", ent) // warning: filtered
		e.raise("200.010", ent)
		if i%2 == 1 {
			e.clear("200.004", ent)
		}
		e.clear("200.010", ent)
	}
	want := e.matching(c.Webhook.Filter)
	if len(want) < 30 {
		t.Fatalf("only %d matching events", len(want))
	}
	waitFor(t, "every matching event acknowledged", 30*time.Second, func() bool { return rcv.ackedCount() >= len(want) })

	all, acked := rcv.snapshot()
	if len(acked) != len(want) {
		t.Fatalf("acknowledged %d deliveries; want exactly %d", len(acked), len(want))
	}
	for i, g := range acked {
		if g.d.Seq != want[i].Seq || g.d.Event.UUID != want[i].Event.UUID {
			t.Fatalf("acknowledged #%d = seq %d (%s); want seq %d (%s)", i, g.d.Seq, g.d.Event.UUID, want[i].Seq, want[i].Event.UUID)
		}
	}
	// Every request, failed ones too, went out in order: a repeat is a retry
	// of the same delivery, with the same ID and a higher attempt number.
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		switch {
		case cur.d.Seq < prev.d.Seq:
			t.Fatalf("request %d went backwards: seq %d after %d", i, cur.d.Seq, prev.d.Seq)
		case cur.d.Seq == prev.d.Seq && (cur.d.DeliveryID != prev.d.DeliveryID || cur.attempt != prev.attempt+1):
			t.Errorf("request %d repeats seq %d as delivery %s attempt %d after %s attempt %d", i, cur.d.Seq,
				cur.d.DeliveryID, cur.attempt, prev.d.DeliveryID, prev.attempt)
		}
	}
	if len(all) != len(want)+45 {
		t.Errorf("%d requests; want %d deliveries + 45 failed attempts", len(all), len(want))
	}
	waitFor(t, "the status saved", 10*time.Second, func() bool {
		w, _ := e.hooks.Get(context.Background(), c.Webhook.ID)
		return w.Status.Cursor == want[len(want)-1].Seq
	})
	w, _ := e.hooks.Get(context.Background(), c.Webhook.ID)
	if s := w.Status; s.State != webhook.StateOK || s.ConsecutiveFailures != 0 || s.Delivered != uint64(len(want)) ||
		s.LastError == "" || s.LastSuccessAt == nil || s.Lag != 0 {
		t.Errorf("status after recovery = %+v", s)
	}
	if got := metric(t, e.registry, "petrel_webhook_deliveries_total", "result", "failed"); got != 45 {
		t.Errorf("failed deliveries metric = %v; want 45", got)
	}
}

// metric returns the value of the series of name with label=value (-1:
// no such series).
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestSlowTargetNeverSlowsIngest: a target that never answers holds back
// only its own webhook; raises complete and another webhook gets all.
func TestSlowTargetNeverSlowsIngest(t *testing.T) {
	e := newEnv(t, func(c *webhook.Config) { c.Timeout = time.Hour })
	release := make(chan struct{})
	hung := make(chan struct{}, 1000)
	slow := newReceiver(t)
	slow.answer = func(n int, w http.ResponseWriter) bool {
		hung <- struct{}{}
		<-release
		return true
	}
	// Registered cleanups run last-first: release the handler before the
	// server closes.
	t.Cleanup(func() { close(release) })
	fast := newReceiver(t)
	e.create(slow.srv.URL, nil)
	cf := e.create(fast.srv.URL, nil)
	fast.setSecret(cf.Secret)

	e.raise("200.004", "host=worker-0")
	select {
	case <-hung:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow target got no request")
	}
	// While the slow target hangs: 400 raises from 40 clients.
	const clients, each = 40, 10
	done := make(chan error, clients)
	for c := range clients {
		go func() {
			for i := range each {
				_, _, err := e.alarms.Raise(context.Background(), "200.010", fmt.Sprintf("host=w%d-%d", c, i), nil)
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	timeout := time.After(60 * time.Second)
	for range clients {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("raises did not complete within 60 s while a webhook target hung")
		}
	}
	if len(hung) != 0 {
		t.Errorf("the slow target got %d more requests while its first hung; want none (in order, one at a time)", len(hung))
	}
	waitFor(t, "the healthy target got every raise", 30*time.Second, func() bool { return fast.ackedCount() == 1+clients*each })
}

type fakeResolver struct {
	mu    sync.Mutex
	names map[string][]netip.Addr
}

func (f *fakeResolver) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names[name] = nil
	for _, a := range addrs {
		f.names[name] = append(f.names[name], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.names[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestDeniedTargetRefusedAtRegistration(t *testing.T) {
	e := newEnv(t, nil)
	e.resolver.set("metadata.test", "169.254.169.254")
	e.resolver.set("mixed.test", "127.0.0.1", "fe80::1")
	for _, target := range []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/",
		"http://[::ffff:a9fe:a9fe]:8080/",
		"http://0.0.0.0:8080/",
		"http://[::]:8080/",
		"http://224.0.0.1/",
		"http://[fe80::1]/",
		"http://[ff02::1]/",
		"http://255.255.255.255/",
		"http://metadata.test/",
		"http://mixed.test:8080/",
		"http://missing.test/",
	} {
		_, err := e.hooks.Create(context.Background(), webhook.CreateRequest{URL: target}, "admin")
		var fe *errs.FieldError
		if !errors.As(err, &fe) || fe.Field != "url" {
			t.Errorf("Create(%s) = %v; want invalid url", target, err)
		}
	}
	if n, _ := e.store.CountWebhooks(context.Background()); n != 0 {
		t.Errorf("%d webhooks stored after refusals; want 0", n)
	}
}

// TestDeniedAtDialTime: a name that resolved to an allowed address at
// registration and to a denied one later (DNS rebinding) is refused when
// dialled; so is an address the policy no longer allows.
func TestDeniedAtDialTime(t *testing.T) {
	e := newEnv(t, nil)
	// A connection made before is reused whatever the name resolves to
	// now (it goes where it was checked to go); here every delivery dials.
	rcv := newClosingReceiver(t)
	u, _ := url.Parse(rcv.srv.URL)
	e.resolver.set("hooks.test", "127.0.0.1")
	c := e.create("http://hooks.test:"+u.Port()+"/", nil)
	rcv.setSecret(c.Secret)
	e.raise("200.004", "host=worker-1")
	waitFor(t, "the first delivery", 10*time.Second, func() bool { return rcv.ackedCount() == 1 })

	// Rebinding: the name now points at the metadata service.
	e.resolver.set("hooks.test", "169.254.169.254")
	e.raise("200.004", "host=worker-2")
	waitFor(t, "the denial recorded", 10*time.Second, func() bool {
		w, _ := e.hooks.Get(context.Background(), c.Webhook.ID)
		return w.Status.ConsecutiveFailures > 0 && strings.Contains(w.Status.LastError, "not allowed")
	})
	if n := rcv.ackedCount(); n != 1 {
		t.Errorf("the target got %d deliveries; want 1", n)
	}
	// Back to the allowed address: the held event follows.
	e.resolver.set("hooks.test", "127.0.0.1")
	waitFor(t, "the held event delivered", 10*time.Second, func() bool { return rcv.ackedCount() == 2 })

	// A daemon whose policy now excludes loopback: nothing is sent.
	e.stop()
	e.cfg.Policy, _ = egress.NewPolicy([]string{"10.0.0.0/8"}, nil)
	e.start()
	e.raise("200.004", "host=worker-3")
	waitFor(t, "the denial recorded", 10*time.Second, func() bool {
		w, _ := e.hooks.Get(context.Background(), c.Webhook.ID)
		return w.Status.ConsecutiveFailures > 0 && strings.Contains(w.Status.LastError, "in no allowed range")
	})
	if all, _ := rcv.snapshot(); len(all) != 2 {
		t.Errorf("the target got %d requests; want 2", len(all))
	}
}

// TestRestartResumesFromCursor: a stopped manager saved its cursor; a new
// one delivers only what came after, and never resends acknowledged events.
func TestRestartResumesFromCursor(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	c := e.create(rcv.srv.URL, nil)
	rcv.setSecret(c.Secret)
	for i := range 5 {
		e.raise("200.004", fmt.Sprintf("host=worker-%d", i))
	}
	// Acknowledged means the sender saw the 2xx: the cursor moved past it.
	last := e.matching(c.Webhook.Filter)[4].Seq
	waitFor(t, "5 deliveries acknowledged", 10*time.Second, func() bool {
		w, _ := e.hooks.Get(context.Background(), c.Webhook.ID)
		return w.Status.Cursor == last
	})
	e.stop()
	for i := range 3 {
		e.clear("200.004", fmt.Sprintf("host=worker-%d", i))
	}
	e.start()
	waitFor(t, "8 deliveries", 10*time.Second, func() bool { return rcv.ackedCount() >= 8 })
	want := e.matching(c.Webhook.Filter)
	all, _ := rcv.snapshot()
	if len(all) != 8 || len(want) != 8 {
		t.Fatalf("%d requests for %d events; want 8 for 8 (no resends)", len(all), len(want))
	}
	for i, g := range all {
		if g.d.Seq != want[i].Seq || g.attempt != 1 {
			t.Errorf("request %d = seq %d attempt %d; want seq %d attempt 1", i, g.d.Seq, g.attempt, want[i].Seq)
		}
	}
}

func TestDisableResumesAndDeleteStops(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	c := e.create(rcv.srv.URL, &webhook.Filter{AlarmIDs: []string{"200.00"}})
	rcv.setSecret(c.Secret)
	ctx := context.Background()
	off, on := false, true
	if w, err := e.hooks.Update(ctx, c.Webhook.ID, webhook.UpdateRequest{Enabled: &off}); err != nil || w.Status.State != webhook.StateDisabled {
		t.Fatalf("disable = %+v, %v", w.Status, err)
	}
	e.raise("200.004", "host=worker-1")
	e.raise("200.010", "host=worker-1") // not 200.00x: filtered
	e.raise("200.001", "host=worker-1")
	if _, err := e.hooks.Update(ctx, c.Webhook.ID, webhook.UpdateRequest{Enabled: &on}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the events held while disabled", 10*time.Second, func() bool { return rcv.ackedCount() == 2 })
	if err := e.hooks.Delete(ctx, c.Webhook.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hooks.Get(ctx, c.Webhook.ID); !errors.Is(err, errs.NotFound) {
		t.Errorf("Get after delete = %v; want not found", err)
	}
	// After a delete, nothing more goes out: a second webhook that gets the
	// next event proves the log moved on.
	other := newReceiver(t)
	c2 := e.create(other.srv.URL, nil)
	other.setSecret(c2.Secret)
	e.raise("200.004", "host=worker-2")
	waitFor(t, "the other webhook got the event", 10*time.Second, func() bool { return other.ackedCount() == 1 })
	if n := rcv.ackedCount(); n != 2 {
		t.Errorf("a deleted webhook got %d deliveries; want 2", n)
	}
}

func TestSecretIsShownOnlyAtCreate(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	c := e.create(rcv.srv.URL, nil)
	rcv.setSecret(c.Secret)
	e.raise("200.004", "host=worker-1")
	waitFor(t, "a delivery", 10*time.Second, func() bool { return rcv.ackedCount() == 1 })
	ctx := context.Background()
	w, _ := e.hooks.Get(ctx, c.Webhook.ID)
	ws, _, _ := e.hooks.List(ctx, page.Options{Limit: 10})
	res, err := e.hooks.Test(ctx, c.Webhook.ID)
	if err != nil || !res.OK || res.StatusCode != http.StatusNoContent {
		t.Errorf("Test() = %+v, %v", res, err)
	}
	shown, _ := json.Marshal([]any{w, ws, res})
	sealedSecret, _ := e.store.WebhookSecret(ctx, c.Webhook.ID)
	for what, text := range map[string]string{"get/list/test": string(shown), "log": e.logs.String(), "store": string(sealedSecret)} {
		if strings.Contains(text, c.Secret) || strings.Contains(text, c.Secret[len(webhook.SecretPrefix):]) {
			t.Errorf("the %s holds the signing secret", what)
		}
	}
	if all, _ := rcv.snapshot(); len(all) != 2 || all[1].d.Type != webhook.DeliveryTest || all[1].d.Event != nil {
		t.Errorf("test delivery = %+v", all)
	}
}

func TestAtMostMaxWebhooks(t *testing.T) {
	e := newEnv(t, func(c *webhook.Config) { c.MaxWebhooks = 2 })
	e.create("http://127.0.0.1:9/a", nil)
	e.create("http://127.0.0.1:9/b", nil)
	if _, err := e.hooks.Create(context.Background(), webhook.CreateRequest{URL: "http://127.0.0.1:9/c"}, "admin"); !errors.Is(err, errs.Conflict) {
		t.Errorf("a third webhook with MaxWebhooks 2: %v; want conflict", err)
	}
}

func TestTestReportsAFailingTarget(t *testing.T) {
	e := newEnv(t, nil)
	rcv := newReceiver(t)
	rcv.answer = func(n int, w http.ResponseWriter) bool {
		w.Header().Set("Location", "http://169.254.169.254/")
		w.WriteHeader(http.StatusFound)
		return false
	}
	c := e.create(rcv.srv.URL, nil)
	res, err := e.hooks.Test(context.Background(), c.Webhook.ID)
	if err != nil || res.OK || res.StatusCode != http.StatusFound || !strings.Contains(res.Error, "redirects are not followed") {
		t.Errorf("Test() = %+v, %v; want a failed 302 that was not followed", res, err)
	}
	if _, err := e.hooks.Test(context.Background(), "nope"); !errors.Is(err, errs.NotFound) {
		t.Errorf("Test(unknown) = %v; want not found", err)
	}
}

func TestLagMetric(t *testing.T) {
	e := newEnv(t, func(c *webhook.Config) { c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour })
	rcv := newReceiver(t)
	rcv.answer = func(_ int, w http.ResponseWriter) bool { // 2xx never: the first event waits an hour
		w.WriteHeader(http.StatusBadGateway)
		return false
	}
	c := e.create(rcv.srv.URL, nil)
	for i := range 3 {
		e.raise("200.004", fmt.Sprintf("host=worker-%d", i))
	}
	waitFor(t, "lag 3", 10*time.Second, func() bool {
		return metric(t, e.registry, "petrel_webhook_lag_events", "webhook", c.Webhook.ID) == 3
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
