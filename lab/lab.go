// Package lab runs a whole Petrel cloud on one machine: a central cloud and
// subclouds of every shape, for newcomers, integration tests and benchmarks.
//
// This first version starts central and one site controller per site as
// processes on 127.0.0.1, each with its own data directory under the lab
// directory, and writes lab.json (brief §8). Hosts as network namespaces,
// chassis (vbmc) and agents come next; lab.json already has their place.
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/petrel-edge/petrel/swpatch"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
)

// DefaultDir is where the lab lives without --dir or PETREL_LAB_DIR.
const DefaultDir = "/var/lib/petrel/lab"

// SiteSpec is one site of the lab.
type SiteSpec struct {
	Name    string
	Shape   inventory.Shape
	Workers int // multi-server only
}

// DefaultSites is the default lab of brief §8.
func DefaultSites() []SiteSpec {
	return []SiteSpec{
		{Name: "site-sx", Shape: inventory.Simplex},
		{Name: "site-dx", Shape: inventory.Duplex},
		{Name: "site-std", Shape: inventory.MultiServer, Workers: 2},
	}
}

var siteSpecPattern = regexp.MustCompile(`^([a-z][a-z0-9-]*)=(simplex|duplex|multi-server)(?::(\d+))?$`)

// ParseSites parses the --sites grammar: NAME=SHAPE[:WORKERS],...
func ParseSites(s string) ([]SiteSpec, error) {
	var out []SiteSpec
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		m := siteSpecPattern.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			return nil, fmt.Errorf("--sites %q: want NAME=simplex|duplex|multi-server[:WORKERS], e.g. site-std=multi-server:2", part)
		}
		if err := inventory.ValidateSiteName("site", m[1]); err != nil {
			return nil, fmt.Errorf("--sites: %s: %w", m[1], err)
		}
		if seen[m[1]] {
			return nil, fmt.Errorf("--sites: %s given twice", m[1])
		}
		seen[m[1]] = true
		sp := SiteSpec{Name: m[1], Shape: inventory.Shape(m[2])}
		if m[3] != "" {
			if sp.Shape != inventory.MultiServer {
				return nil, fmt.Errorf("--sites: %s: only multi-server sites take a worker count", m[1])
			}
			n, _ := strconv.Atoi(m[3])
			if n > 16 {
				return nil, fmt.Errorf("--sites: %s: at most 16 workers", m[1])
			}
			sp.Workers = n
		} else if sp.Shape == inventory.MultiServer {
			sp.Workers = 2
		}
		out = append(out, sp)
	}
	return out, nil
}

// File is lab.json, version 1 (brief §8).
type File struct {
	Version      int          `json:"version"`
	Dir          string       `json:"dir"`
	CACert       string       `json:"ca_cert"`
	Central      CentralEntry `json:"central"`
	PatchSigning PatchSigning `json:"patch_signing"`
	Sites        []SiteEntry  `json:"sites"`
	// Machines are bare machines (lab add-machine --bare), not yet sites
	// of the lab's own making.
	Machines []MachineEntry `json:"machines,omitempty"`
}

// CentralEntry is lab.json's central.
type CentralEntry struct {
	URL          string `json:"url"`
	Token        string `json:"token"`
	DashboardURL string `json:"dashboard_url"`
	// HA describes central's 1+1 pair (lab up --central-ha); nil: one
	// central.
	HA *CentralHAEntry `json:"ha,omitempty"`
}

// PatchSigning names the lab's patch signing keys.
type PatchSigning struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
}

// patchSigning is where a lab keeps its patch signing keys: DIR/keys/,
// the private one 0600.
func patchSigning(dir string) PatchSigning {
	return PatchSigning{PrivateKey: filepath.Join(dir, "keys", "patch-signing.key"),
		PublicKey: filepath.Join(dir, "keys", "patch-signing.pub")}
}

// SiteEntry is one site in lab.json.
type SiteEntry struct {
	Name      string         `json:"name"`
	Shape     string         `json:"shape"`
	URL       string         `json:"url"`
	Token     string         `json:"token"`
	OpenStack OpenStackEntry `json:"openstack"`
	Hosts     []HostEntry    `json:"hosts"`
}

