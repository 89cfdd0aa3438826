package strategy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
)

// HostStatus is a host as the executor watches it.
type HostStatus struct {
	Name           string
	Personality    inventory.Personality
	Subfunctions   []string
	Administrative inventory.AdminState
	Operational    inventory.OperState
	Availability   inventory.Availability
	// Active: the controller whose services are active.
	Active bool
	// PatchCurrent: the host runs every applied patch.
	PatchCurrent bool
	// Installed: the host runs every applied patch or has them staged
	// for its next boot.
	Installed bool
	// InstallFailed names the applied patch whose install failed or
	// rolled back on the host, if any.
	InstallFailed string
	// ReportedAt is when the site last accepted the host's report: an
	// install failure counts only if reported after the install order.
	ReportedAt time.Time
	// Servers are the servers on the host; Running those of them active.
	Servers []string
	Running []string
}

// Alarm is an active alarm as the executor judges it.
type Alarm struct {
	ID            string
	Entity        string
	Severity      string
	MgmtAffecting string // a severity, or "none"
}

func (a Alarm) key() string { return a.ID + "/" + a.Entity }

// Site is what the executor needs of the site (consumer side). Every
// method is idempotent: Lock of a locked host, Unlock of an unlocked one,
// Swact away from a controller that is not active and Install on a host
// with the patches installed succeed without doing anything.
type Site interface {
	Hosts(ctx context.Context) ([]HostStatus, error)
	// Patches are the applied patches some host has yet to install, and
	// whether one of them needs a reboot.
	Patches(ctx context.Context) (ids []string, reboot bool, err error)
	// Alarms lists the active, unsuppressed alarms.
	Alarms(ctx context.Context) ([]Alarm, error)
	// Lock locks a host, live-migrating its servers away (force: without,
	// as a simplex site's only controller needs).
	Lock(ctx context.Context, host string, force bool) error
	Unlock(ctx context.Context, host string) error
	// Swact moves the site's active controller away from host. The site
	// controller running the executor stops on the way; its peer resumes.
	Swact(ctx context.Context, host string) error
	Install(ctx context.Context, host string) error
	StopServers(ctx context.Context, ids []string) error
	StartServers(ctx context.Context, ids []string) error
	Raise(ctx context.Context, id, entity string, fields map[string]string) error
	Clear(ctx context.Context, id, entity string) error
}

// Store keeps a site's strategies, one per type.
type Store interface {
	Strategy(ctx context.Context, t Type) (Strategy, error)
	Create(ctx context.Context, s Strategy) (Strategy, error)
	// Update changes a strategy in one transaction: fn sees the stored
	// strategy and changes it (an error aborts).
	Update(ctx context.Context, t Type, fn func(*Strategy) error) (Strategy, error)
	// Delete drops a strategy if fn (when not nil) allows it.
	Delete(ctx context.Context, t Type, fn func(Strategy) error) error
}

// Timeouts bound how long a step waits for the site.
type Timeouts struct {
	Lock      time.Duration // locked, servers migrated away
	Install   time.Duration // installed or staged
	Unlock    time.Duration // unlocked
	Stabilize time.Duration // the health gate: available, patch-current, no new alarm
	Swact     time.Duration // the peer active
	// Settle is how long the health gate must hold without a break before
	// it passes: a host that just rebooted may still raise alarms as it
	// rejoins (a controller's pair re-forming: 200.009, 400.004 for a
	// moment), which the next stage's alarm query would fail on.
	Settle time.Duration
}

// DefaultTimeouts are generous: a lock migrates every server of a host.
var DefaultTimeouts = Timeouts{Lock: 30 * time.Minute, Install: 10 * time.Minute, Unlock: 2 * time.Minute,
	Stabilize: 15 * time.Minute, Swact: 2 * time.Minute, Settle: 8 * time.Second}

// Alarm IDs the executor raises (faultmgr/alarms.yaml).
const (
	AlarmInProgress = "900.001" // patching in progress
	AlarmFailed     = "900.004" // strategy failed at a step
)

