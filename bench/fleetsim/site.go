package fleetsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/swpatch"
)

// simAlarms is what a simulated site raises and clears: realistic IDs of
// the catalogue with their severities.
var simAlarms = []struct{ id, sev, entity string }{
	{"100.101", "major", "host=controller-0.sensor=cpu"},
	{"100.107", "minor", "host=controller-0.filesystem=/var"},
	{"200.006", "major", "host=controller-0.process=collectd"},
	{"200.001", "warning", "host=worker-0"},
	{"300.003", "minor", "host=controller-0.port=eno2"},
	{"270.001", "critical", "host=controller-0.service=nova-compute"},
}

type simAlarm struct {
	uuid       string
	id, sev, e string
}

// site is one simulated site.
type site struct {
	sim   *Sim
	name  string
	index int
	src   net.IP
	tls   *tls.Config
	rng   *rand.Rand // only the site's own link goroutine uses it
	shape string
	hosts int
	epoch string
	verif *auth.AssertionVerifier

	silenced  atomic.Bool
	unsilence chan struct{} // signalled when silence ends
	connected atomic.Bool

	mu          sync.Mutex
	seq         uint64 // last update sequence sent
	lastSum     *linkproto.Summary
	lastSumSeq  uint64
	evSeq       uint64            // last event record made
	evAcked     uint64            // central holds the log up to here
	pending     []faultmgr.Record // made, not acknowledged
	alarms      []simAlarm
	lastWelcome time.Time
	welcomes    int
	flavors     map[string]flavor
	flavorAt    map[string]time.Time // flavor id -> when its create arrived
	images      map[string]image
	projects    map[string]string // name -> description
	users       map[string]auth.SyncedUserView
	patches     map[string]*swpatch.Record
	strat       *simStrategy
}

func newSite(s *Sim, sp Site, pair tls.Certificate) *site {
	rng := newRand(s.cfg.Seed, sp.Name)
	st := &site{sim: s, name: sp.Name, index: sp.Index, src: SourceAddr(sp.Index), rng: rng,
		tls: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: s.roots, ServerName: s.cfg.ServerName,
			MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(1)},
		epoch: s.epoch + "-" + sp.Name, verif: auth.NewAssertionVerifier(s.pub, sp.Name, nil),
		unsilence: make(chan struct{}, 1), flavors: map[string]flavor{}, flavorAt: map[string]time.Time{},
		images: map[string]image{}, projects: map[string]string{}, users: map[string]auth.SyncedUserView{},
		patches: map[string]*swpatch.Record{}}
	switch r := rng.IntN(10); {
	case r < 7:
		st.shape, st.hosts = "simplex", 1
	case r < 9:
		st.shape, st.hosts = "duplex", 2
	default:
		st.shape, st.hosts = "multi-server", 2+2+rng.IntN(7)
	}
	return st
}

// run keeps the site's link up until ctx ends, reconnecting with
// jittered exponential backoff as a real site does (subcloud/homelink.go).
func (st *site) run(ctx context.Context) {
	delay := 500 * time.Millisecond
	for ctx.Err() == nil {
		for st.silenced.Load() { // a black-holed site does not even dial
			select {
			case <-ctx.Done():
				return
			case <-st.unsilence:
			}
		}
		start := time.Now()
		err := st.linkOnce(ctx)
		st.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			delay = 500 * time.Millisecond
		}
		wait := delay*3/4 + time.Duration(st.rng.Int64N(int64(delay)/2+1))
		if err != nil && !errors.Is(err, errCut) && !errors.Is(err, errSilenced) {
			st.sim.log.Debug("site link down", "site", st.name, "err", err, "retry_in", wait)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
		delay = min(delay*2, 30*time.Second)
	}
}

var (
	errCut      = errors.New("fleetsim: connection cut (simulated)")
	errSilenced = errors.New("fleetsim: site silenced")
)

// gateConn is the site's WAN: while the site is silenced, what it writes
// is lost and what arrives is never answered (a black hole, no FIN, no RST).
type gateConn struct {
	net.Conn
	st *site
}

func (c gateConn) Write(p []byte) (int, error) {
	if c.st.silenced.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c gateConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if err != nil || !c.st.silenced.Load() {
			return n, err
		}
	}
}

