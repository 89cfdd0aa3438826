// Package subcloud is a site's controller: the daemon `petrel subcloud`
// that owns a site's inventory and serves its API. Host discovery, fault
// management, host management, compute and patching plug into it.
package subcloud

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sync/errgroup"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/inventory/inventorydb"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/subcloud/osapi"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/ui"
)

//go:embed openapi.yaml
var openapiFragment []byte

// FileConfig is the configuration file of `petrel subcloud`.
type FileConfig struct {
	Site      string           `json:"site"`
	Shape     string           `json:"shape"`
	Central   *HomeConfig      `json:"central"`   // how to dial home; absent: a standalone site
	Heartbeat *HeartbeatConfig `json:"heartbeat"` // host maintenance's heartbeat; absent: hosts are not pulsed
	// ImageMaxBytes caps an uploaded image; 0: DefaultImageMaxBytes (8 GiB).
	ImageMaxBytes int64 `json:"image_max_bytes"`
	// Compute configures the servers' manager; absent: the defaults.
	Compute *ComputeConfig `json:"compute"`
	// ServiceGroups is a YAML file of declared service groups
	// (ServiceGroupsFile), applied at every start; "" declares none.
	ServiceGroups string `json:"service_groups"`
	// Etcd configures the site's coordination member; absent: one member
	// on the API's address.
	Etcd *EtcdConfig `json:"etcd"`
	// PatchPublicKey is the PEM file of the key patches must be signed
	// with (the lab's DIR/keys/patch-signing.pub); "": uploads refused.
	PatchPublicKey string `json:"patch_public_key"`
	// HA makes this controller one of a pair (subcloud/ctlha.FileConfig,
	// read by the daemon); absent: the site's only controller.
	HA json.RawMessage `json:"ha,omitempty"`
	server.FileConfig
}

// Config configures a site controller.
type Config struct {
	Site    string          // required: the site's name
	Shape   inventory.Shape // required
	Shell   server.Config   // Daemon, Site and OpenAPI are filled in by New
	Central *HomeConfig     // nil: the site does not dial home
	// Heartbeat turns on host maintenance (pulses, availability,
	// recovery); nil: off.
	Heartbeat *HeartbeatConfig
	// ImageMaxBytes caps an uploaded image; 0: DefaultImageMaxBytes.
	ImageMaxBytes int64
	// Compute configures the servers' manager; nil: the defaults.
	Compute *ComputeConfig
	// ServiceGroups are the groups the configuration declares.
	ServiceGroups []servicemgr.Spec
	// Etcd configures the coordination member; nil: the defaults.
	Etcd *EtcdConfig
	// HA, set by the controller pair's runner, makes this the active
	// controller of a pair; nil: the site's only controller.
	HA *HAConfig
	// PatchPublicKey is the file of the trusted patch signing key; "":
	// patch uploads are refused.
	PatchPublicKey string
	// StrategyTimeouts bound the steps of patch orchestration; zero
	// fields: strategy.DefaultTimeouts.
	StrategyTimeouts strategy.Timeouts
}

// Subcloud is a running site controller.
type Subcloud struct {
	cfg        Config
	shell      *server.Server
	log        *slog.Logger
	agentCA    *pki.CA // issues host certificates at join; verifies agents
	serverCA   []byte  // given to joining agents; read at start so a join never fails after recording
	Hosts      inventory.Store
	Enrollment inventory.Enrollment
	hostLocks  *hostLocks   // per host: agent reports vs. rename and delete
	maint      *maintenance // nil: no heartbeat
	bmcs       bmcSecrets   // hosts' sealed BMC access
	bmcClients *bmcClients
	epoch      uint64        // this controller's epoch: counts its starts
	cmds       agentCommands // commands waiting for agents
	lockMu     sync.Mutex    // host locks one at a time (the last-controller rule)
	Images     compute.ImageStore
	Flavors    compute.FlavorStore
	ImageFiles *compute.ImageFiles // image bytes, DATA_DIR/images/<sha256>
	// Servers is the site's compute service (tenants' VMs).
	Servers compute.Servers
	servers *compute.Manager
	images  *images
	patches *patches
	// strategies runs patch orchestration (swpatch/strategy).
	strategies *strategy.Executor
	strategyDB strategy.Store
	// services keeps the site's service groups (servicemgr).
	services *servicemgr.Manager
	coord    *coordination
	ledger   *lazyLedger

	connected atomic.Bool                   // the link to central is up
	homeSess  atomic.Pointer[yamux.Session] // the link's session while up
	seq       atomic.Uint64                 // last update sequence sent
	acked     atomic.Uint64                 // last update sequence central acknowledged
	resent    atomic.Uint64                 // summaries sent (tests check resync sends none when nothing changed)
	shipped   atomic.Uint64                 // last event-log sequence central acknowledged

	// The last summary sent, and its sequence; kept across reconnects.
	lastSum    *linkproto.Summary
	lastSumSeq uint64
}

