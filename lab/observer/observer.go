// Package observer checks a lab site's service high availability from
// outside the service manager. An Observer polls in rounds: each round it
// asks every member of a service group for its role over HTTP (the demo
// service's GET /, see servicemgr/demo) and lists, in every host's network
// namespace (`ip -n NS -j addr show`), which hosts hold each floating
// address. It records a violation when, in one round, more than N members
// answer 200 as active, or two namespaces hold the same address.
//
// Tests and benchmarks read what it saw: the latest round (Snapshot), the
// violations, every change of state with its time (History), and WaitFor,
// which returns the time of the first round that satisfies a predicate.
// The time from a fault to N actives answering again is
//
//	t0 := time.Now() // then inject the fault
//	t1, err := obs.WaitFor(ctx, func(s observer.Snapshot) bool {
//		return len(s.Actives) == n && !s.IsActive(failedHost)
//	})
//	// t1.Sub(t0), to within one round (Config.Interval plus the round's Took)
//
// or, after the fact, Outage(t0, ok) over the history.
//
// The root namespace has no route to lab addresses (lab/hostnet): every
// member is dialed from inside a namespace of the lab, by default its own
// host's namespace (so a network fault on the host does not hide a member
// that still acts as active: the strict view for split brain), or from
// Config.DialNetns for a client's view.
package observer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
)

// Defaults of Config.
const (
	DefaultInterval   = 50 * time.Millisecond
	DefaultTimeout    = 300 * time.Millisecond
	DefaultMaxHistory = 10000
	// addrTimeout bounds one `ip addr` listing.
	addrTimeout = 2 * time.Second
)

// ErrStopped is returned by WaitFor once Run has returned.
var ErrStopped = errors.New("observer: stopped")

// Target is one member to watch.
type Target struct {
	// Host is the host's name, as reports and violations call it.
	Host string
	// Netns is the host's network namespace: where its addresses are
	// listed and, unless Config.DialNetns is set, where its member is
	// dialed from.
	Netns string
	// URL is the member's endpoint, http://IP:PORT/ with a literal IP
	// (the host's cluster address in the lab).
	URL string
}

// Config configures an Observer.
type Config struct {
	// Members are the group's members, at least one.
	Members []Target
	// N is the most members allowed to answer as active in one round
	// (the group's N); default 1.
	N int
	// Group, if set, is the group the members serve: an answer of
	// another group does not count as active.
	Group string
	// Floating are the addresses to watch, without prefix.
	Floating []string
	// DialNetns, if set, is the namespace every member is dialed from;
	// otherwise each member is dialed from its own Target.Netns.
	DialNetns string
	// Interval is the time from the start of one round to the start of
	// the next (default 50 ms); a round that takes longer is followed at
	// once by the next.
	Interval time.Duration
	// Timeout bounds each member's answer (default 300 ms).
	Timeout time.Duration
	// MaxHistory is how many periods History keeps, dropping the oldest
	// (default 10,000).
	MaxHistory int
	// Logger is required.
	Logger *slog.Logger

	// Fetch and ListAddrs replace the real probes (tests): Fetch asks one
	// member for its role (within ctx's deadline) and ListAddrs lists the
	// addresses of a namespace. Nil means HTTP through the namespace and
	// `ip -n NS -j addr show`.
	Fetch     func(ctx context.Context, t Target) Answer
	ListAddrs func(ctx context.Context, netns string) ([]netip.Addr, error)

	// OnChange, if set, is called by Run with the first round of every
	// new state (the first round too), and OnViolation with every
	// violation as it begins (Rounds 1). They must return quickly and
	// must not call the Observer.
	OnChange    func(Snapshot)
	OnViolation func(Violation)
}

// Answer is what one member answered in one round.
type Answer struct {
	Host string `json:"host"` // Target.Host
	// Status is the HTTP status, 0 if the member did not answer.
	Status int `json:"status"`
	// Role, Group and Epoch are from the answer's body (the member's
	// role file); Role is "" if there was none.
	Role  servicemgr.Role `json:"role,omitempty"`
	Group string          `json:"group,omitempty"`
	Epoch uint64          `json:"epoch,omitempty"`
	// Err says why there was no answer, or why its body did not parse.
	Err     string        `json:"err,omitempty"`
	Latency time.Duration `json:"latency_ns"`
}