// OpenStackEntry is how OpenStack clients reach a site.
type OpenStackEntry struct {
	AuthURL  string `json:"auth_url"`
	Project  string `json:"project"`
	Domain   string `json:"domain"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// HostEntry is one lab host.
type HostEntry struct {
	Name        string            `json:"name"`
	UUID        string            `json:"uuid"`
	Personality string            `json:"personality"`
	Netns       string            `json:"netns"`
	Addresses   map[string]string `json:"addresses"`
	LibvirtURI  string            `json:"libvirt_uri"`
	BMC         BMCEntry          `json:"bmc"`
}

// BMCEntry is how to reach a lab host's BMC (its chassis): ipmi and
// redfish from the machine's root namespace (127.0.0.1), site_ipmi and
// site_redfish from inside the site (any host's namespace; the BMC's
// address on the site's management network), with the credentials also
// as a 0600 file for clients that take one.
type BMCEntry struct {
	Type            string `json:"type"` // what host management should use: dynamic
	IPMI            string `json:"ipmi"`
	Redfish         string `json:"redfish"`
	Username        string `json:"username"`
	Password        string `json:"password"`
	CredentialsFile string `json:"credentials_file"`
	Address         string `json:"address"`
	SiteIPMI        string `json:"site_ipmi"`
	SiteRedfish     string `json:"site_redfish"`
}

// Config configures Up.
type Config struct {
	Dir    string
	Binary string // the petrel executable to run; default: this one
	Sites  []SiteSpec
	// NoDemo declares no demo service group at any site (tests of host
	// recovery, where a host holding an active role would be fenced
	// instead of given its grace period).
	NoDemo bool
	// CentralHA runs central as a 1+1 pair on PostgreSQL with an etcd
	// election (centralha.go) instead of one central on SQLite.
	CentralHA bool
	Logger    *slog.Logger
}

// Paths inside the lab directory.
const (
	fileName   = "lab.json"
	stateDir   = "run" // pid files; its presence means a lab was started here
	tokenTTL   = 30 * 24 * time.Hour
	readyLimit = 60 * time.Second
)

// ErrRunning reports a lab directory already in use.
var ErrRunning = errors.New("lab: a lab already exists in this directory")

// Up builds and starts the lab and returns lab.json's contents once every
// site answers, has its test images and flavors (if it runs VMs), and every
// host has reported and been assigned. On failure it tears down whatever it
// made.
func Up(ctx context.Context, cfg Config) (_ *File, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("lab: Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if len(cfg.Sites) == 0 {
		cfg.Sites = DefaultSites()
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := Prerequisites(ctx); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, stateDir)); err == nil {
		return nil, fmt.Errorf("%w: %s (run 'petrel lab down --dir %s' first)", ErrRunning, dir, dir)
	}
	// The test images are built (or found in the cache) before anything
	// starts: a lab whose sites run VMs is not up without them, and a
	// failed build (no Debian archive reachable on a cold cache, say)
	// leaves nothing to tear down.
	var images []SeedImage
	if specsRunVMs(cfg.Sites) {
		start, cache := time.Now(), guestimage.DefaultCacheDir()
		if images, err = TestImages(ctx, cache); err != nil {
			return nil, fmt.Errorf("lab: every site with a hypervisor host gets the test images %s and %s, "+
				"built from Debian packages (apt) into %s (PETREL_GUEST_CACHE): %w", guestimage.Test, guestimage.TestV2, cache, err)
		}
		cfg.Logger.Info("test images ready", "cache", cache, "took", time.Since(start).Round(time.Millisecond))
	}
	if err := os.MkdirAll(filepath.Join(dir, stateDir), 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = Down(context.WithoutCancel(ctx), dir)
		}
	}()
	if _, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "Petrel lab CA"); err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "ca", pki.CACertFile)
	prefix := prefixFor(dir)
	net, err := hostnet.New(hostnet.Config{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	// The lab's patch signing key pair: patches built with it are
	// trusted by every site (and agent) of the lab.
	signing := patchSigning(dir)
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, err
	}
	if err := swpatch.GenerateKeyPair(signing.PrivateKey, signing.PublicKey); err != nil {
		return nil, err
	}
	f := &File{Version: 1, Dir: dir, CACert: caFile, PatchSigning: signing, Sites: []SiteEntry{}}

	// Central, in the root namespace, with a listener for the sites' links.
	centralDir := filepath.Join(dir, "central")
	sitePort, err := freePort()
	if err != nil {
		return nil, err
	}
	var centralURL string
	var centralAlive func() bool
	if cfg.CentralHA {
		var ha *CentralHAEntry
		if centralURL, ha, err = startCentralPair(ctx, cfg, dir, centralDir, netJoin("127.0.0.1", sitePort)); err != nil {
			return nil, err
		}
		f.Central.HA = ha
		centralAlive = func() bool {
			procs, _ := Processes(dir)
			for _, p := range procs {
				if slices.Contains(CentralMembers, p.Name) && p.Running {
					return true
				}
			}
			return false
		}
	} else {
		var centralPID int
		centralURL, centralPID, err = startDaemon(cfg, dir, "central", centralDir, "central",
			map[string]any{"site_listen": netJoin("127.0.0.1", sitePort), "patch_public_key": patchSigning(dir).PublicKey})
		if err != nil {
			return nil, err
		}
		centralAlive = func() bool { return ours(centralPID, dir) }
	}
	f.Central.URL, f.Central.DashboardURL = centralURL, centralURL+"/"
	if f.Central.Token, err = readyAndToken(ctx, centralURL, caFile, centralDir, centralAlive); err != nil {
		return nil, fmt.Errorf("lab: central: %w; its log ends:\n%s", err, tail(filepath.Join(dir, "logs", "central.log"), 8))
	}
	capi, _ := client.New(client.Config{URL: centralURL, CACert: caFile, Token: f.Central.Token})
	for _, sp := range cfg.Sites {
		if err := capi.Do(ctx, http.MethodPost, "/v1/subclouds", nil, map[string]string{"name": sp.Name, "shape": string(sp.Shape)}, nil); err != nil {
			return nil, fmt.Errorf("lab: register %s at central: %w", sp.Name, err)
		}
	}

	// Every host: namespace, cgroup, software root, chassis. Site
	// controllers dial home through their site's WAN route.
	var fabric FabricConfig
	ids := map[string]string{} // site/host -> machine id
	for i, sp := range cfg.Sites {
		if err := net.EnsureSite(ctx, sp.Name); err != nil {
			return nil, err
		}
		// The site's namespace holds its forwarders: the WAN link's end
		// on the site's gateway address, and the way in to its API (on
		// the floating address of a controller pair).
		gw, siteNS, err := net.EnsureGateway(ctx, sp.Name, i)
		if err != nil {
			return nil, err
		}
		api := siteAPIAddr(sp.Shape, i)
		wan := netJoin(gw.String(), WANPort)
		home, err := siteHome(ctx, capi, dir, sp.Name, wan)
		if err != nil {
			return nil, err
		}
		if pairSite(sp.Shape) {
			if err := preparePairSecrets(dir, sp.Name, home); err != nil {
				return nil, err
			}
		}
		siteURL := "https://" + netJoin(api.String(), SiteAPIPort)
		lc, err := siteLibvirtClient(dir, sp.Name)
		if err != nil {
			return nil, err
		}
		entry := SiteEntry{Name: sp.Name, Shape: string(sp.Shape), Hosts: []HostEntry{}}
		for _, h := range hostsOf(sp, i) {
			if h.RunsSite {
				h.Home = home
			}
			if cfg.NoDemo {
				h.Demo = nil
			}
			h.Libvirt = lc
			he, id, err := buildHost(ctx, net, dir, prefix, cfg.Binary, h, h.Name, siteURL)
			if err != nil {
				return nil, err
			}
			ids[sp.Name+"/"+h.Name] = id
			entry.Hosts = append(entry.Hosts, he)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		listen := netJoin("127.0.0.1", port)
		fabric.Routes = append(fabric.Routes,
			Route{Name: sp.Name + "-api", Listen: listen, Netns: siteNS, Target: netJoin(api.String(), SiteAPIPort)},
			Route{Name: sp.Name + "-wan", Outbound: true, Listen: wan, Netns: siteNS, Target: netJoin("127.0.0.1", sitePort)})
		entry.URL = "https://" + listen
		f.Sites = append(f.Sites, entry)
	}
	if err := writeYAML(filepath.Join(dir, "fabric.yaml"), fabric); err != nil {
		return nil, err
	}
	fabricPID, err := startProcess(dir, cfg.Binary, "fabric", "lab", "fabric", "--config", filepath.Join(dir, "fabric.yaml"))
	if err != nil {
		return nil, err
	}

	// Wait for each site controller; trade its bootstrap password for a lab
	// token; give every host its join token.
	for i, sp := range cfg.Sites {
		ctlRoot := pathsOf(dir, sp.Name, "controller-0")
		alive := func() bool { return running(fabricPID) }
		tok, err := readyAndToken(ctx, f.Sites[i].URL, caFile, ctlRoot.f("data"), alive)
		if errors.Is(err, ErrExited) {
			return nil, fmt.Errorf("lab: the fabric (WAN forwarders) exited while site %s started; its log ends:\n%s", sp.Name, tail(filepath.Join(dir, "logs", "fabric.log"), 8))
		}
		if err != nil {
			return nil, fmt.Errorf("lab: site %s: %w; its log ends:\n%s", sp.Name, err, tail(ctlRoot.f("logs/subcloud.log"), 8))
		}
		f.Sites[i].Token = tok
		api, _ := client.New(client.Config{URL: f.Sites[i].URL, CACert: caFile, Token: tok})
		for _, h := range f.Sites[i].Hosts {
			if err := giveJoinToken(ctx, api, pathsOf(dir, sp.Name, h.Name)); err != nil {
				return nil, fmt.Errorf("lab: %s/%s: %w", sp.Name, h.Name, err)
			}
		}
	}
	// The test images and flavors, at every site that runs VMs.
	start := time.Now()
	n, err := seedSites(ctx, f, images)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("seeded test images and flavors", "sites", n, "took", time.Since(start).Round(time.Millisecond))
	// Wait until every host reported, then assign names and personalities.
	for i, sp := range cfg.Sites {
		api, _ := client.New(client.Config{URL: f.Sites[i].URL, CACert: caFile, Token: f.Sites[i].Token})
		for j, h := range f.Sites[i].Hosts {
			id := ids[sp.Name+"/"+h.Name]
			if err := waitReported(ctx, api, id, 60*time.Second); err != nil {
				return nil, fmt.Errorf("lab: %s/%s: %w; its agent's log ends:\n%s", sp.Name, h.Name, err,
					tail(pathsOf(dir, sp.Name, h.Name).f("logs/agent.log"), 8))
			}
			body := map[string]string{"personality": h.Personality, "hostname": h.Name}
			if err := api.Do(ctx, http.MethodPatch, "/v1/hosts/"+id, nil, body, nil); err != nil {
				return nil, fmt.Errorf("lab: assign %s/%s: %w", sp.Name, h.Name, err)
			}
			f.Sites[i].Hosts[j].UUID = id
			// Host management reaches the host's chassis as its BMC, from
			// inside the site; then the host goes into service.
			b := h.BMC
			bmcBody := map[string]string{"type": "dynamic", "ipmi": b.SiteIPMI, "redfish": b.SiteRedfish,
				"username": b.Username, "password": b.Password}
			if err := api.Do(ctx, http.MethodPut, "/v1/hosts/"+id+"/bmc", nil, bmcBody, nil); err != nil {
				return nil, fmt.Errorf("lab: set the BMC of %s/%s: %w", sp.Name, h.Name, err)
			}
			if err := api.Do(ctx, http.MethodPost, "/v1/hosts/"+id+"/action", nil, map[string]string{"action": "unlock"}, nil); err != nil {
				return nil, fmt.Errorf("lab: unlock %s/%s: %w", sp.Name, h.Name, err)
			}
		}
	}
	// And until every site is online at central with all its hosts.
	for i, sp := range cfg.Sites {
		if err := waitOnline(ctx, capi, sp.Name, len(f.Sites[i].Hosts), 60*time.Second); err != nil {
			return nil, fmt.Errorf("lab: %s: %w; its controller's log ends:\n%s", sp.Name, err,
				tail(pathsOf(dir, sp.Name, "controller-0").f("logs/subcloud.log"), 8))
		}
	}
	if err := f.save(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) save() error {
	b, _ := json.MarshalIndent(f, "", "  ")
	return atomicfile.Write(filepath.Join(f.Dir, fileName), append(b, '\n'), 0o600)
}

func netJoin(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// buildHost creates a host's namespace and cgroup, lays out its software
// root and starts its chassis, which boots it.
func buildHost(ctx context.Context, hn *hostnet.Lab, dir, prefix, binary string, h hostSpec, key, siteURL string) (HostEntry, string, error) {
	host, err := hn.AddHost(ctx, h.Site, key, h.SiteIndex, h.Index)
	if err != nil {
		return HostEntry{}, "", err
	}
	bmcAddr, siteNS, err := hn.EnsureBMC(ctx, h.Site, h.SiteIndex, h.Index)
	if err != nil {
		return HostEntry{}, "", err
	}
	bcfg, be, err := prepareBMC(dir, pathsOf(dir, h.Site, key), bmcAddr, siteNS)
	if err != nil {
		return HostEntry{}, "", err
	}
	id, err := prepareHost(dir, prefix, binary, h, key, siteURL, bcfg)
	if err != nil {
		return HostEntry{}, "", err
	}
	p := pathsOf(dir, h.Site, key)
	if _, err := startProcess(dir, binary, "vbmc-"+h.Site+"-"+key, "vbmc", "--config", p.f("vbmc.yaml")); err != nil {
		return HostEntry{}, "", err
	}
	he := HostEntry{Name: key, UUID: id, Personality: string(h.Personality), Netns: host.Netns(),
		Addresses: map[string]string{"mgmt": host.Addr(hostnet.Mgmt).String(), "cluster": host.Addr(hostnet.Cluster).String()},
		BMC:       be}
	if h.Hypervisor {
		he.LibvirtURI = libvirtd.TLSURI(host.Addr(hostnet.Mgmt).String())
	}
	return he, id, nil
}

// giveJoinToken creates a join token at the site and writes it (0600) where
// the host's agent waits for it.
func giveJoinToken(ctx context.Context, api *client.Client, p hostPaths) error {
	var it struct {
		Token string `json:"token"`
	}
	if err := api.Do(ctx, http.MethodPost, "/v1/join-tokens", nil, map[string]any{"description": "lab " + p.rootDir(), "ttl_s": 600}, &it); err != nil {
		return err
	}
	return atomicfile.Write(p.f("join.token"), []byte(it.Token+"\n"), 0o600)
}

// waitOnline polls central until the site is online and reports hosts.
func waitOnline(ctx context.Context, api *client.Client, site string, hosts int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var sc central.Subcloud
		if err := api.Do(ctx, http.MethodGet, "/v1/subclouds/"+site, nil, nil, &sc); err == nil && sc.Availability == central.Online && sc.Hosts.Total == hosts {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not online at central with its %d hosts within %s", hosts, limit)
}

// siteHome has central issue a site's link certificate for a key made
// here (as an operator setting up a site would) and returns how the site's
// controller dials home.
func siteHome(ctx context.Context, capi *client.Client, dir, site, wan string) (*homeInfo, error) {
	p := pathsOf(dir, site, "controller-0")
	if err := os.MkdirAll(p.f("home"), 0o700); err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := pki.NewCSR(site)
	if err != nil {
		return nil, err
	}
	var creds central.SiteCredentials
	if err := capi.Do(ctx, http.MethodPost, "/v1/subclouds/"+site+"/certificate", nil,
		central.SiteCertificateRequest{CSR: string(csrPEM)}, &creds); err != nil {
		return nil, fmt.Errorf("lab: certificate for %s: %w", site, err)
	}
	h := &homeInfo{Addr: wan, CACert: p.f("home/central-ca.crt"), CertFile: p.f("home/site.crt"),
		KeyFile: p.f("home/site.key"), PublicKeyFile: p.f("home/central-relay.pub.pem")}
	for file, data := range map[string]string{h.KeyFile: string(keyPEM), h.CertFile: creds.Certificate,
		h.CACert: creds.CACertificate, h.PublicKeyFile: creds.RelayPublicKey} {
		if err := atomicfile.Write(file, []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// waitReported polls the site until the host has reported its inventory.
func waitReported(ctx context.Context, api *client.Client, id string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		var h inventory.Host
		err := api.Do(ctx, http.MethodGet, "/v1/hosts/"+id, nil, nil, &h)
		if err == nil && h.ReportGeneration > 0 {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("host %s did not report within %s (last: %v)", id, limit, last)
}

// startDaemon writes a daemon's configuration and starts it detached, in its
// own session, logging to DIR/logs; its pid goes to DIR/run. It returns the
// daemon's URL and pid.
func startDaemon(cfg Config, dir, daemon, dataDir, name string, extra map[string]any) (string, int, error) {
	return startDaemonAt(cfg, dir, daemon, dataDir, name, daemon+".yaml", extra)
}

// startDaemonAt is startDaemon with the configuration file's name given
// (two daemons sharing a data directory); extra may set "listen".
func startDaemonAt(cfg Config, dir, daemon, dataDir, name, cfgName string, extra map[string]any) (string, int, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", 0, err
	}
	port, err := freePort()
	if err != nil {
		return "", 0, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := map[string]any{
		"listen": listen, "data_dir": dataDir, "log_level": "info",
		"tls": map[string]any{"ca_dir": filepath.Join(dir, "ca")},
	}
	for k, v := range extra {
		conf[k] = v
	}
	y, _ := yaml.Marshal(conf)
	cfgPath := filepath.Join(dataDir, cfgName)
	if err := atomicfile.Write(cfgPath, y, 0o600); err != nil {
		return "", 0, err
	}
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return "", 0, err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", 0, err
	}
	defer logf.Close()
	// argv names the lab dir, the site and the host (through the config path).
	cmd := exec.Command(cfg.Binary, daemon, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", 0, fmt.Errorf("lab: start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := atomicfile.Write(filepath.Join(dir, stateDir, name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return "", 0, err
	}
	url := "https://" + listen
	if l, ok := conf["listen"].(string); ok {
		url = "https://" + l
	}
	cfg.Logger.Info("started", "process", name, "pid", pid, "url", url)
	return url, pid, nil
}

func freePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if handOut("tcp", port) {
			return port, nil
		}
	}
}

// handedOut are the ports this process has picked for daemons that bind
// them later (the fabric, the chassis' BMCs): the kernel may offer a
// port again while it is still unbound, and two daemons of one lab must
// never get the same one. It is the process's own record, as the
// kernel's port table is the machine's.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// handOut records a port as picked; false if it was picked before.
func handOut(proto string, port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	key := proto + "/" + strconv.Itoa(port)
	if handedOut.ports[key] {
		return false
	}
	handedOut.ports[key] = true
	return true
}

// readyAndToken waits for a daemon's /readyz, then logs in as the bootstrap
// admin and creates a long-lived lab token.
func readyAndToken(ctx context.Context, url, caFile, dataDir string, alive func() bool) (string, error) {
	if err := WaitReady(ctx, url, caFile, readyLimit, alive); err != nil {
		return "", err
	}
	pw, err := auth.ReadSecretFile(filepath.Join(dataDir, server.AdminPasswordFile))
	if err != nil {
		return "", err
	}
	c, err := client.New(client.Config{URL: url, CACert: caFile})
	if err != nil {
		return "", err
	}
	var login auth.IssuedToken
	if err := c.Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: auth.BootstrapAdmin, Password: pw}, &login); err != nil {
		return "", err
	}
	c, _ = client.New(client.Config{URL: url, CACert: caFile, Token: login.Token})
	var lab auth.IssuedToken
	if err := c.Do(ctx, http.MethodPost, "/v1/tokens", nil,
		auth.CreateTokenRequest{Description: "lab", TTLSeconds: int64(tokenTTL / time.Second)}, &lab); err != nil {
		return "", err
	}
	_ = c.Do(ctx, http.MethodDelete, "/v1/tokens/"+login.Detail.ID, nil, nil, nil)
	return lab.Token, nil
}

// ErrExited reports a daemon that exited while it was awaited.
var ErrExited = errors.New("the process exited")

// WaitReady polls url/readyz until it answers 200 or the limit passes, or
// alive (if not nil) reports the process gone.
func WaitReady(ctx context.Context, url, caFile string, limit time.Duration, alive func() bool) error {
	pool, err := pki.CertPool(caFile)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	gone := 0 // consecutive polls that found the process gone
	for time.Now().Before(deadline) {
		// Gone twice, a poll apart: a process just started can read as
		// gone once — its /proc cmdline is empty until the kernel has
		// finished the exec, after the parent's Start returned.
		if alive != nil && !alive() {
			if gone++; gone >= 2 {
				return ErrExited
			}
		} else {
			gone = 0
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz answered %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var uae x509.UnknownAuthorityError
	if errors.As(last, &uae) {
		return fmt.Errorf("%s presents a certificate not from the lab CA: %w", url, last)
	}
	return fmt.Errorf("%s not ready after %s: %w", url, limit, last)
}

// Load reads lab.json from dir.
func Load(dir string) (*File, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab in %s (start one with 'petrel lab up')", dir)
		}
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, fileName), err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%s: version %d; this petrel reads version 1", filepath.Join(dir, fileName), f.Version)
	}
	return &f, nil
}

// Process is a lab process and whether it runs.
type Process struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Running bool   `json:"running"`
}

// Processes lists the lab's processes from their pid files.
func Processes(dir string) ([]Process, error) {
	entries, err := os.ReadDir(filepath.Join(dir, stateDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Process
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, stateDir, e.Name()))
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		out = append(out, Process{Name: name, PID: pid, Running: ours(pid, dir)})
	}
	return out, nil
}

// ours reports whether pid is alive and a process of the lab in dir: its
// argv names the lab dir. A recycled pid is never signalled.
// running reports whether process pid exists and has not exited (a
// zombie has). Unlike ours, it does not read the command line, which a
// loaded machine was seen to answer without the lab dir for a process
// that ran on: lab up then took its fabric for dead.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	switch b[i+2] {
	case 'Z', 'X':
		return false
	}
	return true
}

func ours(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), dir+string(filepath.Separator))
}

// Down stops every lab process (SIGTERM, then SIGKILL after 10 s) and removes
// everything the lab made in dir. It works after a crashed Up too.
func Down(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	procs, err := Processes(dir)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Running {
			_ = syscall.Kill(p.PID, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range procs {
		for p.Running && ours(p.PID, dir) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if p.Running && ours(p.PID, dir) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	for _, p := range procs {
		for i := 0; i < 100 && ours(p.PID, dir); i++ {
			time.Sleep(20 * time.Millisecond) // a SIGKILLed process is gone within moments
		}
		if ours(p.PID, dir) {
			return fmt.Errorf("lab: process %s (pid %d) did not stop", p.Name, p.PID)
		}
	}
	if err := teardownHosts(ctx, dir); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "central-ha", "pg-socket-dir")); err == nil {
		if sock := strings.TrimSpace(string(b)); strings.HasPrefix(sock, os.TempDir()+"/petrel-cpg-") {
			_ = os.RemoveAll(sock)
		}
	}
	for _, sub := range []string{"central", "central-ha", "sites", "hosts", "machines", "ca", "ca-etcd", "keys", "logs", "fabric.yaml", WANFaultsFile, fileName, stateDir} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	_ = os.Remove(dir) // only if empty: never remove what the lab did not make
	return nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
