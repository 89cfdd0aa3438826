// Package hostnet builds the lab's simulated hosts out of kernel objects:
// one network namespace and one cgroup per host, joined to per-site
// networks.
//
// Layout, for a Lab with prefix P (default "petrel"):
//
//   - Site S is the namespace "P-S". It holds two bridges, "mgmt" and
//     "cluster", one per site network. Bridges and veths never live in the
//     machine's root namespace.
//   - Host H of site S is the namespace "P-S-H". It holds the interfaces
//     "mgmt" and "cluster", each one end of a veth pair whose other end
//     (a short hashed name, see [Lab.VethName]) is a port of the site's
//     bridge of that name. Addresses follow [Addr]; MAC addresses are
//     fixed per host, so a host that is removed and added again keeps
//     them. A host has no default route: it reaches only its site's two
//     /24 networks.
//   - Names: P is letters, digits and '_'; site and host names may also
//     contain '-'. Site "a" with host "b-c" and site "a-b" with host "c"
//     would therefore share a namespace name: EnsureSite and AddHost
//     refuse the second one with ErrInvalidName.
//   - Every process of host H runs in the cgroup v2 group
//     "<cgroup v2 root>/P/S/H" (see [Host.Start]), which is what freezing
//     ([Host.Freeze]) and power-off ([Host.PowerOff]) act on.
//   - Each host's BMC has an address on the site's mgmt network, in the
//     BMC subnet 10.90.<site>.0/24 (see [BMCAddr], [Lab.EnsureBMC]).
//   - The root namespace has blackhole routes for the lab ranges
//     10.88.0.0/16, 10.89.0.0/16 and 10.90.0.0/16, so a stray packet to a lab address
//     from the root namespace fails locally ("invalid argument") instead of
//     leaving the machine through the default route. Reach lab endpoints
//     from the root namespace with [ListenIn], [DialIn] or a [Forwarder].
//
// Every operation is idempotent, and [Lab.Teardown] removes everything with
// the lab's prefix, also after a crash half-way through a setup;
// [Lab.Leaks] proves that nothing is left.
//
// The package drives iproute2 (ip, ss) and iptables as commands and needs
// root. A Lab holds no mutable state: two Labs, or two processes, with the
// same prefix act on the same objects.
package hostnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Errors returned by this package, wrapped with details.
var (
	// ErrInvalidName: a prefix, site, host or network name that the
	// naming scheme cannot represent.
	ErrInvalidName = errors.New("hostnet: invalid name")
	// ErrInvalidAddr: an address that is not a literal "ip:port", or a
	// site or host index outside the address plan.
	ErrInvalidAddr = errors.New("hostnet: invalid address")
	// ErrNoCgroup2: the machine has no cgroup v2 hierarchy.
	ErrNoCgroup2 = errors.New("hostnet: no cgroup v2 hierarchy")
	// ErrNotExist: the site or host has not been created.
	ErrNotExist = errors.New("hostnet: does not exist")
)

// Network is one of a site's two networks.
type Network string

// The site networks; they are also the interface names inside a host and
// the bridge names inside a site.
const (
	Mgmt    Network = "mgmt"
	Cluster Network = "cluster"
)

// Networks lists every site network.
func Networks() []Network { return []Network{Mgmt, Cluster} }

// Valid reports whether n is Mgmt or Cluster.
func (n Network) Valid() bool { return n == Mgmt || n == Cluster }

// Subnet is the whole lab range of network n: 10.88.0.0/16 for Mgmt,
// 10.89.0.0/16 for Cluster, and the zero Prefix for an invalid network.
func (n Network) Subnet() netip.Prefix {
	switch n {
	case Mgmt:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 88, 0, 0}), 16)
	case Cluster:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 89, 0, 0}), 16)
	}
	return netip.Prefix{}
}

// Address plan limits: site i uses 10.8x.i.0/24, host j of it 10.8x.i.(j+10).
const (
	MaxSites     = 256
	MaxHosts     = 245 // host addresses .10 to .254
	hostAddrBase = 10
	sitePrefix   = 24
)

