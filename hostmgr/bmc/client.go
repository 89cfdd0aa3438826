package bmc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Type selects the protocol.
type Type string

// BMC types: Redfish, IPMI v2.0, or Dynamic (Redfish, falling back to IPMI
// when Redfish is unreachable or unsupported; the protocol that answered
// is tried first next time).
const (
	Redfish Type = "redfish"
	IPMI    Type = "ipmi"
	Dynamic Type = "dynamic"
)

// PowerState is a BMC's normalised power reading.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// SensorKind is what a sensor measures.
type SensorKind string

// Sensor kinds.
const (
	SensorTemperature SensorKind = "temperature"
	SensorFan         SensorKind = "fan"
	SensorPower       SensorKind = "power"
	SensorVoltage     SensorKind = "voltage"
	SensorOther       SensorKind = "other"
)

// SensorStatus is a sensor's health.
type SensorStatus string

// Sensor statuses; Unavailable means no reading (often: the host is off).
const (
	SensorOK          SensorStatus = "ok"
	SensorWarning     SensorStatus = "warning"
	SensorCritical    SensorStatus = "critical"
	SensorUnavailable SensorStatus = "unavailable"
)

// Sensor is one reading.
type Sensor struct {
	Name   string       `json:"name"`
	Kind   SensorKind   `json:"kind"`
	Value  float64      `json:"value"`
	Unit   string       `json:"unit"` // "C", "RPM", "W", "V", ...
	Status SensorStatus `json:"status"`
}

// Defaults.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultQueueDepth = 4
	DefaultAuthHold   = 5 * time.Minute
	DefaultIPMIPort   = 623
)

// Config configures a Client for one BMC.
type Config struct {
	Type Type
	// IPMI is the BMC's IPMI address, host or host:port (default port 623).
	IPMI string
	// Redfish is the service's URL, https://host[:port][/redfish/v1].
	Redfish     string
	Credentials Credentials
	// CACerts, if set, is what the Redfish certificate must verify
	// against. Otherwise the certificate is pinned on first use: Pinned is
	// the recorded fingerprint ("sha256:<hex>", see Fingerprint), empty
	// before the first connection; OnPin is called with the fingerprint
	// when one is pinned, and the caller records it.
	CACerts *x509.CertPool
	Pinned  string
	OnPin   func(fingerprint string)
	// Timeout bounds each call (per protocol tried); default 10 s.
	Timeout time.Duration
	// QueueDepth is how many calls may wait behind the one in flight;
	// more fail at once with ErrBusy. Default 4.
	QueueDepth int
	// AuthHold is how long calls fail fast with ErrAuth after the BMC
	// refused the credentials (no BMC traffic, no account lock-out);
	// default 5 min. SetCredentials ends the hold.
	AuthHold time.Duration
	// Logger gets one line per failed call; never a secret.
	Logger *slog.Logger
}

// backend is one protocol's implementation of the calls.
type backend interface {
	protocol() string
	powerState(ctx context.Context) (PowerState, error)
	power(ctx context.Context, a action) error
	sensors(ctx context.Context) ([]Sensor, error)
}

type action string

const (
	actOn       action = "power-on"
	actOff      action = "power-off"
	actCycle    action = "power-cycle"
	actReset    action = "reset"
	actGraceful action = "graceful-shutdown"
)

// Client speaks to one BMC. Calls are serialised (one in flight) with a
// bounded queue; each is bounded by Config.Timeout. Safe for concurrent
// use.
type Client struct {
	cfg  Config
	addr string // for errors and logs
	log  *slog.Logger

	slot    chan struct{} // holds a token while a call is in flight
	waiting atomic.Int32

	mu        sync.Mutex
	creds     Credentials
	pinned    string
	authUntil time.Time
	authErr   error
	backends  []backend // in the order to try
	attempts  atomic.Int64
}

// New checks cfg and returns a client; it does not contact the BMC.
func New(cfg Config) (*Client, error) {
	if cfg.Credentials.Username == "" {
		return nil, errors.New("bmc: credentials are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	if cfg.AuthHold <= 0 {
		cfg.AuthHold = DefaultAuthHold
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, slot: make(chan struct{}, 1), creds: cfg.Credentials, pinned: cfg.Pinned}
	var rf, ip backend
	if cfg.Type == Redfish || cfg.Type == Dynamic {
		if cfg.Redfish == "" {
			return nil, fmt.Errorf("bmc: type %s needs a Redfish URL", cfg.Type)
		}
		r, err := newRedfishBackend(c, cfg.Redfish)
		if err != nil {
			return nil, err
		}
		rf, c.addr = r, r.host
	}
	if cfg.Type == IPMI || cfg.Type == Dynamic {
		if cfg.IPMI == "" {
			return nil, fmt.Errorf("bmc: type %s needs an IPMI address", cfg.Type)
		}
		host, port, err := splitHostPort(cfg.IPMI, DefaultIPMIPort)
		if err != nil {
			return nil, err
		}
		ip = &ipmiBackend{c: c, host: host, port: port}
		if c.addr == "" {
			c.addr = net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	switch cfg.Type {
	case Redfish:
		c.backends = []backend{rf}
	case IPMI:
		c.backends = []backend{ip}
	case Dynamic:
		c.backends = []backend{rf, ip}
	default:
		return nil, fmt.Errorf("bmc: type %q: want redfish, ipmi or dynamic", cfg.Type)
	}
	c.log = cfg.Logger.With("bmc", c.addr)
	return c, nil
}

func splitHostPort(s string, def int) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return s, def, nil
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("bmc: address %q: bad port", s)
	}
	return host, p, nil
}

// Fingerprint is the pin of a certificate: "sha256:" and the hex SHA-256
// of its DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(s[:])
}