// linkOnce runs one connection.
func (st *site) linkOnce(ctx context.Context) error {
	sim := st.sim
	sim.dials.Add(1)
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: st.src}}
	raw, err := d.DialContext(ctx, "tcp", sim.cfg.CentralAddr)
	if err != nil {
		sim.dialErrs.Add(1)
		return err
	}
	conn := tls.Client(gateConn{Conn: raw, st: st}, st.tls)
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		sim.dialErrs.Add(1)
		return err
	}
	sess, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return err
	}
	defer sess.Close()
	ctl, err := sess.Open()
	if err != nil {
		return err
	}
	st.mu.Lock()
	hello := linkproto.Message{Type: linkproto.TypeHello, Site: st.name, Protocols: []int{linkproto.Current},
		Seq: st.lastSumSeq, Epoch: st.epoch, EventSeq: st.evSeq, SentAt: time.Now().UTC()}
	st.mu.Unlock()
	if err := linkproto.Write(ctl, hello); err != nil {
		return err
	}
	// In a reconnect storm central admits links a few at a time.
	ctl.SetReadDeadline(time.Now().Add(60 * time.Second))
	w, err := linkproto.Read(ctl)
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	if w.Type != linkproto.TypeWelcome {
		return fmt.Errorf("central refused the link: %s", w.Reason)
	}
	ctl.SetReadDeadline(time.Time{})
	sim.welcomes.Add(1)
	st.connected.Store(true)
	st.mu.Lock()
	st.lastWelcome, st.welcomes = time.Now(), st.welcomes+1
	// Central holds the log up to w.EventSeq: anything after is resent.
	st.ackEventsLocked(w.EventSeq)
	resend := st.lastSum == nil || w.Seq != st.lastSumSeq
	st.mu.Unlock()

	srv := &http.Server{Handler: st.handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(sess)
	defer srv.Close()

	errc := make(chan error, 1)
	acks := make(chan struct{}, 1)
	go func() {
		for {
			m, err := linkproto.Read(ctl)
			if err != nil {
				errc <- err
				return
			}
			switch m.Type {
			case linkproto.TypeEventsAck:
				st.mu.Lock()
				st.ackEventsLocked(m.EventSeq)
				st.mu.Unlock()
				select {
				case acks <- struct{}{}:
				default:
				}
			case linkproto.TypeGoodbye:
				errc <- fmt.Errorf("central closed the link: %s", m.Reason)
				return
			}
		}
	}()

	cfg := sim.cfg
	interval := cfg.Interval
	cutP := cfg.CutsPerHour * interval.Hours()
	// Alarm churn is a Poisson process: exponential gaps.
	nextAlarm := func() time.Duration {
		if cfg.AlarmsPerMinute <= 0 {
			return 1000 * time.Hour
		}
		return time.Duration(st.rng.ExpFloat64() / cfg.AlarmsPerMinute * float64(time.Minute))
	}
	alarmT := time.NewTimer(nextAlarm())
	defer alarmT.Stop()
	// The first update goes at once (central learns the summary); then
	// every interval, with a little jitter as real clocks drift.
	updT := time.NewTimer(0)
	defer updT.Stop()
	sentSum := !resend
	for {
		select {
		case <-ctx.Done():
			_ = st.write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: "site shutting down"})
			return nil
		case err := <-errc:
			if st.silenced.Load() {
				return errSilenced
			}
			return err
		case <-acks:
		case <-alarmT.C:
			st.churn()
			alarmT.Reset(nextAlarm())
			sentSum = false
			if err := st.shipEvents(ctl); err != nil {
				return err
			}
			continue
		case <-updT.C:
			updT.Reset(interval - interval/20 + time.Duration(st.rng.Int64N(int64(interval)/10+1)))
		}
		if st.silenced.Load() {
			// Hold the dead connection until silence ends, then start over.
			select {
			case <-ctx.Done():
				return nil
			case <-st.unsilence:
				return errSilenced
			}
		}
		if cutP > 0 && st.rng.Float64() < cutP {
			sim.cuts.Add(1)
			raw.Close()
			return errCut
		}
		st.mu.Lock()
		st.seq++
		m := linkproto.Message{Type: linkproto.TypeUpdate, Seq: st.seq}
		if !sentSum {
			sum := st.summaryLocked()
			m.Summary = &sum
		}
		st.mu.Unlock()
		if cfg.Loss > 0 && st.rng.Float64() < cfg.Loss {
			sim.dropped.Add(1) // lost on the WAN; a lost summary goes again
			continue
		}
		if err := st.write(ctl, m); err != nil {
			return err
		}
		sim.updates.Add(1)
		if m.Summary != nil {
			st.mu.Lock()
			st.lastSum, st.lastSumSeq = m.Summary, m.Seq
			st.mu.Unlock()
			sentSum = true
		}
		if err := st.shipEvents(ctl); err != nil {
			return err
		}
	}
}

