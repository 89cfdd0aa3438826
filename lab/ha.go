package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/sealed"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
)

// The controller pair of a duplex or multi-server site (docs/ha.md):
// both controllers run the site controller, the active one serves on the
// site's floating API address.
const (
	pairHeartbeatPort = 7300
	pairPostgresPort  = 5432
	pairStatusPort    = 7301 // ctlha.StatusPort
	// floatingOctet: the site controller's floating API address is
	// 10.88.<site>.2 (hosts are .10 and up, the site's gateway .1).
	floatingOctet = 2
)

// pairSite tells whether a site of shape runs its controllers as a pair.
func pairSite(shape inventory.Shape) bool {
	return shape == inventory.Duplex || shape == inventory.MultiServer
}

// FloatingAddr is the site controller's floating API address of site
// siteIdx on a paired site.
func FloatingAddr(siteIdx int) netip.Addr {
	b := hostnet.Mgmt.Subnet().Addr().As4()
	b[2], b[3] = byte(siteIdx), floatingOctet
	return netip.AddrFrom4(b)
}

// siteAPIAddr is where a site's API answers inside the site: the floating
// address on a paired site, controller-0's mgmt address otherwise.
func siteAPIAddr(shape inventory.Shape, siteIdx int) netip.Addr {
	if pairSite(shape) {
		return FloatingAddr(siteIdx)
	}
	a, _ := hostnet.Addr(hostnet.Mgmt, siteIdx, 0)
	return a
}

// preparePairSecrets makes what both controllers of a pair share, once per
// site, in controller-0's data directory, and copies it to controller-1's
// (an operator provisions them the same way): the agents' CA, the sealing
// key of secrets stored in the database, the heartbeat key, the link to
// central; and both controllers' BMC credentials, so that each can fence
// the other.
func preparePairSecrets(dir, site string, home *homeInfo) error {
	c0, c1 := pathsOf(dir, site, "controller-0"), pathsOf(dir, site, "controller-1")
	for _, p := range []hostPaths{c0, c1} {
		for _, d := range []string{"data", "ha", "home"} {
			if err := os.MkdirAll(p.f(d), 0o700); err != nil {
				return err
			}
		}
		if _, _, err := bmcCredentials(p); err != nil {
			return err
		}
	}
	if _, err := pki.LoadOrCreateCA(c0.f("data/agent-ca"), "Petrel site "+site+" agent CA"); err != nil {
		return err
	}
	if _, err := sealed.LoadOrCreate(c0.f("data/" + sealed.KeyFile)); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := atomicfile.Write(c0.f("ha/heartbeat.key"), key, 0o600); err != nil {
		return err
	}
	// The hosts' heartbeat secret (subcloud.HeartbeatKeyFile): each
	// host's key derives from it, so both controllers must hold the same
	// one, or after a swact the new active's pulses are refused by every
	// agent that has not reported to it yet (its hosts heartbeat-lost).
	hostKey := make([]byte, 32)
	if _, err := rand.Read(hostKey); err != nil {
		return err
	}
	if _, err := os.Stat(c0.f("data/heartbeat.key")); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.Write(c0.f("data/heartbeat.key"), hostKey, 0o600); err != nil {
			return err
		}
	}
	copies := map[string]string{"ha/heartbeat.key": "ha/heartbeat.key", "data/" + sealed.KeyFile: "data/" + sealed.KeyFile,
		"data/heartbeat.key":              "data/heartbeat.key",
		"data/agent-ca/" + pki.CACertFile: "data/agent-ca/" + pki.CACertFile, "data/agent-ca/" + pki.CAKeyFile: "data/agent-ca/" + pki.CAKeyFile}
	if home != nil {
		for _, f := range []string{home.CACert, home.CertFile, home.KeyFile, home.PublicKeyFile} {
			rel, _ := filepath.Rel(c0.rootDir(), f)
			copies[rel] = rel
		}
	}
	if err := os.MkdirAll(c1.f("data/agent-ca"), 0o700); err != nil {
		return err
	}
	for from, to := range copies {
		if err := copyFile(c0.f(from), c1.f(to)); err != nil {
			return err
		}
	}
	// Each controller gets the other's BMC credentials.
	if err := copyFile(c0.f("bmc.credentials"), c1.f("ha/peer-bmc.credentials")); err != nil {
		return err
	}
	return copyFile(c1.f("bmc.credentials"), c0.f("ha/peer-bmc.credentials"))
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return atomicfile.Write(to, b, 0o600)
}

