package subcloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/etcdledger"
	"github.com/petrel-edge/petrel/servicemgr/servicedb"
)

// EtcdConfig is the site's coordination member (brief §5: etcd embedded
// in the site controller, on its host's own addresses).
type EtcdConfig struct {
	// Name of this member; default "controller".
	Name string `json:"name"`
	// ClientAddr and PeerAddr (host:port); default the API's host with
	// ports 2379 and 2380 (free ports when the API listens on port 0).
	ClientAddr string `json:"client_addr"`
	PeerAddr   string `json:"peer_addr"`
	// InitialCluster maps member names to peer addresses when the site's
	// cluster has several members; absent: this member alone.
	InitialCluster map[string]string `json:"initial_cluster"`
	// TickMS and ElectionMS: raft's heartbeat and election timeout
	// (default 100 and 1000).
	TickMS     uint `json:"tick_ms"`
	ElectionMS uint `json:"election_ms"`
	// DataDir; default DATA_DIR/etcd.
	DataDir string `json:"data_dir"`
	// ClusterToken names the cluster at its first start; every member of
	// a site's cluster must give the same. Default "petrel-<site>" (a
	// site controller), "petrel" (petrel etcd).
	ClusterToken string `json:"cluster_token"`
	// Endpoints are the members this controller's client talks to;
	// default (and best) its own ClientAddr: the member forwards to the
	// raft leader, and a client pinned to a member whose host vanished
	// would wait out its keepalive on every call.
	Endpoints []string `json:"endpoints"`
	// TLS is the member's certificate (server and client usage, its
	// addresses as SANs) and the CA of every member's: a CA for etcd
	// alone, so that no other certificate opens the site's coordination.
	// Absent: issued at every start from the API's CA (one-member sites).
	TLS *EtcdTLS `json:"tls"`
	// ClientOnly: the member runs outside the site controller (the
	// controller pair's runner keeps it up on both controllers); the
	// controller only connects to it at ClientAddr.
	ClientOnly bool `json:"client_only"`
}

// EtcdTLS names a member's certificate files.
type EtcdTLS struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
}

// MemberConfig turns the configuration into a member's.
func (c EtcdConfig) MemberConfig(files coord.TLSFiles, log *slog.Logger) coord.MemberConfig {
	return coord.MemberConfig{Name: c.Name, DataDir: c.DataDir, PeerAddr: c.PeerAddr, ClientAddr: c.ClientAddr,
		InitialCluster: c.InitialCluster, ClusterToken: c.ClusterToken, TLS: files, TickMs: c.TickMS, ElectionMs: c.ElectionMS,
		Logger: log, LogLevel: slog.LevelError}
}

// coordination is the site controller's etcd: its member, its client,
// its candidacy, and the service ledger on top.
type coordination struct {
	local     string             // this member's client address
	clientCfg coord.ClientConfig // this controller's identity toward etcd
	member    *coord.Member
	client    *coord.Client
	lead      *coord.Leadership
	ledger    *etcdledger.Ledger
}

func (c *coordination) close() {
	if c.ledger != nil {
		c.ledger.Close()
	}
	if c.lead != nil {
		c.lead.Close()
	}
	if c.client != nil {
		c.client.Close()
	}
	if c.member != nil {
		c.member.Close()
	}
}

// lazyLedger is the service ledger once coordination runs and this
// controller leads; until then every call is unavailable.
type lazyLedger struct {
	l atomic.Pointer[etcdledger.Ledger]
}

var errNotLeading = errs.New(errs.Unavailable, "service management is starting (this controller does not lead the site's coordination yet)")

func (z *lazyLedger) get() (*etcdledger.Ledger, error) {
	if l := z.l.Load(); l != nil {
		return l, nil
	}
	return nil, errNotLeading
}

func (z *lazyLedger) Load(ctx context.Context, g string) (servicemgr.Placement, error) {
	l, err := z.get()
	if err != nil {
		return servicemgr.Placement{}, err
	}
	p, err := l.Load(ctx, g)
	return p, leaderErr(err)
}

func (z *lazyLedger) Commit(ctx context.Context, g string, prev uint64, next servicemgr.Placement) (uint64, error) {
	l, err := z.get()
	if err != nil {
		return 0, err
	}
	e, err := l.Commit(ctx, g, prev, next)
	return e, leaderErr(err)
}

