package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Defaults of LeadershipConfig.
const (
	DefaultSessionTTL = 5 * time.Second
	DefaultRetryDelay = time.Second
)

// LeadershipConfig configures one candidate of an election.
type LeadershipConfig struct {
	// Client is the candidate's connection to etcd.
	Client *Client
	// Prefix names the election (/petrel/<site>/leader): each candidate's
	// key is Prefix + "/" + its session's lease ID in hex, and the oldest
	// key is the leader's.
	Prefix string
	// Name is the candidate's name, the value of its key: what Leader
	// returns while it leads.
	Name string
	// SessionTTL is the lease that keeps the candidate's key: if the
	// candidate stops refreshing it (crash, partition), its leadership ends
	// this long after the last refresh. It is rounded up to whole seconds.
	// Zero means DefaultSessionTTL.
	SessionTTL time.Duration
	// RetryDelay is how long RunWhileLeader waits before campaigning again
	// after a failed campaign or after its function returned while still
	// leader. Zero means DefaultRetryDelay.
	RetryDelay time.Duration
	// Logger receives leadership changes; nil drops them.
	Logger *slog.Logger
}

// Leadership is one candidate's participation in an election: it
// campaigns, knows whether it leads, hands out the Guard of its term, and
// says when the term ends. Campaign, Resign and RunWhileLeader are meant
// for one goroutine; IsLeader, Guard, Lost and Leader may be called from
// any. Close ends everything.
type Leadership struct {
	cfg    LeadershipConfig
	cli    *clientv3.Client
	ttl    int
	log    *slog.Logger
	closed chan struct{} // closed by Close; ends a Campaign in progress

	opMu sync.Mutex // serializes Campaign, Resign and Close

	mu   sync.Mutex // guards the fields below
	sess *concurrency.Session
	term *term // the latest term, which may have ended

	closeOnce sync.Once
	closeErr  error
}

// term is one period of leadership.
type term struct {
	guard    Guard
	el       *concurrency.Election
	lost     chan struct{} // closed when the term ends
	stop     chan struct{} // closed by Resign and Close to end the watcher
	stopOnce sync.Once
	done     chan struct{} // closed when the watcher has exited
}

func (t *term) ended() bool {
	select {
	case <-t.lost:
		return true
	default:
		return false
	}
}

// NewLeadership makes a candidate; it does not campaign yet.
func NewLeadership(cfg LeadershipConfig) (*Leadership, error) {
	if cfg.Client == nil || cfg.Name == "" {
		return nil, errors.New("coord: leadership: Client and Name are required")
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if !strings.HasPrefix(cfg.Prefix, "/") || len(cfg.Prefix) < 2 {
		return nil, fmt.Errorf("coord: leadership: prefix %q must be an absolute key", cfg.Prefix)
	}
	cfg.SessionTTL = orDefault(cfg.SessionTTL, DefaultSessionTTL)
	cfg.RetryDelay = orDefault(cfg.RetryDelay, DefaultRetryDelay)
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Leadership{
		cfg:    cfg,
		cli:    cfg.Client.etcd,
		ttl:    int(ttlSeconds(cfg.SessionTTL)),
		log:    lg.With("election", cfg.Prefix, "candidate", cfg.Name),
		closed: make(chan struct{}),
	}, nil
}

// Campaign waits until this candidate leads, and returns the Guard of its
// term. If it leads already, it returns the current Guard at once. It
// fails with ctx's error, or ErrClosed after Close.
func (l *Leadership) Campaign(ctx context.Context) (Guard, error) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	for {
		if l.isClosed() {
			return Guard{}, ErrClosed
		}
		if t := l.current(); t != nil {
			return t.guard, nil
		}
		sess, err := l.session(ctx)
		if err != nil {
			return Guard{}, err
		}
		el := concurrency.NewElection(sess, l.cfg.Prefix)
		g, err := l.campaign(ctx, sess, el)
		if err != nil {
			return Guard{}, err
		}
		if g.IsZero() {
			continue // the session ended while waiting: start over with a new one
		}
		t := &term{guard: g, el: el, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
		l.mu.Lock()
		l.term = t
		l.mu.Unlock()
		go l.watch(t, sess)
		l.log.Info("leadership won", "key", g.Key, "rev", g.Rev)
		return g, nil
	}
}

// campaign runs one campaign with sess. It returns the zero Guard (and no
// error) when sess ended before or right after winning.
func (l *Leadership) campaign(ctx context.Context, sess *concurrency.Session, el *concurrency.Election) (Guard, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnSession := context.AfterFunc(sess.Ctx(), cancel)
	defer stopOnSession()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-stopped:
		}
	}()
	if err := el.Campaign(cctx, l.cfg.Name); err != nil {
		switch {
		case ctx.Err() != nil:
			return Guard{}, fmt.Errorf("coord: campaign: %w", ctx.Err())
		case l.isClosed():
			return Guard{}, ErrClosed
		case sess.Ctx().Err() != nil:
			return Guard{}, nil
		}
		return Guard{}, fmt.Errorf("coord: campaign: %w", err)
	}
	g := Guard{Key: el.Key(), Rev: el.Rev()}
	// Campaign also returns when the candidate's own key went with its
	// lease while it waited; make sure the key is still there.
	held, _, err := l.held(ctx, g)
	if err != nil {
		// Not knowing, give the key up rather than lead unnoticed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = el.Resign(rctx)
		cancel()
		return Guard{}, err
	}
	if !held {
		return Guard{}, nil
	}
	return g, nil
}

