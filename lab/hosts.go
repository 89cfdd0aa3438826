package lab

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/hostinit"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/lab/vbmc"
	"github.com/petrel-edge/petrel/servicemgr"
)

// Ports on a site controller's management address: its API, and the WAN
// route to central (served by the lab fabric inside the namespace).
const (
	SiteAPIPort = 8443
	WANPort     = 9443
)

// homeInfo is how a site controller dials home.
type homeInfo struct {
	Addr          string `json:"addr"`
	CACert        string `json:"ca_cert"`
	CertFile      string `json:"cert_file"`
	KeyFile       string `json:"key_file"`
	PublicKeyFile string `json:"public_key_file"`
}

// hostSpec is one lab host to build.
type hostSpec struct {
	Site        string
	Shape       inventory.Shape
	SiteIndex   int
	Name        string // "" for a host added without a name (it gets one when assigned)
	Index       int
	Personality inventory.Personality // "" for a bare host
	RunsSite    bool                  // controller-0 (and controller-1 of a pair): runs the site controller
	Hypervisor  bool                  // runs VMs: its own libvirtd
	Home        *homeInfo             // the site controller's link to central
	// Libvirt is the site controller's libvirt client identity: its
	// files (on the host that runs the site controller) and the DN the
	// site's hypervisor hosts admit. Nil for a host added later.
	Libvirt *libvirtClient
	// Demo are the hosts of the site's demo service group (DemoGroup),
	// declared in the site controller's configuration; nil: none.
	Demo []string
	// Etcd are the site's etcd members (brief §5): controller-0 alone,
	// or on a multi-server site controller-0, controller-1 and worker-0.
	Etcd []etcdPeer
}

// etcdPeer is one member of a site's etcd cluster.
type etcdPeer struct {
	Name  string
	Index int // the host's index at its site (its addresses)
}

// Ports of a site's etcd members, on each member's mgmt address.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// libvirtClient is a site controller's TLS client certificate for its
// hosts' libvirtd, from the lab CA.
type libvirtClient struct {
	CAFile, CertFile, KeyFile string
	DN                        string // as libvirtd's tls_allowed_dn_list matches it
}

// libvirtClientName is the common name of a site controller's libvirt
// client certificate: one per site, so that a host admits only its own
// site's controller.
func libvirtClientName(site string) string { return "petrel-site-" + site }

