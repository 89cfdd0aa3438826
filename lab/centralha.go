package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/pgrepl"
	"github.com/petrel-edge/petrel/internal/pki"
)

// Central's 1+1 in the lab (`lab up --central-ha`, docs/central.md):
// PostgreSQL (one server, shared by both centrals), an etcd cluster of
// three members (the election), and two central processes configured alike
// — the same API and site addresses on loopback, the same data directory
// (keys and certificates) — of which only the elected leader binds the
// addresses. Killing the leader frees them at once; the other central wins
// the election when the dead one's session expires and binds them; sites
// reconnect with their usual backoff.

// CentralHAEntry is lab.json's account of a central pair.
type CentralHAEntry struct {
	Members    []string `json:"members"`     // central-0, central-1
	Etcd       []string `json:"etcd"`        // client endpoints
	EtcdCert   string   `json:"etcd_cert"`   // a client certificate of the pair's etcd
	EtcdKey    string   `json:"etcd_key"`    //
	EtcdCA     string   `json:"etcd_ca"`     //
	Database   string   `json:"database"`    // the DSN both centrals use
	SiteListen string   `json:"site_listen"` // where sites dial
}

// CentralMembers are the names of a lab pair's centrals.
var CentralMembers = []string{"central-0", "central-1"}

// centralSessionTTL is the lab pair's failover time after the leader dies.
const centralSessionTTL = "2s"

// startCentralPair starts the pair's database, etcd and both centrals, and
// returns central's URL and the pair's entry.
func startCentralPair(ctx context.Context, cfg Config, dir, centralDir, siteListen string) (string, *CentralHAEntry, error) {
	haDir := filepath.Join(dir, "central-ha")
	if err := os.MkdirAll(haDir, 0o700); err != nil {
		return "", nil, err
	}
	// etcd: three members on loopback, certificates from their own CA.
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca-etcd", "central"), "Petrel lab etcd CA of central")
	if err != nil {
		return "", nil, err
	}
	caFile := filepath.Join(dir, "ca-etcd", "central", pki.CACertFile)
	type member struct{ name, client, peer string }
	var members []member
	cluster := map[string]string{}
	var endpoints []string
	for i := range 3 {
		cp, err := freePort()
		if err != nil {
			return "", nil, err
		}
		pp, err := freePort()
		if err != nil {
			return "", nil, err
		}
		m := member{name: fmt.Sprintf("etcd-%d", i), client: netJoin("127.0.0.1", cp), peer: netJoin("127.0.0.1", pp)}
		members = append(members, m)
		cluster[m.name] = m.peer
		endpoints = append(endpoints, m.client)
	}
	for _, m := range members {
		md := filepath.Join(haDir, m.name)
		if err := os.MkdirAll(md, 0o700); err != nil {
			return "", nil, err
		}
		is, err := ca.IssuePeer("central-"+m.name, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 365*24*time.Hour)
		if err != nil {
			return "", nil, err
		}
		cert, key := filepath.Join(md, "etcd.crt"), filepath.Join(md, "etcd.key")
		if err := is.Write(cert, key); err != nil {
			return "", nil, err
		}
		conf := map[string]any{"name": m.name, "data_dir": filepath.Join(md, "data"), "cluster_token": "petrel-central",
			"client_addr": m.client, "peer_addr": m.peer, "initial_cluster": cluster,
			"tls": map[string]string{"cert_file": cert, "key_file": key, "ca_file": caFile}}
		cfgPath := filepath.Join(md, "etcd.yaml")
		if err := writeYAML(cfgPath, conf); err != nil {
			return "", nil, err
		}
		if _, err := startProcess(dir, cfg.Binary, "central-"+m.name, "etcd", "--config", cfgPath); err != nil {
			return "", nil, err
		}
	}
	client, err := ca.IssuePeer("central-pair", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 365*24*time.Hour)
	if err != nil {
		return "", nil, err
	}
	ccert, ckey := filepath.Join(haDir, "client.crt"), filepath.Join(haDir, "client.key")
	if err := client.Write(ccert, ckey); err != nil {
		return "", nil, err
	}

	// PostgreSQL: one server both centrals share.
	dsn, err := startCentralDB(ctx, dir, haDir)
	if err != nil {
		return "", nil, err
	}

	// Both centrals: alike, but for their names.
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	listen := netJoin("127.0.0.1", port)
	for _, name := range CentralMembers {
		extra := map[string]any{"listen": listen, "site_listen": siteListen, "database": dsn, "patch_public_key": patchSigning(dir).PublicKey,
			"ha": map[string]any{"name": name, "session_ttl": centralSessionTTL,
				"etcd": map[string]any{"endpoints": endpoints, "cert_file": ccert, "key_file": ckey, "ca_file": caFile}}}
		if _, _, err := startDaemonAt(cfg, dir, "central", centralDir, name, name+".yaml", extra); err != nil {
			return "", nil, err
		}
	}
	return "https://" + listen, &CentralHAEntry{Members: CentralMembers, Etcd: endpoints, EtcdCert: ccert, EtcdKey: ckey,
		EtcdCA: caFile, Database: dsn, SiteListen: siteListen}, nil
}