func (st *site) write(ctl net.Conn, m linkproto.Message) error {
	if d := st.sim.cfg.Delay; d > 0 {
		time.Sleep(d)
	}
	m.SentAt = time.Now().UTC()
	return linkproto.Write(ctl, m)
}

// ackEventsLocked drops the records central holds.
func (st *site) ackEventsLocked(n uint64) {
	st.evAcked = max(st.evAcked, n)
	i := 0
	for i < len(st.pending) && st.pending[i].Seq <= st.evAcked {
		i++
	}
	st.pending = st.pending[i:]
}

// shipEvents sends every record central has not acknowledged (a site's
// records are few: the window is the whole backlog).
func (st *site) shipEvents(ctl net.Conn) error {
	st.mu.Lock()
	recs := append([]faultmgr.Record(nil), st.pending...)
	st.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	if len(recs) > 500 {
		recs = recs[:500]
	}
	if err := st.write(ctl, linkproto.Message{Type: linkproto.TypeEvents, Records: recs}); err != nil {
		return err
	}
	st.sim.events.Add(uint64(len(recs)))
	return nil
}

// churn raises an alarm or clears one (more likely the more are active),
// recording the event in the site's log.
func (st *site) churn() {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now().UTC()
	st.evSeq++
	rec := faultmgr.Record{Seq: st.evSeq}
	if n := len(st.alarms); n > 0 && st.rng.IntN(len(simAlarms)) < n {
		i := st.rng.IntN(n)
		a := st.alarms[i]
		st.alarms = append(st.alarms[:i], st.alarms[i+1:]...)
		rec.AlarmUUID = a.uuid
		rec.Event = faultmgr.Event{UUID: st.uuid(), Type: faultmgr.EventClear, AlarmID: a.id, EntityInstanceID: a.e,
			Severity: a.sev, ReasonText: "cleared", Timestamp: now, Site: st.name}
	} else {
		var def = simAlarms[st.rng.IntN(len(simAlarms))]
		for _, a := range st.alarms {
			if a.id == def.id && a.e == def.entity {
				st.evSeq--
				return // raising an active alarm changes nothing
			}
		}
		a := simAlarm{uuid: st.uuid(), id: def.id, sev: def.sev, e: def.entity}
		st.alarms = append(st.alarms, a)
		rec.AlarmUUID = a.uuid
		rec.Event = faultmgr.Event{UUID: st.uuid(), Type: faultmgr.EventSet, AlarmID: a.id, EntityInstanceID: a.e,
			Severity: a.sev, ReasonText: "simulated " + a.id + " on " + a.e, Timestamp: now, Site: st.name}
	}
	st.pending = append(st.pending, rec)
}

func (st *site) uuid() string {
	var b [16]byte
	for i := range 2 {
		v := st.rng.Uint64()
		for j := range 8 {
			b[i*8+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuid.UUID(b).String()
}

// summaryLocked is the site at a glance.
func (st *site) summaryLocked() linkproto.Summary {
	sum := linkproto.Summary{Shape: st.shape, Hosts: st.hosts, HostsByAvail: map[string]int{"available": st.hosts},
		Alarms: map[string]int{}, Version: "sim-1.0"}
	for _, a := range st.alarms {
		sum.Alarms[a.sev]++
	}
	return sum
}

// silence black-holes the site (true) or ends that (false).
func (st *site) silence(on bool) {
	if st.silenced.Swap(on) == on || on {
		return
	}
	select {
	case st.unsilence <- struct{}{}:
	default:
	}
}
