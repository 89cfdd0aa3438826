package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// Sites is the fleet as the executor drives it (consumer side): each
// site's own API (central reaches it through the site's dial-home link).
// Every call is idempotent or checked first by the executor.
type Sites interface {
	// Reachable reports whether the site's link is up.
	Reachable(site string) bool
	// SyncPatch makes patch id present at the site: uploaded (from
	// central's copy) when the site does not hold it.
	SyncPatch(ctx context.Context, site, id string) error
	// Patch is patch id as the site holds it (its state, each host's
	// state towards it); swpatch.ErrPatchNotFound (errs.NotFound) when
	// the site does not hold it.
	Patch(ctx context.Context, site, id string) (swpatch.Record, error)
	ApplyPatch(ctx context.Context, site, id string) error
	RemovePatch(ctx context.Context, site, id string) error
	// Strategy reads the site's patch strategy; strategy.ErrNotFound
	// (errs.NotFound) when it has none.
	Strategy(ctx context.Context, site string) (strategy.Strategy, error)
	CreateStrategy(ctx context.Context, site string, opts strategy.Options) (strategy.Strategy, error)
	DeleteStrategy(ctx context.Context, site string) error
	// StrategyAction applies or aborts the site's strategy.
	StrategyAction(ctx context.Context, site, action string) (strategy.Strategy, error)
}

// Alarms raises and clears central's alarms.
type Alarms interface {
	Raise(ctx context.Context, id, entity string, fields map[string]string) error
	Clear(ctx context.Context, id, entity string) error
}

// AlarmEntity is the entity of central's 900.001 (a fleet strategy is
// applying) and 900.004 (it failed).
const AlarmEntity = "fleet=patch"

// Config configures an Executor.
type Config struct {
	Store  strategy.Store // central's, holding the fleet strategy
	Sites  Sites
	Alarms Alarms
	Logger *slog.Logger
	// Poll is how often a step looks at its site; zero: 1 s.
	Poll time.Duration
	// OfflineWait bounds how long a step waits for an unreachable site
	// before it fails; zero: DefaultOfflineWait.
	OfflineWait time.Duration
	// AbortWait bounds how long an aborted step waits for its site
	// strategy to end; zero: 30 min (a site finishes its current step).
	AbortWait time.Duration
	// Changed, if set, is told of every stored change (the live stream).
	Changed func(strategy.Strategy)
	Now     func() time.Time
}

// DefaultOfflineWait is how long a step waits for an offline site.
const DefaultOfflineWait = 10 * time.Minute

// Executor runs central's fleet strategy. It runs only on the leading
// central; it resumes the stored strategy when it starts.
type Executor struct {
	cfg  Config
	wake chan struct{}
	mu   sync.Mutex // one Create/Apply/Abort/Delete at a time

	// wmu orders this executor's writes: its steps share one stored
	// strategy, and serialized writes never lose a compare-and-swap.
	wmu   sync.Mutex
	state atomic.Value // strategy.State: the stored strategy's, as last written or read

	// Steps' progress waits here and is flushed in one write per poll.
	pmu     sync.Mutex
	pending map[[2]int]strategy.SiteProgress
}

