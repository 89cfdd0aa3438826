// Package central is the central cloud: the daemon `petrel central` that
// keeps the subcloud registry and serves the fleet's API. Dial-home, relay,
// sync and fleet orchestration plug into it.
package central

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/errgroup"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/swpatch/fleet"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
	"github.com/petrel-edge/petrel/ui"
)

//go:embed openapi.yaml
var openapiFragment []byte

// FileConfig is the configuration file of `petrel central`.
type FileConfig struct {
	server.FileConfig
	// SiteListen is where sites dial home (mutual TLS); empty: no links.
	SiteListen string `json:"site_listen"`
	// WitnessLeaseTTL is how long a duplex controller's witness renew
	// holds its lease (a Go duration); empty: 2s.
	WitnessLeaseTTL string `json:"witness_lease_ttl"`
	// HA makes this central one of a 1+1 pair (ha.go); absent: alone.
	HA *HAFileConfig `json:"ha"`
	// PatchPublicKey is the PEM file of the patch signing key central
	// trusts (patches uploaded to central); empty: uploads refused.
	PatchPublicKey string `json:"patch_public_key"`
	// FleetPoll is how often a fleet strategy's step looks at its site
	// (a Go duration); empty: 1s.
	FleetPoll string `json:"fleet_poll"`
	// FleetOfflineWait is how long a fleet strategy's step waits for an
	// unreachable site before it fails (a Go duration); empty: 10m.
	FleetOfflineWait string `json:"fleet_offline_wait"`
	// DebugListen serves Go's profiler (net/http/pprof) on a loopback
	// address, unauthenticated: for profiling central at scale
	// (docs/fleet.md). Empty: not served.
	DebugListen string `json:"debug_listen"`
}

// FleetDurations parses FleetPoll and FleetOfflineWait (zero if empty).
func (fc FileConfig) FleetDurations() (poll, offline time.Duration, err error) {
	parse := func(name, v string, least time.Duration) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < least {
			return 0, fmt.Errorf("central: %s %q: want a duration of at least %s", name, v, least)
		}
		return d, nil
	}
	if poll, err = parse("fleet_poll", fc.FleetPoll, 100*time.Millisecond); err != nil {
		return 0, 0, err
	}
	offline, err = parse("fleet_offline_wait", fc.FleetOfflineWait, time.Second)
	return poll, offline, err
}

// LeaseTTL parses WitnessLeaseTTL (zero if empty).
func (fc FileConfig) LeaseTTL() (time.Duration, error) {
	if fc.WitnessLeaseTTL == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(fc.WitnessLeaseTTL)
	if err != nil || d < 100*time.Millisecond {
		return 0, fmt.Errorf("central: witness_lease_ttl %q: want a duration of at least 100ms", fc.WitnessLeaseTTL)
	}
	return d, nil
}

// Config configures central.
type Config struct {
	Shell      server.Config // Daemon and OpenAPI are filled in by New
	SiteListen string        // host:port sites dial; "" serves no links
	// UpdateInterval is how often sites send updates; offline after 3
	// silent intervals. Zero: DefaultUpdateInterval.
	UpdateInterval time.Duration
	// RestartGrace is how long sites that were online keep that state after
	// central starts, waiting for them to reconnect; it must exceed the sites'
	// longest reconnect backoff (30 s). Zero: DefaultRestartGrace.
	RestartGrace time.Duration
	// WitnessLeaseTTL is how long a duplex controller's last witness
	// renew holds its lease; another controller may claim the active role
	// only once the holder's lease has run out. Zero: DefaultWitnessLeaseTTL.
	WitnessLeaseTTL time.Duration
	// Sync tunes the shared-resource sync engine; zero fields: defaults.
	Sync SyncConfig
	// HA makes this central the leader of a 1+1 pair (ha.go); nil: alone.
	HA *HAConfig
	// BlobStreams bounds the image byte streams served to sites at once,
	// fleet-wide (one per site in any case); zero: DefaultBlobStreams.
	BlobStreams int
	// Deploy configures the deploy engine (deploy.go); zero fields: defaults.
	Deploy DeployConfig
	// PatchPublicKey is the PEM file of the key patches uploaded to
	// central must be signed with; "": uploads refused.
	PatchPublicKey string
	// FleetPoll is how often a fleet strategy's step looks at its site;
	// zero: 1 s.
	FleetPoll time.Duration
	// FleetOfflineWait bounds how long a fleet step waits for an offline
	// site; zero: fleet.DefaultOfflineWait.
	FleetOfflineWait time.Duration
	// LinkLimits bound what one site's link may send (flood.go); zero
	// fields: defaults.
	LinkLimits LinkLimits
}

