// Package server is the shell every Petrel API daemon (central, subcloud)
// is built in: it opens the SQL store, migrates the shared schemas, creates
// the bootstrap admin, prepares TLS from the internal CA, and serves the REST
// routes common to all daemons — health, readiness, metrics, version, the
// OpenAPI document, login, users and tokens — with an audit event for every
// mutating call. Daemons add their own routes before Run.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sealed"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/version"
)

// Config configures a daemon shell.
type Config struct {
	Daemon   string // "central" or "subcloud": reported by /v1/version
	Site     string // the site a subcloud serves; "" at central
	Listen   string // host:port; port 0 picks a free one
	DataDir  string // required: store, CA, bootstrap password live here
	Database string // SQL DSN; "" keeps SQLite at DataDir/petrel.db
	// FreeBind listens on Listen before its address is on an interface (a
	// controller pair builds the site controller while it takes over, and
	// claims the floating address after).
	FreeBind bool
	// ShutdownGrace is how long a stop lets calls in flight finish before
	// their connections are closed (default 10 s). A controller pair's
	// stepping-down active uses a short one: its database is going away.
	ShutdownGrace time.Duration
	// DB, when set, is the store already opened on Database (a controller
	// pair connects while it promotes); the server owns and closes it.
	DB       *sqldb.DB
	TLS      TLSConfig     // zero: a server certificate from the CA in DataDir/pki
	TokenTTL time.Duration // login token lifetime; 0 = 12 h
	Logger   *slog.Logger  // required
	// ClientCAs, when set, verifies client certificates that callers offer
	// (agents authenticate with certificates; operators with tokens).
	ClientCAs *x509.CertPool
	History   HistoryConfig   // bounds of the event history; zero: defaults
	Alarms    faultmgr.Limits // storm control; zero: defaults
	// OpenAPI holds the daemon's own OpenAPI fragment (paths and schemas),
	// merged with the shared one and served at /v1/openapi.yaml.
	OpenAPI []byte
	// Webhooks is where webhook deliveries may go.
	Webhooks WebhookConfig
}

// TLSConfig names the server's certificate, or the CA to issue one from.
type TLSConfig struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CADir    string `json:"ca_dir"` // used when CertFile is empty; default DataDir/pki
}

// Server is a daemon shell with its collaborators exposed for the daemon.
type Server struct {
	cfg  Config
	DB   *sqldb.DB
	Auth *auth.Service
	// AuthStore is Auth's store: central hooks its changes into the sync
	// store; a site serves central's sync of projects and users from it.
	AuthStore *authdb.Store
	Events    faultmgr.EventStore
	FaultLog  *faultdb.Store // the event log in commit order, for shipping and delivery
	Alarms    *faultmgr.Manager
	Webhooks  *webhook.Manager
	Sealed    *sealed.Box // seals secrets stored in the database; key in DataDir/sealing.key
	REST      *rest.Server
	Registry  *prometheus.Registry
	CACert    string      // file clients trust
	TLS       *tls.Config // the server's certificate, for other listeners of the daemon
	spec      []byte

	ln       net.Listener
	http     *http.Server
	ui       http.Handler // the dashboard, at / and /ui/
	ready    chan struct{}
	closed   atomic.Bool
	inflight atomic.Int64 // calls being served (drain)
	hist     history
	floors   logFloors
}

// File names in the data directory.
const (
	AdminPasswordFile = "admin.password"
	DatabaseFile      = "petrel.db"
)

