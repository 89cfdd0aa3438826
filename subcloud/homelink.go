package subcloud

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"reflect"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/version"
)

// HomeConfig is how a site reaches central.
type HomeConfig struct {
	Addr          string        `json:"addr"`            // central's site listener, host:port
	ServerName    string        `json:"server_name"`     // name in central's certificate; default "central"
	CACert        string        `json:"ca_cert"`         // verifies central's certificate
	CertFile      string        `json:"cert_file"`       // the site's certificate (CN = site name), from the fleet CA
	KeyFile       string        `json:"key_file"`        // its key (0600)
	PublicKeyFile string        `json:"public_key_file"` // central's relay-assertion key (PEM)
	Interval      time.Duration `json:"-"`               // update period; default 5 s
}

// LinkState is what the site knows of its link to central.
type LinkState struct {
	Connected     bool
	Protocol      int
	LastAcked     uint64
	SummariesSent uint64
	EventsShipped uint64 // the last event-log sequence central acknowledged
}

// dialHome keeps the site's one outbound connection to central up until ctx
// ends, reconnecting with jittered exponential backoff.
func (s *Subcloud) dialHome(ctx context.Context) error {
	tlsCfg, err := s.homeTLS()
	if err != nil {
		return err
	}
	delay := 500 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.linkOnce(ctx, tlsCfg)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			delay = 500 * time.Millisecond
		}
		wait := jittered(delay)
		s.log.Warn("link to central down; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, 30*time.Second)
	}
	return nil
}

func (s *Subcloud) homeTLS() (*tls.Config, error) {
	h := s.cfg.Central
	pair, err := tls.LoadX509KeyPair(h.CertFile, h.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("subcloud: site certificate: %w", err)
	}
	pool, err := pki.CertPool(h.CACert)
	if err != nil {
		return nil, err
	}
	name := h.ServerName
	if name == "" {
		name = "central"
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}, nil
}

// linkOnce runs one connection: hello, then updates every interval, while
// central's relayed calls are served on the streams it opens.
func (s *Subcloud) linkOnce(ctx context.Context, tlsCfg *tls.Config) error {
	// The timeout covers the TLS handshake, which waits while central
	// admits a reconnect storm (up to 25 s: central/link.go, admitWait).
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: tlsCfg}
	conn, err := d.DialContext(ctx, "tcp", s.cfg.Central.Addr)
	if err != nil {
		return err
	}
	ycfg := yamux.DefaultConfig()
	ycfg.KeepAliveInterval, ycfg.ConnectionWriteTimeout, ycfg.LogOutput = 5*time.Second, 10*time.Second, discard{}
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
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeHello, Site: s.cfg.Site,
		Protocols: []int{linkproto.Current}, Seq: s.acked.Load(), Epoch: s.shell.FaultLog.Epoch(), EventSeq: lastEvent(s),
		SentAt: time.Now().UTC()}); err != nil {
		return err
	}
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	w, err := linkproto.Read(ctl)
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	if w.Type != linkproto.TypeWelcome {
		return fmt.Errorf("central refused the link: %s", w.Reason)
	}
	ctl.SetReadDeadline(time.Time{})
	s.connected.Store(true)
	s.homeSess.Store(sess)
	defer s.homeSess.CompareAndSwap(sess, nil)
	s.log.Info("linked to central", "protocol", w.Protocol)

	// Central's calls into the site arrive as streams of this session.
	srv := &http.Server{Handler: auth.ViaLink(s.shell.REST), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(sess)
	defer srv.Close()

	// Central holds the site's event log up to w.EventSeq: shipping resumes
	// after it.
	ship := &shipper{s: s, sent: w.EventSeq, acks: make(chan uint64, 1)}
	ship.acked(ctx, w.EventSeq)

	errc := make(chan error, 1)
	go func() {
		for {
			m, err := linkproto.Read(ctl)
			if err != nil {
				errc <- err
				return
			}
			switch m.Type {
			case linkproto.TypeEventsAck:
				select {
				case ship.acks <- m.EventSeq:
				case <-ship.acks: // replace an unread older ack
					ship.acks <- m.EventSeq
				}
			case linkproto.TypeAck:
				s.acked.Store(m.Seq)
			case linkproto.TypeGoodbye:
				errc <- fmt.Errorf("central closed the link: %s", m.Reason)
				return
			}
		}
	}()
	// Resync by sequence: if central holds the summary this site last sent
	// and nothing changed since, a keepalive suffices; else resend it.
	var sent *linkproto.Summary
	if s.lastSum != nil && w.Seq == s.lastSumSeq {
		sent = s.lastSum
	}
	// A change is sent within a second as a delta; otherwise a keepalive
	// every interval tells central the site is there.
	var lastSend time.Time
	check := min(time.Second, s.interval())
	tick := time.NewTicker(check)
	defer tick.Stop()
	for {
		sum := s.summary()
		changed := sent == nil || !reflect.DeepEqual(*sent, sum)
		if changed || time.Since(lastSend) >= s.interval()-check/2 {
			m := linkproto.Message{Type: linkproto.TypeUpdate, Seq: s.seq.Add(1), SentAt: time.Now().UTC()}
			if changed {
				m.Summary = &sum
			}
			if err := linkproto.Write(ctl, m); err != nil {
				return err
			}
			if changed {
				sent = m.Summary
				s.lastSum, s.lastSumSeq = m.Summary, m.Seq
				s.resent.Add(1)
			}
			lastSend = time.Now()
		}
		_, wake := s.shell.FaultLog.Watch() // before reading: no commit goes unnoticed
		if err := ship.send(ctx, ctl); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			_ = linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: "site shutting down", SentAt: time.Now().UTC()})
			return nil
		case err := <-errc:
			return err
		case n := <-ship.acks:
			ship.acked(ctx, n)
		case <-wake:
		case <-tick.C:
		}
	}
}

