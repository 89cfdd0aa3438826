package coord_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
)

const prefix = "/petrel/s1/leader"

// handOverBound is how soon a waiting candidate must lead after the
// leader resigned or closed its session (measured: a few ms).
const handOverBound = 2 * time.Second

type campaignResult struct {
	g   coord.Guard
	err error
}

func campaignAsync(ctx context.Context, l *coord.Leadership) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		g, err := l.Campaign(ctx)
		ch <- campaignResult{g, err}
	}()
	return ch
}

// TestElectionHandOver: of two candidates one leads; the other takes over
// within a bound when the first resigns, and again when the leader's
// session is closed.
func TestElectionHandOver(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	ctx := ctxTimeout(t, 20*time.Second)
	obs := newClient(t, endpoints(members), ca.client(t, "observer"))
	a := newLeadership(t, newClient(t, endpoints(members), ca.client(t, "a")), prefix, "a")
	b := newLeadership(t, newClient(t, endpoints(members), ca.client(t, "b")), prefix, "b")

	if _, err := a.Leader(ctx); !errors.Is(err, coord.ErrNoLeader) {
		t.Fatalf("Leader() before any campaign: err = %v; want ErrNoLeader", err)
	}
	ga, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := a.Campaign(ctx); err != nil || again != ga {
		t.Fatalf("Campaign() while leading = %v, %v; want %v", again, err, ga)
	}
	bWon := campaignAsync(ctx, b)
	for _, l := range []*coord.Leadership{a, b} {
		if got, err := l.Leader(ctx); err != nil || got != "a" {
			t.Fatalf("Leader() = %q, %v; want a", got, err)
		}
	}
	if !a.IsLeader() || b.IsLeader() {
		t.Fatalf("IsLeader: a %v, b %v; want true, false", a.IsLeader(), b.IsLeader())
	}
	if g, ok := a.Guard(); !ok || g != ga {
		t.Fatalf("a.Guard() = %v, %v; want %v", g, ok, ga)
	}
	select {
	case r := <-bWon:
		t.Fatalf("b won while a leads: %+v", r)
	default:
	}

	aLost := a.Lost()
	start := time.Now()
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ := within(t, handOverBound, "b leads after a resigned", bWon)
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("hand-over after Resign: %v", time.Since(start))
	within(t, time.Second, "a's Lost closed after Resign", aLost)
	if a.IsLeader() || !b.IsLeader() {
		t.Fatalf("after Resign, IsLeader: a %v, b %v; want false, true", a.IsLeader(), b.IsLeader())
	}

	aWon := campaignAsync(ctx, a)
	waitFor(t, 5*time.Second, "a's candidate key", func() bool {
		return candidates(ctx, obs) == 2
	})
	bLost := b.Lost()
	start = time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, _ = within(t, handOverBound, "a leads after b's session closed", aWon)
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("hand-over after session close: %v", time.Since(start))
	within(t, time.Second, "b's Lost closed after Close", bLost)
	if r.g == ga {
		t.Fatalf("a's new term has its old guard %v", ga)
	}
	if _, err := b.Campaign(ctx); !errors.Is(err, coord.ErrClosed) {
		t.Fatalf("Campaign after Close: err = %v; want ErrClosed", err)
	}
}

// candidates counts the keys in the election (-1 on error).
func candidates(ctx context.Context, c *coord.Client) int64 {
	resp, err := c.Etcd().Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return resp.Count
}

// runner is a candidate running RunWhileLeader with work that records
// when it leads.
type runner struct {
	cancel context.CancelFunc
	active atomic.Bool
	peer   atomic.Pointer[runner]
	starts chan start    // one each time its work starts
	done   chan struct{} // closed when RunWhileLeader has returned
	err    error         // what it returned
}

type start struct {
	g          coord.Guard
	peerActive bool // the peer's work was running when this one's started
}

func startRunner(t *testing.T, l *coord.Leadership) *runner {
	ctx, cancel := context.WithCancel(t.Context())
	r := &runner{cancel: cancel, starts: make(chan start, 10), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = l.RunWhileLeader(ctx, func(ctx context.Context, g coord.Guard) error {
			p := r.peer.Load()
			r.active.Store(true)
			r.starts <- start{g: g, peerActive: p != nil && p.active.Load()}
			<-ctx.Done()
			r.active.Store(false)
			return nil
		})
	}()
	t.Cleanup(r.stop)
	return r
}

// stop ends RunWhileLeader and waits until it has returned.
func (r *runner) stop() {
	r.cancel()
	<-r.done
}

// TestRunWhileLeader: the work runs on one candidate at a time; when its
// key is deleted its work is cancelled and the other takes over; when its
// ctx ends, its work has returned before the other's starts.
func TestRunWhileLeader(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	ctx := ctxTimeout(t, 20*time.Second)
	obs := newClient(t, endpoints(members), ca.client(t, "observer"))
	la := newLeadership(t, newClient(t, endpoints(members), ca.client(t, "a")), prefix, "a")
	a := startRunner(t, la)
	sa, _ := within(t, 5*time.Second, "a leads", a.starts)
	b := startRunner(t, newLeadership(t, newClient(t, endpoints(members), ca.client(t, "b")), prefix, "b"))
	a.peer.Store(b)
	b.peer.Store(a)
	waitFor(t, 5*time.Second, "b's candidate key", func() bool { return candidates(ctx, obs) == 2 })

	// Depose a behind its back: its work is cancelled, b's starts.
	if _, err := obs.Etcd().Delete(ctx, sa.g.Key); err != nil {
		t.Fatal(err)
	}
	sb, d := within(t, handOverBound, "b leads after a's key was deleted", b.starts)
	t.Logf("b leads %v after a's key was deleted (a's work still running then: %v)", d, sb.peerActive)
	waitFor(t, 5*time.Second, "a's work cancelled", func() bool { return !a.active.Load() })
	if sb.g == sa.g {
		t.Fatalf("b's guard = a's %v", sa.g)
	}
	// a campaigns again, behind b.
	waitFor(t, 5*time.Second, "a campaigns again", func() bool { return candidates(ctx, obs) == 2 })

	// b stops: its work returns before it resigns, then a leads again.
	b.stop()
	if !errors.Is(b.err, context.Canceled) {
		t.Fatalf("RunWhileLeader after its ctx ended = %v; want context.Canceled", b.err)
	}
	sa2, _ := within(t, handOverBound, "a leads after b stopped", a.starts)
	if sa2.peerActive {
		t.Error("a's work started while b's still ran")
	}
	if sa2.g == sa.g || sa2.g == sb.g {
		t.Fatalf("a's new guard %v repeats an old one", sa2.g)
	}
	if got, err := la.Leader(ctx); err != nil || got != "a" {
		t.Fatalf("Leader() = %q, %v; want a", got, err)
	}
}