// New builds the shell: opens and migrates the store, bootstraps the admin,
// prepares TLS and binds the listener. It starts no goroutines; on failure it
// releases whatever it acquired.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil || cfg.DataDir == "" || cfg.Listen == "" {
		return nil, errors.New("server: Logger, DataDir and Listen are required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	hist, err := cfg.History.resolve(cfg.Daemon)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, Registry: prometheus.NewRegistry(), ready: make(chan struct{}), hist: hist}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	dsn := cfg.Database
	if dsn == "" {
		dsn = filepath.Join(cfg.DataDir, DatabaseFile)
	}
	if s.DB = cfg.DB; s.DB == nil {
		if s.DB, err = sqldb.Open(ctx, dsn); err != nil {
			return nil, err
		}
	}
	authStore, err := authdb.Open(ctx, s.DB)
	if err != nil {
		return nil, err
	}
	s.AuthStore = authStore
	fdb, err := faultdb.Open(ctx, s.DB)
	if err != nil {
		return nil, err
	}
	s.Events, s.FaultLog = fdb, fdb
	cat, err := faultmgr.Embedded()
	if err != nil {
		return nil, err
	}
	if s.Alarms, err = faultmgr.NewManager(faultmgr.Config{Catalog: cat, Store: fdb, Site: cfg.Site,
		Logger: cfg.Logger.With("component", "faultmgr"), Limits: cfg.Alarms, Registerer: s.Registry}); err != nil {
		return nil, err
	}
	if s.Sealed, err = sealed.LoadOrCreate(filepath.Join(cfg.DataDir, sealed.KeyFile)); err != nil {
		return nil, err
	}
	if s.Webhooks, err = newWebhooks(cfg, fdb, s.Sealed, s.Registry); err != nil {
		return nil, err
	}
	// History webhooks have not delivered is kept (up to the hard bound).
	s.AddLogFloor(func(ctx context.Context) (uint64, error) {
		n, ok, err := fdb.WebhookFloor(ctx)
		if !ok || err != nil {
			return math.MaxUint64, err
		}
		return n, nil
	})
	cookie := auth.SessionCookie
	if cfg.Site != "" {
		cookie += "_" + strings.ReplaceAll(cfg.Site, "-", "_")
	}
	if s.Auth, err = auth.New(auth.Config{Store: authStore, Logger: cfg.Logger, LoginTTL: cfg.TokenTTL, SessionCookie: cookie}); err != nil {
		return nil, err
	}
	if _, err := s.Auth.Bootstrap(ctx, filepath.Join(cfg.DataDir, AdminPasswordFile)); err != nil {
		return nil, fmt.Errorf("server: bootstrap admin: %w", err)
	}
	if s.spec, err = MergeOpenAPI(cfg.OpenAPI); err != nil {
		return nil, err
	}
	if s.REST, err = rest.New(rest.Config{Logger: cfg.Logger, Registry: s.Registry, Audit: s.audit}); err != nil {
		return nil, err
	}
	s.registerCommon()

	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if cfg.FreeBind {
		lc.Control = freeBind
	}
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	s.TLS = tlsCfg.Clone()
	if cfg.ClientCAs != nil {
		tlsCfg.ClientCAs = cfg.ClientCAs
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	s.ln = tls.NewListener(ln, tlsCfg)
	// Long-lived calls (event streams) end when the server shuts down:
	// their contexts derive from one that Shutdown cancels.
	base, cancelBase := context.WithCancel(context.Background())
	s.http = &http.Server{
		BaseContext:       func(net.Listener) context.Context { return base },
		Handler:           http.HandlerFunc(s.route),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.http.RegisterOnShutdown(cancelBase)
	return s, nil
}

// freeBind sets IP_FREEBIND (and IPV6_FREEBIND) on a listening socket.
func freeBind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// tlsConfig loads the configured certificate or issues a fresh one from the
// internal CA for the listen address, localhost and 127.0.0.1.
func (s *Server) tlsConfig() (*tls.Config, error) {
	t := s.cfg.TLS
	if t.CertFile != "" {
		if t.CADir != "" {
			s.CACert = filepath.Join(t.CADir, pki.CACertFile)
		}
		return pki.ServerTLS(t.CertFile, t.KeyFile)
	}
	caDir := t.CADir
	if caDir == "" {
		caDir = filepath.Join(s.cfg.DataDir, "pki")
	}
	ca, err := pki.LoadOrCreateCA(caDir, "Petrel CA")
	if err != nil {
		return nil, err
	}
	s.CACert = filepath.Join(caDir, pki.CACertFile)
	host, _, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen address %q: %w", s.cfg.Listen, err)
	}
	dns := []string{"localhost", s.cfg.Daemon} // sites reach central by the name "central"
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ip := net.ParseIP(host); ip != nil {
		ips = append(ips, ip)
	} else if host != "" {
		dns = append(dns, host)
	}
	issued, err := ca.IssueServer(s.cfg.Daemon, dns, ips, 90*24*time.Hour)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.cfg.DataDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := issued.Write(certFile, keyFile); err != nil {
		return nil, err
	}
	return pki.ServerTLS(certFile, keyFile)
}

// MountUI serves h at / and under /ui/ (the dashboard); everything else is
// the REST API. Call it before Run.
func (s *Server) MountUI(h http.Handler) { s.ui = h }

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if s.ui != nil && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/")) {
		s.ui.ServeHTTP(w, r)
		return
	}
	s.REST.ServeHTTP(w, r)
}

