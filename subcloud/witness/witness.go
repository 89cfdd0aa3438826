// Package witness is a duplex controller's side of central's witness: one
// mutual-TLS session per controller to central's site listener (with the
// site's dial-home certificate, but never the dial-home link itself),
// renewed every Interval with the controller's role, epoch and database
// position, and used to claim the active role (internal/linkproto,
// witness.go). Central answers each renew with the site's holder and what
// it last heard of the peer controller.
package witness

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pki"
)

// Role is what a controller tells the witness it is.
type Role = linkproto.WitnessRole

// Roles.
const (
	Active   = linkproto.RoleActive
	Standby  = linkproto.RoleStandby
	Starting = linkproto.RoleStarting
)

// State is the witness's answer to the last renew: the site's holder, its
// epoch, the peer controller, and whether this controller was superseded.
type State = linkproto.WitnessState

// Grant is the witness's answer to a claim.
type Grant = linkproto.WitnessGrant

// Reasons the witness refuses a claim (Grant.Reason).
const (
	RefusedStaleEpoch  = linkproto.RefusedStaleEpoch
	RefusedHolderAlive = linkproto.RefusedHolderAlive
	RefusedLacksEpoch  = linkproto.RefusedLacksEpoch
	RefusedUnrecorded  = linkproto.RefusedUnrecorded
)

// ErrUnreachable is a claim that got no answer: no session to central, or
// it ended before the answer.
var ErrUnreachable = errors.New("witness: central is not reachable")

// ErrRefused is central refusing the session itself (its goodbye says why:
// a certificate or a hello it does not accept).
var ErrRefused = errors.New("witness: central refused the session")

// Config configures a Client.
type Config struct {
	CentralAddr string      // central's site listener, host:port
	TLS         *tls.Config // the site's dial-home certificate, central's CA and server name
	Site        string
	Controller  string        // controller-N
	Interval    time.Duration // renew period; default 300 ms
	Logger      *slog.Logger
}

// TLSConfig is the witness session's TLS: the site's dial-home
// certificate and key (subcloud.HomeConfig's files), central's CA, and
// the name in central's certificate ("" is "central").
func TLSConfig(certFile, keyFile, caCert, serverName string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("witness: site certificate: %w", err)
	}
	pool, err := pki.CertPool(caCert)
	if err != nil {
		return nil, err
	}
	if serverName == "" {
		serverName = "central"
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// Client keeps one controller's witness session.
type Client struct {
	cfg Config

	mu    sync.Mutex
	role  Role
	epoch uint64
	lsn   uint64
	state State
	at    time.Time // when the last answer arrived
	cur   *session  // nil while disconnected
	kick  chan struct{}
}

// New checks cfg; it starts nothing (Run does).
func New(cfg Config) (*Client, error) {
	if cfg.CentralAddr == "" || cfg.TLS == nil || cfg.Site == "" || cfg.Logger == nil {
		return nil, errors.New("witness: CentralAddr, TLS, Site and Logger are required")
	}
	if !linkproto.ValidController(cfg.Controller) {
		return nil, fmt.Errorf("witness: controller %q must match controller-N", cfg.Controller)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 300 * time.Millisecond
	}
	return &Client{cfg: cfg, role: Starting, kick: make(chan struct{}, 1)}, nil
}

// Set is what the next renews say; a change is renewed at once.
func (c *Client) Set(role Role, epoch, lsn uint64) {
	c.mu.Lock()
	changed := role != c.role || epoch != c.epoch || lsn != c.lsn
	c.role, c.epoch, c.lsn = role, epoch, lsn
	c.mu.Unlock()
	if changed {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// State returns the witness's last answer, whether central is reachable
// (an answer arrived within 3 intervals) and when that answer arrived.
func (c *Client) State() (st State, reachable bool, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, !c.at.IsZero() && time.Since(c.at) <= 3*c.cfg.Interval, c.at
}

// Claim asks central for the active role at epoch (the new epoch wanted),
// after renewing with what Set said last, so central judges the claim on
// this controller's current epoch. It fails with ErrUnreachable when no
// answer comes before ctx ends or the session drops; a refusal is a Grant
// with Granted false and its reason.
func (c *Client) Claim(ctx context.Context, epoch, lsn uint64, reason string) (Grant, error) {
	return c.ClaimWith(ctx, linkproto.WitnessClaim{Epoch: epoch, LSN: lsn, Reason: reason})
}

// ClaimWith is Claim with the claim's every field (PeerPowerOff: the
// claimant read the peer's BMC as off).
func (c *Client) ClaimWith(ctx context.Context, claim linkproto.WitnessClaim) (Grant, error) {
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s == nil {
		return Grant{}, ErrUnreachable
	}
	if _, err := s.call(ctx, c.renewMessage()); err != nil {
		return Grant{}, err
	}
	claim.Controller = c.cfg.Controller
	m, err := s.call(ctx, linkproto.Message{Type: linkproto.TypeWitnessClaim, Claim: &claim})
	if err != nil {
		return Grant{}, err
	}
	if m.Type != linkproto.TypeWitnessGrant || m.Grant == nil {
		return Grant{}, fmt.Errorf("witness: central answered a claim with %q", m.Type)
	}
	return *m.Grant, nil
}

func (c *Client) renewMessage() linkproto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return linkproto.Message{Type: linkproto.TypeWitnessRenew, Renew: &linkproto.WitnessRenew{
		Controller: c.cfg.Controller, Role: c.role, Epoch: c.epoch, LSN: c.lsn}}
}

// Run keeps the session up until ctx ends, reconnecting with jittered
// backoff (from a tenth of a second, at most a second); every goroutine it
// starts has ended when it returns.
func (c *Client) Run(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := c.sessionOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 5*time.Second {
			delay = 100 * time.Millisecond
		}
		wait := jittered(delay)
		c.cfg.Logger.Warn("witness session down; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, time.Second)
	}
	return nil
}

// sessionOnce runs one session: hello, then a renew every interval (and
// on every Set) while the reader hands answers to their callers.
func (c *Client) sessionOnce(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, max(3*time.Second, 3*c.cfg.Interval))
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: c.cfg.TLS}
	conn, err := d.DialContext(dctx, "tcp", c.cfg.CentralAddr)
	cancel()
	if err != nil {
		return err
	}
	ycfg := yamux.DefaultConfig()
	ycfg.KeepAliveInterval, ycfg.ConnectionWriteTimeout, ycfg.LogOutput = 5*time.Second, 3*time.Second, io.Discard
	sess, err := yamux.Client(conn, ycfg)
	if err != nil {
		conn.Close()
		return err
	}
	defer sess.Close()
	ctl, err := sess.Open()
	if err != nil {
		return err
	}
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWitnessHello, Site: c.cfg.Site,
		Controller: c.cfg.Controller, Protocols: []int{linkproto.Current}, SentAt: time.Now().UTC()}); err != nil {
		return err
	}
	ctl.SetReadDeadline(time.Now().Add(max(3*time.Second, 3*c.cfg.Interval)))
	w, err := linkproto.Read(ctl)
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	if w.Type != linkproto.TypeWelcome {
		return fmt.Errorf("%w: %s", ErrRefused, w.Reason)
	}
	ctl.SetReadDeadline(time.Time{})

	s := &session{ctl: ctl, pending: map[uint64]chan linkproto.Message{}, done: make(chan struct{})}
	readErr := make(chan error, 1)
	go func() { readErr <- s.read(c) }()
	defer func() { sess.Close(); <-s.done }()
	c.mu.Lock()
	c.cur = s
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.cur = nil
		c.mu.Unlock()
	}()
	c.cfg.Logger.Info("witness session open", "central", c.cfg.CentralAddr)

	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		if err := s.send(c.renewMessage()); err != nil {
			return err
		}
		// A session whose answers stopped (a half-open connection) is
		// given up for a new one.
		if last := s.lastAnswer(); time.Since(last) > 10*c.cfg.Interval {
			return fmt.Errorf("no answer from central for %s", time.Since(last).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			_ = s.send(linkproto.Message{Type: linkproto.TypeGoodbye, Reason: "controller shutting down"})
			return nil
		case <-s.done:
			return <-readErr
		case <-tick.C:
		case <-c.kick:
		}
	}
}