// Active is a member that answered 200 as active.
type Active struct {
	Host  string `json:"host"`
	Epoch uint64 `json:"epoch"`
}

func (a Active) String() string { return fmt.Sprintf("%s@%d", a.Host, a.Epoch) }

// Snapshot is what one round saw.
type Snapshot struct {
	Seq uint64 `json:"seq"` // 1 for the first round
	// At is when the round sent its probes; Took is how long it took
	// until every answer and listing was in.
	At   time.Time     `json:"at"`
	Took time.Duration `json:"took_ns"`
	// Members are the answers, in Config.Members order.
	Members []Answer `json:"members"`
	// Actives are the members that answered 200 as active (of
	// Config.Group, if set), in Config.Members order.
	Actives []Active `json:"actives"`
	// Holders maps every floating address to the hosts whose namespace
	// holds it, sorted (empty if none).
	Holders map[string][]string `json:"holders,omitempty"`
	// AddrErrors maps a host to why its addresses could not be listed.
	AddrErrors map[string]string `json:"addr_errors,omitempty"`
}

// IsActive reports whether host answered as active in this round.
func (s Snapshot) IsActive(host string) bool {
	return slices.ContainsFunc(s.Actives, func(a Active) bool { return a.Host == host })
}

// String is one line: the actives with their epochs, each floating
// address's holders, and the members that did not answer.
func (s Snapshot) String() string {
	var b strings.Builder
	b.WriteString("actives:")
	if len(s.Actives) == 0 {
		b.WriteString(" none")
	}
	for _, a := range s.Actives {
		b.WriteString(" " + a.String())
	}
	for _, addr := range slices.Sorted(maps.Keys(s.Holders)) {
		h := s.Holders[addr]
		if len(h) == 0 {
			h = []string{"none"}
		}
		fmt.Fprintf(&b, "  %s: %s", addr, strings.Join(h, ","))
	}
	var silent []string
	for _, m := range s.Members {
		if m.Status == 0 {
			silent = append(silent, m.Host)
		}
	}
	if len(silent) > 0 {
		b.WriteString("  no answer: " + strings.Join(silent, ","))
	}
	for _, h := range slices.Sorted(maps.Keys(s.AddrErrors)) {
		fmt.Fprintf(&b, "  (%s: addresses unknown: %s)", h, s.AddrErrors[h])
	}
	return b.String()
}

// sameState reports whether a and b saw the same state: the same answers
// (status, role, group, epoch; not latencies or error texts), holders and
// listing failures.
func sameState(a, b Snapshot) bool {
	return slices.EqualFunc(a.Members, b.Members, func(x, y Answer) bool {
		return x.Host == y.Host && x.Status == y.Status && x.Role == y.Role && x.Group == y.Group &&
			x.Epoch == y.Epoch && (x.Err == "") == (y.Err == "")
	}) &&
		maps.EqualFunc(a.Holders, b.Holders, slices.Equal) &&
		slices.Equal(slices.Sorted(maps.Keys(a.AddrErrors)), slices.Sorted(maps.Keys(b.AddrErrors)))
}

// Period is one state the observer saw, from its first round to its last.
type Period struct {
	// Snapshot is the first round of the period: its At is when the state
	// was first seen.
	Snapshot
	// Last is the At of the period's last round, Rounds how many it had.
	Last   time.Time `json:"last"`
	Rounds int       `json:"rounds"`
}

// ViolationKind names what was violated.
type ViolationKind string

const (
	// TooManyActives: more than N members answered 200 as active in one
	// round.
	TooManyActives ViolationKind = "too-many-actives"
	// SharedAddress: two or more namespaces held one floating address in
	// one round.
	SharedAddress ViolationKind = "shared-address"
)