// RecordAudit writes an audit event for a change made outside the REST
// routes (the dashboard's login and logout).
func (s *Server) RecordAudit(ctx context.Context, user, role, action, target, result string) {
	id, _ := uuid.NewV7()
	ev := faultmgr.Event{UUID: id.String(), Type: faultmgr.EventAudit, User: user, Role: role, Action: action,
		Target: target, Result: result, Timestamp: time.Now().UTC(), Site: s.cfg.Site,
		ReasonText: fmt.Sprintf("%s by %s: %s", action, orDash(user), result)}
	if err := s.Events.AppendEvent(context.WithoutCancel(ctx), ev); err != nil {
		s.cfg.Logger.Error("audit event not stored", "action", action, "user", user, "err", err)
	}
}

// DataDir is where the daemon keeps its state.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Spec returns the daemon's OpenAPI document (YAML).
func (s *Server) Spec() []byte { return s.spec }

// Addr is the bound listen address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the base URL clients use.
func (s *Server) URL() string { return "https://" + s.ln.Addr().String() }

// Ready is closed once the server is serving.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends, then shuts down gracefully (in-flight calls get
// up to 10 s) and closes the store.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	actx, stopAlarms := context.WithCancel(context.Background())
	alarmsDone := make(chan struct{})
	go func() { defer close(alarmsDone); s.Alarms.Run(actx) }()
	retentionDone := make(chan struct{})
	go func() { defer close(retentionDone); s.retain(actx) }()
	wctx, stopWebhooks := context.WithCancel(context.Background())
	webhooksDone := make(chan struct{})
	go func() { defer close(webhooksDone); s.Webhooks.Run(wctx) }()
	close(s.ready)
	s.cfg.Logger.Info("serving", "daemon", s.cfg.Daemon, "url", s.URL(), "ca_cert", s.CACert)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = s.drain()
		<-errc
	}
	// Webhook workers stop after the HTTP server and save their cursors
	// before the store closes. The alarm writer stops after the HTTP
	// server (no call waits on it) and before the store closes (its last
	// batch commits).
	stopWebhooks()
	<-webhooksDone
	stopAlarms()
	<-alarmsDone
	<-retentionDone
	s.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// drain stops the HTTP server: no new calls, the ones in flight finish
// within the shutdown grace, then every connection closes. It watches its
// own count of calls in flight every few milliseconds (http.Server's
// Shutdown looks at idle connections less and less often, up to every
// half second), so a controller pair's step-down does not wait for it.
func (s *Server) drain() error {
	grace := s.cfg.ShutdownGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.http.Shutdown(sctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if errors.Is(err, context.DeadlineExceeded) {
				s.cfg.Logger.Warn("calls still in flight after the shutdown grace: closing their connections", "grace", grace)
				return s.http.Close()
			}
			return err
		case <-tick.C:
			if s.inflight.Load() == 0 {
				// Nothing in flight: what is left are idle connections.
				err := s.http.Close()
				cancel() // Shutdown's next look may be far off
				<-done
				return err
			}
		}
	}
}