// session is one connection's control stream: requests are numbered, and
// the reader hands each answer to the request waiting for it.
type session struct {
	ctl net.Conn

	wmu sync.Mutex // one frame at a time
	mu  sync.Mutex
	seq uint64
	// pending calls by Seq; a renew sent by the loop has none.
	pending map[uint64]chan linkproto.Message
	last    time.Time // last answer
	done    chan struct{}
}

func (s *session) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if s.last.IsZero() {
		s.last = time.Now() // the clock for "no answer" starts at the first request
	}
	return s.seq
}

func (s *session) lastAnswer() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *session) send(m linkproto.Message) error {
	m.Seq = s.next()
	m.SentAt = time.Now().UTC()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ctl.SetWriteDeadline(time.Now().Add(3 * time.Second))
	return linkproto.Write(s.ctl, m)
}

// call sends m and waits for its answer.
func (s *session) call(ctx context.Context, m linkproto.Message) (linkproto.Message, error) {
	ch := make(chan linkproto.Message, 1)
	m.SentAt = time.Now().UTC()
	s.wmu.Lock()
	m.Seq = s.next()
	s.mu.Lock()
	s.pending[m.Seq] = ch
	s.mu.Unlock()
	s.ctl.SetWriteDeadline(time.Now().Add(3 * time.Second))
	err := linkproto.Write(s.ctl, m)
	s.wmu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, m.Seq)
		s.mu.Unlock()
	}()
	if err != nil {
		return linkproto.Message{}, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	select {
	case a := <-ch:
		return a, nil
	case <-s.done:
		return linkproto.Message{}, fmt.Errorf("%w: the session ended", ErrUnreachable)
	case <-ctx.Done():
		return linkproto.Message{}, fmt.Errorf("%w: %w", ErrUnreachable, ctx.Err())
	}
}

// read takes central's answers until the stream ends.
func (s *session) read(c *Client) error {
	defer close(s.done)
	for {
		m, err := linkproto.Read(s.ctl)
		if err != nil {
			return err
		}
		now := time.Now()
		s.mu.Lock()
		s.last = now
		ch := s.pending[m.Seq]
		s.mu.Unlock()
		switch m.Type {
		case linkproto.TypeGoodbye:
			return fmt.Errorf("%w: %s", ErrRefused, m.Reason)
		case linkproto.TypeWitnessState:
			if m.State != nil {
				c.mu.Lock()
				c.state, c.at = *m.State, now
				c.mu.Unlock()
			}
		case linkproto.TypeWitnessGrant:
			if m.Grant != nil {
				c.mu.Lock()
				c.state.Holder, c.state.HolderEpoch, c.at = m.Grant.Holder, m.Grant.HolderEpoch, now
				c.mu.Unlock()
			}
		}
		if ch != nil {
			ch <- m
		}
	}
}

func jittered(d time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)/2+1))
	return d*3/4 + time.Duration(n.Int64())
}
