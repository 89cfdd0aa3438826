package bmc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/go-logr/logr"
	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/common"
	"github.com/stmcginnis/gofish/redfish"
)

// redfishBackend speaks Redfish: power through bmclib's gofish provider,
// sensors through gofish. HTTP basic auth on a kept-alive TLS connection
// (no session to leak when a call is cut short). The transport records
// what the BMC answered, so errors are classified whatever the libraries
// make of them.
type redfishBackend struct {
	c          *Client
	endpoint   string // https://host:port
	bmclibHost string // https://host (bmclib adds the port)
	host       string // host:port
	port       string
	tr         *http.Transport // bmclib clones it (and needs an *http.Transport)
	hc         *http.Client    // tr behind the recorder: our own requests
	rec        *recorder
}

// recorder wraps the transport and remembers the worst thing that
// happened during the current call.
type recorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	auth bool  // a 401 or 403
	miss bool  // a 404, 405 or 501
	net  error // a transport error (dial, TLS, timeout)
	tls  error // ErrTLSPinMismatch or ErrTLSUntrusted, with detail
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.auth, r.miss, r.net, r.tls = false, false, nil, nil
	r.mu.Unlock()
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		var ci x509.CertificateInvalidError
		switch {
		case r.tls != nil:
		case errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
			r.tls = &Error{Class: ErrTLSUntrusted, detail: err.Error()}
		case r.net == nil:
			r.net = err
		}
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		r.auth = true
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		r.miss = true
	}
	return resp, nil
}

func newRedfishBackend(c *Client, raw string) (*redfishBackend, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("bmc: Redfish URL %q: want https://host[:port][/redfish/v1]", raw)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	b := &redfishBackend{c: c, endpoint: "https://" + net.JoinHostPort(u.Hostname(), port),
		host: net.JoinHostPort(u.Hostname(), port), port: port}
	b.bmclibHost = "https://" + u.Hostname()
	if strings.Contains(u.Hostname(), ":") {
		b.bmclibHost = "https://[" + u.Hostname() + "]"
	}
	// The certificate is checked in VerifyConnection, so that a failure is
	// recorded whichever library made the request: against the CA, or
	// against the pin (the chain is not verified then; the leaf must be
	// the pinned one).
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, VerifyConnection: b.verifyPin}
	if c.cfg.CACerts != nil {
		tc.VerifyConnection = b.verifyCA
	}
	tr := &http.Transport{
		TLSClientConfig: tc, Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	b.tr, b.rec = tr, &recorder{base: tr}
	b.hc = &http.Client{Transport: b.rec}
	return b, nil
}

// verifyCA verifies the chain against the configured CA and the name (or
// IP address) the client dialled.
func (b *redfishBackend) verifyCA(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Roots: b.c.cfg.CACerts, Intermediates: x509.NewCertPool(), DNSName: cs.ServerName}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	host, _, _ := net.SplitHostPort(b.host)
	opts.DNSName = host
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		e := &Error{Class: ErrTLSUntrusted, detail: err.Error()}
		b.rec.mu.Lock()
		b.rec.tls = e
		b.rec.mu.Unlock()
		return e
	}
	return nil
}

// verifyPin accepts the certificate pinned for this BMC, or pins the first
// one it sees and tells the caller.
func (b *redfishBackend) verifyPin(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	fp := Fingerprint(cs.PeerCertificates[0])
	c := b.c
	c.mu.Lock()
	pinned := c.pinned
	if pinned == "" {
		c.pinned = fp
	}
	c.mu.Unlock()
	switch pinned {
	case "":
		c.log.Info("pinned the BMC's TLS certificate on first use", "fingerprint", fp)
		if c.cfg.OnPin != nil {
			c.cfg.OnPin(fp)
		}
		return nil
	case fp:
		return nil
	}
	err := &Error{Class: ErrTLSPinMismatch, detail: "presented " + fp + ", pinned " + pinned}
	b.rec.mu.Lock()
	b.rec.tls = err
	b.rec.mu.Unlock()
	return err
}

func (b *redfishBackend) protocol() string { return "redfish" }

// probe asks for the Systems collection with our own client: bmclib
// v2.3.5 flattens the errors of its providers into text, so whether the
// BMC is reachable, trusted and accepts the credentials is learnt here,
// from status codes and typed errors. It costs one request on a kept-alive
// connection.
func (b *redfishBackend) probe(ctx context.Context) error {
	b.rec.reset()
	cr := b.c.credentials()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint+"/redfish/v1/Systems", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(cr.Username, cr.Password)
	resp, err := b.hc.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /redfish/v1/Systems: %s", resp.Status)
		}
	}
	return b.classify(ctx, err)
}

// do runs fn with a bmclib client for the gofish provider, opened and
// closed around it, and classifies what went wrong.
func (b *redfishBackend) do(ctx context.Context, fn func(*bmclib.Client) error) error {
	if err := b.probe(ctx); err != nil {
		return err
	}
	cr := b.c.credentials()
	// bmclib v2.3.5's gofish provider takes its HTTP client from
	// WithHTTPClient (a clone of its *http.Transport), not from
	// WithRedfishHTTPClient.
	cl := bmclib.NewClient(b.bmclibHost, cr.Username, cr.Password,
		bmclib.WithLogger(logr.Discard()),
		bmclib.WithHTTPClient(&http.Client{Transport: b.tr}),
		bmclib.WithRedfishPort(b.port), bmclib.WithRedfishUseBasicAuth(true),
	)
	cl.Registry.Drivers = cl.Registry.For("gofish")
	err := cl.Open(ctx)
	if err == nil {
		err = fn(cl)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = cl.Close(cctx)
		cancel()
	}
	return b.classify(ctx, err)
}

