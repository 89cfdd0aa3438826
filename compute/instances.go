package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// ServerStore keeps servers and server groups (compute/computedb).
type ServerStore interface {
	CreateServer(ctx context.Context, sv Server) (Server, error)
	// Server finds a server by ID, or by name within project ("" = any).
	Server(ctx context.Context, id, project string) (Server, error)
	Servers(ctx context.Context, opts page.Options) ([]Server, string, error)
	AllServers(ctx context.Context) ([]Server, error)
	// UpdateServer stores sv if its revision is current (errs.Conflict
	// otherwise) and the status move is allowed.
	UpdateServer(ctx context.Context, sv Server) (Server, error)
	DeleteServer(ctx context.Context, id string) error
	CreateServerGroup(ctx context.Context, g ServerGroup) (ServerGroup, error)
	ServerGroup(ctx context.Context, id, project string) (ServerGroup, error)
	ServerGroups(ctx context.Context, project string) ([]ServerGroup, error)
	DeleteServerGroup(ctx context.Context, id string) error
}

// ImageSource finds images and opens their bytes.
type ImageSource interface {
	Image(ctx context.Context, id string) (Image, error)
	// OpenImage opens the stored bytes with checksum sum.
	OpenImage(sum string) (io.ReadCloser, error)
}

// FlavorSource finds flavors.
type FlavorSource interface {
	Flavor(ctx context.Context, id string) (Flavor, error)
}

// HypervisorHost is one of the site's hypervisor hosts as the site's
// inventory and host management see it.
type HypervisorHost struct {
	Name string
	// URI is the host's libvirt URI.
	URI string
	// Down, if not "", says why the host takes no new servers (locked,
	// not available, ...).
	Down string
	// Lost is true when host management has confirmed the host down
	// (failed, offline or powered off): its servers are not running.
	Lost bool
	// BootID changes when the host restarts ("" if unknown).
	BootID string
	// PeerURI is the host's hypervisor URI as the other hosts' daemons
	// reach it (live migration, peer to peer); "" means URI.
	PeerURI string
	// MgmtAddr and ClusterAddr are the host's addresses on the site's
	// networks; a live migration copies to ClusterAddr (MgmtAddr if "").
	MgmtAddr, ClusterAddr string
	VCPUs                 int
	MemoryMiB             int64
	DiskGiB               int64
}

// HostSource lists the site's hypervisor hosts.
type HostSource interface {
	HypervisorHosts(ctx context.Context) ([]HypervisorHost, error)
}

// HostConn is a connection to one host's hypervisor.
type HostConn interface {
	Hypervisor
	HostStorage
	Migrator
	Close() error
}

// Alarms raises and clears the instance alarms (700.x) and logs events.
type Alarms interface {
	Raise(ctx context.Context, id, entity string, fields map[string]string) error
	Clear(ctx context.Context, id, entity string) error
	Log(ctx context.Context, id, entity string, fields map[string]string) error
}

// Instance alarm and log IDs.
const (
	AlarmInstanceFailed     = "700.001"
	AlarmInstanceStopped    = "700.004"
	AlarmInstanceEvacuating = "700.002"
	LogInstance             = "700.101"
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	Store   ServerStore  // required
	Images  ImageSource  // required
	Flavors FlavorSource // required
	Hosts   HostSource   // required
	// Connect opens a connection to the hypervisor at uri.
	Connect   func(ctx context.Context, uri string) (HostConn, error) // required
	Alarms    Alarms                                                  // required
	Logger    *slog.Logger                                            // required
	Scheduler SchedulerConfig
	// StopTimeout is how long a stop waits for the guest to power off
	// before pulling the plug; default 30 s.
	StopTimeout time.Duration
	// ReconcileEvery is how often every host's domains are compared with
	// the records; default 2 s. Domain events trigger it at once.
	ReconcileEvery time.Duration
	// MigrationTimeout bounds a live migration: one still running then is
	// aborted (the guest stays on the source); default 5 min.
	MigrationTimeout time.Duration
	// RetryFor is how long an operation retries a host whose hypervisor
	// does not answer before it fails (unless host management declares
	// the host lost first); default 60 s.
	RetryFor time.Duration
}

// Manager runs the site's servers: it places them, drives each
// operation on its host's hypervisor as a persisted task (a restart
// resumes it), and reconciles the records with what the hypervisors run.
// It implements Servers.
type Manager struct {
	cfg     ManagerConfig
	log     *slog.Logger
	placeMu sync.Mutex // schedule and record one server at a time

	mu      sync.Mutex
	conns   map[string]*hostConn // by URI
	running map[string]bool      // servers with a driver goroutine
	again   map[string]bool      // servers whose driver must read the record again
	ctx     context.Context      // Run's; nil before Run
	wake    chan struct{}
	baseMu  map[string]*sync.Mutex // by host+checksum
	boots   map[string]string      // host -> boot ID when last reconciled
	dialErr map[string]string      // host -> why its last connection attempt failed
	// draining are hosts being evacuated: no new server or migration
	// lands there.
	draining map[string]bool
}

type hostConn struct {
	HostConn
	events context.CancelFunc
}

var _ Servers = (*Manager)(nil)

// NewManager checks cfg and returns a Manager; Run starts it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Store == nil || cfg.Images == nil || cfg.Flavors == nil || cfg.Hosts == nil || cfg.Connect == nil ||
		cfg.Alarms == nil || cfg.Logger == nil {
		return nil, errors.New("compute: manager needs a store, images, flavors, hosts, a connector, alarms and a logger")
	}
	if err := cfg.Scheduler.Validate(); err != nil {
		return nil, err
	}
	cfg.Scheduler = cfg.Scheduler.WithDefaults()
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.ReconcileEvery <= 0 {
		cfg.ReconcileEvery = 2 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = time.Minute
	}
	if cfg.MigrationTimeout <= 0 {
		cfg.MigrationTimeout = 5 * time.Minute
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "compute"), conns: map[string]*hostConn{},
		running: map[string]bool{}, again: map[string]bool{}, wake: make(chan struct{}, 1), baseMu: map[string]*sync.Mutex{}, boots: map[string]string{},
		dialErr: map[string]string{}, draining: map[string]bool{}}, nil
}