// DefaultRestartGrace covers a site's longest reconnect backoff (30 s) with margin.
const DefaultRestartGrace = 45 * time.Second

// Central is a running central cloud.
type Central struct {
	cfg       Config
	shell     *server.Server
	log       *slog.Logger
	Subclouds SubcloudStore
	tracker   *Tracker
	links     links
	linkw     *linkWriter // the links' registry writes, batched
	witness   *witness    // duplex controllers' witness sessions; never in links
	signer    *auth.AssertionSigner
	siteLn    net.Listener
	stream    *Stream
	fleet     *pki.CA // issues site certificates; nil without a site listener

	// linkMu orders a link's certificate check and registration against
	// certificate issue and subcloud delete, so a revoked certificate never
	// registers a link.
	linkMu sync.Mutex
	certs  certCache // sites' current certificate serials (link.go)

	sync     *syncEngine // keeps shared resources at managed sites
	flavorMu sync.Mutex  // orders flavor writes (names are unique)
	images   *centralImages
	blobs    *blobServer // sites fetch synced images' bytes over their links
	// admitSteps times each step of a link's admission (link.go).
	admitSteps *prometheus.HistogramVec
	// linkThrottled counts frames delayed by sites' link limits (flood.go).
	linkThrottled prometheus.Counter
	deploys       *deployEngine
	relaySites    *relaySites
	patches       *centralPatches
	fleetStore    *strategydb.Store
	fleetEx       *fleet.Executor

	wmu    sync.Mutex
	ingest *faultdb.Ingest // sites' records, combined into transactions

	writes map[string]time.Time // last registry write per site
	seqs   map[string]uint64    // last update sequence recorded per site (this run)
}

// Files in central's data directory.
const (
	FleetCADir     = "fleet-ca"      // issues and verifies site certificates
	RelayKeyFile   = "relay.key"     // signs relay assertions (0600)
	RelayPublicKey = "relay.pub.pem" // what sites trust
)