// Shipping the event log: at most shipWindow records in flight, in frames
// of shipBatch.
const (
	shipBatch  = 500
	shipWindow = 4 * shipBatch
)

// shipper sends the site's event log to central in order; central applies
// each record exactly once (its cursor) and acknowledges how far it got.
type shipper struct {
	s    *Subcloud
	sent uint64 // the last sequence number sent on this link
	ack  uint64 // the last central acknowledged
	acks chan uint64
}

func (p *shipper) acked(ctx context.Context, n uint64) {
	if n < p.ack {
		return
	}
	p.ack = n
	// Central may hold more than this link sent: batches of the previous
	// link it applied after this one began. Those need no resend.
	p.sent = max(p.sent, n)
	p.s.shipped.Store(n)
	if err := p.s.shell.FaultLog.SetShipped(ctx, n); err != nil && ctx.Err() == nil {
		p.s.log.Warn("recording central's acknowledgement failed", "seq", n, "err", err)
	}
}

// send writes every committed record not yet sent, window permitting.
func (p *shipper) send(ctx context.Context, w io.Writer) error {
	for p.sent < p.ack+shipWindow {
		recs, err := p.s.shell.FaultLog.After(ctx, p.sent, shipBatch)
		if err != nil {
			return fmt.Errorf("reading the event log: %w", err)
		}
		if len(recs) == 0 {
			return nil
		}
		for {
			err := linkproto.Write(w, linkproto.Message{Type: linkproto.TypeEvents, Records: recs, SentAt: time.Now().UTC()})
			if errors.Is(err, linkproto.ErrFrameTooLarge) && len(recs) > 1 {
				recs = recs[:len(recs)/2] // long texts: fewer records a frame
				continue
			}
			if err != nil {
				return err
			}
			break
		}
		p.sent = recs[len(recs)-1].Seq
	}
	return nil
}

func (s *Subcloud) interval() time.Duration {
	if s.cfg.Central.Interval > 0 {
		return s.cfg.Central.Interval
	}
	return 5 * time.Second
}

// summary is the site at a glance.
func (s *Subcloud) summary() linkproto.Summary {
	sum := linkproto.Summary{Shape: string(s.cfg.Shape), HostsByAvail: map[string]int{}, Alarms: map[string]int{},
		Version: version.Get().Version}
	hosts, _, err := s.Hosts.Hosts(context.Background(), rest.ListOptions{Limit: rest.MaxLimit})
	if err != nil {
		return sum
	}
	sum.Hosts = len(hosts)
	for _, h := range hosts {
		sum.HostsByAvail[string(h.Availability)]++
	}
	// Active, unsuppressed alarms: central derives the site's status from them.
	if a, err := s.shell.Alarms.Store().Summary(context.Background()); err == nil {
		for sev, n := range map[string]int{"critical": a.Critical, "major": a.Major, "minor": a.Minor, "warning": a.Warning} {
			if n > 0 {
				sum.Alarms[sev] = n
			}
		}
	}
	return sum
}

// Link reports the state of the site's link to central.
func (s *Subcloud) Link() LinkState {
	return LinkState{Connected: s.connected.Load(), Protocol: linkproto.Current, LastAcked: s.acked.Load(),
		SummariesSent: s.resent.Load(), EventsShipped: s.shipped.Load()}
}

func jittered(d time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(d)/2+1))
	return d*3/4 + time.Duration(n.Int64())
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// lastEvent is the last sequence number the site's log has committed.
func lastEvent(s *Subcloud) uint64 {
	n, _ := s.shell.FaultLog.Watch()
	return n
}
