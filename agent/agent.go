// Package agent is the host agent, `petrel agent`: it gives its host an
// identity (the machine UUID), joins the site with a single-use join token
// in exchange for a certificate bound to that identity, and from then on
// reports the host's inventory over mutual TLS — everything at start, then
// what changed — as an explicit anti-entropy state machine. Its resource
// monitors (package monitor) watch the host's CPU, memory and software
// root, and every report carries the resource alarms they assert. Once
// joined, it runs the service-group members the site assigns to the host
// (package services), fed by a long poll of the site's desired state.
// Every action that changes the machine, and every reading of its
// resources, goes through its Platform.
package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/agent/services"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
)

// Config configures an agent.
type Config struct {
	SiteURL       string   // the site controller's API, https://HOST:PORT
	CACert        string   // PEM file that verifies the site's server certificate
	JoinTokenFile string   // 0600 file with a join token; needed until the agent has joined
	StateDir      string   // keeps machine-id, key, certificate (0600)
	DMIPath       string   // default DMIProductUUID
	SysRoot       string   // root of /proc and /sys to read; default "/"
	Profile       *Profile // optional hardware overlay (the lab's)
	Platform      Platform // required
	Version       string   // software version reported
	// PatchPublicKey verifies patch archives before the platform installs
	// them; nil: installs are refused.
	PatchPublicKey ed25519.PublicKey
	Logger         *slog.Logger

	CheckInterval time.Duration // how often to look for changes; default 2 s
	FullInterval  time.Duration // full report at least this often; default 5 min

	Monitor        monitor.Config // resource monitors; zero fields take monitor's defaults
	MonitorDisable bool           // no resource monitors (reports then assert no alarms)
}

// Agent is a running host agent.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	machineID string
	bootID    string
	client    *http.Client // mTLS once joined
	gen       uint64
	sent      *inventory.Hardware // what the site holds
	sentAlarm []inventory.ResourceAlarm
	mon       *monitor.Monitor // nil when disabled
	hb        pulses           // answering the site's heartbeat
	epoch     uint64           // the newest controller epoch seen
	badAlarms string           // the last refusable alarm set logged
	joined    chan struct{}

	sentSW     *swpatch.Status // the software status the site holds
	confirmed  bool            // the boot was confirmed to the platform (or needed no confirmation)
	installErr *swpatch.Status // the last install that failed before the platform saw it (Failed, FailedReason)
	forceFull  bool            // send a full report at the next turn (after an install)

	svc          *services.Runner // the host's service-group members
	svcServed    atomic.Bool      // the site answered the services poll (reports go only then)
	svcNotServed time.Duration    // how often to ask a site that does not serve services
}

// State-dir file names.
const (
	keyFile  = "host.key"
	certFile = "host.crt"
)