func (b *redfishBackend) classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	detail := err.Error()
	switch {
	case b.rec.tls != nil:
		return b.rec.tls
	case b.rec.auth:
		return &Error{Class: ErrAuth, detail: "the BMC answered 401/403"}
	case ctx.Err() != nil:
		return &Error{Class: ErrUnreachable, detail: "no answer in time"}
	case b.rec.net != nil:
		return &Error{Class: ErrUnreachable, detail: b.rec.net.Error()}
	case b.rec.miss:
		return &Error{Class: ErrUnsupported, detail: detail}
	}
	var ge *common.Error
	if errors.As(err, &ge) && ge.HTTPReturnedStatusCode == http.StatusUnauthorized {
		return &Error{Class: ErrAuth, detail: "the BMC answered 401"}
	}
	return &Error{Class: ErrFailed, detail: detail}
}

func (b *redfishBackend) powerState(ctx context.Context) (PowerState, error) {
	st := PowerUnknown
	err := b.do(ctx, func(cl *bmclib.Client) error {
		s, err := cl.GetPowerState(ctx)
		if err != nil {
			return err
		}
		st = normalisePower(s)
		return nil
	})
	return st, err
}

// normalisePower maps what providers return (Redfish "On"/"Off"/
// "PoweringOn"/..., ipmitool's "Chassis Power is on") onto on/off/unknown.
func normalisePower(s string) PowerState {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "on" || strings.HasSuffix(s, " is on"):
		return PowerOn
	case s == "off" || strings.HasSuffix(s, " is off"):
		return PowerOff
	}
	return PowerUnknown
}

func (b *redfishBackend) power(ctx context.Context, a action) error {
	if a == actGraceful {
		// bmclib v2.3.5 reports a GracefulShutdown it sent successfully
		// as a failure (SystemPowerOff returns ok=false): ask gofish.
		return b.gofish(ctx, func(api *gofish.APIClient) error {
			systems, err := api.Service.Systems()
			if err != nil {
				return err
			}
			for _, sys := range systems {
				if sys.PowerState != redfish.OffPowerState {
					if err := sys.Reset(redfish.GracefulShutdownResetType); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	// bmclib's gofish provider: on→On, off→ForceOff, reset→PowerCycle,
	// cycle→ForceRestart.
	state := map[action]string{actOn: "on", actOff: "off", actCycle: "reset", actReset: "cycle"}[a]
	return b.do(ctx, func(cl *bmclib.Client) error {
		_, err := cl.SetPowerState(ctx, state)
		return err
	})
}

// gofish runs fn with a gofish client on our recording HTTP client.
func (b *redfishBackend) gofish(ctx context.Context, fn func(*gofish.APIClient) error) error {
	b.rec.reset()
	cr := b.c.credentials()
	api, err := gofish.ConnectContext(ctx, gofish.ClientConfig{Endpoint: b.endpoint, Username: cr.Username,
		Password: cr.Password, HTTPClient: b.hc, BasicAuth: true, ReuseConnections: true})
	if err == nil {
		err = fn(api)
		api.Logout()
	}
	return b.classify(ctx, err)
}

func (b *redfishBackend) sensors(ctx context.Context) ([]Sensor, error) {
	var out []Sensor
	err := b.gofish(ctx, func(api *gofish.APIClient) error {
		chassis, err := api.Service.Chassis()
		if err != nil {
			return err
		}
		for _, ch := range chassis {
			s, err := chassisSensors(ch)
			if err != nil {
				return err
			}
			out = append(out, s...)
		}
		return nil
	})
	return out, err
}

func chassisSensors(ch *redfish.Chassis) ([]Sensor, error) {
	var out []Sensor
	{
		th, err := ch.Thermal()
		if err != nil {
			return nil, err
		}
		if th != nil {
			for _, t := range th.Temperatures {
				out = append(out, Sensor{Name: t.Name, Kind: SensorTemperature, Value: float64(t.ReadingCelsius),
					Unit: "C", Status: redfishStatus(t.Status)})
			}
			for _, f := range th.Fans {
				unit := string(f.ReadingUnits)
				if unit == "" {
					unit = "RPM"
				}
				out = append(out, Sensor{Name: f.Name, Kind: SensorFan, Value: float64(f.Reading), Unit: unit, Status: redfishStatus(f.Status)})
			}
		}
		pw, err := ch.Power()
		if err != nil {
			return nil, err
		}
		if pw != nil {
			for _, p := range pw.PowerControl {
				out = append(out, Sensor{Name: p.Name, Kind: SensorPower, Value: float64(p.PowerConsumedWatts), Unit: "W", Status: redfishStatus(p.Status)})
			}
			for _, v := range pw.Voltages {
				out = append(out, Sensor{Name: v.Name, Kind: SensorVoltage, Value: float64(v.ReadingVolts), Unit: "V", Status: redfishStatus(v.Status)})
			}
		}
	}
	return out, nil
}

func redfishStatus(s common.Status) SensorStatus {
	switch s.State {
	case common.EnabledState, "":
	default:
		return SensorUnavailable
	}
	switch s.Health {
	case common.WarningHealth:
		return SensorWarning
	case common.CriticalHealth:
		return SensorCritical
	}
	return SensorOK
}