// session returns the live session, making a new one when there is none.
func (l *Leadership) session(ctx context.Context) (*concurrency.Session, error) {
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s != nil && s.Ctx().Err() == nil {
		return s, nil
	}
	// The lease is granted here, under ctx, rather than by NewSession,
	// which would bind the session's lifetime to that ctx.
	gctx, cancel := context.WithTimeout(ctx, time.Duration(l.ttl)*time.Second)
	resp, err := l.cli.Grant(gctx, int64(l.ttl))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("coord: leadership session: %w", err)
	}
	s, err = concurrency.NewSession(l.cli, concurrency.WithLease(resp.ID), concurrency.WithTTL(l.ttl))
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = l.cli.Revoke(rctx, resp.ID) // best effort: the lease expires anyway
		cancel()
		return nil, fmt.Errorf("coord: leadership session: %w", err)
	}
	l.mu.Lock()
	l.sess = s
	l.mu.Unlock()
	return s, nil
}

// held reports whether g's key still exists with g's create revision, and
// the revision the answer is from.
func (l *Leadership) held(ctx context.Context, g Guard) (bool, int64, error) {
	resp, err := l.cli.Get(ctx, g.Key)
	if err != nil {
		return false, 0, fmt.Errorf("coord: check leadership: %w", err)
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == g.Rev, resp.Header.Revision, nil
}

// watch ends t when its session ends, its key is deleted, or its key can
// no longer be confirmed (the cluster lost its quorum or became
// unreachable), or when Resign or Close stop it.
func (l *Leadership) watch(t *term, sess *concurrency.Session) {
	defer close(t.done)
	reason := l.watchKey(t, sess)
	close(t.lost)
	l.log.Info("leadership ended", "key", t.guard.Key, "rev", t.guard.Rev, "reason", reason)
}

func (l *Leadership) watchKey(t *term, sess *concurrency.Session) string {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer cancel()
	rev := t.guard.Rev + 1
	for {
		wch := l.cli.Watch(ctx, t.guard.Key, clientv3.WithRev(rev), clientv3.WithFilterPut())
	events:
		for {
			select {
			case <-t.stop:
				return "resigned"
			case <-sess.Done():
				return "session ended"
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil {
					break events
				}
				if len(wr.Events) > 0 {
					return "election key deleted"
				}
			}
		}
		// The watch ended (compaction, no raft leader, reconnection):
		// confirm the key is still ours before watching again.
		hctx, hcancel := context.WithTimeout(ctx, time.Duration(l.ttl)*time.Second/3)
		ok, at, err := l.held(hctx, t.guard)
		hcancel()
		switch {
		case err != nil:
			return "cannot confirm the election key: " + err.Error()
		case !ok:
			return "election key gone"
		}
		rev = at + 1
	}
}

// current returns the term in progress, or nil.
func (l *Leadership) current() *term {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil || l.term.ended() {
		return nil
	}
	return l.term
}

func (l *Leadership) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// IsLeader reports whether a term of this candidate is in progress.
func (l *Leadership) IsLeader() bool { return l.current() != nil }

// Guard returns the Guard of the term in progress; ok is false when this
// candidate does not lead.
func (l *Leadership) Guard() (g Guard, ok bool) {
	if t := l.current(); t != nil {
		return t.guard, true
	}
	return Guard{}, false
}

// Lost returns a channel that is closed when the term in progress ends
// (session expired or closed, key deleted, quorum lost, Resign, Close).
// When there is no term in progress, the channel is closed already.
func (l *Leadership) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return l.term.lost
}