// startCentralDB initialises and starts the pair's PostgreSQL server and
// returns the DSN of central's database on it.
func startCentralDB(ctx context.Context, dir, haDir string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	// The socket path must stay short (unix sockets: 107 bytes).
	sock, err := os.MkdirTemp("", "petrel-cpg-")
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(haDir, "pg-socket-dir"), []byte(sock+"\n"), 0o600); err != nil {
		return "", err
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "Petrel lab CA")
	if err != nil {
		return "", err
	}
	is, err := ca.IssuePeer("central-db", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 365*24*time.Hour)
	if err != nil {
		return "", err
	}
	cert, key := filepath.Join(haDir, "pg-tls.crt"), filepath.Join(haDir, "pg-tls.key")
	if err := is.Write(cert, key); err != nil {
		return "", err
	}
	if err := traversable(filepath.Join(haDir, "pg")); err != nil {
		return "", err
	}
	node, err := pgrepl.New(pgrepl.Config{DataDir: filepath.Join(haDir, "pg", "data"), SocketDir: sock, Port: port, Name: "central-db",
		Listen:      []string{"127.0.0.1"},
		Replication: pgrepl.ReplicationTLS{CAFile: filepath.Join(dir, "ca", pki.CACertFile), CertFile: cert, KeyFile: key}})
	if err != nil {
		return "", err
	}
	defer node.Close()
	if err := node.Bootstrap(ctx); err != nil {
		return "", fmt.Errorf("lab: central's database: %w", err)
	}
	if err := node.StartPrimary(ctx); err != nil {
		return "", fmt.Errorf("lab: central's database: %w", err)
	}
	if err := node.EnsureDatabase(ctx, "petrel_central"); err != nil {
		return "", err
	}
	// The server outlives this process: `lab down` stops it by its pid.
	b, err := os.ReadFile(filepath.Join(haDir, "pg", "data", "postmaster.pid"))
	if err != nil {
		return "", err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return "", fmt.Errorf("lab: central's database pid: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, stateDir, "central-db.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return "", err
	}
	return node.DSN("petrel_central"), nil
}

// ActiveCentral asks the pair's election which central leads ("" if none).
func ActiveCentral(ctx context.Context, f *File) (string, error) {
	if f.Central.HA == nil {
		return "", errors.New("lab: this lab's central is not a pair (lab up --central-ha)")
	}
	ha := f.Central.HA
	cli, err := coord.NewClient(coord.ClientConfig{Endpoints: ha.Etcd,
		TLS: coord.TLSFiles{CertFile: ha.EtcdCert, KeyFile: ha.EtcdKey, CAFile: ha.EtcdCA}})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	lead, err := coord.NewLeadership(coord.LeadershipConfig{Client: cli, Prefix: central.ElectionPrefix, Name: "lab-observer"})
	if err != nil {
		return "", err
	}
	defer lead.Close()
	return lead.Leader(ctx)
}

// KillActiveCentral SIGKILLs the leading central of the lab's pair (a
// crash: nothing is flushed, its listeners and etcd session die with it)
// and returns its name.
func KillActiveCentral(ctx context.Context, f *File) (string, error) {
	name, err := ActiveCentral(ctx, f)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("lab: no central leads now")
	}
	procs, err := Processes(f.Dir)
	if err != nil {
		return "", err
	}
	for _, p := range procs {
		if p.Name == name && p.Running && ours(p.PID, f.Dir) {
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
				return "", err
			}
			return name, nil
		}
	}
	return "", fmt.Errorf("lab: %s leads but its process is not running", name)
}