// New returns an executor; Run starts it.
func New(cfg Config) (*Executor, error) {
	if cfg.Store == nil || cfg.Sites == nil {
		return nil, errors.New("fleet: Store and Sites are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.OfflineWait <= 0 {
		cfg.OfflineWait = DefaultOfflineWait
	}
	if cfg.AbortWait <= 0 {
		cfg.AbortWait = 30 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Changed == nil {
		cfg.Changed = func(strategy.Strategy) {}
	}
	return &Executor{cfg: cfg, wake: make(chan struct{}, 1), pending: map[[2]int]strategy.SiteProgress{}}, nil
}

// Wake makes Run look at the strategy now.
func (e *Executor) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Executor) update(ctx context.Context, fn func(*strategy.Strategy) error) (strategy.Strategy, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s, err := e.cfg.Store.Update(ctx, strategy.Patch, func(s *strategy.Strategy) error {
		e.applyPending(s)
		return fn(s)
	})
	if err == nil {
		e.state.Store(s.State)
		e.cfg.Changed(s)
	}
	return s, err
}

// applyPending writes the steps' waiting progress into s (every write
// carries it), and forgets it once written.
func (e *Executor) applyPending(s *strategy.Strategy) {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	for k, p := range e.pending {
		if k[0] < len(s.Stages) && k[1] < len(s.Stages[k[0]].Steps) {
			p := p
			s.Stages[k[0]].Steps[k[1]].Site = &p
		}
	}
	clear(e.pending)
}

// progress records a step's progress; the next write (at most a poll
// later) stores it.
func (e *Executor) progress(i, j int, p strategy.SiteProgress) {
	e.pmu.Lock()
	e.pending[[2]int{i, j}] = p
	e.pmu.Unlock()
}

// flush stores the steps' waiting progress.
func (e *Executor) flush(ctx context.Context) error {
	e.pmu.Lock()
	n := len(e.pending)
	e.pmu.Unlock()
	if n == 0 {
		return nil
	}
	_, err := e.update(ctx, func(*strategy.Strategy) error { return nil })
	return err
}

// fleetState is the stored strategy's state as this executor last saw it.
func (e *Executor) fleetState(ctx context.Context) (strategy.State, error) {
	if st, ok := e.state.Load().(strategy.State); ok {
		return st, nil
	}
	s, err := e.cfg.Store.Strategy(ctx, strategy.Patch)
	if err != nil {
		return "", err
	}
	e.state.Store(s.State)
	return s.State, nil
}

// Create plans a fleet strategy and stores it, ready to apply. One at a time.
func (e *Executor) Create(ctx context.Context, snap Snapshot, opts strategy.Options) (strategy.Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.cfg.Store.Strategy(ctx, strategy.Patch); err == nil {
		return strategy.Strategy{}, strategy.ErrExists
	} else if !errors.Is(err, strategy.ErrNotFound) {
		return strategy.Strategy{}, err
	}
	s, err := Plan(snap, opts)
	if err != nil {
		return strategy.Strategy{}, err
	}
	s.CreatedAt = e.cfg.Now()
	s.UpdatedAt = s.CreatedAt
	s, err = e.cfg.Store.Create(ctx, s)
	if err == nil {
		e.cfg.Changed(s)
	}
	return s, err
}

// Apply starts a ready fleet strategy, or resumes an apply-failed one:
// its failed sites are tried again (their steps are idempotent).
func (e *Executor) Apply(ctx context.Context) (strategy.Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.update(ctx, func(s *strategy.Strategy) error {
		if s.State != strategy.ReadyToApply && s.State != strategy.ApplyFailed {
			return fmt.Errorf("%w: the strategy is %s; only a ready-to-apply or apply-failed strategy can be applied", errs.InvalidTransition, s.State)
		}
		now := e.cfg.Now()
		for i := range s.Stages {
			for j := range s.Stages[i].Steps {
				if s.Stages[i].Steps[j].State == strategy.StepFailed {
					if err := s.StepTo(i, j, strategy.StepApplying, "", now); err != nil {
						return err
					}
				}
			}
		}
		s.Reason = ""
		return s.To(strategy.Applying, now)
	})
	if err != nil {
		return s, err
	}
	e.alarm(ctx, true, strategy.AlarmInProgress, nil)
	e.alarm(ctx, false, strategy.AlarmFailed, nil)
	e.Wake()
	return s, nil
}

// Abort stops the fleet strategy from starting new sites; the sites under
// way have their site strategies aborted, and each step records how its
// site ended.
func (e *Executor) Abort(ctx context.Context) (strategy.Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.update(ctx, func(s *strategy.Strategy) error {
		now := e.cfg.Now()
		switch s.State {
		case strategy.ReadyToApply:
			abortWaiting(s, "aborted before it was applied", now)
			s.Reason = "aborted by an operator"
			return s.To(strategy.Aborted, now)
		case strategy.Applying, strategy.ApplyFailed:
			s.Reason = "aborted by an operator"
			return s.To(strategy.Aborting, now)
		}
		return fmt.Errorf("%w: the strategy is %s; only one ready to apply, applying or failed can be aborted", errs.InvalidTransition, s.State)
	})
	if err == nil {
		e.Wake()
	}
	return s, err
}

// Delete drops a fleet strategy that is not applying or aborting. The
// site strategies stay at their sites.
func (e *Executor) Delete(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.cfg.Store.Delete(ctx, strategy.Patch, func(s strategy.Strategy) error {
		if s.State == strategy.Applying || s.State == strategy.Aborting {
			return fmt.Errorf("%w: the strategy is %s: abort it first and wait for aborted", errs.InvalidTransition, s.State)
		}
		return nil
	})
	if err == nil {
		e.alarm(ctx, false, strategy.AlarmInProgress, nil)
		e.alarm(ctx, false, strategy.AlarmFailed, nil)
	}
	return err
}

func (e *Executor) alarm(ctx context.Context, raise bool, id string, fields map[string]string) {
	if e.cfg.Alarms == nil {
		return
	}
	var err error
	if raise {
		err = e.cfg.Alarms.Raise(ctx, id, AlarmEntity, fields)
	} else {
		err = e.cfg.Alarms.Clear(ctx, id, AlarmEntity)
	}
	if err != nil {
		e.cfg.Logger.Warn("fleet strategy alarm", "alarm", id, "raise", raise, "err", err)
	}
}

// abortWaiting aborts the steps that have not started.
func abortWaiting(s *strategy.Strategy, reason string, now time.Time) {
	for i := range s.Stages {
		for j := range s.Stages[i].Steps {
			if s.Stages[i].Steps[j].State == strategy.StepInitial {
				s.StepTo(i, j, strategy.StepAborted, reason, now)
			}
		}
	}
}

// Run runs the fleet strategy until ctx ends: at start (resuming a stored
// one), when woken, and every few seconds.
func (e *Executor) Run(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		for ctx.Err() == nil {
			more, err := e.runOnce(ctx)
			if err != nil && ctx.Err() == nil {
				e.cfg.Logger.Error("fleet strategy", "err", err)
				break
			}
			if !more {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-tick.C:
		}
	}
}

// runOnce runs the current stage's steps to their ends, or ends the
// strategy; it reports whether there is more to do.
func (e *Executor) runOnce(ctx context.Context) (bool, error) {
	s, err := e.cfg.Store.Strategy(ctx, strategy.Patch)
	if errors.Is(err, strategy.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	e.state.Store(s.State)
	if s.State != strategy.Applying && s.State != strategy.Aborting {
		return false, nil
	}
	// The steps to run: under way ones (a resume), then, while applying,
	// the first stage with steps not started.
	type ref struct{ i, j int }
	var run []ref
	for i, stg := range s.Stages {
		for j, st := range stg.Steps {
			if st.State == strategy.StepApplying {
				run = append(run, ref{i, j})
			}
		}
	}
	stopped := s.State == strategy.Aborting || s.Options.StopOnFailure && len(failedSites(s)) > 0
	if len(run) == 0 && !stopped {
		for i, stg := range s.Stages {
			for j, st := range stg.Steps {
				if st.State == strategy.StepInitial {
					run = append(run, ref{i, j})
				}
			}
			if len(run) > 0 {
				break
			}
		}
	}
	if len(run) == 0 {
		return false, e.finish(ctx)
	}
	var wg sync.WaitGroup
	for _, r := range run {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.runStep(ctx, r.i, r.j)
		}()
	}
	// The steps' progress, one write per poll while they run.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-done:
			if err := e.flush(context.WithoutCancel(ctx)); err != nil {
				return false, err
			}
			return ctx.Err() == nil, nil
		case <-t.C:
			if err := e.flush(ctx); err != nil && ctx.Err() == nil {
				e.cfg.Logger.Warn("fleet strategy progress not stored", "err", err)
			}
		}
	}
}

