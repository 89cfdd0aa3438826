package ctlha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/pgrepl"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/subcloud/witness"
)

// FileConfig is the ha section of a paired controller's site controller
// configuration (docs/ha.md, Configuration).
type FileConfig struct {
	Controller string `json:"controller"` // this controller's host name
	Peer       string `json:"peer"`
	// Mode: multi-server (the site's etcd elects the active controller)
	// or duplex (the epochs live in the database; central is the
	// witness). Default from the site's shape and etcd.
	Mode Mode `json:"mode"`
	// Bootstrap: this controller creates the site's database at the
	// site's first start; the other clones it.
	Bootstrap bool   `json:"bootstrap"`
	Floating  string `json:"floating"`  // ADDR/PREFIX of the site controller's API
	Interface string `json:"interface"` // where it is held; default mgmt
	// Platform that moves the floating address: "host" (the machine's
	// own interfaces; the default) or "lab" (a lab host's namespace).
	Platform  string `json:"platform"`
	Heartbeat struct {
		KeyFile string            `json:"key_file"`
		Local   map[string]string `json:"local"` // network -> host:port
		Peer    map[string]string `json:"peer"`
	} `json:"heartbeat"`
	Postgres struct {
		BinDir    string   `json:"bin_dir"`
		DataDir   string   `json:"data_dir"`
		SocketDir string   `json:"socket_dir"`
		Port      int      `json:"port"`
		Listen    []string `json:"listen"`
		Peers     []string `json:"peers"` // prefixes allowed to replicate
		PeerHost  string   `json:"peer_host"`
		PeerPort  int      `json:"peer_port"`
		Database  string   `json:"database"`
		TLS       struct {
			CAFile   string `json:"ca_file"`
			CertFile string `json:"cert_file"`
			KeyFile  string `json:"key_file"`
		} `json:"tls"`
	} `json:"postgres"`
	PeerBMC *struct {
		IPMI            string `json:"ipmi"`
		CredentialsFile string `json:"credentials_file"`
	} `json:"peer_bmc"`
	// Witness: keep a witness session with central (duplex; needs the
	// site's central link).
	Witness bool `json:"witness"`
	// StateFile keeps the highest epoch this controller held or followed;
	// default ha-state.json beside the database's data directory.
	StateFile string `json:"state_file"`
	// StatusListen: where the controller answers its role (ServeStatus);
	// "" none.
	StatusListen string `json:"status_listen"`
	// LostAfter, FenceDelay: the pair's timers (docs/ha.md); zero: defaults.
	LostAfter  string `json:"lost_after"`
	FenceDelay string `json:"fence_delay"`
}

// Pair is a built runner with what it owns.
type Pair struct {
	*Runner
	closers []func()
	runs    []func(ctx context.Context) error
}

// Run runs the pair's parts (witness session, election) and the runner.
func (p *Pair) Run(ctx context.Context) error {
	for _, r := range p.runs {
		go func() { _ = r(ctx) }()
	}
	defer p.Close()
	return p.Runner.Run(ctx)
}

// Close releases what Build opened.
func (p *Pair) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// siteShutdownGrace bounds how long a stepping-down active's site
// controller waits for calls in flight (an image upload can take minutes).
const siteShutdownGrace = 300 * time.Millisecond