func (z *lazyLedger) Remove(ctx context.Context, g string) error {
	l, err := z.get()
	if err != nil {
		return err
	}
	return leaderErr(l.Remove(ctx, g))
}

func (z *lazyLedger) Release(ctx context.Context, h string) error {
	l, err := z.get()
	if err != nil {
		return err
	}
	return leaderErr(l.Release(ctx, h))
}

// leaderErr turns a lost leadership into the API's not-leader error.
func leaderErr(err error) error {
	if errors.Is(err, coord.ErrNotLeader) {
		return errs.Wrapf(errs.NotLeader, "this controller no longer leads the site's coordination")
	}
	return err
}

// openServices opens the service group store and the manager; the
// coordination they need starts with Run.
func (s *Subcloud) openServices(ctx context.Context) error {
	specs, err := servicedb.Open(ctx, s.shell.DB)
	if err != nil {
		return err
	}
	s.ledger = &lazyLedger{}
	if s.cfg.HA != nil && s.cfg.HA.Ledger != nil {
		return s.newServices(s.cfg.HA.Ledger, specs)
	}
	return s.newServices(s.ledger, specs)
}

// startCoordination starts the etcd member, its client and the election.
func (s *Subcloud) startCoordination(ctx context.Context) (*coordination, error) {
	cfg := EtcdConfig{}
	if s.cfg.Etcd != nil {
		cfg = *s.cfg.Etcd
	}
	if cfg.Name == "" {
		cfg.Name = "controller"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(s.cfg.Shell.DataDir, "etcd")
	}
	host, port, err := net.SplitHostPort(s.cfg.Shell.Listen)
	if err != nil {
		return nil, fmt.Errorf("subcloud: etcd: listen %q: %w", s.cfg.Shell.Listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	for _, a := range []*string{&cfg.ClientAddr, &cfg.PeerAddr} {
		if *a != "" {
			continue
		}
		p := 2379
		if a == &cfg.PeerAddr {
			p = 2380
		}
		if port == "0" {
			if p, err = freeTCPPort(host); err != nil {
				return nil, err
			}
		}
		*a = net.JoinHostPort(host, strconv.Itoa(p))
	}
	var tlsFiles coord.TLSFiles
	if t := cfg.TLS; t != nil {
		tlsFiles = coord.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.CAFile}
	} else if tlsFiles, err = s.etcdCert(cfg); err != nil {
		return nil, err
	}
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		endpoints = []string{cfg.ClientAddr}
	}
	quiet := s.log.With("component", "etcd")
	c := &coordination{}
	mc := cfg.MemberConfig(tlsFiles, quiet)
	if mc.ClusterToken == "" {
		mc.ClusterToken = "petrel-" + s.cfg.Site
	}
	mc.ReadyTimeout = 10 * time.Minute
	if !cfg.ClientOnly {
		// A site's first start waits for a quorum of its members (the
		// others boot at the same time); a restart finds its data.
		mctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		c.member, err = coord.StartMember(mctx, mc)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("subcloud: etcd member: %w", err)
		}
	}
	c.local = cfg.ClientAddr
	c.clientCfg = coord.ClientConfig{Endpoints: endpoints, TLS: tlsFiles, Logger: quiet, LogLevel: slog.LevelError}
	if c.client, err = coord.NewClient(c.clientCfg); err != nil {
		c.close()
		return nil, err
	}
	prefix := "/petrel/" + s.cfg.Site + "/"
	if c.lead, err = coord.NewLeadership(coord.LeadershipConfig{Client: c.client, Prefix: prefix + "leader/",
		Name: cfg.Name, Logger: s.log.With("component", "leadership")}); err != nil {
		c.close()
		return nil, err
	}
	if c.ledger, err = etcdledger.New(etcdledger.Config{Client: c.client, Guard: c.lead.Guard,
		Prefix: prefix + "services/", Logger: s.log.With("component", "ledger")}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// etcdCert issues this member's certificate (server and client usage)
// from the site's CA at every start, as the API's own.
func (s *Subcloud) etcdCert(cfg EtcdConfig) (coord.TLSFiles, error) {
	caDir := s.cfg.Shell.TLS.CADir
	if caDir == "" {
		caDir = filepath.Join(s.cfg.Shell.DataDir, "pki")
	}
	ca, err := pki.LoadOrCreateCA(caDir, "Petrel CA")
	if err != nil {
		return coord.TLSFiles{}, fmt.Errorf("subcloud: etcd certificate: %w", err)
	}
	var ips []net.IP
	for _, a := range []string{cfg.ClientAddr, cfg.PeerAddr} {
		h, _, _ := net.SplitHostPort(a)
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		}
	}
	ips = append(ips, net.IPv4(127, 0, 0, 1))
	issued, err := ca.IssuePeer("etcd-"+s.cfg.Site+"-"+cfg.Name, []string{"localhost"}, ips, 90*24*time.Hour)
	if err != nil {
		return coord.TLSFiles{}, err
	}
	dir := filepath.Join(s.cfg.Shell.DataDir, "etcd-pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return coord.TLSFiles{}, err
	}
	f := coord.TLSFiles{CertFile: filepath.Join(dir, "etcd.crt"), KeyFile: filepath.Join(dir, "etcd.key"),
		CAFile: filepath.Join(caDir, pki.CACertFile)}
	return f, issued.Write(f.CertFile, f.KeyFile)
}