// Leader returns the name of the election's current leader, whoever it
// is, or ErrNoLeader.
func (l *Leadership) Leader(ctx context.Context) (string, error) {
	resp, err := l.cli.Get(ctx, l.cfg.Prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("coord: read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNoLeader
	}
	return string(resp.Kvs[0].Value), nil
}

// Resign ends the term in progress, if any, deleting the election key so
// that the next candidate takes over at once. The session stays for the
// next Campaign.
func (l *Leadership) Resign(ctx context.Context) error {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	return l.resign(ctx)
}

func (l *Leadership) resign(ctx context.Context) error {
	l.mu.Lock()
	t := l.term
	l.mu.Unlock()
	if t == nil {
		return nil
	}
	// Also after the term ended on its own: the key may still be there
	// (say, its end was declared because the key could not be confirmed).
	// Election.Resign deletes it only if it is still this term's.
	err := t.el.Resign(ctx)
	t.stopOnce.Do(func() { close(t.stop) })
	<-t.done
	if err != nil {
		return fmt.Errorf("coord: resign: %w", err)
	}
	return nil
}

// RunWhileLeader campaigns, runs fn while leading with a ctx that is
// cancelled when the term ends, then resigns and campaigns again, until
// ctx ends; it returns ctx's error (or ErrClosed). When fn returns while
// still leading (done, or failed: its error is logged), the candidate
// resigns so another can take over, and campaigns again after RetryDelay.
func (l *Leadership) RunWhileLeader(ctx context.Context, fn func(ctx context.Context, g Guard) error) error {
	for {
		g, err := l.Campaign(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return err
			}
			l.log.Warn("campaign failed", "err", err)
			if err := l.pause(ctx); err != nil {
				return err
			}
			continue
		}
		lost := l.Lost()
		lctx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			select {
			case <-lost:
				cancel()
			case <-stopped:
			}
		})
		err = fn(lctx, g)
		close(stopped)
		wg.Wait()
		cancel()
		wasLost := lctx.Err() != nil && ctx.Err() == nil
		if err != nil && !wasLost {
			l.log.Warn("leader work failed", "err", err)
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(l.ttl)*time.Second)
		if err := l.Resign(rctx); err != nil {
			l.log.Warn("resign failed", "err", err)
		}
		rcancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !wasLost {
			if err := l.pause(ctx); err != nil {
				return err
			}
		}
	}
}

func (l *Leadership) pause(ctx context.Context) error {
	t := time.NewTimer(l.cfg.RetryDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-l.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the term in progress, revokes the session's lease (deleting
// this candidate's key, so another takes over at once) and ends a
// Campaign in progress. It can be called more than once.
func (l *Leadership) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.opMu.Lock()
		defer l.opMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(l.ttl)*time.Second)
		defer cancel()
		err := l.resign(ctx)
		l.mu.Lock()
		s := l.sess
		l.sess = nil
		l.mu.Unlock()
		if s != nil {
			if cerr := s.Close(); cerr != nil && !errors.Is(cerr, rpctypes.ErrLeaseNotFound) {
				err = errors.Join(err, fmt.Errorf("coord: close session: %w", cerr))
			}
		}
		l.closeErr = err
	})
	return l.closeErr
}
