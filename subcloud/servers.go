package subcloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/compute/libvirt"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// ComputeConfig is the `compute:` section of a site's configuration.
type ComputeConfig struct {
	// LibvirtURI is each hypervisor host's libvirt URI, with {mgmt}
	// standing for the host's management address: qemu+tls (needs TLS)
	// or qemu+tcp (no authentication at all: lab and tests only).
	// Default: DefaultLibvirtURI with TLS, InsecureLibvirtURI without.
	LibvirtURI string `json:"libvirt_uri"`
	// TLS is the controller's side of qemu+tls: its client certificate
	// (the hosts' libvirtd admit it by its CA and distinguished name) and
	// the CA the hosts' certificates must chain to. Required by qemu+tls,
	// refused with qemu+tcp.
	TLS       *LibvirtTLS             `json:"tls"`
	Scheduler compute.SchedulerConfig `json:"scheduler"`
	// StopTimeout is how long a stop waits for the guest before pulling
	// the plug; default 30s.
	StopTimeout string `json:"stop_timeout"`
	// ReconcileEvery is how often the hosts' domains are compared with
	// the records; default 2s.
	ReconcileEvery string `json:"reconcile_every"`
	// PeerURI is each host's libvirt URI as the other hosts' daemons
	// reach it for a peer-to-peer live migration ({mgmt} as above);
	// default LibvirtURI. With TLS the source daemon authenticates with
	// its own client certificate: ?pkipath=DIR names where it is, if not
	// in libvirt's default place.
	PeerURI string `json:"peer_uri"`
	// MigrationTimeout bounds a live migration (then it is aborted and
	// the guest stays on its source); default 5m.
	MigrationTimeout string `json:"migration_timeout"`
}

// LibvirtTLS names the files of the controller's libvirt TLS client
// (PEM). The key is a secret: a file of mode 0600 (or stricter).
type LibvirtTLS struct {
	CAFile   string `json:"ca_file"`
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// Hypervisor hosts' libvirt URIs: DefaultLibvirtURI, mutually
// authenticated TLS to a host's libvirtd on its management address, and
// InsecureLibvirtURI, plain TCP with no authentication, which is only for
// labs and tests (anyone who reaches the port controls the host's VMs).
const (
	DefaultLibvirtURI  = "qemu+tls://{mgmt}:16514/system"
	InsecureLibvirtURI = "qemu+tcp://{mgmt}:16509/system"
)

// computeSetup is a validated compute section.
type computeSetup struct {
	mc      compute.ManagerConfig // Connect set; Store, Images, ... not
	uri     string
	peerURI string
	tls     *tls.Config // nil: qemu+tcp
}

// setup validates c (reading the TLS files) and returns the manager's
// configuration, the URI template and how to connect.
func (c *ComputeConfig) setup() (computeSetup, error) {
	if c == nil {
		c = &ComputeConfig{}
	}
	var cs computeSetup
	cs.uri = c.LibvirtURI
	if cs.uri == "" {
		cs.uri = InsecureLibvirtURI
		if c.TLS != nil {
			cs.uri = DefaultLibvirtURI
		}
	}
	if !strings.Contains(cs.uri, "{mgmt}") {
		return cs, fmt.Errorf("config: compute.libvirt_uri %q must contain {mgmt}", cs.uri)
	}
	switch scheme, _, _ := strings.Cut(cs.uri, "://"); scheme {
	case "qemu+tls":
		if c.TLS == nil {
			return cs, fmt.Errorf("config: compute.libvirt_uri %q is qemu+tls: compute.tls (ca_file, cert_file, key_file) is required", cs.uri)
		}
		tc, err := c.TLS.clientConfig()
		if err != nil {
			return cs, err
		}
		cs.tls = tc
	case "qemu+tcp":
		if c.TLS != nil {
			return cs, fmt.Errorf("config: compute.tls is set but compute.libvirt_uri %q is qemu+tcp (no TLS): use qemu+tls://{mgmt}:16514/system", cs.uri)
		}
	default:
		return cs, fmt.Errorf("config: compute.libvirt_uri %q: want qemu+tls://{mgmt}[:PORT]/system (or qemu+tcp, lab and tests only)", cs.uri)
	}
	if err := c.Scheduler.Validate(); err != nil {
		return cs, fmt.Errorf("config: compute.%w", err)
	}
	cs.mc.Scheduler = c.Scheduler
	for _, d := range []struct {
		name string
		s    string
		to   *time.Duration
	}{{"stop_timeout", c.StopTimeout, &cs.mc.StopTimeout}, {"reconcile_every", c.ReconcileEvery, &cs.mc.ReconcileEvery},
		{"migration_timeout", c.MigrationTimeout, &cs.mc.MigrationTimeout}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return cs, fmt.Errorf("config: compute.%s %q: want a positive duration", d.name, d.s)
		}
		*d.to = v
	}
	cs.peerURI = c.PeerURI
	if cs.peerURI == "" {
		cs.peerURI = cs.uri
	}
	if !strings.Contains(cs.peerURI, "{mgmt}") {
		return cs, fmt.Errorf("config: compute.peer_uri %q must contain {mgmt}", cs.peerURI)
	}
	opts := libvirt.Options{TLS: cs.tls}
	cs.mc.Connect = func(ctx context.Context, uri string) (compute.HostConn, error) {
		return libvirt.DialOptions(ctx, uri, opts)
	}
	return cs, nil
}