// Run resumes every task a restart interrupted, then reconciles until ctx
// ends.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	defer m.closeConns()
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean stop, not a failure
		}
		return err
	}
	for _, sv := range all {
		if sv.Task != TaskNone {
			m.log.Info("resuming a task", "server", sv.Name, "id", sv.ID, "task", sv.Task)
			m.drive(sv.ID)
		}
	}
	tick := time.NewTicker(m.cfg.ReconcileEvery)
	defer tick.Stop()
	for {
		if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-m.wake:
		}
	}
}

// poke makes the reconcile loop run soon.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// scope is the caller's project filter: "" for an admin (every project).
func scope(ctx context.Context) (project string, admin bool) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok || p.Role.Allows(auth.Admin) {
		return "", true
	}
	return p.ProjectName(), false
}

// DomainName is the libvirt domain name of server id.
func DomainName(id string) string { return "petrel-" + id }

// CreateServer validates req, places the server and starts building it.
func (m *Manager) CreateServer(ctx context.Context, req CreateServer) (Server, error) {
	project, admin := scope(ctx)
	if err := ValidateName("name", req.Name); err != nil {
		return Server{}, err
	}
	var err error
	if req.Project, err = ownerProject(ctx, req.Project); err != nil {
		return Server{}, err
	}
	if req.Host != "" && !admin {
		return Server{}, errs.New(errs.Forbidden, "only an admin picks a server's host")
	}
	if req.Image == "" {
		return Server{}, errs.Field("image", "is required")
	}
	if req.Flavor == "" {
		return Server{}, errs.Field("flavor", "is required")
	}
	im, err := m.cfg.Images.Image(ctx, req.Image)
	if err != nil {
		return Server{}, fieldNotFound("image", err)
	}
	if !admin && im.Visibility != Public && im.Project != project {
		return Server{}, errs.Field("image", "%q not found", req.Image)
	}
	if im.Status != ImageActive {
		return Server{}, errs.Field("image", "%s is %s, not active", im.Name, im.Status)
	}
	fl, err := m.cfg.Flavors.Flavor(ctx, req.Flavor)
	if err != nil {
		return Server{}, fieldNotFound("flavor", err)
	}
	if !admin && !fl.Public && fl.Project != project {
		return Server{}, errs.Field("flavor", "%q not found", req.Flavor)
	}
	if fl.RAMMiB < MinMemoryMiB {
		return Server{}, errs.Field("flavor", "%s has %d MiB of memory; a server needs at least %d", fl.Name, fl.RAMMiB, MinMemoryMiB)
	}
	var group *ServerGroup
	if req.Group != "" {
		g, err := m.cfg.Store.ServerGroup(ctx, req.Group, project)
		if err != nil {
			return Server{}, fieldNotFound("group", err)
		}
		if g.Project != req.Project {
			return Server{}, errs.Field("group", "%s belongs to project %s, not %s", g.Name, g.Project, req.Project)
		}
		group = &g
	}
	sv := Server{ID: uuid.NewString(), Name: req.Name, Project: req.Project, Status: ServerBuilding, Task: TaskSpawning,
		Power: StateShutoff, Image: im.ID, ImageName: im.Name,
		Flavor: ServerFlavor{ID: fl.ID, Name: fl.Name, VCPUs: fl.VCPUs, RAMMiB: fl.RAMMiB, DiskGiB: fl.DiskGiB}}
	if group != nil {
		sv.Group = group.ID
	}

	m.placeMu.Lock()
	defer m.placeMu.Unlock()
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return Server{}, err
	}
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		return Server{}, err
	}
	cands := m.candidates(hosts, "")
	sv.Host, err = Schedule(m.cfg.Scheduler, ScheduleRequest{Flavor: sv.Flavor, Host: req.Host, Group: group}, cands, all)
	if err != nil {
		return Server{}, err
	}
	sv, err = m.cfg.Store.CreateServer(ctx, sv)
	if err != nil {
		return Server{}, err
	}
	m.log.Info("server placed", "server", sv.Name, "id", sv.ID, "host", sv.Host, "flavor", fl.Name, "image", im.Name)
	m.drive(sv.ID)
	return sv, nil
}

// ownerProject is the project a new resource belongs to: the one asked
// for (only an admin may name another project than its own), else the
// caller's.
func ownerProject(ctx context.Context, want string) (string, error) {
	project, admin := scope(ctx)
	own := auth.DefaultProject
	if p, ok := auth.PrincipalFrom(ctx); ok {
		own = p.ProjectName()
	}
	switch {
	case want == "":
		want = own
	case !admin && want != project:
		return "", errs.New(errs.Forbidden, "only an admin creates resources in another project")
	}
	if err := ValidateProject("project", want); err != nil {
		return "", err
	}
	return want, nil
}

// candidates are the hosts as the scheduler sees them, but skip; a host
// being evacuated is down.
func (m *Manager) candidates(hosts []HypervisorHost, skip string) []Candidate {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Candidate
	for _, h := range hosts {
		if h.Name == skip {
			continue
		}
		c := Candidate{Host: h.Name, Down: h.Down, VCPUs: h.VCPUs, MemoryMiB: h.MemoryMiB, DiskGiB: h.DiskGiB}
		if c.Down == "" && m.draining[h.Name] {
			c.Down = "being evacuated"
		}
		out = append(out, c)
	}
	return out
}