// Config configures an Executor.
type Config struct {
	Site     string // the site's name, for alarm entities
	Store    Store
	Target   Site
	Logger   *slog.Logger
	Timeouts Timeouts      // zero fields: DefaultTimeouts
	Poll     time.Duration // how often a step looks at the site; zero: 200 ms
	// RetryEvery spaces the attempts of a refused lock or swact; zero: 2 s.
	RetryEvery time.Duration
	Now        func() time.Time
}

// Executor runs a site's strategy step by step. It runs only where the
// site controller is active: a site controller pair runs it on its active
// member, and a new active resumes the step its predecessor was running
// (steps are idempotent). Every step's state is stored before and after.
type Executor struct {
	cfg  Config
	wake chan struct{}
	mu   sync.Mutex // one Create/Apply/Abort/Delete at a time
}

// New returns an executor; Run starts it.
func New(cfg Config) *Executor {
	d := DefaultTimeouts
	t := &cfg.Timeouts
	for _, p := range []struct {
		v *time.Duration
		d time.Duration
	}{{&t.Lock, d.Lock}, {&t.Install, d.Install},
		{&t.Unlock, d.Unlock}, {&t.Stabilize, d.Stabilize}, {&t.Swact, d.Swact}, {&t.Settle, d.Settle}} {
		if *p.v == 0 {
			*p.v = p.d
		}
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.RetryEvery == 0 {
		cfg.RetryEvery = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Executor{cfg: cfg, wake: make(chan struct{}, 1)}
}

func (e *Executor) siteEntity() string { return "site=" + e.cfg.Site }

// Wake makes Run look at the strategy now.
func (e *Executor) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Snapshot reads the site as the planner needs it.
func (e *Executor) Snapshot(ctx context.Context, shape inventory.Shape) (Snapshot, error) {
	hosts, err := e.cfg.Target.Hosts(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	ids, reboot, err := e.cfg.Target.Patches(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Shape: shape, Patches: ids, RebootRequired: reboot}
	for _, h := range hosts {
		snap.Hosts = append(snap.Hosts, Host{Name: h.Name, Personality: h.Personality, Subfunctions: h.Subfunctions,
			Administrative: h.Administrative, Operational: h.Operational, Availability: h.Availability,
			Active: h.Active, PatchCurrent: h.PatchCurrent, Servers: h.Running})
	}
	return snap, nil
}

// Create plans a strategy from the site as it is and stores it, ready to
// apply. One strategy of a type at a time.
func (e *Executor) Create(ctx context.Context, shape inventory.Shape, opts Options) (Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.cfg.Store.Strategy(ctx, Patch); err == nil {
		return Strategy{}, ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return Strategy{}, err
	}
	snap, err := e.Snapshot(ctx, shape)
	if err != nil {
		return Strategy{}, err
	}
	s, err := Plan(snap, opts)
	if err != nil {
		return Strategy{}, err
	}
	s.CreatedAt = e.cfg.Now()
	s.UpdatedAt = s.CreatedAt
	return e.cfg.Store.Create(ctx, s)
}

// ErrAlarms is an apply refused by the alarm restrictions.
var ErrAlarms = errs.New(errs.Conflict, "management-affecting alarms present")

// Apply starts (or, after apply-failed, resumes) a strategy. With strict
// alarm restrictions, a management-affecting alarm refuses it, named.
func (e *Executor) Apply(ctx context.Context, t Type) (Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	alarms, err := e.cfg.Target.Alarms(ctx)
	if err != nil {
		return Strategy{}, err
	}
	s, err := e.cfg.Store.Update(ctx, t, func(s *Strategy) error {
		if s.State != ReadyToApply && s.State != ApplyFailed {
			return fmt.Errorf("%w: the strategy is %s; only a ready-to-apply or apply-failed strategy can be applied", errs.InvalidTransition, s.State)
		}
		if s.State == ReadyToApply {
			s.BaselineAlarms = nil
			for _, a := range alarms {
				if mgmtAffecting(a) {
					s.BaselineAlarms = append(s.BaselineAlarms, a.key())
				}
			}
		}
		if bad := blocking(*s, alarms, nil); len(bad) > 0 && s.Options.AlarmRestrictions == Strict {
			return fmt.Errorf("%w: %s (alarm-restrictions strict; clear them or create the strategy with --alarm-restrictions relaxed)", ErrAlarms, describe(bad))
		}
		// After apply-failed, Run tries the failed step again (failed → applying).
		s.Reason = ""
		return s.To(Applying, e.cfg.Now())
	})
	if err != nil {
		return s, err
	}
	if err := e.cfg.Target.Raise(ctx, AlarmInProgress, e.siteEntity(), nil); err != nil {
		e.cfg.Logger.Warn("900.001 not raised", "err", err)
	}
	e.cfg.Target.Clear(ctx, AlarmFailed, e.siteEntity()+".strategy="+string(t))
	e.Wake()
	return s, nil
}

// Abort stops a strategy from starting new steps. The step under way
// finishes; then the hosts the strategy locked are unlocked and the
// servers it stopped are started, and the strategy is aborted.
func (e *Executor) Abort(ctx context.Context, t Type) (Strategy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.cfg.Store.Update(ctx, t, func(s *Strategy) error {
		now := e.cfg.Now()
		switch s.State {
		case ReadyToApply:
			abortSteps(s, "aborted before it was applied", now)
			s.Reason = "aborted by an operator"
			return s.To(Aborted, now)
		case Applying, ApplyFailed:
			s.Reason = "aborted by an operator"
			return s.To(Aborting, now)
		}
		return fmt.Errorf("%w: the strategy is %s; only one ready to apply, applying or failed can be aborted", errs.InvalidTransition, s.State)
	})
	if err == nil {
		e.Wake()
	}
	return s, err
}

// Delete drops a strategy that is not applying or aborting.
func (e *Executor) Delete(ctx context.Context, t Type) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.Store.Delete(ctx, t, func(s Strategy) error {
		if s.State == Applying || s.State == Aborting {
			return fmt.Errorf("%w: the strategy is %s: abort it first and wait for aborted", errs.InvalidTransition, s.State)
		}
		return nil
	})
}

func abortSteps(s *Strategy, reason string, now time.Time) {
	for i := range s.Stages {
		for j := range s.Stages[i].Steps {
			st := s.Stages[i].Steps[j].State
			if st == StepInitial || st == StepFailed {
				s.StepTo(i, j, StepAborted, reason, now)
			}
		}
	}
}

// Run runs the site's strategy until ctx ends: at start (a new active
// controller resumes where the last one stopped), when woken, and every
// few seconds.
func (e *Executor) Run(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		for ctx.Err() == nil {
			more, err := e.runOnce(ctx, Patch)
			if err != nil && ctx.Err() == nil {
				e.cfg.Logger.Error("strategy step", "err", err)
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

// runOnce does the strategy's next piece of work: one step, an abort's
// clean-up, or the end. It reports whether there is more to do.
func (e *Executor) runOnce(ctx context.Context, t Type) (bool, error) {
	s, err := e.cfg.Store.Strategy(ctx, t)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch s.State {
	case Applying:
	case Aborting:
		return false, e.finishAbort(ctx, s)
	default:
		return false, nil
	}
	i, j, ok := s.Next()
	if !ok {
		_, err := e.cfg.Store.Update(ctx, t, func(s *Strategy) error {
			if s.State != Applying {
				return nil
			}
			return s.To(Applied, e.cfg.Now())
		})
		if err == nil {
			e.cfg.Target.Clear(ctx, AlarmInProgress, e.siteEntity())
			e.cfg.Logger.Info("strategy applied", "type", t)
		}
		return false, err
	}
	step := s.Stages[i].Steps[j]
	// Stored before the step does anything.
	if s, err = e.cfg.Store.Update(ctx, t, func(s *Strategy) error {
		if s.State != Applying {
			return errStopped
		}
		return s.StepTo(i, j, StepApplying, "", e.cfg.Now())
	}); errors.Is(err, errStopped) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	e.cfg.Logger.Info("strategy step", "stage", i, "step", j, "action", step.Action, "target", step.Target)
	serr := e.do(ctx, &s, i, j)
	if ctx.Err() != nil {
		return false, nil // the step stays applying: the next active redoes it
	}
	_, err = e.cfg.Store.Update(ctx, t, func(st *Strategy) error {
		st.Locked = s.Locked
		st.Stages[i].Steps[j].Servers = s.Stages[i].Steps[j].Servers
		now := e.cfg.Now()
		if serr != nil {
			if err := st.StepTo(i, j, StepFailed, serr.Error(), now); err != nil {
				return err
			}
			st.Reason = fmt.Sprintf("%s %s: %v", step.Action, step.Target, serr)
			if st.State == Applying {
				return st.To(ApplyFailed, now)
			}
			return nil
		}
		return st.StepTo(i, j, StepApplied, "", now)
	})
	if err != nil {
		return false, err
	}
	if serr != nil {
		e.cfg.Logger.Warn("strategy step failed", "action", step.Action, "target", step.Target, "err", serr)
		e.cfg.Target.Clear(ctx, AlarmInProgress, e.siteEntity())
		if rerr := e.cfg.Target.Raise(ctx, AlarmFailed, e.siteEntity()+".strategy="+string(t),
			map[string]string{"strategy": string(t), "step": string(step.Action) + " " + step.Target}); rerr != nil {
			e.cfg.Logger.Error("900.004 not raised", "err", rerr)
		}
		return true, nil // an abort may be waiting
	}
	return true, nil
}

var errStopped = errors.New("strategy no longer applying")

// persistLocked stores which hosts the strategy holds locked.
func (e *Executor) persistLocked(ctx context.Context, s *Strategy) error {
	_, err := e.cfg.Store.Update(ctx, s.Type, func(st *Strategy) error { st.Locked = slices.Clone(s.Locked); return nil })
	return err
}

// do carries out step j of stage i and waits for its effect.
func (e *Executor) do(ctx context.Context, s *Strategy, i, j int) error {
	step := &s.Stages[i].Steps[j]
	site := e.cfg.Target
	to := e.cfg.Timeouts
	switch step.Action {
	case QueryAlarms:
		alarms, err := site.Alarms(ctx)
		if err != nil {
			return err
		}
		if bad := blocking(*s, alarms, nil); len(bad) > 0 {
			return fmt.Errorf("%w: %s", ErrAlarms, describe(bad))
		}
		return nil
	case SwactHosts:
		// Retried until the timeout: a swact is refused while the peer
		// cannot take over yet (its database catching up after its own
		// reboot). The site controller running this stops on the way.
		var tried time.Time
		return e.waitErr(ctx, to.Swact, func(hs map[string]HostStatus) (string, error) {
			for _, h := range step.Hosts {
				if hs[h].Active {
					if time.Since(tried) < e.cfg.RetryEvery {
						return h + " is still the active controller", nil
					}
					tried = time.Now()
					if err := site.Swact(ctx, h); err != nil {
						return h + " is still the active controller: " + err.Error(), nil
					}
					return h + " is still the active controller", nil
				}
			}
			return "", nil
		})
	case StopInstances:
		hosts, err := site.Hosts(ctx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if slices.Contains(step.Hosts, h.Name) {
				for _, id := range h.Running {
					if !slices.Contains(step.Servers, id) {
						step.Servers = append(step.Servers, id)
					}
				}
			}
		}
		// Stored before they stop: a resumed strategy starts exactly these.
		if _, err := e.cfg.Store.Update(ctx, s.Type, func(st *Strategy) error {
			st.Stages[i].Steps[j].Servers = slices.Clone(step.Servers)
			return nil
		}); err != nil {
			return err
		}
		return site.StopServers(ctx, step.Servers)
	case StartInstances:
		for _, st := range s.Stages[i].Steps {
			if st.Action == StopInstances {
				return site.StartServers(ctx, st.Servers)
			}
		}
		return nil
	case LockHosts:
		for _, h := range step.Hosts {
			if !slices.Contains(s.Locked, h) {
				s.Locked = append(s.Locked, h)
			}
		}
		if err := e.persistLocked(ctx, s); err != nil {
			return err
		}
		// Retried until the timeout, at most every retryEvery: a lock is
		// refused while, say, a service group has no healthy standby yet
		// after the last host, or a server cannot move yet.
		var tried time.Time
		last := ""
		return e.wait(ctx, to.Lock, func(hs map[string]HostStatus) string {
			var todo []string
			for _, h := range step.Hosts {
				if hs[h].Administrative != inventory.Locked {
					todo = append(todo, h)
				}
			}
			if len(todo) == 0 {
				return ""
			}
			if time.Since(tried) < e.cfg.RetryEvery {
				return last
			}
			tried = time.Now()
			if err := e.each(ctx, todo, func(ctx context.Context, h string) error { return site.Lock(ctx, h, step.Force) }); err != nil {
				last = "not locked: " + err.Error()
				return last
			}
			last = strings.Join(todo, ",") + " not locked"
			return last
		})
	case SwPatchHosts:
		hosts, err := e.hostMap(ctx)
		if err != nil {
			return err
		}
		ordered := time.Now()
		if err := e.each(ctx, step.Hosts, func(ctx context.Context, h string) error {
			if hosts[h].Installed {
				return nil
			}
			return site.Install(ctx, h)
		}); err != nil {
			return err
		}
		return e.waitErr(ctx, to.Install, func(hs map[string]HostStatus) (string, error) {
			for _, h := range step.Hosts {
				if f := hs[h].InstallFailed; f != "" && !hs[h].Installed && hs[h].ReportedAt.After(ordered) {
					return "", fmt.Errorf("the install of %s failed on %s", f, h)
				}
				if !hs[h].Installed {
					return h + " has not installed the patches", nil
				}
			}
			return "", nil
		})
	case UnlockHosts:
		if err := e.each(ctx, step.Hosts, func(ctx context.Context, h string) error { return site.Unlock(ctx, h) }); err != nil {
			return err
		}
		if err := e.wait(ctx, to.Unlock, func(hs map[string]HostStatus) string {
			for _, h := range step.Hosts {
				if hs[h].Administrative != inventory.Unlocked {
					return h + " is not unlocked"
				}
			}
			return ""
		}); err != nil {
			return err
		}
		s.Locked = slices.DeleteFunc(s.Locked, func(h string) bool { return slices.Contains(step.Hosts, h) })
		return e.persistLocked(ctx, s)
	case SystemStabilize:
		begun := time.Now()
		var healthy time.Time // since when the gate has held without a break
		return e.waitErr(ctx, to.Stabilize, func(hs map[string]HostStatus) (string, error) {
			for _, h := range step.Hosts {
				st := hs[h]
				if st.InstallFailed != "" && !st.PatchCurrent && st.ReportedAt.After(begun) {
					return "", fmt.Errorf("%s did not boot its new software (%s rolled back)", h, st.InstallFailed)
				}
				if st.Availability != inventory.Available || st.Operational != inventory.Enabled || !st.PatchCurrent {
					healthy = time.Time{}
					return fmt.Sprintf("host %s did not come back: %s/%s/%s, patch-current %t", h, st.Administrative, st.Operational, st.Availability, st.PatchCurrent), nil
				}
			}
			alarms, err := site.Alarms(ctx)
			if err != nil {
				healthy = time.Time{}
				return err.Error(), nil
			}
			if bad := blocking(*s, alarms, step.Hosts); len(bad) > 0 {
				healthy = time.Time{}
				return "new management-affecting alarms: " + describe(bad), nil
			}
			if healthy.IsZero() {
				healthy = time.Now()
			}
			if held := time.Since(healthy); held < to.Settle {
				return fmt.Sprintf("healthy for %s of the %s it must hold", held.Round(100*time.Millisecond), to.Settle), nil
			}
			return "", nil
		})
	}
	return fmt.Errorf("strategy: unknown action %q", step.Action)
}

// each runs fn for every host at once and joins their errors.
func (e *Executor) each(ctx context.Context, hosts []string, fn func(context.Context, string) error) error {
	errsOut := make([]error, len(hosts))
	var wg sync.WaitGroup
	for k, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx, h); err != nil {
				errsOut[k] = fmt.Errorf("%s: %w", h, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errsOut...)
}

func (e *Executor) hostMap(ctx context.Context) (map[string]HostStatus, error) {
	hosts, err := e.cfg.Target.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]HostStatus, len(hosts))
	for _, h := range hosts {
		m[h.Name] = h
	}
	return m, nil
}

// wait polls the hosts until cond reports nothing missing or the timeout.
func (e *Executor) wait(ctx context.Context, d time.Duration, cond func(map[string]HostStatus) string) error {
	return e.waitErr(ctx, d, func(hs map[string]HostStatus) (string, error) { return cond(hs), nil })
}

// waitErr is wait with conditions that can fail at once.
func (e *Executor) waitErr(ctx context.Context, d time.Duration, cond func(map[string]HostStatus) (string, error)) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	last := ""
	for {
		hs, err := e.hostMap(ctx)
		if err == nil {
			missing, cerr := cond(hs)
			if cerr != nil {
				return cerr
			}
			if missing == "" {
				return nil
			}
			last = missing
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s: %s", d, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// finishAbort brings an aborting strategy to aborted: the hosts it
// locked are unlocked, the servers it stopped started; what cannot be is
// reported in the strategy's reason.
func (e *Executor) finishAbort(ctx context.Context, s Strategy) error {
	var problems []string
	// Servers stopped and not yet started again.
	for _, stg := range s.Stages {
		var stopped []string
		started := false
		for _, st := range stg.Steps {
			if st.Action == StopInstances && (st.State == StepApplied || st.State == StepApplying || st.State == StepFailed) {
				stopped = st.Servers
			}
			if st.Action == StartInstances && st.State == StepApplied {
				started = true
			}
		}
		if len(stopped) > 0 && !started {
			if err := e.cfg.Target.StartServers(ctx, stopped); err != nil {
				problems = append(problems, fmt.Sprintf("servers %s not started: %v", strings.Join(stopped, ","), err))
			}
		}
	}
	var still []string
	for _, h := range s.Locked {
		if err := e.cfg.Target.Unlock(ctx, h); err != nil {
			problems = append(problems, fmt.Sprintf("host %s left locked: %v", h, err))
			still = append(still, h)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	_, err := e.cfg.Store.Update(ctx, s.Type, func(st *Strategy) error {
		now := e.cfg.Now()
		if st.State != Aborting {
			return nil
		}
		for i := range st.Stages {
			for j := range st.Stages[i].Steps {
				if st.Stages[i].Steps[j].State == StepApplying {
					st.StepTo(i, j, StepAborted, "aborted", now)
				}
			}
		}
		abortSteps(st, "aborted", now)
		st.Locked = still
		if len(problems) > 0 {
			st.Reason += "; " + strings.Join(problems, "; ")
		}
		return st.To(Aborted, now)
	})
	if err == nil {
		e.cfg.Target.Clear(ctx, AlarmInProgress, e.siteEntity())
		e.cfg.Logger.Info("strategy aborted", "type", s.Type, "problems", problems)
	}
	return err
}

// ignoredAlarms never hold a strategy (as sw-manager's ignore list):
// its own, and host locked (200.001), which every lock raises.
var ignoredAlarms = []string{AlarmInProgress, AlarmFailed, "200.001"}

// mgmtAffecting: an alarm that holds orchestration.
func mgmtAffecting(a Alarm) bool { return a.MgmtAffecting != "" && a.MgmtAffecting != "none" }

// blocking lists the management-affecting alarms that stop a strategy:
// all of them under strict restrictions, only new ones under relaxed,
// never those in ignoredAlarms. During a health gate (gated non-nil), alarms standing when the
// apply started do not count: the gate looks for new ones.
func blocking(s Strategy, alarms []Alarm, gated []string) []Alarm {
	var out []Alarm
	for _, a := range alarms {
		if !mgmtAffecting(a) || slices.Contains(ignoredAlarms, a.ID) {
			continue
		}
		if (gated != nil || s.Options.AlarmRestrictions == Relaxed) && slices.Contains(s.BaselineAlarms, a.key()) {
			continue
		}
		out = append(out, a)
	}
	return out
}

func describe(as []Alarm) string {
	parts := make([]string, 0, len(as))
	for _, a := range as {
		parts = append(parts, fmt.Sprintf("%s on %s (%s, management-affecting %s)", a.ID, a.Entity, a.Severity, a.MgmtAffecting))
	}
	return strings.Join(parts, "; ")
}
