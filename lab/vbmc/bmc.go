package vbmc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/lab/hostnet"
)

// Action is a power action requested through a BMC protocol.
type Action string

// Power actions. Reset is a hard reset (the lab's power model has no warm
// reboot: it is off, then on); SoftOff is an ACPI-style graceful shutdown:
// the host's init is asked to stop, and the chassis powers off when it has
// (or after a grace period).
const (
	ActionOn          Action = "on"
	ActionOff         Action = "off"
	ActionCycle       Action = "cycle"
	ActionReset       Action = "reset"
	ActionSoftOff     Action = "soft"
	ActionSoftRestart Action = "soft-restart"
)

// Power is the chassis as its BMC protocols see it.
type Power interface {
	// PowerState is On or Off.
	PowerState() string
	// PowerAction performs a; graceful actions return once started.
	PowerAction(ctx context.Context, a Action) error
}

// BMCConfig is how a chassis serves its BMC: IPMI v2.0 (RMCP+, UDP) and
// Redfish (HTTPS) on each endpoint, one user from a 0600 credentials file.
type BMCConfig struct {
	CredentialsFile string     `json:"credentials_file"` // 0600 YAML: username, password
	TLSCert         string     `json:"tls_cert"`         // Redfish server certificate (PEM)
	TLSKey          string     `json:"tls_key"`
	Endpoints       []Endpoint `json:"endpoints"`
}

// Endpoint is one place the BMC answers: addresses in a network namespace
// ("" is the chassis' own, the root namespace).
type Endpoint struct {
	Netns   string `json:"netns,omitempty"`
	IPMI    string `json:"ipmi,omitempty"`    // UDP ip:port
	Redfish string `json:"redfish,omitempty"` // TCP ip:port
}

// BMC is a running BMC: its sockets are open from ListenBMC on.
type BMC struct {
	power Power
	creds bmc.Credentials
	id    string
	log   *slog.Logger
	ipmi  []*net.UDPConn
	rf    []net.Listener
	tls   *tls.Config
}

// ListenBMC loads the credentials and certificate and opens every
// endpoint's sockets; Serve then answers on them. id names the machine
// (its UUID and IPMI GUID derive from it).
func ListenBMC(ctx context.Context, cfg BMCConfig, p Power, id string, log *slog.Logger) (_ *BMC, err error) {
	creds, err := bmc.LoadCredentials(cfg.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("vbmc: %w", err)
	}
	b := &BMC{power: p, creds: creds, id: id, log: log}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	for _, e := range cfg.Endpoints {
		if e.Redfish != "" && b.tls == nil {
			if b.tls, err = pki.ServerTLS(cfg.TLSCert, cfg.TLSKey); err != nil {
				return nil, fmt.Errorf("vbmc: redfish certificate: %w", err)
			}
		}
		if e.IPMI != "" {
			var c *net.UDPConn
			if e.Netns == "" {
				var lc net.ListenConfig
				var pc net.PacketConn
				if pc, err = lc.ListenPacket(ctx, "udp", e.IPMI); err == nil {
					c = pc.(*net.UDPConn)
				}
			} else {
				c, err = hostnet.ListenPacketIn(ctx, e.Netns, e.IPMI)
			}
			if err != nil {
				return nil, fmt.Errorf("vbmc: ipmi endpoint: %w", err)
			}
			b.ipmi = append(b.ipmi, c)
		}
		if e.Redfish != "" {
			var ln net.Listener
			if e.Netns == "" {
				var lc net.ListenConfig
				ln, err = lc.Listen(ctx, "tcp", e.Redfish)
			} else {
				ln, err = hostnet.ListenIn(ctx, e.Netns, e.Redfish)
			}
			if err != nil {
				return nil, fmt.Errorf("vbmc: redfish endpoint: %w", err)
			}
			b.rf = append(b.rf, ln)
		}
	}
	return b, nil
}

func (b *BMC) close() {
	for _, c := range b.ipmi {
		c.Close()
	}
	for _, l := range b.rf {
		l.Close()
	}
}

// IPMIAddrs are the local addresses of the IPMI sockets.
func (b *BMC) IPMIAddrs() []string {
	var out []string
	for _, c := range b.ipmi {
		out = append(out, c.LocalAddr().String())
	}
	return out
}

// RedfishAddrs are the local addresses of the Redfish listeners.
func (b *BMC) RedfishAddrs() []string {
	var out []string
	for _, l := range b.rf {
		out = append(out, l.Addr().String())
	}
	return out
}

// UUID is the system UUID the BMC reports.
func (b *BMC) UUID() string {
	return uuid.NewHash(sha256.New(), uuid.NameSpaceOID, []byte(b.id), 5).String()
}

// Serve answers on every endpoint until ctx ends, then closes them all.
func (b *BMC) Serve(ctx context.Context) error {
	defer b.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(b.ipmi)+len(b.rf))
	for _, c := range b.ipmi {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- serveIPMI(ctx, c, b.power, b.creds.Username, b.creds.Password, b.id, b.log)
		}()
	}
	rf := newRedfish(b.power, b.creds.Username, b.creds.Password, b.UUID(), b.log)
	for _, ln := range b.rf {
		srv := &http.Server{Handler: rf.handler(), TLSConfig: b.tls, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelDebug)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.log.Info("serving Redfish", "addr", ln.Addr().String())
			err := srv.ServeTLS(ln, "", "")
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
		stop := context.AfterFunc(ctx, func() { srv.Close() })
		defer stop()
	}
	var first error
	go func() { wg.Wait(); close(errc) }()
	for err := range errc {
		if err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}