// pageAll asks a store for every row (a site holds hundreds of servers).
func pageAll(filters map[string]string) page.Options {
	return page.Options{Limit: 1 << 20, Filters: filters}
}

// fieldNotFound turns a not-found into a 400 on field; other errors pass.
func fieldNotFound(field string, err error) error {
	if errors.Is(err, errs.NotFound) {
		return errs.Field(field, "%v", err)
	}
	return err
}

// Server finds a server the caller may see.
func (m *Manager) Server(ctx context.Context, id string) (Server, error) {
	project, _ := scope(ctx)
	return m.cfg.Store.Server(ctx, id, project)
}

// ListServers lists the servers the caller may see.
func (m *Manager) ListServers(ctx context.Context, opts page.Options) ([]Server, string, error) {
	if project, admin := scope(ctx); !admin {
		if p, ok := opts.Filters["project"]; ok && p != project {
			return []Server{}, "", nil
		}
		f := map[string]string{"project": project}
		for k, v := range opts.Filters {
			if k != "project" {
				f[k] = v
			}
		}
		opts.Filters = f
	}
	return m.cfg.Store.Servers(ctx, opts)
}

// Act starts an action on a server.
func (m *Manager) Act(ctx context.Context, id string, a ServerAction) (Server, error) {
	if err := a.Validate(); err != nil {
		return Server{}, err
	}
	sv, err := m.Server(ctx, id)
	if err != nil {
		return Server{}, err
	}
	if err := sv.CheckAction(a.Action); err != nil {
		return Server{}, err
	}
	if a.Action == ActionMigrate {
		sv, err := m.startMigration(ctx, sv, a)
		if err != nil {
			return Server{}, err
		}
		m.log.Info("server live migration", "server", sv.Name, "id", sv.ID, "from", sv.Migration.Source, "to", sv.Migration.Dest)
		m.drive(sv.ID)
		return sv, nil
	}
	switch a.Action {
	case ActionStop:
		sv.Task = TaskStopping
	case ActionStart:
		sv.Task = TaskStarting
	case ActionReboot:
		sv.Task = TaskRebooting
		if a.Hard {
			sv.Task = TaskRebootingHard
		}
	case ActionRebuild:
		ref := a.Image
		if ref == "" {
			ref = sv.Image
		}
		im, err := m.cfg.Images.Image(ctx, ref)
		if err != nil {
			return Server{}, fieldNotFound("image", err)
		}
		if project, admin := scope(ctx); !admin && im.Visibility != Public && im.Project != project {
			return Server{}, errs.Field("image", "%q not found", ref)
		}
		if im.Status != ImageActive {
			return Server{}, errs.Field("image", "%s is %s, not active", im.Name, im.Status)
		}
		sv.Task, sv.Image, sv.ImageName = TaskRebuilding, im.ID, im.Name
	}
	sv, err = m.cfg.Store.UpdateServer(ctx, sv)
	if err != nil {
		return Server{}, err
	}
	m.log.Info("server action", "server", sv.Name, "id", sv.ID, "action", a.Action, "hard", a.Hard, "image", sv.ImageName)
	m.drive(sv.ID)
	return sv, nil
}

// DeleteServer starts deleting a server. A server busy with another task
// is deleted when that task is interrupted: deleting wins.
func (m *Manager) DeleteServer(ctx context.Context, id string) error {
	for {
		sv, err := m.Server(ctx, id)
		if err != nil {
			return err
		}
		if sv.Task == TaskDeleting {
			return nil
		}
		if sv.Status == ServerMigrating {
			return fmt.Errorf("%w: server %s is migrating", ErrServerState, sv.Name)
		}
		sv.Task = TaskDeleting
		if _, err := m.cfg.Store.UpdateServer(ctx, sv); errors.Is(err, errs.Conflict) && !errors.Is(err, ErrServerState) {
			continue // a driver moved it meanwhile: read again
		} else if err != nil {
			return err
		}
		m.log.Info("server delete", "server", sv.Name, "id", sv.ID)
		m.drive(sv.ID)
		return nil
	}
}

// ConsoleLog returns the last lines of the server's console.
func (m *Manager) ConsoleLog(ctx context.Context, id string, lines int) (string, error) {
	sv, err := m.Server(ctx, id)
	if err != nil {
		return "", err
	}
	h, err := m.host(ctx, sv.Host)
	if err != nil {
		return "", err
	}
	c, err := m.conn(ctx, h)
	if err != nil {
		return "", errs.Wrapf(errs.Unavailable, "host %s: %v", sv.Host, err)
	}
	var b []byte
	// A caller that goes away does not close the shared connection.
	err = m.bounded(context.WithoutCancel(ctx), h, c, 20*time.Second, func() (err error) { b, err = c.ConsoleLog(ctx, sv.ID); return err })
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		m.dropConn(h.URI, c)
		return "", errs.Wrapf(errs.Unavailable, "host %s: console log: %v", sv.Host, err)
	}
	return tailLines(b, lines), nil
}

// ServerStats reads the server's resource use from its host.
func (m *Manager) ServerStats(ctx context.Context, id string) (DomainStats, error) {
	sv, err := m.Server(ctx, id)
	if err != nil {
		return DomainStats{}, err
	}
	h, err := m.host(ctx, sv.Host)
	if err != nil {
		return DomainStats{}, err
	}
	c, err := m.conn(ctx, h)
	if err != nil {
		return DomainStats{}, errs.Wrapf(errs.Unavailable, "host %s: %v", sv.Host, err)
	}
	var st DomainStats
	err = m.bounded(context.WithoutCancel(ctx), h, c, 10*time.Second, func() (err error) { st, err = c.Stats(ctx, sv.ID); return err })
	if errors.Is(err, ErrNotFound) {
		return DomainStats{}, fmt.Errorf("%w: server %s has no domain on %s", ErrServerState, sv.Name, sv.Host)
	}
	if err != nil {
		return DomainStats{}, errs.Wrapf(errs.Unavailable, "host %s: stats: %v", sv.Host, err)
	}
	return st, nil
}

