package central

import (
	"context"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/linkproto"
)

// linkWriteBatch bounds the sites one registry transaction of the link
// writer records.
const linkWriteBatch = 2000

// linkWriter records what sites' links report (last seen, summaries,
// online) in the registry, off the links' read loops. Writes that arrive
// while one is under way are merged per site (the newest time, the newest
// summary) and go in together, in one transaction: a reconnect storm of thousands of sites
// costs tens of transactions instead of one per site, so admission is not
// capped by the database's commit rate (docs/benchmarks.md, fleet).
type linkWriter struct {
	store SubcloudStore
	// state is the tracker's availability of a site as the write is made,
	// so racing writers (the sweep, a link) converge on the tracker's view.
	state func(site string) Availability

	mu      sync.Mutex
	pending map[string]*linkWrite
	kick    chan struct{}
}

// linkWrite is one site's merged pending write and what to call when it
// is done.
type linkWrite struct {
	at    time.Time
	sum   *linkproto.Summary
	after []func(linkWritten)
}

// linkWritten is a write's outcome.
type linkWritten struct {
	sc  Subcloud
	ok  bool // the site is in the registry
	err error
}

func newLinkWriter(store SubcloudStore, state func(string) Availability) *linkWriter {
	return &linkWriter{store: store, state: state, pending: map[string]*linkWrite{}, kick: make(chan struct{}, 1)}
}

// queue records that site was seen at at (with its summary, if sum is
// not nil), without waiting: a link's read loop must never wait for the
// database (a site whose updates are not read is marked offline). after,
// if not nil, is called with the outcome by the writer's goroutine, after
// the commit: it must not block.
func (w *linkWriter) queue(site string, at time.Time, sum *linkproto.Summary, after func(linkWritten)) {
	w.mu.Lock()
	p := w.pending[site]
	if p == nil {
		p = &linkWrite{}
		w.pending[site] = p
	}
	if at.After(p.at) {
		p.at = at
	}
	if sum != nil {
		p.sum = sum // summaries of one link arrive in order
	}
	if after != nil {
		p.after = append(p.after, after)
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// write is queue, waiting for the outcome (or ctx).
func (w *linkWriter) write(ctx context.Context, site string, at time.Time, sum *linkproto.Summary) (Subcloud, bool, error) {
	done := make(chan linkWritten, 1)
	w.queue(site, at, sum, func(r linkWritten) { done <- r })
	select {
	case r := <-done:
		return r.sc, r.ok, r.err
	case <-ctx.Done():
		return Subcloud{}, false, ctx.Err()
	}
}

// Run writes pending updates until ctx ends.
func (w *linkWriter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			w.fail(ctx.Err())
			return nil
		case <-w.kick:
		}
		for w.flush(ctx) {
		}
	}
}

// flush writes up to linkWriteBatch pending sites in one transaction; it
// reports whether more are pending.
func (w *linkWriter) flush(ctx context.Context) bool {
	w.mu.Lock()
	batch := make(map[string]*linkWrite, min(len(w.pending), linkWriteBatch))
	for site, p := range w.pending {
		if len(batch) == linkWriteBatch {
			break
		}
		batch[site] = p
		delete(w.pending, site)
	}
	more := len(w.pending) > 0
	w.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	names := make([]string, 0, len(batch))
	for site := range batch {
		names = append(names, site)
	}
	stored, err := w.store.UpdateSubclouds(ctx, names, func(sc *Subcloud) error {
		p := batch[sc.Name]
		at := p.at
		sc.Availability = w.state(sc.Name)
		sc.LastSeen = &at
		if sum := p.sum; sum != nil {
			sc.Hosts = HostCounts{Total: sum.Hosts, ByAvailability: sum.HostsByAvail}
			sc.SoftwareVersion = sum.Version
			sc.AlarmSummary = AlarmSummary{Critical: sum.Alarms["critical"], Major: sum.Alarms["major"],
				Minor: sum.Alarms["minor"], Warning: sum.Alarms["warning"]}
		}
		sc.Status = StatusOf(sc.Availability, sc.AlarmSummary)
		return nil
	})
	byName := make(map[string]Subcloud, len(stored))
	for _, sc := range stored {
		byName[sc.Name] = sc
	}
	for site, p := range batch {
		sc, ok := byName[site]
		for _, after := range p.after {
			after(linkWritten{sc: sc, ok: ok, err: err})
		}
	}
	return more
}

// fail answers every pending write with err (central is stopping).
func (w *linkWriter) fail(err error) {
	w.mu.Lock()
	pending := w.pending
	w.pending = map[string]*linkWrite{}
	w.mu.Unlock()
	for _, p := range pending {
		for _, after := range p.after {
			after(linkWritten{err: err})
		}
	}
}
