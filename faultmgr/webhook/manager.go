package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/egress"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sealed"
)

// Config configures a Manager.
type Config struct {
	Store  Store          // required
	Log    faultmgr.Log   // required: the event log deliveries are read from
	Box    *sealed.Box    // required: seals signing secrets
	Policy *egress.Policy // required: which target addresses are allowed
	Logger *slog.Logger   // required
	// Registry, when set, receives the delivery metrics.
	Registry prometheus.Registerer
	// Resolver resolves target names, at registration and at every dial.
	// Nil: net.DefaultResolver.
	Resolver egress.Resolver
	// RootCAs verifies https targets. Nil: the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one delivery attempt. Zero: 10 s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts, which
	// doubles from MinBackoff with jitter. Zero: 1 s and 60 s.
	MinBackoff, MaxBackoff time.Duration
	// Batch is how many log records a worker reads at once. Zero: 500.
	Batch int
	// MaxWebhooks bounds how many webhooks may exist. Zero: 100.
	MaxWebhooks int
	// Resync is how often the set of webhooks is re-read even without a
	// change through this Manager (another process sharing the store).
	// Zero: 30 s.
	Resync time.Duration
}

// Manager registers webhooks (the API's operations) and, while Run runs,
// delivers events to them.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	tr      *http.Transport
	changed chan struct{}
	met     *metrics

	mu      sync.Mutex
	workers map[string]*worker // running workers by webhook ID; guarded by mu
}

// New returns a Manager; it starts nothing.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Log == nil || cfg.Box == nil || cfg.Policy == nil || cfg.Logger == nil {
		return nil, errors.New("webhook: Store, Log, Box, Policy and Logger are required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.MaxWebhooks <= 0 {
		cfg.MaxWebhooks = 100
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	tr := &http.Transport{
		Proxy:               nil, // a proxy would dial for us, past the egress policy
		DialContext:         cfg.Policy.DialContext(cfg.Resolver, &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}),
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger, tr: tr, changed: make(chan struct{}, 1), workers: map[string]*worker{},
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer, not a 2xx: never followed
		}},
	}
	m.met = newMetrics(m)
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(m.met); err != nil {
			return nil, fmt.Errorf("webhook: register metrics: %w", err)
		}
	}
	return m, nil
}

// poke asks Run to re-read the set of webhooks.
func (m *Manager) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Create registers a webhook: its URL's form, its target's addresses
// (every address the name resolves to must be allowed) and its filter are
// checked; nothing is stored if any check fails. It delivers events logged
// from now on. The secret in the answer is never shown again.
func (m *Manager) Create(ctx context.Context, req CreateRequest, user string) (Created, error) {
	u, host, err := ParseURL(req.URL)
	if err != nil {
		return Created{}, err
	}
	if err := validateDescription(req.Description); err != nil {
		return Created{}, err
	}
	var f Filter
	if req.Filter != nil {
		f = *req.Filter
	}
	if f, err = f.Validate(); err != nil {
		return Created{}, err
	}
	if err := m.checkTarget(ctx, host); err != nil {
		return Created{}, err
	}
	n, err := m.cfg.Store.CountWebhooks(ctx)
	if err != nil {
		return Created{}, err
	}
	if n >= m.cfg.MaxWebhooks {
		return Created{}, fmt.Errorf("%w: at most %d; delete one first", ErrTooMany, m.cfg.MaxWebhooks)
	}
	id, _ := uuid.NewV7()
	last, _ := m.cfg.Log.Watch()
	w := Webhook{ID: id.String(), URL: u.String(), Description: req.Description, Filter: f, Enabled: true,
		CreatedBy: user, CreatedAt: time.Now().UTC().Truncate(time.Microsecond), Epoch: m.cfg.Log.Epoch(),
		Status: Status{Cursor: last}}
	if req.Enabled != nil {
		w.Enabled = *req.Enabled
	}
	secret := NewSecret()
	if err := m.cfg.Store.CreateWebhook(ctx, w, m.cfg.Box.Seal([]byte(secret), sealContext(w.ID))); err != nil {
		return Created{}, err
	}
	m.log.Info("webhook created", "webhook", w.ID, "url", w.URL, "user", user, "enabled", w.Enabled)
	m.poke()
	return Created{Secret: secret, Webhook: m.present(w)}, nil
}

// checkTarget resolves host and refuses it if any address is not allowed.
func (m *Manager) checkTarget(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := m.cfg.Policy.Resolve(ctx, m.cfg.Resolver, host); err != nil {
		if errors.Is(err, egress.ErrResolve) {
			return errs.Field("url", "host %q does not resolve", host)
		}
		return errs.Field("url", "target refused: %v (daemon config webhooks.allow / webhooks.deny)", err)
	}
	return nil
}

func sealContext(id string) string { return "webhook:" + id }