// tailLines returns the last n lines of b (all of it when n <= 0).
func tailLines(b []byte, n int) string {
	if n <= 0 {
		return string(b)
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	start := len(b)
	for ; n > 0; n-- {
		i := bytes.LastIndexByte(b[:start], '\n')
		if i < 0 {
			return string(b) + "\n"
		}
		start = i
	}
	return string(b[start+1:]) + "\n"
}

// Hypervisors describes every hypervisor host with its usage.
func (m *Manager) Hypervisors(ctx context.Context) ([]HypervisorInfo, error) {
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return nil, err
	}
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		return nil, err
	}
	use := Usages(all)
	out := make([]HypervisorInfo, 0, len(hosts))
	for _, h := range hosts {
		u := use[h.Name]
		hi := HypervisorInfo{Host: h.Name, State: "down", Status: "enabled", VCPUs: h.VCPUs, VCPUsUsed: u.VCPUs,
			MemoryMiB: int(h.MemoryMiB), MemoryMiBUse: int(u.MemoryMiB), DiskGiB: int(h.DiskGiB), DiskGiBUsed: int(u.DiskGiB),
			Servers: u.Servers, URI: h.URI}
		if h.Down != "" {
			hi.Status = "disabled"
		}
		if !h.Lost {
			if c, err := m.conn(ctx, h); err == nil {
				var info HostInfo
				if err := m.bounded(ctx, h, c, 5*time.Second, func() (err error) { info, err = c.HostInfo(ctx); return err }); err == nil {
					hi.State, hi.Version = "up", info.Version
				} else {
					m.dropConn(h.URI, c)
				}
			}
		}
		out = append(out, hi)
	}
	return out, nil
}

// CreateServerGroup records a server group in the caller's project.
func (m *Manager) CreateServerGroup(ctx context.Context, g ServerGroup) (ServerGroup, error) {
	if err := ValidateName("name", g.Name); err != nil {
		return ServerGroup{}, err
	}
	if g.Policy != AntiAffinity && g.Policy != Affinity {
		return ServerGroup{}, errs.Field("policy", "must be anti-affinity or affinity")
	}
	var err error
	if g.Project, err = ownerProject(ctx, g.Project); err != nil {
		return ServerGroup{}, err
	}
	return m.cfg.Store.CreateServerGroup(ctx, g)
}

// ServerGroup finds a group the caller may see.
func (m *Manager) ServerGroup(ctx context.Context, id string) (ServerGroup, error) {
	project, _ := scope(ctx)
	return m.cfg.Store.ServerGroup(ctx, id, project)
}

// ListServerGroups lists the groups the caller may see.
func (m *Manager) ListServerGroups(ctx context.Context) ([]ServerGroup, error) {
	project, _ := scope(ctx)
	return m.cfg.Store.ServerGroups(ctx, project)
}

// DeleteServerGroup deletes an empty group the caller may see.
func (m *Manager) DeleteServerGroup(ctx context.Context, id string) error {
	g, err := m.ServerGroup(ctx, id)
	if err != nil {
		return err
	}
	return m.cfg.Store.DeleteServerGroup(ctx, g.ID)
}

// ---- hosts and connections ----

func (m *Manager) host(ctx context.Context, name string) (HypervisorHost, error) {
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return HypervisorHost{}, err
	}
	for _, h := range hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return HypervisorHost{}, errs.Wrapf(errs.Unavailable, "host %s is not a hypervisor host of this site any more", name)
}