// New builds central; it starts nothing.
func New(ctx context.Context, cfg Config) (*Central, error) {
	cfg.Shell.Daemon, cfg.Shell.Site, cfg.Shell.OpenAPI = "central", "", openapiFragment
	cfg.LinkLimits.defaults()
	shell, err := server.New(ctx, cfg.Shell)
	if err != nil {
		return nil, err
	}
	if cfg.HA != nil {
		if err := takeEpoch(ctx, shell.DB, cfg.HA); err != nil {
			shell.Close()
			return nil, err
		}
	}
	subclouds, err := OpenSubcloudStore(ctx, shell.DB)
	if err == nil {
		subclouds, err = CacheSubclouds(ctx, subclouds)
	}
	if err != nil {
		shell.Close()
		return nil, err
	}
	c := &Central{cfg: cfg, shell: shell, log: cfg.Shell.Logger, Subclouds: subclouds,
		tracker: NewTracker(cfg.UpdateInterval, 0), links: links{sessions: map[string]*yamux.Session{}},
		writes: map[string]time.Time{}, seqs: map[string]uint64{}, stream: NewStream(), ingest: faultdb.NewIngest(shell.FaultLog)}
	c.linkw = newLinkWriter(subclouds, func(site string) Availability { return c.availabilityNow(site, Online) })
	if c.witness, err = openWitness(ctx, shell.DB, cfg.WitnessLeaseTTL, c.log.With("component", "witness")); err != nil {
		shell.Close()
		return nil, err
	}
	if c.signer, err = c.relayKey(); err != nil {
		shell.Close()
		return nil, err
	}
	if err := c.trackRegistry(ctx); err != nil {
		shell.Close()
		return nil, err
	}
	store, err := OpenSyncStore(ctx, shell.DB)
	if err != nil {
		shell.Close()
		return nil, err
	}
	c.relaySites = newRelaySites(c)
	if cfg.Sync.Storm == nil {
		cfg.Sync.Storm = c.links.storm
	}
	c.sync = newSyncEngine(cfg.Sync, store, subclouds, c.relaySites, shell.Alarms,
		[]syncer{projectSyncer{}, flavorSyncer{}, imageSyncer{}, userSyncer{}, patchSyncer{}}, c.log.With("component", "sync"),
		func(typ string, v any) { c.stream.Publish(typ, v) })
	// Central's projects and users: every change recorded with its sync
	// version in one transaction; what existed before, reconciled now.
	shell.AuthStore.SetChangeHook(authHook(store, c.sync.changed))
	if err := reconcileAuth(ctx, store, shell.AuthStore); err != nil {
		shell.Close()
		return nil, fmt.Errorf("central: sync store: projects and users: %w", err)
	}
	if c.images, err = openImages(ctx, c, store); err != nil {
		shell.Close()
		return nil, err
	}
	if c.patches, err = openPatches(ctx, c, store, cfg.PatchPublicKey); err != nil {
		shell.Close()
		return nil, err
	}
	if err := openFleet(ctx, c); err != nil {
		shell.Close()
		return nil, err
	}
	c.blobs = newBlobServer(c, cfg.BlobStreams, shell.Registry)
	c.admitSteps = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "petrel_central_link_admit_step_seconds",
		Help:    "Time of each step of admitting a site's link: slot (waiting for an admission slot), handshake, certificate, hello, cursor, register, online.",
		Buckets: []float64{.001, .003, .01, .03, .1, .3, 1, 3, 10}}, []string{"step"})
	shell.Registry.MustRegister(c.admitSteps)
	c.linkThrottled = prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_central_link_throttled_frames_total",
		Help: "Frames from sites' links that central delayed: the site was over its link limits (280.007)."})
	shell.Registry.MustRegister(c.linkThrottled)
	if c.deploys, err = openDeploys(ctx, c, cfg); err != nil {
		shell.Close()
		return nil, err
	}
	if cfg.SiteListen != "" {
		fleet, err := pki.LoadOrCreateCA(filepath.Join(cfg.Shell.DataDir, FleetCADir), "Petrel fleet CA")
		if err != nil {
			shell.Close()
			return nil, err
		}
		c.fleet = fleet
		pool := x509.NewCertPool()
		pool.AddCert(fleet.Cert)
		tlsCfg := shell.TLS.Clone()
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		ln, err := net.Listen("tcp", cfg.SiteListen)
		if err != nil {
			shell.Close()
			return nil, fmt.Errorf("central: site listener: %w", err)
		}
		c.siteLn = tls.NewListener(ln, tlsCfg)
	}
	c.register(shell.REST, shell.Auth)
	dash, err := ui.New(ui.Config{Auth: shell.Auth, Logger: c.log.With("component", "ui"),
		Audit: shell.RecordAudit, Sites: c.siteRows, FleetVersion: c.stream.Head, AlarmSummary: shell.Alarms.Store().Summary,
		Site: func(ctx context.Context, name string) error { _, err := c.Subclouds.Subcloud(ctx, name); return err }})
	if err != nil {
		shell.Close()
		return nil, err
	}
	shell.MountUI(dash)
	return c, nil
}