// Close releases the listener and the store. It is safe to call twice.
func (s *Server) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	if s.ln != nil {
		s.ln.Close()
	}
	if s.DB != nil {
		s.DB.Close()
	}
}

func (s *Server) registerCommon() {
	s.REST.HandlePublic("healthz", http.MethodGet, "/healthz", func(*http.Request) (int, any, error) {
		return http.StatusOK, map[string]string{"status": "ok"}, nil
	})
	s.REST.HandlePublic("readyz", http.MethodGet, "/readyz", s.readyz)
	s.REST.HandlePublicHTTP("metrics", http.MethodGet, "/metrics",
		promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	s.REST.Handle("getOpenAPI", http.MethodGet, "/v1/openapi.yaml", s.Auth.Require(auth.Reader), func(*http.Request) (int, any, error) {
		return http.StatusOK, rest.Raw{ContentType: "application/yaml", Body: s.spec}, nil
	})
	s.REST.Handle("getVersion", http.MethodGet, "/v1/version", s.Auth.Require(auth.Reader), func(*http.Request) (int, any, error) {
		return http.StatusOK, VersionInfo{Info: version.Get(), Daemon: s.cfg.Daemon, Site: s.cfg.Site}, nil
	})
	s.Auth.Register(s.REST)
	s.registerAlarms()
	s.registerWebhooks()
	s.REST.Handle("listEvents", http.MethodGet, "/v1/events", s.Auth.Require(auth.Reader), s.listEvents)
	s.REST.Handle("getEvent", http.MethodGet, "/v1/events/{uuid}", s.Auth.Require(auth.Reader), s.getEvent)
}

func (s *Server) listEvents(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, faultmgr.EventFilters...)
	if err != nil {
		return 0, nil, err
	}
	if t, ok := opts.Filters["type"]; ok && !faultmgr.EventType(t).Valid() {
		return 0, nil, errs.Field("type", "must be set, clear, log or audit")
	}
	evs, next, err := s.Events.Events(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[faultmgr.Event]{Items: evs, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Server) getEvent(r *http.Request) (int, any, error) {
	ev, err := s.Events.Event(r.Context(), rest.Var(r, "uuid"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ev, nil
}

// VersionInfo is the body of GET /v1/version.
type VersionInfo struct {
	version.Info
	Daemon string `json:"daemon"`
	Site   string `json:"site,omitempty"`
}

func (s *Server) readyz(r *http.Request) (int, any, error) {
	select {
	case <-s.ready:
	default:
		return 0, nil, errs.Wrapf(errs.Unavailable, "starting")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.DB.Ping(ctx); err != nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "store unavailable")
	}
	return http.StatusOK, map[string]string{"status": "ready"}, nil
}

// audit records a mutating call as an audit event.
func (s *Server) audit(r *http.Request, rt rest.Route, status int, err error) {
	user, role := rest.Annotation(r.Context(), "user"), rest.Annotation(r.Context(), "role")
	if p, ok := auth.PrincipalFrom(r.Context()); ok {
		user, role = p.User, string(p.Role)
	}
	result := "ok"
	if err != nil {
		_, result = rest.Classify(err)
	}
	id, _ := uuid.NewV7()
	ev := faultmgr.Event{
		UUID: id.String(), Type: faultmgr.EventAudit, User: user, Role: role, Action: rt.Op,
		Target: r.Method + " " + r.URL.Path, Result: result, RequestID: rest.RequestID(r.Context()),
		Timestamp: time.Now().UTC(), Site: s.cfg.Site,
		ReasonText: fmt.Sprintf("%s %s by %s: %d", r.Method, r.URL.Path, orDash(user), status),
	}
	// The call has happened; a lost audit record must at least be loud.
	if aerr := s.Events.AppendEvent(context.WithoutCancel(r.Context()), ev); aerr != nil {
		s.cfg.Logger.Error("audit event not stored", "action", rt.Op, "user", user, "request_id", ev.RequestID, "err", aerr)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