// New validates cfg and determines the machine identity.
func New(cfg Config) (*Agent, error) {
	if cfg.SiteURL == "" || cfg.CACert == "" || cfg.StateDir == "" || cfg.Platform == nil || cfg.Logger == nil {
		return nil, errors.New("agent: SiteURL, CACert, StateDir, Platform and Logger are required")
	}
	if cfg.DMIPath == "" {
		cfg.DMIPath = DMIProductUUID
	}
	if cfg.SysRoot == "" {
		cfg.SysRoot = "/"
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	if cfg.FullInterval == 0 {
		cfg.FullInterval = 5 * time.Minute
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	id, err := MachineID(cfg.StateDir, cfg.DMIPath)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	a := &Agent{cfg: cfg, log: cfg.Logger.With("machine_id", id), machineID: id,
		bootID: hex.EncodeToString(b[:]), joined: make(chan struct{})}
	a.epoch = a.loadEpoch()
	a.svcNotServed = servicesNotServed
	if a.svc, err = a.newServices(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if !cfg.MonitorDisable {
		if a.mon, err = monitor.New(cfg.Monitor, cfg.Platform.Usage, a.log.With("component", "monitor")); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	return a, nil
}

// MachineID is the host's identity.
func (a *Agent) MachineID() string { return a.machineID }

// Joined is closed once the agent holds a certificate for its site.
func (a *Agent) Joined() <-chan struct{} { return a.joined }

// Monitor is the agent's resource monitor; nil when disabled.
func (a *Agent) Monitor() *monitor.Monitor { return a.mon }

// asserted lists the resource alarms the monitors assert. Should the
// set be one the site refuses (a file system name the platform made up),
// it is left out and logged rather than blocking every report.
func (a *Agent) asserted() []inventory.ResourceAlarm {
	if a.mon == nil {
		return []inventory.ResourceAlarm{}
	}
	as := a.mon.Asserted()
	if err := inventory.ValidateResourceAlarms("alarms", as); err != nil {
		if err.Error() != a.badAlarms { // once per distinct problem
			a.badAlarms = err.Error()
			a.log.Error("resource alarms not reported: the site would refuse them", "err", err)
		}
		return []inventory.ResourceAlarm{}
	}
	a.badAlarms = ""
	return as
}

// monitorChanged receives when the asserted alarms changed; never, when
// the monitors are off.
func (a *Agent) monitorChanged() <-chan struct{} {
	if a.mon == nil {
		return nil
	}
	return a.mon.Changed()
}

// state is a step of the agent's loop (STYLE.md S10).
type state int

const (
	stateJoin state = iota
	stateFullSync
	statePartialSync
	stateStopped
)

// Run joins if needed, then reports until ctx ends. The resource monitor
// runs alongside, joined or not; it has stopped when Run returns.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		if a.client != nil {
			a.client.CloseIdleConnections()
		}
		if a.hb.stop != nil {
			a.hb.stop()
		}
	}()
	if a.mon != nil {
		mctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = a.mon.Run(mctx)
		}()
		defer func() { stop(); <-done }()
	}
	// The host's service-group members run once the agent has joined;
	// they are stopped (deactivated, their addresses released) before Run
	// returns.
	var stopServices func()
	defer func() {
		if stopServices != nil {
			stopServices()
		}
	}()
	backoff := newBackoff(200*time.Millisecond, 30*time.Second)
	lastFull := time.Time{}
	for s := stateJoin; s != stateStopped; {
		if ctx.Err() != nil {
			return nil
		}
		switch s {
		case stateJoin:
			if err := a.ensureJoined(ctx); err != nil {
				if errors.Is(err, errJoinFatal) {
					return err
				}
				if errors.Is(err, errNoToken) { // check again soon, without growing the backoff
					if !sleep(ctx, jitter(500*time.Millisecond)) {
						return nil
					}
					continue
				}
				a.log.Warn("join failed; retrying", "err", err)
				if !sleep(ctx, backoff.next()) {
					return nil
				}
				continue
			}
			close(a.joined)
			stopServices = a.startServices(ctx)
			backoff.reset()
			s = stateFullSync
		case stateFullSync:
			if err := a.sync(ctx, true); err != nil {
				a.log.Warn("full report failed; retrying", "err", err)
				if !sleep(ctx, backoff.next()) {
					return nil
				}
				continue
			}
			backoff.reset()
			lastFull = time.Now()
			s = statePartialSync
		case statePartialSync:
			// Wait for the check interval, or report at once when the
			// monitors' alarms changed.
			if !wait(ctx, jitter(a.cfg.CheckInterval), a.monitorChanged()) {
				return nil
			}
			if err := a.poll(ctx); err != nil {
				a.log.Debug("polling the site's commands failed", "err", err)
			}
			if time.Since(lastFull) >= a.cfg.FullInterval || a.forceFull {
				a.forceFull = false
				s = stateFullSync
				continue
			}
			if err := a.sync(ctx, false); err != nil {
				if errors.Is(err, errNeedFull) {
					s = stateFullSync
					continue
				}
				a.log.Warn("report failed", "err", err)
				if !sleep(ctx, backoff.next()) {
					return nil
				}
				s = stateFullSync // after a failure, resend everything
			}
		}
	}
	return nil
}

var (
	errNoToken   = errors.New("agent: waiting for a join token")
	errNeedFull  = errors.New("agent: the site asks for a full report")
	errJoinFatal = errors.New("agent: cannot join")
)