// Violation is one violation, over the consecutive rounds in which it held
// unchanged (the same actives with the same epochs, or the same address
// with the same holders).
type Violation struct {
	Kind ViolationKind `json:"kind"`
	// First and Last are the At of the first and last round in which it
	// held; Rounds counts them.
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
	Rounds int       `json:"rounds"`
	// Hosts are the actives (TooManyActives) or the holders of Address
	// (SharedAddress).
	Hosts   []string `json:"hosts"`
	Address string   `json:"address,omitempty"`
	Detail  string   `json:"detail"`
}

func (v Violation) key() string { return string(v.Kind) + " " + v.Detail }

// Observer polls a group's members; see the package documentation.
type Observer struct {
	cfg      Config
	floating []netip.Addr
	netns    []string                // distinct Target.Netns, in member order
	hostOf   map[string]string       // netns -> the first member's host
	clients  map[string]*http.Client // per member's host, for the real Fetch

	mu         sync.Mutex
	running    bool
	stopped    bool
	latest     Snapshot // Seq 0 before the first round
	history    []Period
	violations []Violation
	open       map[string]int // key -> index in violations, for those that held in the latest round
	waiters    map[*waiter]struct{}
}

type waiter struct {
	// mu is held while pred runs, so that it sees one round at a time.
	mu   sync.Mutex
	pred func(Snapshot) bool
	done chan time.Time // buffered; closed if the Observer stops
}

// New checks cfg and returns an Observer; it contacts nothing.
func New(cfg Config) (*Observer, error) {
	if cfg.Logger == nil {
		return nil, errors.New("observer: Logger is required")
	}
	if len(cfg.Members) == 0 {
		return nil, errors.New("observer: no members")
	}
	if cfg.N < 0 {
		return nil, fmt.Errorf("observer: N %d: want at least 0", cfg.N)
	}
	if cfg.N == 0 {
		cfg.N = 1
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxHistory <= 0 {
		cfg.MaxHistory = DefaultMaxHistory
	}
	o := &Observer{cfg: cfg, hostOf: map[string]string{}, open: map[string]int{}, waiters: map[*waiter]struct{}{}}
	hosts := map[string]bool{}
	for _, t := range cfg.Members {
		if t.Host == "" || t.Netns == "" {
			return nil, fmt.Errorf("observer: member %+v: Host and Netns are required", t)
		}
		if hosts[t.Host] {
			return nil, fmt.Errorf("observer: host %s given twice", t.Host)
		}
		hosts[t.Host] = true
		if err := checkURL(t.URL); err != nil {
			return nil, err
		}
		if _, ok := o.hostOf[t.Netns]; !ok {
			o.hostOf[t.Netns] = t.Host
			o.netns = append(o.netns, t.Netns)
		}
	}
	for _, a := range cfg.Floating {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("observer: floating address %q: want an address without prefix: %w", a, err)
		}
		o.floating = append(o.floating, addr)
	}
	if o.cfg.Fetch == nil {
		o.clients = map[string]*http.Client{}
		for _, t := range cfg.Members {
			ns := t.Netns
			if cfg.DialNetns != "" {
				ns = cfg.DialNetns
			}
			o.clients[t.Host] = newClient(ns)
		}
		o.cfg.Fetch = o.fetch
	}
	if o.cfg.ListAddrs == nil {
		o.cfg.ListAddrs = listAddrs
	}
	return o, nil
}

// checkURL checks a member URL: http://IP:PORT/..., a literal address
// (hostnet.DialIn resolves no names: that could open sockets outside the
// namespace).
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("observer: member URL: %w", err)
	}
	if _, err := netip.ParseAddrPort(u.Host); u.Scheme != "http" || err != nil {
		return fmt.Errorf("observer: member URL %q: want http://IP:PORT/", raw)
	}
	return nil
}

// Run polls in rounds until ctx ends, then returns nil; WaitFor calls then
// return ErrStopped. Run may be called once.
func (o *Observer) Run(ctx context.Context) error {
	o.mu.Lock()
	if o.running || o.stopped {
		o.mu.Unlock()
		return errors.New("observer: Run called twice")
	}
	o.running = true
	o.mu.Unlock()
	defer o.stop()

	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		s := o.round(ctx, start)
		if ctx.Err() != nil {
			return nil // the round was cut short: not a state the site was in
		}
		o.record(s)
		t.Reset(max(0, o.cfg.Interval-time.Since(start)))
	}
}

