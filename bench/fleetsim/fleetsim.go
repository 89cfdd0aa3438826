// Package fleetsim simulates a fleet of sites against a real central: many
// sites per process, each a real dial-home client (its own certificate
// issued by central, its own 127.x source address, mutual TLS, a yamux
// session, linkproto hello/welcome, updates with sequence numbers, event
// batches with acks) that also answers central's relayed HTTP on the
// streams central opens: an in-memory Nova flavors API, Glance images and
// the /v1/sync routes, enough for central's sync engine to reach in-sync.
//
// What a simulated site does is decided by its own random source, seeded
// from Config.Seed and the site's index, so a run is repeatable: alarm
// churn (raise/clear events and the summary that counts them), WAN loss
// (update frames dropped), connection cuts, and reconnect jitter.
//
// `petrel bench fleet` runs several simulator processes (`petrel bench
// sitesim`, hidden) and drives them through a control socket (control.go);
// docs/fleet.md describes both.
package fleetsim

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/swpatch"
)

// Config configures one simulator process.
type Config struct {
	CentralAddr string `json:"central_addr"` // central's site listener, host:port
	ServerName  string `json:"server_name"`  // name in central's certificate; default "central"
	CACert      string `json:"ca_cert"`      // PEM file verifying central's certificate
	RelayKey    string `json:"relay_key"`    // PEM file: central's relay-assertion public key
	CredDir     string `json:"cred_dir"`     // <site>.key and <site>.crt for every site
	Sites       []Site `json:"sites"`
	// Interval is the update period (keepalive or summary); default 5 s,
	// central's default.
	Interval time.Duration `json:"interval"`
	// AlarmsPerMinute is each site's rate of alarm raise/clear events
	// (each also changes the summary: a delta); default 1.
	AlarmsPerMinute float64 `json:"alarms_per_minute"`
	// Loss is the fraction of update frames a site's WAN drops (0..1).
	Loss float64 `json:"loss"`
	// CutsPerHour is each site's rate of connection cuts (then a
	// reconnect); 0: none.
	CutsPerHour float64 `json:"cuts_per_hour"`
	// Delay is added one way to every control frame and both ways to
	// every relayed call (a WAN's latency).
	Delay time.Duration `json:"delay"`
	Seed  uint64        `json:"seed"`
	// Control is the unix socket the control API listens on ("": none).
	Control string `json:"control"`
	// PatchPublicKey verifies patch uploads (PEM file; "": refused).
	PatchPublicKey string `json:"patch_public_key"`
	// StrategyDuration is how long a simulated site strategy applies
	// (its steps, one per host, done evenly); default 10 s.
	StrategyDuration time.Duration `json:"strategy_duration"`
}

// Site is one simulated site: its registered name and its index in the
// fleet, which picks its source address and its random stream.
type Site struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
}

// SourceAddr is the loopback address site index i dials from: spread over
// 127.16.0.1 upwards (never 127.0.0.1, where central listens), 254 per /24.
func SourceAddr(i int) net.IP {
	return net.IPv4(127, byte(16+i/(254*256)), byte((i/254)%256), byte(1+i%254))
}

// KeyFile and CertFile are where a site's credentials are cached in dir.
func KeyFile(dir, site string) string  { return filepath.Join(dir, site+".key") }
func CertFile(dir, site string) string { return filepath.Join(dir, site+".crt") }

// Sim is a running simulator.
type Sim struct {
	cfg   Config
	log   *slog.Logger
	sites []*site
	byNm  map[string]*site
	pub   ed25519.PublicKey
	// patchKey verifies patch uploads (nil: refused).
	patchKey ed25519.PublicKey
	roots    *x509.CertPool
	epoch    string

	dials, dialErrs, welcomes, updates, dropped, events, cuts atomic.Uint64
}

// New loads every site's credentials; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Sim, error) {
	if cfg.CentralAddr == "" || cfg.CACert == "" || cfg.RelayKey == "" || cfg.CredDir == "" {
		return nil, errors.New("fleetsim: central_addr, ca_cert, relay_key and cred_dir are required")
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "central"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.AlarmsPerMinute == 0 {
		cfg.AlarmsPerMinute = 1
	}
	if cfg.Loss < 0 || cfg.Loss >= 1 {
		return nil, fmt.Errorf("fleetsim: loss %v: want 0 <= loss < 1", cfg.Loss)
	}
	roots, err := pki.CertPool(cfg.CACert)
	if err != nil {
		return nil, err
	}
	pub, err := auth.LoadPublicKey(cfg.RelayKey)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: relay key: %w", err)
	}
	if cfg.StrategyDuration <= 0 {
		cfg.StrategyDuration = 10 * time.Second
	}
	var patchKey ed25519.PublicKey
	if cfg.PatchPublicKey != "" {
		if patchKey, err = swpatch.LoadPublicKey(cfg.PatchPublicKey); err != nil {
			return nil, fmt.Errorf("fleetsim: patch key: %w", err)
		}
	}
	s := &Sim{cfg: cfg, log: log, pub: pub, patchKey: patchKey, roots: roots, byNm: map[string]*site{},
		epoch: fmt.Sprintf("sim-%d-%d", cfg.Seed, time.Now().UnixNano())}
	for _, sp := range cfg.Sites {
		pair, err := tls.LoadX509KeyPair(CertFile(cfg.CredDir, sp.Name), KeyFile(cfg.CredDir, sp.Name))
		if err != nil {
			return nil, fmt.Errorf("fleetsim: %s: %w", sp.Name, err)
		}
		st := newSite(s, sp, pair)
		s.sites = append(s.sites, st)
		s.byNm[sp.Name] = st
	}
	return s, nil
}

// Run runs every site until ctx ends; sites start spread over one interval.
func (s *Sim) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	spread := s.cfg.Interval / time.Duration(max(len(s.sites), 1))
	for i, st := range s.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !sleepCtx(ctx, time.Duration(i)*spread) {
				return
			}
			st.run(ctx)
		}()
	}
	if s.cfg.Control != "" {
		wg.Add(1)
		go func() { defer wg.Done(); s.serveControl(ctx) }()
	}
	wg.Wait()
	return nil
}

func seedOf(seed uint64, name string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, name)
	return seed ^ h.Sum64()
}

func newRand(seed uint64, name string) *rand.Rand {
	return rand.New(rand.NewPCG(seedOf(seed, name), seed))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// yamuxConfig matches a real site's session settings (subcloud/homelink.go).
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval, c.ConnectionWriteTimeout, c.LogOutput = 5*time.Second, 10*time.Second, io.Discard
	// Small windows: a simulated site's relayed answers are small, and
	// 5,000 sessions per process must fit.
	c.MaxStreamWindowSize = 256 * 1024
	return c
}