// clientConfig loads the TLS files: the CA, and a certificate and key
// that make a pair, valid now, for client authentication.
func (t *LibvirtTLS) clientConfig() (*tls.Config, error) {
	if t.CAFile == "" || t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("config: compute.tls needs ca_file, cert_file and key_file")
	}
	pool, err := pki.CertPool(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("config: compute.tls.ca_file: %w", err)
	}
	fi, err := os.Stat(t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("config: compute.tls.key_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("config: compute.tls.key_file %s has mode %04o: a key must not be readable by group or others (0600)",
			t.KeyFile, fi.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("config: compute.tls.cert_file and key_file: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("config: compute.tls.cert_file: %w", err)
	}
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("config: compute.tls.cert_file %s is valid from %s to %s only", t.CertFile,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// openServers builds the site's compute manager (Run starts it).
func (s *Subcloud) openServers(store *computedb.Store) error {
	cs, err := s.cfg.Compute.setup()
	if err != nil {
		return err
	}
	if cs.tls == nil {
		s.log.Warn("hypervisor hosts are reached over qemu+tcp, without authentication: lab and tests only; set compute.tls",
			"libvirt_uri", cs.uri)
	}
	mc, uri := cs.mc, cs.uri
	mc.Store = store
	mc.Images = imageSource{store: store, files: s.ImageFiles}
	mc.Flavors = store
	mc.Hosts = hypervisorHosts{s: s, uri: uri, peerURI: cs.peerURI}
	mc.Alarms = alarmSink{s.shell.Alarms}
	mc.Logger = s.log
	m, err := compute.NewManager(mc)
	if err != nil {
		return err
	}
	s.Servers, s.servers = m, m
	s.images.inUse = func(ctx context.Context, im compute.Image) (bool, error) {
		n, err := store.ServersUsingImage(ctx, im.ID)
		return n > 0, err
	}
	return nil
}

// imageSource opens image bytes from the site's content-addressed store.
type imageSource struct {
	store *computedb.Store
	files *compute.ImageFiles
}

func (i imageSource) Image(ctx context.Context, id string) (compute.Image, error) {
	return i.store.Image(ctx, id)
}

func (i imageSource) OpenImage(sum string) (io.ReadCloser, error) { return os.Open(i.files.Path(sum)) }

// alarmSink adapts the site's alarm manager to compute.Alarms.
type alarmSink struct{ m *faultmgr.Manager }

func (a alarmSink) Raise(ctx context.Context, id, entity string, f map[string]string) error {
	_, _, err := a.m.Raise(ctx, id, entity, f)
	return err
}

func (a alarmSink) Clear(ctx context.Context, id, entity string) error {
	_, err := a.m.Clear(ctx, id, entity)
	return err
}

func (a alarmSink) Log(ctx context.Context, id, entity string, f map[string]string) error {
	_, err := a.m.Log(ctx, id, entity, f)
	return err
}

// hypervisorHosts derives the hypervisor hosts from the inventory:
// workers, and the controllers of simplex and duplex sites (all-in-one).
type hypervisorHosts struct {
	s            *Subcloud
	uri, peerURI string
}

// IsHypervisor reports whether h runs VMs at a site of shape.
func IsHypervisor(shape inventory.Shape, h inventory.Host) bool {
	switch h.Personality {
	case inventory.Worker:
		return true
	case inventory.Controller:
		return shape == inventory.Simplex || shape == inventory.Duplex
	}
	return false
}

func (hh hypervisorHosts) HypervisorHosts(ctx context.Context) ([]compute.HypervisorHost, error) {
	var out []compute.HypervisorHost
	opts := page.Options{Limit: 500}
	for {
		hosts, next, err := hh.s.Hosts.Hosts(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, h := range hosts {
			if !IsHypervisor(hh.s.cfg.Shape, h) {
				continue
			}
			out = append(out, hh.describe(h))
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	compute.SortHosts(out)
	return out, nil
}

func (hh hypervisorHosts) describe(h inventory.Host) compute.HypervisorHost {
	hv := compute.HypervisorHost{Name: h.Name, VCPUs: h.Inventory.Threads, MemoryMiB: h.Inventory.MemoryMiB, BootID: h.BootID}
	if hv.VCPUs == 0 {
		hv.VCPUs = h.Inventory.Cores
	}
	for _, d := range h.Inventory.Disks {
		hv.DiskGiB += d.SizeGiB
	}
	if addr := netAddr(h, "mgmt"); addr.IsValid() {
		hv.MgmtAddr = addr.String()
		hv.URI = strings.ReplaceAll(hh.uri, "{mgmt}", hv.MgmtAddr)
		hv.PeerURI = strings.ReplaceAll(hh.peerURI, "{mgmt}", hv.MgmtAddr)
	}
	if addr := netAddr(h, "cluster"); addr.IsValid() {
		hv.ClusterAddr = addr.String()
	}
	switch {
	case h.Administrative == inventory.Locked:
		hv.Down = "locked"
	case h.Availability != inventory.Available && h.Availability != inventory.Degraded:
		hv.Down = string(h.Availability)
	case hv.URI == "":
		hv.Down = "no management address"
	}
	switch h.Availability {
	case inventory.Failed, inventory.Offline, inventory.PowerOff:
		hv.Lost = true
	}
	return hv
}

// netAddr is the address of the host's NIC named after a site network
// (mgmt, cluster), if any.
func netAddr(h inventory.Host, network string) netip.Addr {
	for _, n := range h.Inventory.NICs {
		if n.Name != network {
			continue
		}
		for _, a := range n.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil {
				return p.Addr()
			}
			if ip, err := netip.ParseAddr(a); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}

func (s *Subcloud) registerServers(srv *rest.Server, a *auth.Service) {
	srv.Handle("listServers", http.MethodGet, "/v1/servers", a.Require(auth.Reader), s.listServers)
	srv.Handle("createServer", http.MethodPost, "/v1/servers", a.Require(auth.Operator), s.createServer)
	srv.Handle("getServer", http.MethodGet, "/v1/servers/{id}", a.Require(auth.Reader), s.getServer)
	srv.Handle("deleteServer", http.MethodDelete, "/v1/servers/{id}", a.Require(auth.Operator), s.deleteServer)
	srv.Handle("serverAction", http.MethodPost, "/v1/servers/{id}/action", a.Require(auth.Operator), s.serverAction)
	srv.Handle("serverConsoleLog", http.MethodGet, "/v1/servers/{id}/console-log", a.Require(auth.Reader), s.serverConsoleLog)
	srv.Handle("serverStats", http.MethodGet, "/v1/servers/{id}/stats", a.Require(auth.Reader), s.serverStats)
	srv.Handle("listHypervisors", http.MethodGet, "/v1/hypervisors", a.Require(auth.Reader), s.listHypervisors)
	srv.Handle("listServerGroups", http.MethodGet, "/v1/server-groups", a.Require(auth.Reader), s.listServerGroups)
	srv.Handle("createServerGroup", http.MethodPost, "/v1/server-groups", a.Require(auth.Operator), s.createServerGroup)
	srv.Handle("getServerGroup", http.MethodGet, "/v1/server-groups/{id}", a.Require(auth.Reader), s.getServerGroup)
	srv.Handle("deleteServerGroup", http.MethodDelete, "/v1/server-groups/{id}", a.Require(auth.Operator), s.deleteServerGroup)
}

func (s *Subcloud) listServers(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, compute.ServerFilters...)
	if err != nil {
		return 0, nil, err
	}
	items, next, err := s.Servers.ListServers(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[compute.Server]{Items: items, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Subcloud) createServer(r *http.Request) (int, any, error) {
	var req compute.CreateServer
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	sv, err := s.Servers.CreateServer(r.Context(), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, sv, nil
}

func (s *Subcloud) getServer(r *http.Request) (int, any, error) {
	sv, err := s.Servers.Server(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sv, nil
}

func (s *Subcloud) deleteServer(r *http.Request) (int, any, error) {
	if err := s.Servers.DeleteServer(r.Context(), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, nil, nil
}

func (s *Subcloud) serverAction(r *http.Request) (int, any, error) {
	var req compute.ServerAction
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	sv, err := s.Servers.Act(r.Context(), rest.Var(r, "id"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, sv, nil
}

// ConsoleLog is the body of GET /v1/servers/{id}/console-log.
type ConsoleLog struct {
	Output string `json:"output"`
}

func (s *Subcloud) serverConsoleLog(r *http.Request) (int, any, error) {
	lines := 0
	if v := r.URL.Query().Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, errs.Field("lines", "must be a non-negative integer")
		}
		lines = n
	}
	out, err := s.Servers.ConsoleLog(r.Context(), rest.Var(r, "id"), lines)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ConsoleLog{Output: out}, nil
}

func (s *Subcloud) serverStats(r *http.Request) (int, any, error) {
	st, err := s.Servers.ServerStats(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, st, nil
}

func (s *Subcloud) listHypervisors(r *http.Request) (int, any, error) {
	hs, err := s.Servers.Hypervisors(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if hs == nil {
		hs = []compute.HypervisorInfo{}
	}
	return http.StatusOK, rest.List[compute.HypervisorInfo]{Items: hs}, nil
}

func (s *Subcloud) listServerGroups(r *http.Request) (int, any, error) {
	gs, err := s.Servers.ListServerGroups(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[compute.ServerGroup]{Items: gs}, nil
}

func (s *Subcloud) createServerGroup(r *http.Request) (int, any, error) {
	var g compute.ServerGroup
	if err := rest.DecodeJSON(r, &g); err != nil {
		return 0, nil, err
	}
	if g.ID != "" || len(g.Members) > 0 {
		return 0, nil, errs.Field("id", "id and members are not set by the caller")
	}
	out, err := s.Servers.CreateServerGroup(r.Context(), g)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, out, nil
}

func (s *Subcloud) getServerGroup(r *http.Request) (int, any, error) {
	g, err := s.Servers.ServerGroup(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, g, nil
}

func (s *Subcloud) deleteServerGroup(r *http.Request) (int, any, error) {
	if err := s.Servers.DeleteServerGroup(r.Context(), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