func (o *Observer) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopped = true
	for w := range o.waiters {
		close(w.done)
	}
	clear(o.waiters)
	for _, c := range o.clients {
		c.CloseIdleConnections()
	}
}

// round probes every member and lists every namespace's addresses, all at
// once, and returns what it saw.
func (o *Observer) round(ctx context.Context, at time.Time) Snapshot {
	s := Snapshot{At: at, Members: make([]Answer, len(o.cfg.Members))}
	type listing struct {
		addrs []netip.Addr
		err   error
	}
	listings := make([]listing, len(o.netns))
	var wg sync.WaitGroup
	for i, t := range o.cfg.Members {
		wg.Go(func() {
			fctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
			defer cancel()
			a := o.cfg.Fetch(fctx, t)
			a.Host = t.Host
			s.Members[i] = a
		})
	}
	if len(o.floating) > 0 {
		for i, ns := range o.netns {
			wg.Go(func() {
				lctx, cancel := context.WithTimeout(ctx, addrTimeout)
				defer cancel()
				listings[i].addrs, listings[i].err = o.cfg.ListAddrs(lctx, ns)
			})
		}
	}
	wg.Wait()
	s.Took = time.Since(at)

	for _, a := range s.Members {
		if a.Status == http.StatusOK && a.Role == servicemgr.RoleActive && (o.cfg.Group == "" || a.Group == o.cfg.Group) {
			s.Actives = append(s.Actives, Active{Host: a.Host, Epoch: a.Epoch})
		}
	}
	if len(o.floating) > 0 {
		s.Holders = map[string][]string{}
		for _, f := range o.floating {
			s.Holders[f.String()] = []string{}
		}
		for i, ns := range o.netns {
			host := o.hostOf[ns]
			if err := listings[i].err; err != nil {
				if s.AddrErrors == nil {
					s.AddrErrors = map[string]string{}
				}
				s.AddrErrors[host] = err.Error()
				continue
			}
			for _, f := range o.floating {
				if slices.Contains(listings[i].addrs, f) {
					s.Holders[f.String()] = append(s.Holders[f.String()], host)
				}
			}
		}
		for _, h := range s.Holders {
			slices.Sort(h)
		}
	}
	return s
}

// violationsOf lists what s violates.
func (o *Observer) violationsOf(s Snapshot) []Violation {
	var out []Violation
	if len(s.Actives) > o.cfg.N {
		v := Violation{Kind: TooManyActives, First: s.At, Last: s.At, Rounds: 1}
		var names []string
		for _, a := range s.Actives {
			v.Hosts = append(v.Hosts, a.Host)
			names = append(names, a.String())
		}
		v.Detail = fmt.Sprintf("%d actives, at most %d allowed: %s", len(s.Actives), o.cfg.N, strings.Join(names, " "))
		out = append(out, v)
	}
	for _, addr := range slices.Sorted(maps.Keys(s.Holders)) {
		if h := s.Holders[addr]; len(h) > 1 {
			out = append(out, Violation{Kind: SharedAddress, First: s.At, Last: s.At, Rounds: 1,
				Hosts: slices.Clone(h), Address: addr,
				Detail: fmt.Sprintf("%s held by %s", addr, strings.Join(h, " and "))})
		}
	}
	return out
}