// Build assembles one controller of a pair from its configuration. site is
// the site controller's configuration; every start of the site controller
// gets a copy with the pair's hooks and the database.
func Build(fc FileConfig, site subcloud.Config, log *slog.Logger) (*Pair, error) {
	if fc.Controller == "" || fc.Peer == "" {
		return nil, errors.New("config: ha: controller and peer are required")
	}
	mode := fc.Mode
	if mode == "" {
		mode = ModeDuplex
		if site.Etcd != nil && len(site.Etcd.InitialCluster) >= 3 {
			mode = ModeMultiServer
		}
	}
	if mode != ModeDuplex && mode != ModeMultiServer {
		return nil, fmt.Errorf("config: ha: mode %q: want duplex or multi-server", mode)
	}
	var floating netip.Prefix
	if fc.Floating != "" {
		var err error
		if floating, err = netip.ParsePrefix(fc.Floating); err != nil {
			return nil, fmt.Errorf("config: ha: floating %q: %w", fc.Floating, err)
		}
	}
	if fc.Interface == "" {
		fc.Interface = "mgmt"
	}
	var addrs Addresses
	switch fc.Platform {
	case "", "host":
		addrs = &agent.HostPlatform{}
	case "lab":
		addrs = &agent.LabPlatform{}
	default:
		return nil, fmt.Errorf("config: ha: platform %q: want host or lab", fc.Platform)
	}
	timing := Timing{}
	for _, d := range []struct {
		s   string
		out *time.Duration
	}{{fc.LostAfter, &timing.LostAfter}, {fc.FenceDelay, &timing.FenceDelay}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("config: ha: duration %q: want a positive duration like 600ms", d.s)
		}
		*d.out = v
	}
	timing = timing.WithDefaults()
	p := &Pair{}
	fail := func(err error) (*Pair, error) { p.Close(); return nil, err }

	pg := fc.Postgres
	var peers []netip.Prefix
	for _, s := range pg.Peers {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return fail(fmt.Errorf("config: ha: postgres peers %q: %w", s, err))
		}
		peers = append(peers, pf)
	}
	db, err := pgrepl.New(pgrepl.Config{BinDir: pg.BinDir, DataDir: pg.DataDir, SocketDir: pg.SocketDir, Listen: pg.Listen,
		Port: pg.Port, Name: fc.Controller, Peers: peers, PeerNames: []string{fc.Peer}, SyncAfterPromote: true,
		Replication: pgrepl.ReplicationTLS{CAFile: pg.TLS.CAFile, CertFile: pg.TLS.CertFile, KeyFile: pg.TLS.KeyFile},
		Logger:      log.With("component", "postgres")})
	if err != nil {
		return fail(fmt.Errorf("config: ha: postgres: %w", err))
	}
	p.closers = append(p.closers, db.Close) // its kept connection
	nets := func(m map[string]string) map[Network]string {
		out := map[Network]string{}
		for k, v := range m {
			out[Network(k)] = v
		}
		return out
	}
	beats, err := NewHeartbeat(HeartbeatConfig{Site: site.Site, Self: fc.Controller, Peer: fc.Peer, Local: nets(fc.Heartbeat.Local),
		PeerAddrs: nets(fc.Heartbeat.Peer), KeyFile: fc.Heartbeat.KeyFile, LostAfter: timing.LostAfter,
		Logger: log.With("component", "heartbeat")})
	if err != nil {
		return fail(fmt.Errorf("config: ha: heartbeat: %w", err))
	}
	cfg := Config{Mode: mode, Site: site.Site, Self: fc.Controller, Peer: fc.Peer, Bootstrap: fc.Bootstrap, DB: pgNode{db},
		PeerDB: pgrepl.Peer{Name: fc.Peer, Host: pg.PeerHost, Port: pg.PeerPort}, Database: pg.Database, Beats: beats,
		Floating: Floating{Interface: fc.Interface, Prefix: floating}, Addrs: addrs, Timing: timing,
		Logger: log, StateFile: fc.StateFile}
	if cfg.StateFile == "" && pg.DataDir != "" {
		cfg.StateFile = filepath.Join(filepath.Dir(pg.DataDir), "ha-state.json")
	}
	if b := fc.PeerBMC; b != nil {
		creds, err := bmc.LoadCredentials(b.CredentialsFile)
		if err != nil {
			return fail(fmt.Errorf("config: ha: peer_bmc: %w", err))
		}
		c, err := bmc.New(bmc.Config{Type: bmc.IPMI, IPMI: b.IPMI, Credentials: creds, Timeout: 2 * time.Second,
			Logger: log.With("component", "peer-bmc")})
		if err != nil {
			return fail(fmt.Errorf("config: ha: peer_bmc: %w", err))
		}
		cfg.PeerBMC = NewBMCPower(c)
	}
	if fc.Witness {
		h := site.Central
		if h == nil {
			return fail(errors.New("config: ha: witness needs the site's central link (central:)"))
		}
		tlsCfg, err := witness.TLSConfig(h.CertFile, h.KeyFile, h.CACert, "central")
		if err != nil {
			return fail(fmt.Errorf("config: ha: witness: %w", err))
		}
		w, err := witness.New(witness.Config{CentralAddr: h.Addr, TLS: tlsCfg, Site: site.Site, Controller: fc.Controller,
			Logger: log.With("component", "witness")})
		if err != nil {
			return fail(fmt.Errorf("config: ha: witness: %w", err))
		}
		p.runs = append(p.runs, w.Run)
		cfg.Witness = NewWitness(w)
	}
	if mode == ModeMultiServer {
		ec := site.Etcd
		if ec == nil || ec.TLS == nil {
			return fail(errors.New("config: ha: a multi-server pair needs the site's etcd (etcd: with tls)"))
		}
		endpoints := ec.Endpoints
		if len(endpoints) == 0 {
			endpoints = []string{ec.ClientAddr}
		}
		ccfg := coord.ClientConfig{Endpoints: endpoints,
			TLS:    coord.TLSFiles{CertFile: ec.TLS.CertFile, KeyFile: ec.TLS.KeyFile, CAFile: ec.TLS.CAFile},
			Logger: log.With("component", "etcd-client"), LogLevel: slog.LevelError}
		cli, err := coord.NewClient(ccfg)
		if err != nil {
			return fail(err)
		}
		p.closers = append(p.closers, func() { cli.Close() })
		el, err := NewEtcdElector(cli, site.Site, fc.Controller, 2*time.Second, log.With("component", "election"))
		if err != nil {
			return fail(err)
		}
		p.closers = append(p.closers, func() { el.Close() })
		cfg.Elector = el
	}
	cfg.Warm = subcloud.Warm
	cfg.OpenStores = func(ctx context.Context, dsn string) (*SiteStores, error) {
		st := &SiteStores{}
		var errShell, errLedger error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); st.Shell, errShell = sqldb.Open(ctx, dsn) }()
		if mode == ModeDuplex {
			st.Ledger, errLedger = sqldb.Open(ctx, dsn)
		}
		wg.Wait()
		if err := errors.Join(errShell, errLedger); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}
	cfg.NewSite = func(ctx context.Context, ha *subcloud.HAConfig, dsn string, stores *SiteStores) (Site, error) {
		sc := site
		sc.HA = ha
		sc.Shell.Database = dsn
		// A step-down stops the database with the site: what is in
		// flight then fails anyway, and the peer waits for this stop.
		sc.Shell.ShutdownGrace = siteShutdownGrace
		// Built while taking over, before the floating address is here.
		sc.Shell.FreeBind = true
		var ledgerDB *sqldb.DB
		if stores != nil {
			sc.Shell.DB, ledgerDB = stores.Shell, stores.Ledger
		}
		closeLedger := func() {}
		if mode == ModeDuplex {
			l, c, err := openLedger(ctx, dsn, ledgerDB, ha)
			if err != nil {
				if sc.Shell.DB != nil {
					sc.Shell.DB.Close()
				}
				return nil, err
			}
			ha.Ledger, closeLedger = l, c
		} else if ledgerDB != nil {
			ledgerDB.Close()
		}
		s, err := subcloud.New(ctx, sc)
		if err != nil {
			closeLedger()
			if sc.Shell.DB != nil {
				sc.Shell.DB.Close() // closing twice is safe
			}
			return nil, err
		}
		return siteOf{s: s, close: closeLedger}, nil
	}
	if p.Runner, err = New(cfg); err != nil {
		return fail(err)
	}
	if fc.StatusListen != "" {
		r := p.Runner
		p.runs = append(p.runs, func(ctx context.Context) error {
			err := r.ServeStatus(ctx, fc.StatusListen)
			if err != nil {
				log.Error("status listener", "err", err)
			}
			return err
		})
	}
	return p, nil
}