func freeTCPPort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// runServices runs coordination and, while this controller leads, the
// service group manager. The declared groups are applied each time it
// takes the lead.
func (s *Subcloud) runServices(ctx context.Context) error {
	if s.cfg.HA != nil && s.cfg.HA.Ledger != nil {
		// The epochs live in the replicated database (duplex): the
		// active controller manages the groups at the pair's epoch.
		s.services.Lead(s.cfg.HA.Epoch())
		defer s.services.Follow()
		if len(s.cfg.ServiceGroups) > 0 {
			go s.applyDeclared(ctx)
		}
		return s.services.Run(ctx)
	}
	var c *coordination
	for {
		var err error
		if c, err = s.startCoordination(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		// The site keeps serving everything else; service HA reports
		// itself unavailable until its coordination starts.
		s.log.Error("coordination did not start: service groups are unavailable; retrying in 10 s", "err", err)
		t := time.NewTimer(10 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	defer c.close()
	s.coord = c
	err := c.lead.RunWhileLeader(ctx, func(ctx context.Context, g coord.Guard) error {
		s.log.Info("leading the site's coordination: service management on", "guard_rev", g.Rev)
		s.ledger.l.Store(c.ledger)
		defer s.ledger.l.Store(nil)
		s.services.Lead(uint64(g.Rev))
		defer s.services.Follow()
		if len(s.cfg.ServiceGroups) > 0 {
			go s.applyDeclared(ctx)
		}
		if s.cfg.Etcd != nil && len(s.cfg.Etcd.InitialCluster) > 1 {
			// Also on a controller pair's active: a failover of a service
			// on any other host (the standby controller's included) must
			// not wait for a raft election first (T4b). The active's own
			// loss costs the standby one (docs/ha.md).
			go s.pinRaftLeader(ctx, c)
		}
		return s.services.Run(ctx)
	})
	if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return err
	}
	return nil
}

// applyDeclared applies the configuration's service groups, retrying
// while their hosts have not joined yet (a site's first start).
func (s *Subcloud) applyDeclared(ctx context.Context) {
	logged := false
	for {
		err := s.services.Apply(ctx, s.cfg.ServiceGroups)
		if err == nil {
			s.log.Info("the configuration's service groups are applied", "groups", len(s.cfg.ServiceGroups))
			return
		}
		if !logged {
			s.log.Warn("the configuration's service groups are not applied yet; retrying", "err", err)
			logged = true
		}
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pinRaftLeader keeps the raft leadership of the site's etcd on this
// controller's own member while it leads (checked every 10 s): the death of
// another member's host then never costs a raft election before a
// failover's commit (measured: a commit waited out etcd's request timeout,
// about 7 s, when the raft leader's host lost power).
func (s *Subcloud) pinRaftLeader(ctx context.Context, c *coordination) {
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		moved, err := coord.PinRaftLeader(pctx, c.clientCfg, c.local)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("could not move etcd's raft leadership to this controller's member", "err", err)
		case moved:
			s.log.Info("moved etcd's raft leadership to this controller's member")
		}
		t := time.NewTimer(10 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