// record publishes round s: latest snapshot, history, violations; then
// tells the callbacks and the waiters.
func (o *Observer) record(s Snapshot) {
	vs := o.violationsOf(s)
	o.mu.Lock()
	s.Seq = o.latest.Seq + 1
	changed := s.Seq == 1 || !sameState(o.latest, s)
	o.latest = s
	if changed {
		if len(o.history) >= o.cfg.MaxHistory {
			o.history = slices.Delete(o.history, 0, len(o.history)-o.cfg.MaxHistory+1)
		}
		o.history = append(o.history, Period{Snapshot: s, Last: s.At, Rounds: 1})
	} else {
		p := &o.history[len(o.history)-1]
		p.Last, p.Rounds = s.At, p.Rounds+1
	}
	open := make(map[string]int, len(vs))
	var started []Violation
	for _, v := range vs {
		if i, ok := o.open[v.key()]; ok {
			o.violations[i].Last, o.violations[i].Rounds = s.At, o.violations[i].Rounds+1
			open[v.key()] = i
			continue
		}
		open[v.key()] = len(o.violations)
		o.violations = append(o.violations, v)
		started = append(started, v)
	}
	o.open = open
	waiters := slices.Collect(maps.Keys(o.waiters))
	o.mu.Unlock()

	if changed {
		o.cfg.Logger.Debug("state", "seq", s.Seq, "state", s.String())
		if o.cfg.OnChange != nil {
			o.cfg.OnChange(s)
		}
	}
	for _, v := range started {
		o.cfg.Logger.Warn("violation", "kind", v.Kind, "detail", v.Detail)
		if o.cfg.OnViolation != nil {
			o.cfg.OnViolation(v)
		}
	}
	for _, w := range waiters {
		o.offer(w, s)
	}
}

// offer resolves w with s's time if w still waits and s satisfies it.
func (o *Observer) offer(w *waiter, s Snapshot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	o.mu.Lock()
	_, waiting := o.waiters[w]
	o.mu.Unlock()
	if !waiting || !w.pred(s) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.waiters[w]; ok {
		delete(o.waiters, w)
		w.done <- s.At
	}
}

// Snapshot is the latest round (Seq 0 before the first).
func (o *Observer) Snapshot() Snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest
}

// Violations lists every violation so far, oldest first.
func (o *Observer) Violations() []Violation {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := slices.Clone(o.violations)
	for i := range out {
		out[i].Hosts = slices.Clone(out[i].Hosts)
	}
	return out
}

// History lists every state seen (the latest Config.MaxHistory), oldest
// first: a new Period begins with each round whose answers (status, role,
// group, epoch), holders or listing failures differ from the round before.
func (o *Observer) History() []Period {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.history)
}

// WaitFor returns the At of the first round that satisfies pred: the
// latest round if it does, otherwise the first later one. It returns
// ctx's error when ctx ends first, and ErrStopped once Run has returned.
// pred is called with each round, in order and one at a time, from the
// caller's goroutine or Run's; it must look only at its argument.
func (o *Observer) WaitFor(ctx context.Context, pred func(Snapshot) bool) (time.Time, error) {
	w := &waiter{pred: pred, done: make(chan time.Time, 1)}
	w.mu.Lock() // Run offers later rounds only after pred has seen this one
	o.mu.Lock()
	latest, stopped := o.latest, o.stopped
	if !stopped {
		o.waiters[w] = struct{}{}
	}
	o.mu.Unlock()
	ok := latest.Seq > 0 && pred(latest)
	w.mu.Unlock()
	if ok {
		o.forget(w)
		return latest.At, nil
	}
	if stopped {
		return time.Time{}, ErrStopped
	}
	select {
	case t, ok := <-w.done:
		if !ok {
			return time.Time{}, ErrStopped
		}
		return t, nil
	case <-ctx.Done():
		o.forget(w)
		return time.Time{}, ctx.Err()
	}
}

func (o *Observer) forget(w *waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.waiters, w)
}

// Outage looks in the history, after t, for the first round in which ok
// does not hold (lost) and the first round after that in which it holds
// again (back); for example with ok "N actives answer", back.Sub(t0) is
// the time from a fault at t0 to N actives answering again. found is
// false unless both were seen; back is zero if ok has not held again yet.
// ok must depend only on the state (answers, actives, holders), not on
// times or latencies.
func (o *Observer) Outage(t time.Time, ok func(Snapshot) bool) (lost, back time.Time, found bool) {
	for _, p := range o.History() {
		if p.Last.Before(t) {
			continue
		}
		switch {
		case lost.IsZero() && !ok(p.Snapshot):
			lost = p.At
			if lost.Before(t) {
				// The outage began before t; its first round at or after
				// t is not recorded: report t.
				lost = t
			}
		case !lost.IsZero() && ok(p.Snapshot):
			return lost, p.At, true
		}
	}
	return lost, time.Time{}, false
}