// Addr is the address of host hostIdx (0-based) of site siteIdx (0-based)
// on network n: 10.88.<siteIdx>.<hostIdx+10> on Mgmt, 10.89.… on Cluster.
// The host's interface has it with a /24 prefix.
func Addr(n Network, siteIdx, hostIdx int) (netip.Addr, error) {
	if !n.Valid() {
		return netip.Addr{}, fmt.Errorf("%w: network %q", ErrInvalidName, n)
	}
	if siteIdx < 0 || siteIdx >= MaxSites || hostIdx < 0 || hostIdx >= MaxHosts {
		return netip.Addr{}, fmt.Errorf("%w: site %d host %d: want site in [0,%d) and host in [0,%d)",
			ErrInvalidAddr, siteIdx, hostIdx, MaxSites, MaxHosts)
	}
	b := n.Subnet().Addr().As4()
	b[2], b[3] = byte(siteIdx), byte(hostIdx+hostAddrBase)
	return netip.AddrFrom4(b), nil
}

// DefaultPrefix is the prefix of the lab that `petrel lab up` builds.
const DefaultPrefix = "petrel"

// Config configures a Lab.
type Config struct {
	// Prefix starts the name of every object of the lab: namespaces
	// "<Prefix>-<site>" and "<Prefix>-<site>-<host>", the cgroup
	// "<cgroup root>/<Prefix>". Empty means DefaultPrefix. Letters, digits
	// and '_', at most 16; no '-', so that no prefix is the start of
	// another lab's names. Tests use a unique short prefix.
	Prefix string
	// CgroupRoot is the mount point of the cgroup v2 hierarchy. Empty means
	// auto-detect: /sys/fs/cgroup on a pure v2 machine, /sys/fs/cgroup/unified
	// on a hybrid (v1 + v2) one.
	CgroupRoot string
}

// Lab creates, faults and removes the hosts of one lab. It holds only its
// configuration; the kernel objects are the state. Safe for concurrent use
// on different hosts.
type Lab struct {
	prefix     string
	cgroupRoot string
}

var (
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_]{0,15}$`)
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$`)
)

// New checks cfg and returns a Lab. It changes nothing on the machine.
func New(cfg Config) (*Lab, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("%w: prefix %q: want 1-16 letters, digits or '_'", ErrInvalidName, cfg.Prefix)
	}
	if cfg.CgroupRoot == "" {
		root, err := detectCgroup2()
		if err != nil {
			return nil, err
		}
		cfg.CgroupRoot = root
	} else if !isCgroup2(cfg.CgroupRoot) {
		return nil, fmt.Errorf("%w: %s is not a cgroup v2 mount", ErrNoCgroup2, cfg.CgroupRoot)
	}
	return &Lab{prefix: cfg.Prefix, cgroupRoot: cfg.CgroupRoot}, nil
}

// Prefix is the lab's prefix.
func (l *Lab) Prefix() string { return l.prefix }

// CgroupRoot is the cgroup v2 mount point the lab uses.
func (l *Lab) CgroupRoot() string { return l.cgroupRoot }

// SiteNetns is the name of site's namespace, "<prefix>-<site>".
func (l *Lab) SiteNetns(site string) string { return l.prefix + "-" + site }

// HostNetns is the name of the host's namespace, "<prefix>-<site>-<host>".
func (l *Lab) HostNetns(site, host string) string { return l.prefix + "-" + site + "-" + host }

// VethName is the name of the bridge-side end, in the site namespace, of
// the host's veth pair on network n: "v", 4 hex digits of a hash of the
// prefix, 8 of a hash of site and host, and 'm' or 'c' (14 characters; the
// kernel allows 15). The prefix part lets Leaks spot a lab's interfaces
// anywhere they should not be.
func (l *Lab) VethName(site, host string, n Network) string {
	return fmt.Sprintf("v%04x%08x%c", l.tag(), hash32(site+"\x00"+host), n[0])
}

