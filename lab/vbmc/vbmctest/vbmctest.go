// Package vbmctest serves the lab chassis' BMC protocols (IPMI and
// Redfish, package vbmc) over an in-memory power model, on 127.0.0.1, for
// tests that need a BMC but no lab host.
package vbmctest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/lab/vbmc"
)

// Power is an in-memory vbmc.Power: actions take effect at once, after an
// optional delay that makes the BMC slow.
type Power struct {
	mu      sync.Mutex
	state   string
	actions []vbmc.Action
	delay   time.Duration
}

// NewPower returns a power model in state (vbmc.On or vbmc.Off).
func NewPower(state string) *Power { return &Power{state: state} }

// SetDelay makes every later state read and action take d.
func (p *Power) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *Power) wait(ctx context.Context) {
	p.mu.Lock()
	d := p.delay
	p.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// PowerState implements vbmc.Power.
func (p *Power) PowerState() string {
	p.wait(context.Background())
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// PowerAction implements vbmc.Power: on and a soft or hard restart leave
// the host on, off and a graceful shutdown leave it off.
func (p *Power) PowerAction(ctx context.Context, a vbmc.Action) error {
	p.wait(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.actions = append(p.actions, a)
	switch a {
	case vbmc.ActionOff, vbmc.ActionSoftOff:
		p.state = vbmc.Off
	default:
		p.state = vbmc.On
	}
	return nil
}

// Actions lists the actions performed so far.
func (p *Power) Actions() []vbmc.Action {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]vbmc.Action(nil), p.actions...)
}

// Server is a running BMC.
type Server struct {
	IPMI        string          // 127.0.0.1:port (UDP)
	RedfishAddr string          // 127.0.0.1:port
	Credentials bmc.Credentials // its one user
	CredsFile   string          // the same, as a 0600 file
	CACert      string          // file of the CA that issued its certificate
	UUID        string
}

// RedfishURL is the service root's URL.
func (s *Server) RedfishURL() string { return "https://" + s.RedfishAddr + "/redfish/v1" }

// Start serves p's BMC until the test ends, with a fresh user and password
// and a certificate for 127.0.0.1 from a fresh CA.
func Start(t testing.TB, p vbmc.Power) *Server {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "vbmctest CA")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssueServer("vbmc", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "bmc.crt"), filepath.Join(dir, "bmc.key")
	if err := is.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	s := &Server{Credentials: bmc.Credentials{Username: "admin", Password: "vbmc-" + filepath.Base(dir)},
		CredsFile: filepath.Join(dir, "bmc.credentials"), CACert: filepath.Join(dir, "ca", pki.CACertFile)}
	if err := bmc.WriteCredentials(s.CredsFile, s.Credentials); err != nil {
		t.Fatal(err)
	}
	cfg := vbmc.BMCConfig{CredentialsFile: s.CredsFile, TLSCert: certFile, TLSKey: keyFile,
		Endpoints: []vbmc.Endpoint{{IPMI: "127.0.0.1:0", Redfish: "127.0.0.1:0"}}}
	ctx, cancel := context.WithCancel(context.Background())
	b, err := vbmc.ListenBMC(ctx, cfg, p, t.Name(), slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s.IPMI, s.RedfishAddr, s.UUID = b.IPMIAddrs()[0], b.RedfishAddrs()[0], b.UUID()
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vbmc Serve: %v", err)
		}
	})
	return s
}