// siteRows lists every subcloud for the dashboard's fleet page.
func (c *Central) siteRows(ctx context.Context) ([]ui.SiteRow, error) {
	var rows []ui.SiteRow
	after := ""
	for {
		scs, next, err := c.Subclouds.Subclouds(ctx, rest.ListOptions{Limit: rest.MaxLimit, After: after})
		if err != nil {
			return nil, err
		}
		for _, sc := range scs {
			seen := "-"
			if sc.LastSeen != nil {
				seen = sc.LastSeen.Format(time.RFC3339)
			}
			rows = append(rows, ui.SiteRow{Name: sc.Name, Shape: string(sc.Shape), Availability: string(sc.Availability),
				Management: string(sc.Management), Status: string(sc.Status), LastSeen: seen, Hosts: sc.Hosts.Total,
				Sync: string(overallSync(sc.Sync)), Software: sc.SoftwareVersion,
				Alarms: faultmgr.Summary{Critical: sc.AlarmSummary.Critical, Major: sc.AlarmSummary.Major,
					Minor: sc.AlarmSummary.Minor, Warning: sc.AlarmSummary.Warning}})
		}
		if next == "" {
			return rows, nil
		}
		after = next
	}
}

// overallSync is a subcloud's sync status over all its resources:
// out-of-sync if any is, in-sync if all are (and there are any), else
// unknown.
func overallSync(m map[string]SyncStatus) SyncStatus {
	all := len(m) > 0
	for _, st := range m {
		if st == OutOfSync {
			return OutOfSync
		}
		all = all && st == InSync
	}
	if all {
		return InSync
	}
	return SyncUnknown
}

// relayKey loads central's assertion key and publishes its public half.
func (c *Central) relayKey() (*auth.AssertionSigner, error) {
	signer, pub, err := auth.LoadOrCreateSigningKey(filepath.Join(c.cfg.Shell.DataDir, RelayKeyFile))
	if err != nil {
		return nil, err
	}
	return signer, atomicfile.Write(filepath.Join(c.cfg.Shell.DataDir, RelayPublicKey), auth.EncodePublicKey(pub), 0o644)
}

// trackRegistry starts tracking every registered subcloud. Sites that were
// online keep that state for a grace of the usual silent intervals from now:
// they reconnect within it (never falsely offline), or go offline on time.
func (c *Central) trackRegistry(ctx context.Context) error {
	now := time.Now().UTC()
	grace := c.cfg.RestartGrace
	if grace <= 0 {
		grace = DefaultRestartGrace
	}
	after := ""
	for {
		scs, next, err := c.Subclouds.Subclouds(ctx, rest.ListOptions{Limit: rest.MaxLimit, After: after})
		if err != nil {
			return err
		}
		for _, sc := range scs {
			if sc.Availability == Online {
				c.tracker.Resume(sc.Name, now, grace)
			} else {
				c.tracker.Add(sc.Name)
			}
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

// SiteAddr is where sites dial, once New has bound it.
func (c *Central) SiteAddr() net.Addr {
	if c.siteLn == nil {
		return nil
	}
	return c.siteLn.Addr()
}

// Run serves the API and the sites' links until ctx ends.
func (c *Central) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.shell.Run(ctx) })
	g.Go(func() error { return c.deploys.Run(ctx) })
	g.Go(func() error { return c.fleetEx.Run(ctx) }) // leader only: a pair runs Central on its leader
	if c.siteLn != nil {
		c.witness.begin(time.Now())
		g.Go(func() error { return c.serveLinks(ctx) })
		g.Go(func() error { return c.sweep(ctx) })
		g.Go(func() error { return c.linkw.Run(ctx) })
		g.Go(func() error { return c.ingest.Run(ctx) })
		g.Go(func() error { return c.sync.Run(ctx) })
	}
	return g.Wait()
}

func (c *Central) lastWrite(site string) time.Time {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writes[site]
}

// recordedSeq is the last update sequence central recorded from site in
// this run (0 after a restart: the site then resends its summary).
func (c *Central) recordedSeq(site string) uint64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.seqs[site]
}