// mac is the fixed MAC address of the host's interface on network n: a
// locally administered address from a hash of prefix, site, host and
// network. A host that is removed and added again keeps it, so its peers'
// ARP caches stay right, as with a real machine that reboots.
func (l *Lab) mac(site, host string, n Network) string {
	h := fnv.New64a()
	h.Write([]byte(l.prefix + "\x00" + site + "\x00" + host + "\x00" + string(n)))
	b := h.Sum(nil)
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

func (l *Lab) tag() uint32 { return hash32(l.prefix) & 0xffff }

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

func (l *Lab) cgroupDir() string { return filepath.Join(l.cgroupRoot, l.prefix) }

func checkName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: %s %q: want 1-48 letters, digits, '_' or '-'", ErrInvalidName, kind, name)
	}
	return nil
}

// link is what this package reads of `ip -j -d addr show`.
type link struct {
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	Master   string   `json:"master"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	Addrs []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func (k link) up() bool {
	for _, f := range k.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}

func (k link) hasAddr(p netip.Prefix) bool {
	for _, a := range k.Addrs {
		if a.Family == "inet" && a.Local == p.Addr().String() && a.PrefixLen == p.Bits() {
			return true
		}
	}
	return false
}

// links lists the interfaces of namespace ns by name; ns "" is the
// caller's own (root) namespace.
func links(ctx context.Context, ns string) (map[string]link, error) {
	args := []string{"-j", "-d", "addr", "show"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := run(ctx, "", "ip", args...)
	if err != nil {
		return nil, err
	}
	var list []link
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("ip %s: parse output: %w", strings.Join(args, " "), err)
	}
	m := make(map[string]link, len(list))
	for _, k := range list {
		m[k.Name] = k
	}
	return m, nil
}

// EnsureSite creates site's namespace with its two bridges, all links up.
// It first makes sure the root namespace has the lab's blackhole routes.
// Idempotent.
func (l *Lab) EnsureSite(ctx context.Context, site string) error {
	if err := checkName("site", site); err != nil {
		return err
	}
	ns := l.SiteNetns(site)
	if err := l.checkClash(ns, site, ""); err != nil {
		return err
	}
	if err := l.register(ctx); err != nil {
		return err
	}
	// The site's cgroup directory also records that the site exists,
	// for checkClash.
	if err := cgroup(filepath.Join(l.cgroupDir(), site)).create(); err != nil {
		return err
	}
	if _, err := ensureNetns(ctx, ns); err != nil {
		return err
	}
	have, err := links(ctx, ns)
	if err != nil {
		return err
	}
	if !have["lo"].up() {
		if _, err := run(ctx, "", "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, n := range Networks() {
		br, ok := have[string(n)]
		switch {
		case !ok:
			_, err = run(ctx, "", "ip", "-n", ns, "link", "add", string(n), "up", "type", "bridge")
			if err != nil && bridgeExists(ctx, ns, n) {
				err = nil // a concurrent EnsureSite made it
			}
		case br.LinkInfo.Kind != "bridge":
			// The name collides with a host's namespace (site "a" host
			// "b" and site "a-b" have the same namespace name).
			err = fmt.Errorf("%w: namespace %s has a %s %q, not a bridge: is it a host?", ErrInvalidName, ns, br.LinkInfo.Kind, n)
		case !br.up():
			_, err = run(ctx, "", "ip", "-n", ns, "link", "set", string(n), "up")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkClash fails if namespace name ns, wanted for site (host "") or for
// host of site, already belongs to another site or host of the lab: with
// '-' allowed in names, site "a" host "b-c", site "a-b" host "c" and site
// "a-b-c" all map to "<prefix>-a-b-c". The cgroup tree, whose paths are
// unambiguous, says which sites and hosts exist.
func (l *Lab) checkClash(ns, site, host string) error {
	sites, err := subdirs(l.cgroupDir())
	if err != nil {
		return err
	}
	for _, sd := range sites {
		s := filepath.Base(sd)
		if l.SiteNetns(s) == ns && (host != "" || s != site) {
			return fmt.Errorf("%w: namespace %s already belongs to site %s", ErrInvalidName, ns, s)
		}
		hosts, err := subdirs(sd)
		if err != nil {
			return err
		}
		for _, hd := range hosts {
			h := filepath.Base(hd)
			if l.HostNetns(s, h) == ns && (s != site || h != host) {
				return fmt.Errorf("%w: namespace %s already belongs to host %s of site %s", ErrInvalidName, ns, h, s)
			}
		}
	}
	return nil
}

func bridgeExists(ctx context.Context, ns string, n Network) bool {
	have, err := links(ctx, ns)
	return err == nil && have[string(n)].LinkInfo.Kind == "bridge"
}

// Host returns the handle of a host without creating or checking anything:
// for acting on a host that an earlier AddHost, maybe in another process,
// created. siteIdx and hostIdx fix its addresses (see Addr).
func (l *Lab) Host(site, host string, siteIdx, hostIdx int) (*Host, error) {
	if err := checkName("site", site); err != nil {
		return nil, err
	}
	if err := checkName("host", host); err != nil {
		return nil, err
	}
	h := &Host{lab: l, site: site, name: host, netns: l.HostNetns(site, host), siteIdx: siteIdx,
		cgroup: cgroup(filepath.Join(l.cgroupDir(), site, host))}
	for _, n := range Networks() {
		a, err := Addr(n, siteIdx, hostIdx)
		if err != nil {
			return nil, err
		}
		h.addrs = append(h.addrs, a)
	}
	return h, nil
}

// AddHost creates host in site (creating the site too if needed): its
// namespace with lo up, one veth pair per network with the host end
// ("mgmt", "cluster") addressed per Addr and up and the other end a port
// of the site's bridge, and its cgroup.
//
// Idempotent: on an existing host it creates only what is missing and
// returns the host; it does not undo faults (a link set down stays down).
func (l *Lab) AddHost(ctx context.Context, site, host string, siteIdx, hostIdx int) (*Host, error) {
	h, err := l.Host(site, host, siteIdx, hostIdx)
	if err != nil {
		return nil, err
	}
	if err := l.EnsureSite(ctx, site); err != nil {
		return nil, err
	}
	if err := l.checkClash(h.netns, site, host); err != nil {
		return nil, err
	}
	if err := h.cgroup.create(); err != nil {
		return nil, err
	}
	if _, err := ensureNetns(ctx, h.netns); err != nil {
		return nil, err
	}
	siteNS := l.SiteNetns(site)
	hostLinks, err := links(ctx, h.netns)
	if err != nil {
		return nil, err
	}
	siteLinks, err := links(ctx, siteNS)
	if err != nil {
		return nil, err
	}
	if !hostLinks["lo"].up() {
		if _, err := run(ctx, "", "ip", "-n", h.netns, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
	}
	for i, n := range Networks() {
		if err := h.ensureLink(ctx, n, h.addrs[i], hostLinks, siteLinks); err != nil {
			return nil, err
		}
	}
	// The BMC route needs the link up; a host whose mgmt link a fault
	// took down gets it back with LinkUp.
	if err := h.ensureBMCRoute(ctx); err != nil {
		if now, lerr := links(ctx, h.netns); lerr != nil || now[string(Mgmt)].up() {
			return nil, err
		}
	}
	return h, nil
}

// ensureLink creates what is missing of the host's link on network n.
func (h *Host) ensureLink(ctx context.Context, n Network, addr netip.Addr, hostLinks, siteLinks map[string]link) error {
	siteNS := h.lab.SiteNetns(h.site)
	peer := h.lab.VethName(h.site, h.name, n)
	k, ok := hostLinks[string(n)]
	if ok && k.LinkInfo.Kind != "veth" {
		return fmt.Errorf("%w: namespace %s has a %s %q, not a veth: is it a site?", ErrInvalidName, h.netns, k.LinkInfo.Kind, n)
	}
	bridgePort, peerExists := siteLinks[peer]
	if ok && !peerExists {
		// The other end is not on this site's bridge (the site namespace
		// was recreated): start this link over.
		if _, err := run(ctx, "", "ip", "-n", h.netns, "link", "del", string(n)); err != nil {
			return err
		}
		ok = false
	}
	if !ok {
		if peerExists {
			// Left over from an earlier namespace of this host that a
			// socket keeps alive; deleting this end deletes the pair.
			if _, err := run(ctx, "", "ip", "-n", siteNS, "link", "del", peer); err != nil {
				return err
			}
		}
		// Created up in the host so that a crash cannot leave it down;
		// the bridge end is attached below, also on a later retry.
		if _, err := run(ctx, "", "ip", "-n", h.netns, "link", "add", string(n),
			"address", h.lab.mac(h.site, h.name, n), "up",
			"type", "veth", "peer", "name", peer, "netns", siteNS); err != nil {
			return err
		}
		peerExists = false
	}
	if !peerExists || bridgePort.Master != string(n) || !bridgePort.up() {
		if _, err := run(ctx, "", "ip", "-n", siteNS, "link", "set", peer, "master", string(n), "up"); err != nil {
			return err
		}
	}
	p := netip.PrefixFrom(addr, sitePrefix)
	if !ok || !k.hasAddr(p) {
		if _, err := run(ctx, "", "ip", "-n", h.netns, "addr", "replace", p.String(), "dev", string(n)); err != nil {
			return err
		}
	}
	return nil
}

// Teardown removes everything with the lab's prefix: it kills the
// processes of every host cgroup, deletes every namespace named
// "<prefix>-*" (their interfaces, bridges and iptables rules go with them)
// and the cgroups, and finally the root namespace's blackhole routes if no
// lab uses them any more (see register). It continues past errors and
// returns them all. Idempotent; it needs no record of what was created,
// so it also cleans up after a crash.
func (l *Lab) Teardown(ctx context.Context) error {
	var errs []error
	sites, err := subdirs(l.cgroupDir())
	errs = append(errs, err)
	var hosts []string
	for _, s := range sites {
		hs, err := subdirs(s)
		errs = append(errs, err)
		hosts = append(hosts, hs...)
	}
	// Kill first, so that no host process sees its network vanish.
	for _, h := range hosts {
		errs = append(errs, cgroup(h).kill(ctx))
	}
	names, err := listNetns(l.prefix + "-")
	errs = append(errs, err)
	for _, ns := range names {
		errs = append(errs, deleteNetns(ctx, ns))
	}
	errs = append(errs, removeCgroupTree(l.cgroupDir()))
	errs = append(errs, l.unregister(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown of lab %s: %w", l.prefix, err)
	}
	return nil
}

// Leaks lists what of this lab still exists: namespaces "<prefix>-*", the
// lab's cgroup directory, its registration, and interfaces in the root
// namespace with the lab's veth names. After Teardown it is empty. The
// shared blackhole routes are not listed: other labs may need them.
func (l *Lab) Leaks(ctx context.Context) ([]string, error) {
	var out []string
	names, err := listNetns(l.prefix + "-")
	if err != nil {
		return nil, err
	}
	for _, ns := range names {
		out = append(out, "netns "+ns)
	}
	if _, err := os.Stat(l.cgroupDir()); err == nil {
		out = append(out, "cgroup "+l.cgroupDir())
	}
	if _, err := os.Stat(l.marker()); err == nil {
		out = append(out, "registration "+l.marker())
	}
	root, err := links(ctx, "")
	if err != nil {
		return nil, err
	}
	tag := fmt.Sprintf("v%04x", l.tag())
	for name := range root {
		if strings.HasPrefix(name, tag) && len(name) == 14 {
			out = append(out, "root-namespace interface "+name)
		}
	}
	return out, nil
}