// siteLibvirtClient issues the site controller's libvirt client
// certificate into controller-0's root: pki/libvirt-client/, laid out as
// libvirt's pkipath wants it (cacert.pem, clientcert.pem, clientkey.pem
// 0600), so that virsh can use it too (docs/lab.md).
func siteLibvirtClient(dir, site string) (*libvirtClient, error) {
	p := pathsOf(dir, site, "controller-0")
	if err := os.MkdirAll(p.f("pki/libvirt-client"), 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, err
	}
	// No key usage extension: libvirtd (GnuTLS checks) refuses an ECDSA
	// certificate whose critical key usage lacks keyEncipherment.
	is, err := ca.IssueClient(libvirtClientName(site), 365*24*time.Hour, pki.NoKeyUsage)
	if err != nil {
		return nil, err
	}
	lc := &libvirtClient{CAFile: p.f("pki/libvirt-client/cacert.pem"), CertFile: p.f("pki/libvirt-client/clientcert.pem"),
		KeyFile: p.f("pki/libvirt-client/clientkey.pem")}
	if err := is.Write(lc.CertFile, lc.KeyFile); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(lc.CAFile, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(is.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if lc.DN, err = libvirtd.SubjectDN(cert); err != nil {
		return nil, err
	}
	return lc, nil
}

// hostLibvirtd issues a hypervisor host's libvirtd server certificate
// (CN the host, SAN its mgmt address, where the site controller dials it)
// into the host's root (pki/, the key 0600) and returns the daemon's TLS
// settings: the lab CA, and only its own site's controller admitted.
func hostLibvirtd(dir string, p hostPaths, site, host string, mgmt netip.Addr, client *libvirtClient) (*libvirtd.TLSConfig, error) {
	if client == nil {
		return nil, fmt.Errorf("lab: %s runs VMs but its site has no libvirt client certificate", host)
	}
	if err := os.MkdirAll(p.f("pki"), 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, err
	}
	is, err := ca.IssueServer(host, nil, []net.IP{net.IP(mgmt.AsSlice())}, 365*24*time.Hour, pki.NoKeyUsage)
	if err != nil {
		return nil, err
	}
	// Its client identity toward the site's other hosts (peer-to-peer
	// live migration), admitted by them as by it: hosts of its own site
	// only.
	peer, err := ca.IssueClient(libvirtPeerName(site, host), 365*24*time.Hour, pki.NoKeyUsage)
	if err != nil {
		return nil, err
	}
	t := &libvirtd.TLSConfig{CAFile: filepath.Join(dir, "ca", pki.CACertFile), CertFile: p.f("pki/libvirtd.crt"),
		KeyFile: p.f("pki/libvirtd.key"), AllowedDN: []string{client.DN, "O=Petrel,CN=" + libvirtPeerName(site, "*")},
		PeerCertFile: p.f("pki/libvirt-peer.crt"), PeerKeyFile: p.f("pki/libvirt-peer.key")}
	if err := peer.Write(t.PeerCertFile, t.PeerKeyFile); err != nil {
		return nil, err
	}
	return t, is.Write(t.CertFile, t.KeyFile)
}

// libvirtPeerName is the common name of a hypervisor host's libvirt
// client certificate toward its site's other hosts.
func libvirtPeerName(site, host string) string { return "petrel-host-" + site + "-" + host }

// hostsOf lists the hosts of a site of the given shape (brief §8).
func hostsOf(sp SiteSpec, siteIdx int) []hostSpec {
	names := []string{"controller-0"}
	switch sp.Shape {
	case inventory.Duplex:
		names = append(names, "controller-1")
	case inventory.MultiServer:
		names = append(names, "controller-1")
		for w := range sp.Workers {
			names = append(names, fmt.Sprintf("worker-%d", w))
		}
	}
	out := make([]hostSpec, len(names))
	for i, n := range names {
		p := inventory.Controller
		if n[0] == 'w' {
			p = inventory.Worker
		}
		// Both controllers of a pair run the site controller (one
		// active, one standby: docs/ha.md).
		out[i] = hostSpec{Site: sp.Name, Shape: sp.Shape, SiteIndex: siteIdx, Name: n, Index: i, Personality: p,
			RunsSite: i == 0 || (i == 1 && pairSite(sp.Shape)), Hypervisor: runsVMs(sp.Shape, p)}
	}
	peers := []etcdPeer{{Name: names[0], Index: 0}}
	switch {
	case sp.Shape == inventory.MultiServer && len(names) >= 3:
		peers = append(peers, etcdPeer{Name: names[1], Index: 1}, etcdPeer{Name: names[2], Index: 2})
	case pairSite(sp.Shape):
		// A pair without a third member (duplex) keeps its epochs in its
		// replicated database: no etcd (two members make no quorum).
		peers = nil
	}
	for i := range out {
		out[i].Etcd = peers
	}
	if sp.Shape == inventory.MultiServer && len(names) >= 4 {
		// The demo service, 2+1, over every host but controller-0, which
		// runs the site controller (one controller until controllers are
		// 1+1): site-std's controller-1, worker-0 and worker-1. Smaller
		// multi-server sites have none, so that a host's recovery there
		// is not also a service's failover (fencing instead of G).
		out[0].Demo = names[1:]
	}
	return out
}

// DemoGroup is the service group name and port of the lab's demo service.
const (
	DemoGroup = "demo"
	DemoPort  = 8080
)

// demoSpec is the lab's demo service group over hosts (three or more).
func demoSpec(hosts []string) servicemgr.Spec {
	model := "2+1"
	listen := "{cluster}:" + strconv.Itoa(DemoPort)
	return servicemgr.Spec{Name: DemoGroup, Model: model, Hosts: hosts,
		Actions: servicemgr.Actions{Start: []string{"petrel", "demo-service", "--listen", listen, "--state-dir", "{state_dir}"}},
		Health:  servicemgr.HealthCheck{Type: "http", Target: "http://" + listen + "/healthz", IntervalMS: 200, TimeoutMS: 500, Failures: 3}}
}

// runsVMs reports whether a host of a personality runs VMs at a site of a
// shape: workers, and the controllers of simplex and duplex sites, which
// are all-in-one (controller with a worker subfunction). A multi-server
// site's controllers and a bare host (no personality yet) do not.
func runsVMs(shape inventory.Shape, p inventory.Personality) bool {
	switch p {
	case inventory.Worker:
		return true
	case inventory.Controller:
		return shape == inventory.Simplex || shape == inventory.Duplex
	}
	return false
}

// prefixFor gives each lab directory its own namespace prefix: "petrel"
// for the default directory (namespaces petrel-SITE-HOST, as brief §6
// names them), a short hash of the directory otherwise, so that test labs
// never touch the default lab's objects.
func prefixFor(dir string) string {
	if dir == DefaultDir {
		return hostnet.DefaultPrefix
	}
	sum := sha256.Sum256([]byte(dir))
	return "pl" + hex.EncodeToString(sum[:3])
}

// hostPaths are the files of one lab host.
type hostPaths struct{ root string }

func (p hostPaths) rootDir() string { return p.root }
func (p hostPaths) f(rel string) string {
	return filepath.Join(p.root, rel)
}

func pathsOf(dir, site, key string) hostPaths {
	return hostPaths{root: filepath.Join(dir, "hosts", site, key)}
}

// profileFor is the simulated hardware of a host of a personality.
func profileFor(p inventory.Personality) agent.Profile {
	if p == inventory.Controller {
		return agent.Profile{CPUModel: "Intel(R) Xeon(R) Gold 6338N (simulated)", Cores: 16, Threads: 32, NUMANodes: 1,
			MemoryMiB: 65536, Disks: []inventory.Disk{{Name: "sda", SizeGiB: 480, Type: "ssd"}, {Name: "sdb", SizeGiB: 1920, Type: "ssd"}}}
	}
	return agent.Profile{CPUModel: "AMD EPYC 9354 (simulated)", Cores: 32, Threads: 64, NUMANodes: 2, MemoryMiB: 262144,
		Disks: []inventory.Disk{{Name: "nvme0n1", SizeGiB: 3840, Type: "nvme"}},
		PCI: []inventory.PCIDevice{{Address: "0000:3b:00.0", Vendor: "10de", Device: "20b5", Class: "0302"},
			{Address: "0000:af:00.0", Vendor: "8086", Device: "0d58", Class: "1200"}}}
}

// prepareHost lays out a host's software root: slot a with this petrel,
// the active marker, the agent's identity and configuration, the services
// host-init runs and the chassis configuration. It returns the machine id.
func prepareHost(dir, prefix, binary string, h hostSpec, key string, siteURL string, bmcCfg *vbmc.BMCConfig) (string, error) {
	p := pathsOf(dir, h.Site, key)
	for _, d := range []string{"sw/a/bin", "sw/b/bin", "state", "logs", "data"} {
		if err := os.MkdirAll(p.f(d), 0o700); err != nil {
			return "", err
		}
	}
	if err := installBinary(binary, p.f("sw/a/bin/petrel")); err != nil {
		return "", err
	}
	if err := atomicfile.Write(p.f("active"), []byte("a\n"), 0o644); err != nil {
		return "", err
	}
	id := uuid.NewString()
	if err := atomicfile.Write(p.f("state/machine-id"), []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	prof := profileFor(h.Personality)
	if h.Personality == inventory.PersonalityNone {
		prof = profileFor(inventory.Worker)
	}
	if err := writeYAML(p.f("profile.yaml"), prof); err != nil {
		return "", err
	}
	mgmt, err := hostnet.Addr(hostnet.Mgmt, h.SiteIndex, h.Index)
	if err != nil {
		return "", err
	}
	if err := writeYAML(p.f("agent.yaml"), map[string]any{
		"site_url": siteURL, "ca_cert": filepath.Join(dir, "ca", "ca.crt"),
		"join_token_file": p.f("join.token"), "state_dir": p.f("state"), "profile": p.f("profile.yaml"),
		"platform": "lab", "lab": map[string]string{"software_root": p.rootDir(), "chassis": p.f("vbmc.sock")},
		"check_interval": "2s", "patch_public_key": patchSigning(dir).PublicKey,
	}); err != nil {
		return "", err
	}
	services := []hostinit.Service{}
	if h.RunsSite {
		conf := map[string]any{
			"site": h.Site, "shape": string(h.Shape), "listen": net.JoinHostPort(siteAPIAddr(h.Shape, h.SiteIndex).String(), strconv.Itoa(SiteAPIPort)),
			"data_dir": p.f("data"), "tls": map[string]string{"ca_dir": filepath.Join(dir, "ca")}, "log_level": "info",
			// Host maintenance pulses every host on both networks from the
			// controller's interfaces named after them (brief §4 defaults).
			// Recovery steps get 20 s (60 s by default): a lab host boots in
			// about a second.
			"heartbeat":        map[string]any{"step_timeout": "20s"},
			"patch_public_key": patchSigning(dir).PublicKey,
		}
		if h.Home != nil {
			home := *h.Home
			if h.Index != 0 {
				// The pair's copy of the site's link identity
				// (preparePairSecrets).
				c0 := pathsOf(dir, h.Site, "controller-0").rootDir()
				for _, f := range []*string{&home.CACert, &home.CertFile, &home.KeyFile, &home.PublicKeyFile} {
					rel, _ := filepath.Rel(c0, *f)
					*f = p.f(rel)
				}
			}
			conf["central"] = &home
		}
		if ec, ok, err := etcdMember(dir, p, h); err != nil {
			return "", err
		} else if ok {
			if len(h.Etcd) > 1 {
				// The member runs as a host service (below); the site
				// controller, active or standby, is its client.
				ec["client_only"] = true
			}
			conf["etcd"] = ec
		}
		if pairSite(h.Shape) {
			ha, err := pairConfig(dir, h, p)
			if err != nil {
				return "", err
			}
			conf["ha"] = ha
		}
		if len(h.Demo) > 0 {
			if err := writeYAML(p.f("service-groups.yaml"), map[string]any{"service_groups": []servicemgr.Spec{demoSpec(h.Demo)}}); err != nil {
				return "", err
			}
			conf["service_groups"] = p.f("service-groups.yaml")
		}
		if lc := h.Libvirt; lc != nil {
			// The site's hypervisor hosts, over TLS with the controller's
			// own certificate (docs/lab.md, Hypervisor hosts).
			// A live migration's source daemon reaches the destination's
			// with its own peer certificate (libvirtd.PeerPKIPath).
			uri := "qemu+tls://{mgmt}:" + strconv.Itoa(libvirtd.TLSPort) + "/system"
			conf["compute"] = map[string]any{"libvirt_uri": uri, "peer_uri": uri + "?pkipath=" + libvirtd.PeerPKIPath,
				"tls": map[string]string{"ca_file": lc.CAFile, "cert_file": lc.CertFile, "key_file": lc.KeyFile}}
		}
		if err := writeYAML(p.f("subcloud.yaml"), conf); err != nil {
			return "", err
		}
		services = append(services, hostinit.Service{Name: "subcloud", Args: []string{"subcloud", "--config", p.f("subcloud.yaml")}})
	}
	if !h.RunsSite || len(h.Etcd) > 1 {
		if ec, ok, err := etcdMember(dir, p, h); err != nil {
			return "", err
		} else if ok {
			if err := writeYAML(p.f("etcd.yaml"), ec); err != nil {
				return "", err
			}
			services = append(services, hostinit.Service{Name: "etcd", Args: []string{"etcd", "--config", p.f("etcd.yaml")}})
		}
	}
	services = append(services, hostinit.Service{Name: "agent", Args: []string{"agent", "--config", p.f("agent.yaml")}})
	if h.Hypervisor {
		// The host's own libvirtd: its directories under libvirt/ (its mount
		// namespace shows them as /etc/libvirt, /var/lib/libvirt, ...),
		// listening with TLS on the mgmt address only, where the site
		// controller on any host of the site reaches it (qemu+tls, the
		// controller's certificate admitted, no other: docs/lab.md).
		tlsCfg, err := hostLibvirtd(dir, p, h.Site, h.Name, mgmt, h.Libvirt)
		if err != nil {
			return "", err
		}
		// Live migrations come in on the cluster network.
		cluster, err := hostnet.Addr(hostnet.Cluster, h.SiteIndex, h.Index)
		if err != nil {
			return "", err
		}
		if err := writeYAML(p.f("libvirtd.yaml"), libvirtd.Config{Dir: p.f("libvirt"), HostUUID: id,
			ListenAddr: mgmt.String(), MigrationAddr: cluster.String(), TLS: tlsCfg, StartNice: 10}); err != nil {
			return "", err
		}
		services = append(services, hostinit.Service{Name: "libvirtd", Args: []string{"libvirtd", "--config", p.f("libvirtd.yaml")}})
	}
	if err := writeYAML(p.f("host.yaml"), hostinit.Config{Site: h.Site, Host: key, LogDir: p.f("logs"), Services: services}); err != nil {
		return "", err
	}
	// argv of host-init names the lab dir, the site and the host (its config path).
	return id, writeYAML(p.f("vbmc.yaml"), vbmc.Config{Prefix: prefix, Site: h.Site, Host: key, SiteIndex: h.SiteIndex,
		HostIndex: h.Index, SoftwareRoot: p.rootDir(), Boot: []string{"host-init", "--config", p.f("host.yaml")},
		BootDelayMS: 200, Socket: p.f("vbmc.sock"), BMC: bmcCfg, MachineID: id, SoftOffTimeoutMS: 5000,
		BootTimeoutMS: labBootTimeoutMS})
}

// labBootTimeoutMS is how long a lab host's chassis waits for a newly
// installed slot to come back to its site before it rolls back: a lab
// host's site is back within seconds (docs/patching.md).
const labBootTimeoutMS = 30000

// BMC ports inside a site: the standard ones.
const (
	bmcIPMIPort    = 623
	bmcRedfishPort = 443
)

// prepareBMC writes a host BMC's credentials (a fresh random password,
// 0600) and its Redfish certificate from the lab CA (for 127.0.0.1 and its
// site address), picks its ports on 127.0.0.1, and returns the chassis'
// BMC configuration and the host's lab.json entry.
func prepareBMC(dir string, p hostPaths, addr netip.Addr, siteNS string) (*vbmc.BMCConfig, BMCEntry, error) {
	if err := os.MkdirAll(p.rootDir(), 0o700); err != nil {
		return nil, BMCEntry{}, err
	}
	creds, credsFile, err := bmcCredentials(p)
	if err != nil {
		return nil, BMCEntry{}, err
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, BMCEntry{}, err
	}
	is, err := ca.IssueServer("bmc."+filepath.Base(p.rootDir()), nil, []net.IP{net.IPv4(127, 0, 0, 1), net.IP(addr.AsSlice())}, 365*24*time.Hour)
	if err != nil {
		return nil, BMCEntry{}, err
	}
	if err := is.Write(p.f("bmc.crt"), p.f("bmc.key")); err != nil {
		return nil, BMCEntry{}, err
	}
	ipmiPort, err := freeUDPPort()
	if err != nil {
		return nil, BMCEntry{}, err
	}
	rfPort, err := freePort()
	if err != nil {
		return nil, BMCEntry{}, err
	}
	siteIPMI := netip.AddrPortFrom(addr, bmcIPMIPort).String()
	siteRF := netip.AddrPortFrom(addr, bmcRedfishPort).String()
	cfg := &vbmc.BMCConfig{CredentialsFile: credsFile, TLSCert: p.f("bmc.crt"), TLSKey: p.f("bmc.key"),
		Endpoints: []vbmc.Endpoint{
			{IPMI: netJoin("127.0.0.1", ipmiPort), Redfish: netJoin("127.0.0.1", rfPort)},
			{Netns: siteNS, IPMI: siteIPMI, Redfish: siteRF},
		}}
	return cfg, BMCEntry{Type: "dynamic", IPMI: netJoin("127.0.0.1", ipmiPort),
		Redfish: "https://" + netJoin("127.0.0.1", rfPort) + "/redfish/v1", Username: creds.Username,
		Password: creds.Password, CredentialsFile: credsFile, Address: addr.String(),
		SiteIPMI: siteIPMI, SiteRedfish: "https://" + siteRF + "/redfish/v1"}, nil
}

// bmcCredentials reads a host BMC's credentials, or makes them (a fresh
// random password, 0600) the first time.
func bmcCredentials(p hostPaths) (bmc.Credentials, string, error) {
	credsFile := p.f("bmc.credentials")
	if c, err := bmc.LoadCredentials(credsFile); err == nil {
		return c, credsFile, nil
	}
	if err := os.MkdirAll(p.rootDir(), 0o700); err != nil {
		return bmc.Credentials{}, "", err
	}
	pw := make([]byte, 10) // IPMI passwords are at most 20 bytes
	if _, err := rand.Read(pw); err != nil {
		return bmc.Credentials{}, "", err
	}
	creds := bmc.Credentials{Username: "admin", Password: hex.EncodeToString(pw)}
	return creds, credsFile, bmc.WriteCredentials(credsFile, creds)
}

func freeUDPPort() (int, error) {
	for {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if handOut("udp", port) {
			return port, nil
		}
	}
}

// installBinary puts petrel into a slot: a hard link when the lab is on
// the binary's file system, else a copy.
func installBinary(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// startProcess starts `binary args...` detached in its own session in the
// root namespace, logging to DIR/logs/NAME.log, its pid in DIR/run/NAME.pid.
func startProcess(dir, binary, name string, args ...string) (int, error) {
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sessionAttr()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("lab: start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, atomicfile.Write(filepath.Join(dir, stateDir, name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// etcdMember is the configuration of a host's etcd member (false if the
// host holds none): on its mgmt address, with a certificate from the
// site's own etcd CA (DIR/ca-etcd/SITE), which issues nothing else.
func etcdMember(dir string, p hostPaths, h hostSpec) (map[string]any, bool, error) {
	idx := slices.IndexFunc(h.Etcd, func(e etcdPeer) bool { return e.Name == h.Name })
	if idx < 0 {
		return nil, false, nil
	}
	addr := func(i, port int) (string, error) {
		a, err := hostnet.Addr(hostnet.Mgmt, h.SiteIndex, i)
		return netip.AddrPortFrom(a, uint16(port)).String(), err
	}
	cluster := map[string]string{}
	var endpoints []string
	for _, e := range h.Etcd {
		peer, err := addr(e.Index, etcdPeerPort)
		if err != nil {
			return nil, false, err
		}
		client, _ := addr(e.Index, etcdClientPort)
		cluster[e.Name] = peer
		endpoints = append(endpoints, client)
	}
	caDir := filepath.Join(dir, "ca-etcd", h.Site)
	ca, err := pki.LoadOrCreateCA(caDir, "Petrel lab etcd CA of "+h.Site)
	if err != nil {
		return nil, false, err
	}
	mgmt, err := hostnet.Addr(hostnet.Mgmt, h.SiteIndex, h.Index)
	if err != nil {
		return nil, false, err
	}
	is, err := ca.IssuePeer("etcd-"+h.Site+"-"+h.Name, []string{"localhost"}, []net.IP{net.IP(mgmt.AsSlice()), net.IPv4(127, 0, 0, 1)}, 365*24*time.Hour)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(p.f("pki"), 0o700); err != nil {
		return nil, false, err
	}
	if err := is.Write(p.f("pki/etcd.crt"), p.f("pki/etcd.key")); err != nil {
		return nil, false, err
	}
	// The site controller's client talks to its own member only (which
	// forwards to the raft leader): a client pinned to a member whose
	// host vanished would wait out its keepalive (15 s) on every call.
	ec := map[string]any{"name": h.Name, "data_dir": p.f("etcd"), "cluster_token": "petrel-" + h.Site, "client_addr": endpoints[idx], "peer_addr": cluster[h.Name],
		"endpoints": []string{endpoints[idx]}, "tls": map[string]string{"cert_file": p.f("pki/etcd.crt"), "key_file": p.f("pki/etcd.key"),
			"ca_file": filepath.Join(caDir, pki.CACertFile)}}
	if len(h.Etcd) > 1 {
		ec["initial_cluster"] = cluster
	}
	return ec, true, nil
}