func (c *Central) recordSeq(site string, seq uint64) {
	c.wmu.Lock()
	if seq > c.seqs[site] {
		c.seqs[site] = seq
	}
	c.wmu.Unlock()
}

func (c *Central) wroteAt(site string, t time.Time) {
	c.wmu.Lock()
	c.writes[site] = t
	c.wmu.Unlock()
}

// Shell exposes the daemon shell (URL, readiness, routes) to tests and tools.
func (c *Central) Shell() *server.Server { return c.shell }

func (c *Central) register(srv *rest.Server, a *auth.Service) {
	srv.Handle("listSubclouds", http.MethodGet, "/v1/subclouds", a.Require(auth.Reader), c.listSubclouds)
	srv.Handle("createSubcloud", http.MethodPost, "/v1/subclouds", a.Require(auth.Admin), c.createSubcloud)
	srv.Handle("getSubcloud", http.MethodGet, "/v1/subclouds/{name}", a.Require(auth.Reader), c.getSubcloud)
	srv.Handle("deleteSubcloud", http.MethodDelete, "/v1/subclouds/{name}", a.Require(auth.Admin), c.deleteSubcloud)
	srv.HandleHTTP("stream", http.MethodGet, "/v1/stream", a.Require(auth.Reader), c.serveStream())
	srv.Handle("issueSiteCertificate", http.MethodPost, "/v1/subclouds/{name}/certificate", a.Require(auth.Admin), c.issueSiteCertificate)
	c.registerLifecycle(srv, a)
	c.registerDeploy(srv, a)
	c.registerFlavors(srv, a)
	c.registerImages(srv, a)
	c.registerPatches(srv, a)
	c.registerStrategies(srv, a)
	relay := c.relay()
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
		srv.HandleHTTP("relay"+m[:1]+strings.ToLower(m[1:]), m, "/v1/subclouds/{name}/api/{path:.*}", c.relayGuard, relay)
	}
	// PUT carries image uploads (PUT /v1/images/{id}/file) and POST patch
	// uploads (POST /v1/patches), streamed through: the site caps every
	// route's body itself.
	srv.HandleHTTPStream("relayPost", http.MethodPost, "/v1/subclouds/{name}/api/{path:.*}", RelayMaxUpload, c.relayGuard, relay)
	srv.HandleHTTPStream("relayPut", http.MethodPut, "/v1/subclouds/{name}/api/{path:.*}", RelayMaxUpload, c.relayGuard, relay)
}

// RelayMaxUpload bounds a body relayed to a site by PUT or POST (an image
// or patch upload);
// each site applies its own, smaller caps.
const RelayMaxUpload int64 = 64 << 30

// SiteCertificateRequest is the body of POST /v1/subclouds/{name}/certificate.
type SiteCertificateRequest struct {
	CSR string `json:"csr"` // PEM; the site keeps its key
}

// SiteCredentials is what a site needs to dial home.
type SiteCredentials struct {
	Certificate    string          `json:"certificate"`      // PEM, CN = the site's name
	CACertificate  string          `json:"ca_certificate"`   // verifies central's certificate
	RelayPublicKey string          `json:"relay_public_key"` // verifies central's relay assertions
	Detail         SiteCertificate `json:"detail"`
}

const siteCertTTL = 365 * 24 * time.Hour