// present fills the computed parts of a webhook's status.
func (m *Manager) present(w Webhook) Webhook {
	switch {
	case !w.Enabled:
		w.Status.State = StateDisabled
	case w.Status.ConsecutiveFailures > 0:
		w.Status.State = StateFailing
	default:
		w.Status.State = StateOK
	}
	w.Status.Lag = 0
	if head, _ := m.cfg.Log.Watch(); w.Epoch == m.cfg.Log.Epoch() && head > w.Status.Cursor {
		w.Status.Lag = head - w.Status.Cursor
	}
	return w
}

// Get returns a webhook (never its secret).
func (m *Manager) Get(ctx context.Context, id string) (Webhook, error) {
	w, err := m.cfg.Store.Webhook(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	return m.present(w), nil
}

// List lists webhooks oldest first.
func (m *Manager) List(ctx context.Context, opts page.Options) ([]Webhook, string, error) {
	ws, next, err := m.cfg.Store.Webhooks(ctx, opts)
	for i := range ws {
		ws[i] = m.present(ws[i])
	}
	return ws, next, err
}

// Update changes a webhook's description, filter or enabled flag. A
// disabled webhook keeps its cursor: enabled again, it resumes where it
// stopped.
func (m *Manager) Update(ctx context.Context, id string, req UpdateRequest) (Webhook, error) {
	w, err := m.cfg.Store.Webhook(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	if req.Description != nil {
		if err := validateDescription(*req.Description); err != nil {
			return Webhook{}, err
		}
		w.Description = *req.Description
	}
	if req.Filter != nil {
		if w.Filter, err = req.Filter.Validate(); err != nil {
			return Webhook{}, err
		}
	}
	if req.Enabled != nil {
		w.Enabled = *req.Enabled
	}
	if err := m.cfg.Store.UpdateWebhook(ctx, w); err != nil {
		return Webhook{}, err
	}
	m.poke()
	return m.present(w), nil
}

// Delete removes a webhook; its worker stops.
func (m *Manager) Delete(ctx context.Context, id string) error {
	if err := m.cfg.Store.DeleteWebhook(ctx, id); err != nil {
		return err
	}
	m.log.Info("webhook deleted", "webhook", id)
	m.poke()
	return nil
}

// Test sends one signed test delivery (type "test", no event) now, whether
// or not the webhook is enabled, and reports how the target answered.
func (m *Manager) Test(ctx context.Context, id string) (TestResult, error) {
	w, err := m.cfg.Store.Webhook(ctx, id)
	if err != nil {
		return TestResult{}, err
	}
	secret, err := m.secret(ctx, id)
	if err != nil {
		return TestResult{}, err
	}
	did, _ := uuid.NewRandom()
	d := Delivery{Type: DeliveryTest, DeliveryID: did.String(), WebhookID: id, Epoch: m.cfg.Log.Epoch()}
	start := time.Now()
	code, err := m.post(ctx, w.URL, secret, d, "test", 1)
	res := TestResult{DeliveryID: d.DeliveryID, OK: err == nil, StatusCode: code, DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		res.Error = err.Error()
	}
	return res, nil
}

func (m *Manager) secret(ctx context.Context, id string) (string, error) {
	s, err := m.cfg.Store.WebhookSecret(ctx, id)
	if err != nil {
		return "", err
	}
	pt, err := m.cfg.Box.Open(s, sealContext(id))
	if err != nil {
		return "", fmt.Errorf("webhook %s: the signing secret does not open with this daemon's sealing key "+
			"(was the key file replaced?); delete and recreate the webhook: %w", id, err)
	}
	return string(pt), nil
}

// Run delivers events to every enabled webhook until ctx ends; every
// worker has stopped, with its progress saved, when it returns.
func (m *Manager) Run(ctx context.Context) error {
	defer m.tr.CloseIdleConnections()
	defer m.stopAll()
	tick := time.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	for {
		if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("webhooks not read", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.changed:
		case <-tick.C:
		}
	}
}

// reconcile starts a worker for every enabled webhook that has none,
// restarts those whose target or filter changed, and stops the rest.
func (m *Manager) reconcile(ctx context.Context) error {
	want := map[string]Webhook{}
	opts := page.Options{Limit: 1000}
	for {
		ws, next, err := m.cfg.Store.Webhooks(ctx, opts)
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.Enabled {
				want[w.ID] = w
			}
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	// Workers stop outside the lock (a stopping worker saves its progress),
	// so a metrics scrape never waits for them.
	var stopping []*worker
	m.mu.Lock()
	for id, wk := range m.workers {
		if w, ok := want[id]; !ok || !wk.sameTarget(w) {
			stopping = append(stopping, wk)
			delete(m.workers, id)
			if !ok {
				m.met.forget(id)
			}
		}
	}
	m.mu.Unlock()
	for _, wk := range stopping {
		wk.stop()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, w := range want {
		if _, ok := m.workers[id]; !ok {
			m.workers[id] = m.startWorker(ctx, w)
		}
	}
	return nil
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	ws := m.workers
	m.workers = map[string]*worker{}
	m.mu.Unlock()
	for _, wk := range ws {
		wk.cancel()
	}
	for _, wk := range ws {
		<-wk.done
	}
}