// conn returns the cached connection to h's hypervisor, dialling it (and
// subscribing to its events) if needed.
func (m *Manager) conn(ctx context.Context, h HypervisorHost) (HostConn, error) {
	m.mu.Lock()
	c := m.conns[h.URI]
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if h.URI == "" {
		return nil, fmt.Errorf("host %s has no hypervisor address", h.Name)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hc, err := m.cfg.Connect(dctx, h.URI)
	m.noteDial(h, err)
	if err != nil {
		return nil, err
	}
	c = &hostConn{HostConn: hc}
	m.mu.Lock()
	if old := m.conns[h.URI]; old != nil { // dialled concurrently
		m.mu.Unlock()
		hc.Close()
		return old, nil
	}
	m.conns[h.URI] = c
	runCtx := m.ctx
	m.mu.Unlock()
	if runCtx != nil {
		ectx, stop := context.WithCancel(runCtx)
		c.events = stop
		if ch, err := hc.Events(ectx); err == nil {
			go func() {
				for ev := range ch {
					m.log.Debug("domain event", "host", h.Name, "id", ev.ID, "state", ev.State, "detail", ev.Detail)
					m.poke()
				}
				m.dropConn(h.URI, c)
			}()
		} else {
			m.log.Warn("domain events unavailable", "host", h.Name, "err", err)
		}
	}
	return c, nil
}

// noteDial logs a failed connection to h's hypervisor when the reason
// differs from the last one (a certificate refused, a daemon down), and
// the first success after failures, so that a host shown down says why
// in the log without a line per reconcile.
func (m *Manager) noteDial(h HypervisorHost, err error) {
	m.mu.Lock()
	prev, failed := m.dialErr[h.Name]
	switch {
	case err == nil:
		delete(m.dialErr, h.Name)
	case prev != err.Error():
		m.dialErr[h.Name] = err.Error()
	}
	m.mu.Unlock()
	switch {
	case err == nil && failed:
		m.log.Info("hypervisor reachable", "host", h.Name, "uri", h.URI)
	case err != nil && prev != err.Error():
		m.log.Warn("cannot connect to hypervisor", "host", h.Name, "uri", h.URI, "err", err)
	}
}

// dropConn forgets a connection that failed (if it is still the cached
// one) and closes it.
func (m *Manager) dropConn(uri string, c HostConn) {
	m.mu.Lock()
	cur := m.conns[uri]
	if cur == nil || (c != nil && HostConn(cur) != c) {
		m.mu.Unlock()
		return
	}
	delete(m.conns, uri)
	m.mu.Unlock()
	if cur.events != nil {
		cur.events()
	}
	cur.Close()
}

func (m *Manager) closeConns() {
	m.mu.Lock()
	conns := m.conns
	m.conns = map[string]*hostConn{}
	m.mu.Unlock()
	for _, c := range conns {
		if c.events != nil {
			c.events()
		}
		c.Close()
	}
}

// SeenBoot reports whether the reconciler last saw host with boot ID id.
func (m *Manager) SeenBoot(host, id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boots[host] == id
}

// bounded runs fn, a call on connection c to h's hypervisor, for at
// most limit. The driver's calls take no context: if the daemon does not
// answer in time, or ctx ends, the connection is closed, which fails the
// call (and every other call waiting on it, which their callers retry on
// a new connection).
func (m *Manager) bounded(ctx context.Context, h HypervisorHost, c HostConn, limit time.Duration, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		m.dropConn(h.URI, c)
		return ctx.Err()
	case <-t.C:
		m.log.Warn("hypervisor did not answer in time: connection closed", "host", h.Name, "limit", limit.String())
		m.dropConn(h.URI, c)
		return fmt.Errorf("host %s: its hypervisor did not answer within %s", h.Name, limit)
	}
}

// ---- tasks ----

// drive runs server id's task in a goroutine of its own, unless one runs.
func (m *Manager) drive(id string) {
	m.mu.Lock()
	ctx := m.ctx
	if ctx == nil { // before Run: Run resumes it
		m.mu.Unlock()
		return
	}
	// A driver already running looks at the record again before it
	// exits: a task recorded while it finished its last one is not lost.
	m.again[id] = true
	if m.running[id] {
		m.mu.Unlock()
		return
	}
	m.running[id] = true
	m.mu.Unlock()
	go func() {
		for {
			m.mu.Lock()
			if !m.again[id] || ctx.Err() != nil {
				delete(m.running, id)
				delete(m.again, id)
				m.mu.Unlock()
				return
			}
			m.again[id] = false
			m.mu.Unlock()
			for ctx.Err() == nil {
				again, err := m.step(ctx, id)
				if err != nil && ctx.Err() == nil {
					m.log.Warn("server task", "id", id, "err", err)
				}
				if !again {
					break
				}
			}
		}
	}()
}

// step runs the server's current task once. It reports whether a new
// task was found when this one ended (a delete that arrived meanwhile).
func (m *Manager) step(ctx context.Context, id string) (bool, error) {
	sv, err := m.cfg.Store.Server(ctx, id, "")
	if errors.Is(err, ErrServerNotFound) {
		return false, nil
	}
	if err != nil {
		return m.retryLater(ctx)
	}
	if sv.Task == TaskNone {
		return false, nil
	}
	task := sv.Task
	next, opErr := m.run(ctx, sv)
	if ctx.Err() != nil {
		return false, nil // the next start resumes the task
	}
	if task == TaskDeleting && opErr == nil {
		return false, nil // record gone
	}
	// Store the outcome unless the task changed meanwhile (a delete).
	for {
		cur, err := m.cfg.Store.Server(ctx, id, "")
		if err != nil {
			return false, err
		}
		if cur.Task != task {
			return true, nil
		}
		if opErr != nil {
			next = cur
			next.Task, next.Fault = TaskNone, opErr.Error()
			if task == TaskSpawning || task == TaskRebuilding || errors.Is(opErr, errHostLost) {
				next.Status = ServerError
			}
		} else {
			next.Rev, next.Task = cur.Rev, TaskNone
		}
		saved, err := m.cfg.Store.UpdateServer(ctx, next)
		if errors.Is(err, errs.Conflict) && !errors.Is(err, ErrServerState) {
			continue
		}
		if err != nil {
			return false, err
		}
		m.afterTask(ctx, task, saved, opErr)
		return false, nil
	}
}

func (m *Manager) retryLater(ctx context.Context) (bool, error) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	return true, nil
}

// errHostLost marks an operation that failed because host management
// declared the server's host lost.
var errHostLost = errors.New("host lost")

// Faults the reconciler records.
const (
	faultHostLost    = "host lost: " // starts the fault of a server whose host was lost
	faultUnrequested = "stopped without a request (guest power-off or crash)"
)

// afterTask raises, clears and logs what a finished task means.
func (m *Manager) afterTask(ctx context.Context, task Task, sv Server, opErr error) {
	ent := "instance=" + sv.ID
	f := map[string]string{"instance": sv.Name, "host": sv.Host}
	if opErr != nil {
		m.log.Warn("server task failed", "server", sv.Name, "id", sv.ID, "task", task, "err", opErr)
		f["action"] = fmt.Sprintf("%s failed: %v", task, opErr)
		m.alarmLog(ctx, ent, f)
		if sv.Status == ServerError {
			f["detail"] = sv.Fault
			m.raise(ctx, AlarmInstanceFailed, ent, f)
		}
		return
	}
	m.log.Info("server task done", "server", sv.Name, "id", sv.ID, "task", task, "status", sv.Status)
	f["action"] = fmt.Sprintf("%s done: %s on %s", task, sv.Status, sv.Host)
	m.alarmLog(ctx, ent, f)
	m.clear(ctx, AlarmInstanceFailed, ent)
	m.clear(ctx, AlarmInstanceStopped, ent)
}