// pairConfig is the ha section of a paired controller's site controller
// configuration (ctlha.FileConfig).
func pairConfig(dir string, h hostSpec, p hostPaths) (map[string]any, error) {
	peerIdx := 1 - h.Index
	peer := fmt.Sprintf("controller-%d", peerIdx)
	addrs := map[string]string{}
	peerAddrs := map[string]string{}
	for _, n := range hostnet.Networks() {
		a, err := hostnet.Addr(n, h.SiteIndex, h.Index)
		if err != nil {
			return nil, err
		}
		pa, err := hostnet.Addr(n, h.SiteIndex, peerIdx)
		if err != nil {
			return nil, err
		}
		addrs[string(n)] = netip.AddrPortFrom(a, pairHeartbeatPort).String()
		peerAddrs[string(n)] = netip.AddrPortFrom(pa, pairHeartbeatPort).String()
	}
	mgmt, _ := hostnet.Addr(hostnet.Mgmt, h.SiteIndex, h.Index)
	peerMgmt, _ := hostnet.Addr(hostnet.Mgmt, h.SiteIndex, peerIdx)
	if err := os.MkdirAll(p.f("ha"), 0o700); err != nil {
		return nil, err
	}
	// The database's certificate: its server identity on the mgmt address
	// and its client identity (its name) toward the peer's.
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, err
	}
	is, err := ca.IssuePeer(h.Name, []string{h.Name}, []net.IP{net.IP(mgmt.AsSlice()), net.IPv4(127, 0, 0, 1)}, 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := is.Write(p.f("ha/postgres.crt"), p.f("ha/postgres.key")); err != nil {
		return nil, err
	}
	// PostgreSQL runs as its own user: the path to its directories must
	// be traversable (not readable) by it, up to the root (a lab in a
	// test's 0700 temporary directory too). Only root's directories are
	// touched, and only their search bit.
	if err := traversable(p.f("pg")); err != nil {
		return nil, err
	}
	bmcAddr, err := hostnet.BMCAddr(h.SiteIndex, peerIdx)
	if err != nil {
		return nil, err
	}
	subnet := netip.PrefixFrom(mgmt, 24).Masked()
	cluster, _ := hostnet.Addr(hostnet.Cluster, h.SiteIndex, h.Index)
	c := map[string]any{
		"controller": h.Name, "peer": peer, "bootstrap": h.Index == 0,
		"status_listen": netip.AddrPortFrom(cluster, pairStatusPort).String(),
		"floating":      netip.PrefixFrom(FloatingAddr(h.SiteIndex), 24).String(), "interface": string(hostnet.Mgmt), "platform": "lab",
		"heartbeat": map[string]any{"key_file": p.f("ha/heartbeat.key"), "local": addrs, "peer": peerAddrs},
		"postgres": map[string]any{"data_dir": p.f("pg/data"), "socket_dir": p.f("pg/sock"),
			"port": pairPostgresPort, "listen": []string{mgmt.String()}, "peers": []string{subnet.String()},
			"peer_host": peerMgmt.String(), "peer_port": pairPostgresPort,
			"tls": map[string]string{"ca_file": filepath.Join(dir, "ca", pki.CACertFile), "cert_file": p.f("ha/postgres.crt"), "key_file": p.f("ha/postgres.key")}},
		"peer_bmc": map[string]string{"ipmi": netip.AddrPortFrom(bmcAddr, bmcIPMIPort).String(), "credentials_file": p.f("ha/peer-bmc.credentials")},
	}
	// Three etcd members decide who is active; otherwise the epochs live
	// in the database, and central is the witness.
	if len(h.Etcd) >= 3 {
		c["mode"] = "multi-server"
	} else {
		c["mode"] = "duplex"
		c["witness"] = h.Home != nil
	}
	return c, nil
}

// traversable creates dir (0700) and makes the path to it traversable (not
// readable) by another user, up to the root: PostgreSQL runs as its own
// user, also in a lab in a test's 0700 temporary directory. Only root's
// directories are touched, and only their search bit.
func traversable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == 0 && st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	return nil
}