// ConfigFromFile validates a configuration file's contents.
func ConfigFromFile(fc FileConfig, shell server.Config) (Config, error) {
	if err := inventory.ValidateSiteName("site", fc.Site); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	shape := inventory.Shape(fc.Shape)
	if !shape.Valid() {
		return Config{}, fmt.Errorf("config: shape %q: want simplex, duplex or multi-server", fc.Shape)
	}
	if fc.ImageMaxBytes < 0 {
		return Config{}, fmt.Errorf("config: image_max_bytes %d: want a positive size, or 0 for the default", fc.ImageMaxBytes)
	}
	if _, err := fc.Compute.setup(); err != nil { // reads the TLS files: a bad one stops the start
		return Config{}, err
	}
	groups, err := readServiceGroups(fc.ServiceGroups)
	if err != nil {
		return Config{}, err
	}
	return Config{Site: fc.Site, Shape: shape, Shell: shell, Central: fc.Central, Heartbeat: fc.Heartbeat,
		ImageMaxBytes: fc.ImageMaxBytes, Compute: fc.Compute, ServiceGroups: groups, Etcd: fc.Etcd,
		PatchPublicKey: fc.PatchPublicKey}, nil
}

// New builds the site controller; it starts nothing.
func New(ctx context.Context, cfg Config) (*Subcloud, error) {
	if cfg.Site == "" || !cfg.Shape.Valid() {
		return nil, errors.New("subcloud: Site and a valid Shape are required")
	}
	if cfg.Shell.DataDir == "" || cfg.Shell.Logger == nil {
		return nil, errors.New("subcloud: Shell.DataDir and Shell.Logger are required")
	}
	// The site's own CA for agent identities: separate from the CA of server
	// certificates, so a host certificate is good at this site only.
	agentCA, err := pki.LoadOrCreateCA(filepath.Join(cfg.Shell.DataDir, "agent-ca"), "Petrel site "+cfg.Site+" agent CA")
	if err != nil {
		return nil, err
	}
	cfg.Shell.Daemon, cfg.Shell.Site, cfg.Shell.OpenAPI = "subcloud", cfg.Site, openapiFragment
	cfg.Shell.ClientCAs = agentCAPool(agentCA.CertPEM)
	shell, err := server.New(ctx, cfg.Shell)
	if err != nil {
		return nil, err
	}
	hosts, err := inventorydb.Open(ctx, shell.DB)
	if err != nil {
		shell.Close()
		return nil, err
	}
	s := &Subcloud{cfg: cfg, shell: shell, log: cfg.Shell.Logger, agentCA: agentCA, Hosts: hosts, Enrollment: hosts,
		hostLocks: newHostLocks(), bmcs: hosts}
	s.bmcClients = &bmcClients{s: s}
	if err := s.openImages(ctx); err != nil {
		shell.Close()
		return nil, err
	}
	if err := s.openPatches(ctx); err != nil {
		shell.Close()
		return nil, err
	}
	if err := s.openStrategies(ctx); err != nil {
		shell.Close()
		return nil, err
	}
	if cfg.HA != nil {
		// The pair's epoch (monotonic across both controllers) replaces
		// the start counter.
		if err := s.guardWrites(); err != nil {
			shell.Close()
			return nil, err
		}
	} else if s.epoch, err = nextEpoch(cfg.Shell.DataDir); err != nil {
		shell.Close()
		return nil, err
	}
	if shell.CACert != "" {
		if s.serverCA, err = os.ReadFile(shell.CACert); err != nil {
			shell.Close()
			return nil, fmt.Errorf("subcloud: server CA: %w", err)
		}
	}
	if cfg.Central != nil {
		pub, err := auth.LoadPublicKey(cfg.Central.PublicKeyFile)
		if err != nil {
			shell.Close()
			return nil, fmt.Errorf("subcloud: central's relay key: %w", err)
		}
		// Central's relayed calls carry its signed assertion, never its tokens.
		shell.Auth.AcceptAssertions(auth.NewAssertionVerifier(pub, cfg.Site, nil))
		// History central has not acknowledged is kept (up to the hard bound).
		shell.AddLogFloor(shell.FaultLog.Shipped)
	}
	s.register(shell.REST, shell.Auth)
	shell.Auth.RegisterSync(shell.REST, shell.AuthStore)
	// The site's own dashboard: its hosts, its alarms, for operators on
	// site or when central is out of reach.
	dash, err := ui.New(ui.Config{Auth: shell.Auth, LocalSite: cfg.Site, AlarmSummary: shell.Alarms.Store().Summary,
		Audit: shell.RecordAudit, Logger: cfg.Shell.Logger.With("component", "ui")})
	if err != nil {
		shell.Close()
		return nil, err
	}
	shell.MountUI(dash)
	if err := s.openServices(ctx); err != nil {
		shell.Close()
		return nil, err
	}
	if s.maint, err = s.newMaintenance(cfg.Heartbeat); err != nil {
		shell.Close()
		return nil, err
	}
	return s, nil
}