func (m *Manager) raise(ctx context.Context, id, ent string, f map[string]string) {
	if err := m.cfg.Alarms.Raise(ctx, id, ent, f); err != nil && ctx.Err() == nil {
		m.log.Warn("raise alarm", "alarm_id", id, "entity", ent, "err", err)
	}
}

func (m *Manager) clear(ctx context.Context, id, ent string) {
	if err := m.cfg.Alarms.Clear(ctx, id, ent); err != nil && ctx.Err() == nil {
		m.log.Warn("clear alarm", "alarm_id", id, "entity", ent, "err", err)
	}
}

func (m *Manager) alarmLog(ctx context.Context, ent string, f map[string]string) {
	if err := m.cfg.Alarms.Log(ctx, LogInstance, ent, f); err != nil && ctx.Err() == nil {
		m.log.Warn("log event", "entity", ent, "err", err)
	}
}

// withHost runs op on the server's host, retrying while the host's
// hypervisor does not answer, for up to RetryFor, unless host
// management declares the host lost (errHostLost).
func (m *Manager) withHost(ctx context.Context, name string, op func(HostConn) error) error {
	deadline := time.Now().Add(m.cfg.RetryFor)
	wait := 250 * time.Millisecond
	for {
		h, err := m.host(ctx, name)
		if err != nil {
			return err
		}
		if h.Lost {
			return fmt.Errorf("%w: %s is %s", errHostLost, h.Name, h.Down)
		}
		c, err := m.conn(ctx, h)
		if err == nil {
			err = op(c)
			if err == nil || !transient(err) {
				return err
			}
			m.dropConn(h.URI, c)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// transient tells connection failures (worth a retry on a new
// connection) from the hypervisor's refusals.
func transient(err error) bool {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidSpec) || errors.Is(err, context.Canceled) {
		return false
	}
	s := err.Error()
	for _, w := range []string{"connection", "EOF", "broken pipe", "i/o timeout", "closed", "reset by peer", "no route"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// run performs sv's task on its host and returns the server as the task
// leaves it (status, power, ...), or the error that failed it.
func (m *Manager) run(ctx context.Context, sv Server) (Server, error) {
	switch sv.Task {
	case TaskSpawning:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error {
			if st, err := c.State(ctx, sv.ID); err == nil && st == StateRunning {
				return nil // started before a restart interrupted the task
			}
			return m.build(ctx, c, sv, true)
		})
		if err != nil {
			return sv, err
		}
		return m.launched(sv), nil
	case TaskStopping:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error { return c.Stop(ctx, sv.ID, m.cfg.StopTimeout) })
		sv.Status, sv.Power, sv.Fault = ServerShutoff, StateShutoff, ""
		return sv, err
	case TaskStarting:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error { return c.Start(ctx, sv.ID) })
		sv.Status, sv.Power, sv.Fault = ServerActive, StateRunning, ""
		return sv, err
	case TaskRebooting, TaskRebootingHard:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error {
			st, err := c.State(ctx, sv.ID)
			if err != nil {
				return err
			}
			if st != StateRunning {
				return c.Start(ctx, sv.ID)
			}
			return c.Reboot(ctx, sv.ID, sv.Task == TaskRebootingHard)
		})
		sv.Status, sv.Power, sv.Fault = ServerActive, StateRunning, ""
		return sv, err
	case TaskRebuilding:
		start := sv.Status != ServerShutoff
		err := m.withHost(ctx, sv.Host, func(c HostConn) error {
			if err := c.Destroy(ctx, sv.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			return m.build(ctx, c, sv, start)
		})
		if err != nil {
			return sv, err
		}
		if !start {
			sv.Power, sv.Fault = StateShutoff, ""
			return sv, nil
		}
		return m.launched(sv), nil
	case TaskMigrating:
		return m.migrate(ctx, sv)
	case TaskEvacuating:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error { return m.build(ctx, c, sv, true) })
		m.clear(ctx, AlarmInstanceEvacuating, "instance="+sv.ID)
		if err != nil {
			return sv, err
		}
		return m.launched(sv), nil
	case TaskDeleting:
		err := m.withHost(ctx, sv.Host, func(c HostConn) error {
			if err := c.Destroy(ctx, sv.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if err := c.Undefine(ctx, sv.ID); err != nil {
				return err
			}
			return c.DeleteInstanceFiles(ctx, sv.ID)
		})
		switch {
		case errors.Is(err, errHostLost):
			// The host is down: delete the record now; the reconciler
			// removes the domain and disk when the host returns.
			m.log.Warn("server deleted while its host is lost: its domain is removed when the host returns", "server", sv.Name, "host", sv.Host)
		case err != nil:
			return sv, err
		}
		if err := m.cfg.Store.DeleteServer(ctx, sv.ID); err != nil {
			return sv, err
		}
		ent := "instance=" + sv.ID
		m.clear(ctx, AlarmInstanceFailed, ent)
		m.clear(ctx, AlarmInstanceStopped, ent)
		m.alarmLog(ctx, ent, map[string]string{"instance": sv.Name, "action": "deleted from " + sv.Host})
		m.log.Info("server deleted", "server", sv.Name, "id", sv.ID, "host", sv.Host)
		return sv, nil
	}
	return sv, fmt.Errorf("unknown task %q", sv.Task)
}

func (m *Manager) launched(sv Server) Server {
	now := time.Now().UTC()
	sv.Status, sv.Power, sv.Fault, sv.LaunchedAt = ServerActive, StateRunning, "", &now
	return sv
}

// build makes the server's disk from its image (copying the image to the
// host first if it is not there), defines its domain and, if start,
// boots it.
func (m *Manager) build(ctx context.Context, c HostConn, sv Server, start bool) error {
	im, err := m.cfg.Images.Image(ctx, sv.Image)
	if err != nil {
		return fmt.Errorf("image %s: %w", sv.ImageName, err)
	}
	if err := m.ensureBase(ctx, c, sv.Host, im); err != nil {
		return err
	}
	files, err := c.CreateInstanceFiles(ctx, sv.ID, im.Checksum, im.DiskFormat)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	spec := DomainSpec{ID: sv.ID, Name: DomainName(sv.ID), VCPUs: sv.Flavor.VCPUs, MemoryMiB: sv.Flavor.RAMMiB,
		Disk: files.Disk, ConsoleLog: files.ConsoleLog}
	if err := c.Define(ctx, spec); err != nil {
		return err
	}
	if !start {
		return nil
	}
	return c.Start(ctx, sv.ID)
}

// ensureBase copies image im to host unless it is there; one copy per
// host and image at a time.
func (m *Manager) ensureBase(ctx context.Context, c HostConn, host string, im Image) error {
	m.mu.Lock()
	mu := m.baseMu[host+"/"+im.Checksum]
	if mu == nil {
		mu = &sync.Mutex{}
		m.baseMu[host+"/"+im.Checksum] = mu
	}
	m.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	ok, err := c.HasBase(ctx, im.Checksum)
	if err != nil || ok {
		return err
	}
	r, err := m.cfg.Images.OpenImage(im.Checksum)
	if err != nil {
		return fmt.Errorf("image %s: %w", im.Name, err)
	}
	defer r.Close()
	start := time.Now()
	if err := c.PutBase(ctx, im.Checksum, im.DiskFormat, im.Size, r); err != nil {
		return fmt.Errorf("copy image %s to %s: %w", im.Name, host, err)
	}
	m.log.Info("image copied to host", "image", im.Name, "host", host, "bytes", im.Size, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// ---- reconciliation ----

// reconcile compares every idle server with its host's domain and
// records what runs; it removes domains of deleted servers.
func (m *Manager) reconcile(ctx context.Context) error {
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return err
	}
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		return err
	}
	byHost := map[string][]Server{}
	known := map[string]Server{}
	for _, sv := range all {
		byHost[sv.Host] = append(byHost[sv.Host], sv)
		known[sv.ID] = sv
	}
	for _, h := range hosts {
		if err := m.reconcileHost(ctx, h, byHost[h.Name], known); err != nil && ctx.Err() == nil {
			m.log.Debug("reconcile host", "host", h.Name, "err", err)
		}
	}
	return nil
}

func (m *Manager) reconcileHost(ctx context.Context, h HypervisorHost, servers []Server, known map[string]Server) error {
	if h.Lost {
		for _, sv := range servers {
			// A task fails on its own; a server stopped on request stays
			// stopped. One seen stopping without a request just before is
			// taken as a victim of the loss (its QEMU died first).
			if sv.Task != TaskNone || sv.Status == ServerError || (sv.Status == ServerShutoff && sv.Fault != faultUnrequested) {
				continue
			}
			sv, ok := m.observe(ctx, sv, func(sv *Server) {
				sv.Status, sv.Power, sv.Fault = ServerError, StateUnknown, faultHostLost+h.Name+" is "+h.Down
			})
			if ok {
				m.evacuate(ctx, sv, h)
			}
		}
		return nil
	}
	// A host that restarted (power loss, crash, reset) between two looks
	// — host management may have it back before it was ever seen lost —
	// took its running servers down: each is recorded failed with the
	// host, then (below) as its domain is now.
	m.mu.Lock()
	prev, seen := m.boots[h.Name]
	m.mu.Unlock()
	if seen && h.BootID != "" && prev != h.BootID {
		m.log.Warn("hypervisor host restarted", "host", h.Name, "boot_id", h.BootID)
		for i, sv := range servers {
			if sv.Task != TaskNone || (sv.Status != ServerActive && sv.Status != ServerBuilding &&
				!(sv.Status == ServerShutoff && sv.Fault == faultUnrequested)) {
				continue
			}
			servers[i], _ = m.observe(ctx, sv, func(sv *Server) {
				sv.Status, sv.Power, sv.Fault = ServerError, StateUnknown, faultHostLost+h.Name+" restarted (power loss or crash)"
			})
		}
	}
	c, err := m.conn(ctx, h)
	if err != nil {
		return err
	}
	if h.BootID != "" {
		m.mu.Lock()
		m.boots[h.Name] = h.BootID
		m.mu.Unlock()
	}
	var doms []Domain
	err = m.bounded(ctx, h, c, 15*time.Second, func() (err error) { doms, err = c.List(ctx); return err })
	if err != nil {
		m.dropConn(h.URI, c)
		return err
	}
	state := map[string]State{}
	for _, d := range doms {
		state[d.ID] = d.State
		sv, ok := known[d.ID]
		switch {
		case !ok && d.Name == DomainName(d.ID):
			m.removeOrphan(ctx, c, h, d)
		case ok && sv.Host != h.Name && sv.Task == TaskNone && d.State != StateRunning:
			// A stopped copy left on another host than the server's (a
			// migration whose clean-up failed, a host that was down):
			// removed. A running one is left for an operator: it may be
			// the only copy.
			m.removeLeftover(ctx, c, h, sv, d)
		case ok && sv.Host != h.Name && sv.Task == TaskNone:
			m.log.Warn("a server's domain runs on another host than its own: left for an operator", "server", sv.Name, "host", h.Name, "recorded_host", sv.Host)
		}
	}
	for _, sv := range servers {
		if sv.Task != TaskNone || sv.Status == ServerMigrating {
			continue
		}
		st, ok := state[sv.ID]
		switch {
		case !ok:
			if sv.Status == ServerError {
				continue
			}
			m.observe(ctx, sv, func(sv *Server) {
				sv.Status, sv.Power, sv.Fault = ServerError, StateUnknown, "its domain is missing from "+h.Name
			})
		case st == StateRunning || st == StateBlocked || st == StatePaused:
			if sv.Status != ServerActive || sv.Power != st {
				m.observe(ctx, sv, func(sv *Server) { sv.Status, sv.Power, sv.Fault = ServerActive, st, "" })
			}
		case st == StateShutoff || st == StateCrashed:
			switch {
			case sv.Status == ServerActive:
				m.observe(ctx, sv, func(sv *Server) {
					sv.Status, sv.Power, sv.Fault = ServerShutoff, st, faultUnrequested
				})
			case sv.Status == ServerError && strings.HasPrefix(sv.Fault, faultHostLost):
				m.observe(ctx, sv, func(sv *Server) {
					sv.Status, sv.Power, sv.Fault = ServerShutoff, st, "stopped: its host "+h.Name+" was lost and returned"
				})
			case sv.Power != st:
				m.observe(ctx, sv, func(sv *Server) { sv.Power = st })
			}
		}
	}
	return nil
}

// observe records what the reconciler saw of an idle server, with its
// alarms: 700.001 while it is in error, 700.004 while it is stopped
// without a request.
func (m *Manager) observe(ctx context.Context, sv Server, change func(*Server)) (Server, bool) {
	before := sv
	change(&sv)
	saved, err := m.cfg.Store.UpdateServer(ctx, sv)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Debug("reconcile: server changed meanwhile", "server", sv.Name, "err", err)
		}
		return before, false
	}
	if saved.Status == before.Status {
		return saved, true
	}
	ent := "instance=" + saved.ID
	f := map[string]string{"instance": saved.Name, "host": saved.Host, "detail": saved.Fault,
		"action": fmt.Sprintf("%s -> %s on %s: %s", before.Status, saved.Status, saved.Host, orNone(saved.Fault))}
	m.log.Warn("server state observed", "server", saved.Name, "id", saved.ID, "from", before.Status, "to", saved.Status, "fault", saved.Fault)
	m.alarmLog(ctx, ent, f)
	switch saved.Status {
	case ServerError:
		m.raise(ctx, AlarmInstanceFailed, ent, f)
	case ServerShutoff:
		m.clear(ctx, AlarmInstanceFailed, ent)
		m.raise(ctx, AlarmInstanceStopped, ent, f)
	case ServerActive:
		m.clear(ctx, AlarmInstanceFailed, ent)
		m.clear(ctx, AlarmInstanceStopped, ent)
	}
	return saved, true
}