// finish ends the strategy once no step runs: applied, apply-failed
// (naming the failed sites) or, aborting, aborted.
func (e *Executor) finish(ctx context.Context) error {
	s, err := e.update(ctx, func(s *strategy.Strategy) error {
		now := e.cfg.Now()
		switch s.State {
		case strategy.Aborting:
			abortWaiting(s, "aborted", now)
			return s.To(strategy.Aborted, now)
		case strategy.Applying:
			if len(failedSites(*s)) > 0 {
				s.Reason = failedReason(*s)
				if s.Options.StopOnFailure {
					s.Reason += " (stop-on-failure: no new site started)"
				}
				return s.To(strategy.ApplyFailed, now)
			}
			return s.To(strategy.Applied, now)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.alarm(ctx, false, strategy.AlarmInProgress, nil)
	if s.State == strategy.ApplyFailed {
		e.alarm(ctx, true, strategy.AlarmFailed, map[string]string{"strategy": "fleet patch",
			"step": "patch-subcloud " + joinNames(failedSites(s))})
	}
	e.cfg.Logger.Info("fleet strategy ended", "state", s.State, "reason", s.Reason)
	return nil
}

func joinNames(names []string) string {
	out := ""
	for k, n := range names {
		if k > 0 {
			out += ","
		}
		out += n
	}
	return out
}