// Warm does ahead of time the work of New that needs no database and is
// the same every time (the merged OpenAPI document, the alarm catalog): a controller pair's
// standby warms up so that its takeover does not.
func Warm() error {
	_, err := server.MergeOpenAPI(openapiFragment)
	if _, cerr := faultmgr.Embedded(); err == nil {
		err = cerr
	}
	return err
}

// Run serves until ctx ends, dialing home if configured.
//
// The shell (HTTP and the store) stops last: it closes the store, which the
// other parts use until they have stopped. A shell that fails stops them.
func (s *Subcloud) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	shellCtx, stopShell := context.WithCancel(context.WithoutCancel(ctx))
	defer stopShell()
	shellDone := make(chan error, 1)
	go func() {
		err := s.shell.Run(shellCtx)
		cancel()
		shellDone <- err
	}()
	err := s.runParts(ctx)
	stopShell()
	if serr := <-shellDone; err == nil {
		err = serr
	}
	return err
}

// runParts runs everything but the shell until ctx ends.
func (s *Subcloud) runParts(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if s.cfg.Central != nil {
		g.Go(func() error { return s.dialHome(ctx) })
		g.Go(func() error { return s.images.fetcher.Run(ctx) })
	}
	if s.maint != nil {
		g.Go(func() error { return s.maint.run(ctx, s) })
	}
	g.Go(func() error { return s.servers.Run(ctx) })
	g.Go(func() error { return s.runServices(ctx) })
	g.Go(func() error { return s.strategies.Run(ctx) })
	return g.Wait()
}

// Shell exposes the daemon shell (URL, readiness, routes) to tests and tools.
func (s *Subcloud) Shell() *server.Server { return s.shell }

func (s *Subcloud) register(srv *rest.Server, a *auth.Service) {
	srv.Handle("listHosts", http.MethodGet, "/v1/hosts", a.Require(auth.Reader), s.listHosts)
	srv.Handle("getHost", http.MethodGet, "/v1/hosts/{id}", a.Require(auth.Reader), s.getHost)
	srv.Handle("updateHost", http.MethodPatch, "/v1/hosts/{id}", a.Require(auth.Operator), s.updateHost)
	srv.Handle("deleteHost", http.MethodDelete, "/v1/hosts/{id}", a.Require(auth.Operator), s.deleteHost)
	srv.Handle("setHostBMC", http.MethodPut, "/v1/hosts/{id}/bmc", a.Require(auth.Admin), s.setBMC)
	srv.Handle("hostAction", http.MethodPost, "/v1/hosts/{id}/action", a.Require(auth.Operator), s.hostAction)
	srv.Handle("hostSensors", http.MethodGet, "/v1/hosts/{id}/sensors", a.Require(auth.Reader), s.hostSensors)
	srv.Handle("listJoinTokens", http.MethodGet, "/v1/join-tokens", a.Require(auth.Operator), s.listJoinTokens)
	srv.Handle("createJoinToken", http.MethodPost, "/v1/join-tokens", a.Require(auth.Operator), s.createJoinToken)
	srv.Handle("deleteJoinToken", http.MethodDelete, "/v1/join-tokens/{id}", a.Require(auth.Operator), s.deleteJoinToken)
	srv.HandlePublic("join", http.MethodPost, "/v1/join", s.join) // authenticated by the join token in the body
	srv.Handle("agentReport", http.MethodPut, "/v1/agents/{uuid}/report", s.agentGuard, s.report)
	srv.Handle("agentCommands", http.MethodGet, "/v1/agents/{uuid}/commands", s.agentGuard, s.agentPoll)
	s.registerCompute(srv, a)
	s.registerServers(srv, a)
	s.registerServices(srv, a)
	s.registerPatches(srv, a)
	s.registerStrategies(srv, a)
	osapi.Register(srv, a, s.openstackDeps()) // /identity, /compute, /image
}

func (s *Subcloud) listHosts(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, inventory.HostFilters...)
	if err != nil {
		return 0, nil, err
	}
	hosts, next, err := s.Hosts.Hosts(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	for i := range hosts {
		hosts[i] = hosts[i].WithUptime(now)
	}
	return http.StatusOK, rest.List[inventory.Host]{Items: hosts, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Subcloud) getHost(r *http.Request) (int, any, error) {
	h, err := s.Hosts.Host(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, h.WithUptime(time.Now()), nil
}