// SetCredentials replaces the credentials (read again from their file by
// the caller) and ends an authentication hold.
func (c *Client) SetCredentials(cr Credentials) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creds, c.authUntil, c.authErr = cr, time.Time{}, nil
}

// Repin accepts the certificate the BMC presents next (after an operator
// verified a changed one): it clears the pin, and the next connection pins
// again and calls OnPin.
func (c *Client) Repin() {
	c.mu.Lock()
	c.pinned = ""
	c.mu.Unlock()
}

func (c *Client) credentials() Credentials {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.creds
}

// Pending is the number of calls in flight or queued for this BMC.
func (c *Client) Pending() int { return int(c.waiting.Load()) }

// Attempts counts the protocol exchanges the client started (a call that
// tries two protocols counts two; held and shed calls count none).
func (c *Client) Attempts() int64 { return c.attempts.Load() }

// PowerState reads the power state.
func (c *Client) PowerState(ctx context.Context) (PowerState, error) {
	var st PowerState = PowerUnknown
	err := c.call(ctx, "power-state", func(ctx context.Context, b backend) error {
		s, err := b.powerState(ctx)
		if err == nil {
			st = s
		}
		return err
	})
	return st, err
}

// PowerOn powers the host on (nothing if it is on).
func (c *Client) PowerOn(ctx context.Context) error { return c.act(ctx, actOn) }

// PowerOff powers the host off at once (nothing if it is off).
func (c *Client) PowerOff(ctx context.Context) error { return c.act(ctx, actOff) }

// PowerCycle powers the host off and on again.
func (c *Client) PowerCycle(ctx context.Context) error { return c.act(ctx, actCycle) }

// Reset hard-resets the host.
func (c *Client) Reset(ctx context.Context) error { return c.act(ctx, actReset) }

// GracefulShutdown asks the host's OS to shut down (ACPI); it returns once
// the BMC accepted the request.
func (c *Client) GracefulShutdown(ctx context.Context) error { return c.act(ctx, actGraceful) }

func (c *Client) act(ctx context.Context, a action) error {
	return c.call(ctx, string(a), func(ctx context.Context, b backend) error { return b.power(ctx, a) })
}

// Sensors reads the BMC's sensors.
func (c *Client) Sensors(ctx context.Context) ([]Sensor, error) {
	var out []Sensor
	err := c.call(ctx, "sensors", func(ctx context.Context, b backend) error {
		s, err := b.sensors(ctx)
		if err == nil {
			out = s
		}
		return err
	})
	return out, err
}

// call runs fn on the backends in order, one call at a time per BMC.
func (c *Client) call(ctx context.Context, op string, fn func(context.Context, backend) error) error {
	c.mu.Lock()
	if time.Now().Before(c.authUntil) {
		err := c.authErr
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	if c.waiting.Add(1) > int32(c.cfg.QueueDepth)+1 {
		c.waiting.Add(-1)
		return &Error{Op: op, Addr: c.addr, Class: ErrBusy}
	}
	select {
	case c.slot <- struct{}{}:
	case <-ctx.Done():
		c.waiting.Add(-1)
		return &Error{Op: op, Addr: c.addr, Class: ErrUnreachable, detail: "gave up waiting in the queue: " + ctx.Err().Error()}
	}
	defer func() {
		<-c.slot
		c.waiting.Add(-1)
	}()
	// The hold may have started while this call waited.
	c.mu.Lock()
	if time.Now().Before(c.authUntil) {
		err := c.authErr
		c.mu.Unlock()
		return err
	}
	order := append([]backend(nil), c.backends...)
	c.mu.Unlock()

	var errs []error
	for i, b := range order {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		c.attempts.Add(1)
		err := fn(cctx, b)
		cancel()
		if err == nil {
			if i > 0 {
				c.prefer(b)
			}
			return nil
		}
		e := c.classify(cctx, op, b.protocol(), err)
		c.log.Warn("BMC call failed", "op", op, "protocol", b.protocol(), "err", e.Error())
		errs = append(errs, e)
		if errors.Is(e, ErrAuth) {
			c.mu.Lock()
			c.authUntil, c.authErr = time.Now().Add(c.cfg.AuthHold), e
			c.mu.Unlock()
			return e
		}
		if !errors.Is(e, ErrUnreachable) && !errors.Is(e, ErrUnsupported) || ctx.Err() != nil {
			return e
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// prefer moves b to the front of the order.
func (c *Client) prefer(b backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
	order := []backend{b}
	for _, o := range c.backends {
		if o != b {
			order = append(order, o)
		}
	}
	c.backends = order
}

// classify turns a backend error into an *Error of one class. Backends
// return *Error themselves when they know the class.
func (c *Client) classify(ctx context.Context, op, proto string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		e.Op, e.Addr, e.Protocol = op, c.addr, proto
		e.detail = scrub(e.detail, c.credentials().Password)
		return e
	}
	e = &Error{Op: op, Addr: c.addr, Protocol: proto, Class: ErrFailed, detail: scrub(err.Error(), c.credentials().Password)}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		e.Class, e.detail = ErrUnreachable, "no answer within "+c.cfg.Timeout.String()
	case errors.As(err, &ne):
		e.Class = ErrUnreachable
	}
	return e
}