// issueSiteCertificate signs a site's CSR and makes the result the only
// certificate its link accepts: issuing again revokes the previous one.
func (c *Central) issueSiteCertificate(r *http.Request) (int, any, error) {
	if c.fleet == nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "central serves no site links (site_listen is not set)")
	}
	name := rest.Var(r, "name")
	var req SiteCertificateRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if _, err := c.Subclouds.Subcloud(r.Context(), name); err != nil {
		return 0, nil, err
	}
	certPEM, serial, err := c.fleet.SignClientCSR([]byte(req.CSR), name, "site", siteCertTTL)
	if err != nil {
		return 0, nil, errs.Field("csr", "%v", err)
	}
	// Everything the answer needs is read before anything is recorded.
	var ca []byte
	if c.shell.CACert != "" {
		if ca, err = os.ReadFile(c.shell.CACert); err != nil {
			return 0, nil, err
		}
	}
	pub, err := os.ReadFile(filepath.Join(c.cfg.Shell.DataDir, RelayPublicKey))
	if err != nil {
		return 0, nil, err
	}
	now := time.Now().UTC()
	detail := SiteCertificate{Serial: serial, IssuedAt: now, NotAfter: now.Add(siteCertTTL)}
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	if _, err := c.Subclouds.UpdateSubcloud(r.Context(), name, func(sc *Subcloud) error {
		sc.Certificate = &detail
		return nil
	}); err != nil {
		c.certs.forget(name) // the write may have committed
		return 0, nil, err
	}
	c.certs.forget(name)
	if s := c.links.get(name); s != nil {
		s.Close() // a link on the previous certificate ends now
	}
	c.witness.closeSessions(name) // and so do its controllers' witness sessions
	return http.StatusCreated, SiteCredentials{Certificate: string(certPEM), CACertificate: string(ca),
		RelayPublicKey: string(pub), Detail: detail}, nil
}

func (c *Central) deleteSubcloud(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	sc, err := c.Subclouds.Subcloud(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	// Only an unmanaged, offline subcloud with no deploy step running is
	// removed; the store checks again as it deletes.
	if err := sc.Deletable(); err != nil {
		return 0, nil, err
	}
	// Its alarms go first — those it sent and central's own about it — so
	// a failure leaves the subcloud registered and the call can be retried.
	if err := c.shell.FaultLog.DeleteSite(r.Context(), name); err != nil {
		return 0, nil, fmt.Errorf("dropping the subcloud's alarms: %w", err)
	}
	if _, err := c.shell.Alarms.ClearEntity(r.Context(), "subcloud="+name); err != nil {
		return 0, nil, fmt.Errorf("clearing alarms about the subcloud: %w", err)
	}
	err = c.Subclouds.DeleteSubcloud(r.Context(), name, func(sc Subcloud) error { return sc.Deletable() })
	c.certs.forget(name) // the delete may have committed even when it says not
	if err != nil {
		return 0, nil, err
	}
	c.tracker.Remove(name)
	c.sync.forget(r.Context(), name)
	c.stream.Publish("subcloud-deleted", map[string]string{"name": name})
	if s := c.links.get(name); s != nil {
		s.Close()
	}
	if err := c.deploys.forget(r.Context(), name); err != nil {
		c.log.Error("dropping a deleted subcloud's deploy and join tokens failed", "site", name, "err", err)
	}
	if err := c.witness.forget(r.Context(), name); err != nil {
		c.log.Error("dropping a deleted subcloud's witness record failed", "site", name, "err", err)
	}
	// Without a cursor, batches of the closed link still in flight are
	// refused; this drops anything applied in between.
	if err := c.shell.FaultLog.DeleteSite(r.Context(), name); err != nil {
		c.log.Error("dropping a deleted subcloud's alarms failed", "site", name, "err", err)
	}
	return http.StatusNoContent, nil, nil
}

func (c *Central) listSubclouds(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, SubcloudFilters...)
	if err != nil {
		return 0, nil, err
	}
	if reg, ok := c.Subclouds.(*cachedRegistry); ok {
		body, err := reg.subcloudsJSON(opts)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, rest.Raw{ContentType: "application/json", Body: body}, nil
	}
	scs, next, err := c.Subclouds.Subclouds(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[Subcloud]{Items: scs, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (c *Central) getSubcloud(r *http.Request) (int, any, error) {
	if reg, ok := c.Subclouds.(*cachedRegistry); ok {
		doc, err := reg.subcloudJSON(rest.Var(r, "name"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, rest.Raw{ContentType: "application/json", Body: append(slices.Clip(doc), '\n')}, nil
	}
	sc, err := c.Subclouds.Subcloud(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sc, nil
}