// sync sends a full report, or a delta when something changed. Every
// report carries every alarm the monitors assert; a delta carries the
// hardware only when it changed.
func (a *Agent) sync(ctx context.Context, full bool) error {
	hw, err := Discover(a.cfg.SysRoot)
	if err != nil {
		return err
	}
	hw = a.cfg.Profile.Apply(hw)
	alarms := a.asserted()
	sw := a.software(ctx)
	hwSame := a.sent != nil && reflect.DeepEqual(*a.sent, hw)
	swSame := reflect.DeepEqual(sw, a.sentSW)
	if !full && hwSame && swSame && a.sentAlarm != nil && slices.EqualFunc(alarms, a.sentAlarm, sameAlarm) {
		return nil // nothing changed
	}
	rep := inventory.Report{Full: full, BootID: a.bootID, Generation: a.gen + 1,
		BootedAt: a.cfg.Platform.BootedAt(), SoftwareVersion: a.cfg.Version, Hardware: &hw, Alarms: alarms, Software: sw}
	if !full && hwSame {
		rep.Hardware = nil
	}
	var ack inventory.ReportAck
	if err := a.do(ctx, http.MethodPut, "/v1/agents/"+a.machineID+"/report", rep, &ack); err != nil {
		return err
	}
	if err := a.configureHeartbeat(ctx, ack.Heartbeat); err != nil {
		a.log.Error("not answering the site's heartbeat", "err", err)
	}
	if ack.NeedFull {
		a.sent, a.sentAlarm, a.sentSW = nil, nil, nil
		return errNeedFull
	}
	a.gen = rep.Generation
	a.sent, a.sentAlarm, a.sentSW = &hw, alarms, sw
	if !a.confirmed {
		// The site took this boot's report: the software works. A trial
		// boot of a new slot is kept (the chassis rolls back otherwise).
		a.confirmed = true
		if trial, err := a.cfg.Platform.ConfirmBoot(ctx); err != nil {
			a.log.Error("confirming the boot failed", "err", err)
			a.confirmed = false
		} else if trial {
			a.log.Info("confirmed the boot of the new software", "version", a.cfg.Version)
			a.sentSW = nil // report the trial's end
		}
	}
	a.log.Debug("reported", "full", full, "generation", a.gen, "alarms", len(alarms))
	return nil
}

func sameAlarm(x, y inventory.ResourceAlarm) bool {
	return x.AlarmID == y.AlarmID && x.Resource == y.Resource && maps.Equal(x.Fields, y.Fields)
}

// ensureJoined loads the host certificate, or joins the site to get one.
func (a *Agent) ensureJoined(ctx context.Context) error {
	keyPath, certPath := filepath.Join(a.cfg.StateDir, keyFile), filepath.Join(a.cfg.StateDir, certFile)
	pool, err := pki.CertPool(a.cfg.CACert)
	if err != nil {
		return fmt.Errorf("%w: %v", errJoinFatal, err)
	}
	if _, err := os.Stat(certPath); err == nil {
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("%w: host certificate: %v", errJoinFatal, err)
		}
		a.client = httpClient(pool, &pair)
		return nil
	}
	tok, err := readSecret(a.cfg.JoinTokenFile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w in %s", errNoToken, a.cfg.JoinTokenFile)
	}
	if err != nil {
		return fmt.Errorf("%w: not joined yet and no usable join token: %v", errJoinFatal, err)
	}
	keyPEM, csrPEM, err := pki.NewCSR(a.machineID)
	if err != nil {
		return err
	}
	req := inventory.JoinRequest{JoinToken: tok, MachineID: a.machineID, CSR: string(csrPEM)}
	a.client = httpClient(pool, nil)
	var resp inventory.JoinResponse
	if err := a.do(ctx, http.MethodPost, "/v1/join", req, &resp); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.status < 500 && se.status != http.StatusTooManyRequests {
			return fmt.Errorf("%w: %v", errJoinFatal, err) // a refused token does not get better by retrying
		}
		return err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(certPath, []byte(resp.Certificate), 0o600); err != nil {
		return err
	}
	pair, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		return fmt.Errorf("%w: the site's certificate does not match our key: %v", errJoinFatal, err)
	}
	a.client = httpClient(pool, &pair)
	a.log.Info("joined the site", "site", resp.SiteName, "host", resp.Host.Name)
	return nil
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// do calls the site with the agent's client: in (nil: no body) as JSON,
// the answer into out (nil: ignored).
func (a *Agent) do(ctx context.Context, method, path string, in, out any) error {
	return a.doWith(ctx, a.client, method, path, in, out)
}

// doWith is do with client c.
func (a *Agent) doWith(ctx context.Context, c *http.Client, method, path string, in, out any) error {
	body := io.Reader(http.NoBody)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.cfg.SiteURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return &statusError{status: resp.StatusCode, body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func httpClient(pool *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, Proxy: nil,
		MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second}}
}

// readSecret reads a 0600 secret file.
func readSecret(path string) (string, error) {
	if path == "" {
		return "", errors.New("no join token file configured")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by others; chmod 600 it", path)
	}
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

// backoff grows exponentially with jitter between min and max.
type backoff struct{ min, max, cur time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }
func (b *backoff) reset()                        { b.cur = b.min }
func (b *backoff) next() time.Duration {
	d := jitter(b.cur)
	b.cur = min(b.cur*2, b.max)
	return d
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)/5*2+1))
	return d - d/5 + time.Duration(n.Int64())
}

// wait waits d, or until wake receives (a nil wake never does); it
// reports false when ctx ended first.
func wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return true
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