func orNone(s string) string {
	if s == "" {
		return "running"
	}
	return s
}

// removeOrphan removes a Petrel domain no server owns (its server was
// deleted while its host was lost).
func (m *Manager) removeOrphan(ctx context.Context, c HostConn, h HypervisorHost, d Domain) {
	// Read again: the server may have been created since the list.
	if _, err := m.cfg.Store.Server(ctx, d.ID, ""); !errors.Is(err, ErrServerNotFound) {
		return
	}
	m.log.Warn("removing a domain no server owns", "host", h.Name, "domain", d.Name)
	if err := c.Destroy(ctx, d.ID); err != nil && !errors.Is(err, ErrNotFound) {
		m.log.Warn("remove orphan domain", "domain", d.Name, "err", err)
		return
	}
	if err := c.Undefine(ctx, d.ID); err != nil {
		m.log.Warn("remove orphan domain", "domain", d.Name, "err", err)
		return
	}
	if err := c.DeleteInstanceFiles(ctx, d.ID); err != nil {
		m.log.Warn("remove orphan disk", "domain", d.Name, "err", err)
	}
}

// removeLeftover removes a stopped copy of server sv's domain from a host
// that is not sv's.
func (m *Manager) removeLeftover(ctx context.Context, c HostConn, h HypervisorHost, sv Server, d Domain) {
	if d.State != StateShutoff && d.State != StateCrashed {
		// Paused (say, the source of a completed migration whose libvirtd
		// restarted before it ended the source's QEMU): destroyed only
		// once the server surely runs on its own host.
		own, err := m.host(ctx, sv.Host)
		if err != nil || !m.runsOn(ctx, own, sv.ID) {
			return
		}
		m.log.Warn("destroying a paused copy of a server's domain on another host", "server", sv.Name, "host", h.Name, "state", d.State, "recorded_host", sv.Host)
		if err := c.Destroy(ctx, d.ID); err != nil && !errors.Is(err, ErrNotFound) {
			m.log.Warn("remove leftover domain", "server", sv.Name, "host", h.Name, "err", err)
			return
		}
	}
	m.log.Warn("removing a stopped copy of a server's domain from another host", "server", sv.Name, "host", h.Name, "recorded_host", sv.Host)
	if err := c.Undefine(ctx, d.ID); err != nil && !errors.Is(err, ErrNotFound) {
		m.log.Warn("remove leftover domain", "server", sv.Name, "host", h.Name, "err", err)
		return
	}
	if err := c.DeleteInstanceFiles(ctx, d.ID); err != nil {
		m.log.Warn("remove leftover disk", "server", sv.Name, "host", h.Name, "err", err)
	}
}

// SortHosts orders hypervisor hosts by name (for stable output).
func SortHosts(hs []HypervisorHost) {
	slices.SortFunc(hs, func(a, b HypervisorHost) int { return strings.Compare(a.Name, b.Name) })
}
