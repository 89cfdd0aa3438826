package strategy_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategytest"
)

func siteHosts(workers int, servers map[string][]string) []strategy.HostStatus {
	hs := []strategy.HostStatus{
		{Name: "controller-0", Personality: inventory.Controller, Active: true},
		{Name: "controller-1", Personality: inventory.Controller},
	}
	for i := range workers {
		n := "worker-" + string(rune('0'+i))
		hs = append(hs, strategy.HostStatus{Name: n, Personality: inventory.Worker, Servers: servers[n]})
	}
	return hs
}

type env struct {
	t     *testing.T
	site  *strategytest.Site
	store *strategytest.MemStore
	shape inventory.Shape
	tmo   strategy.Timeouts
	mu    sync.Mutex
	stop  context.CancelFunc
	done  chan struct{}
	ex    *strategy.Executor
}

func newEnv(t *testing.T, shape inventory.Shape, hosts []strategy.HostStatus, reboot bool) *env {
	e := &env{t: t, site: strategytest.NewSite(hosts, []string{"P-1"}, reboot), store: strategytest.NewMemStore(), shape: shape,
		tmo: strategy.Timeouts{Lock: 5 * time.Second, Install: 5 * time.Second, Unlock: 5 * time.Second, Stabilize: 5 * time.Second, Swact: 5 * time.Second, Settle: time.Millisecond}}
	t.Cleanup(e.halt)
	return e
}

// start runs an executor, as a newly active site controller does.
func (e *env) start() *strategy.Executor {
	e.mu.Lock()
	defer e.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	ex := strategy.New(strategy.Config{Site: "sp", Store: e.store, Target: e.site, Timeouts: e.tmo, Poll: time.Millisecond, RetryEvery: time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); ex.Run(ctx) }()
	e.stop, e.done, e.ex = cancel, done, ex
	return ex
}

// halt stops the running executor, as a controller stepping down does.
func (e *env) halt() {
	e.mu.Lock()
	stop, done := e.stop, e.done
	e.stop, e.done = nil, nil
	e.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (e *env) await(want ...strategy.State) strategy.Strategy {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := e.store.Strategy(context.Background(), strategy.Patch)
		if err == nil && slices.Contains(want, s.State) {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("strategy %s (%s); want %v", s.State, s.Reason, want)
		}
		time.Sleep(time.Millisecond) // poll
	}
}

func (e *env) create(opts strategy.Options) strategy.Strategy {
	e.t.Helper()
	s, err := e.ex.Create(context.Background(), e.shape, opts)
	if err != nil {
		e.t.Fatalf("Create = %v", err)
	}
	return s
}

func TestApplyMultiServer(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, map[string][]string{"worker-0": {"vm-a"}}), true)
	e.start()
	e.create(strategy.Options{})
	if _, err := e.ex.Apply(context.Background(), strategy.Patch); err != nil {
		t.Fatal(err)
	}
	s := e.await(strategy.Applied, strategy.ApplyFailed)
	if s.State != strategy.Applied {
		t.Fatalf("state %s: %s", s.State, s.Reason)
	}
	for _, n := range []string{"controller-0", "controller-1", "worker-0", "worker-1"} {
		if h := e.site.Host(n); !h.PatchCurrent || h.Administrative != inventory.Unlocked || h.Availability != inventory.Available {
			t.Errorf("%s after the strategy: %+v", n, h)
		}
	}
	if e.site.MaxDown != 1 {
		t.Errorf("at most %d hosts down at once; want 1 (serial)", e.site.MaxDown)
	}
	if !slices.Contains(e.site.Migrations, "vm-a:worker-0->worker-1") {
		t.Errorf("migrations %v; want vm-a moved off worker-0", e.site.Migrations)
	}
	if !slices.Contains(e.site.Calls, "swact controller-0") {
		t.Errorf("calls %v; want a swact of controller-0", e.site.Calls)
	}
	if e.site.Raised["900.001"] != 1 || e.site.Cleared["900.001"] == 0 {
		t.Errorf("900.001 raised %d, cleared %d", e.site.Raised["900.001"], e.site.Cleared["900.001"])
	}
	for _, st := range s.Stages {
		if st.State != strategy.StepApplied {
			t.Errorf("stage %s %s", st.Name, st.State)
		}
		for _, step := range st.Steps {
			if step.StartedAt == nil || step.EndedAt == nil {
				t.Errorf("step %s %s without times", step.Action, step.Target)
			}
		}
	}
	if len(s.Locked) != 0 {
		t.Errorf("Locked = %v after the strategy", s.Locked)
	}
	// Done: a second apply is refused; delete works.
	if _, err := e.ex.Apply(context.Background(), strategy.Patch); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("Apply(applied) = %v", err)
	}
	if err := e.ex.Delete(context.Background(), strategy.Patch); err != nil {
		t.Fatal(err)
	}
}

func TestApplyParallelNeverTooManyDown(t *testing.T) {
	servers := map[string][]string{"worker-1": {"vm-a"}, "worker-4": {"vm-b"}}
	e := newEnv(t, inventory.MultiServer, siteHosts(6, servers), true)
	e.start()
	e.create(strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 3})
	e.ex.Apply(context.Background(), strategy.Patch)
	if s := e.await(strategy.Applied, strategy.ApplyFailed); s.State != strategy.Applied {
		t.Fatalf("state %s: %s", s.State, s.Reason)
	}
	if e.site.MaxDown != 3 {
		t.Errorf("at most %d hosts down at once; want 3", e.site.MaxDown)
	}
}

func TestApplySimplexStopStart(t *testing.T) {
	hosts := []strategy.HostStatus{{Name: "controller-0", Personality: inventory.Controller, Subfunctions: []string{"controller", "worker"}, Servers: []string{"vm-a", "vm-b"}}}
	e := newEnv(t, inventory.Simplex, hosts, true)
	e.start()
	e.create(strategy.Options{InstanceAction: strategy.StopStart})
	e.ex.Apply(context.Background(), strategy.Patch)
	if s := e.await(strategy.Applied, strategy.ApplyFailed); s.State != strategy.Applied {
		t.Fatalf("state %s: %s", s.State, s.Reason)
	}
	want := []string{"stop [vm-a vm-b]", "lock controller-0", "install controller-0", "unlock controller-0", "start [vm-a vm-b]"}
	if !slices.Equal(e.site.Calls, want) {
		t.Errorf("calls %v; want %v", e.site.Calls, want)
	}
	if h := e.site.Host("controller-0"); len(h.Running) != 2 || !h.PatchCurrent {
		t.Errorf("controller-0 after: %+v", h)
	}
}

func TestApplyRefusedByStrictAlarms(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, nil), true)
	e.start()
	e.site.SetAlarms(strategy.Alarm{ID: "400.002", Entity: "service_group=controller", Severity: "major", MgmtAffecting: "major"},
		strategy.Alarm{ID: "100.101", Entity: "host=worker-0", Severity: "minor", MgmtAffecting: "none"},
		strategy.Alarm{ID: "200.001", Entity: "host=worker-1", Severity: "warning", MgmtAffecting: "warning"})
	e.create(strategy.Options{})
	_, err := e.ex.Apply(context.Background(), strategy.Patch)
	if !errors.Is(err, strategy.ErrAlarms) || !strings.Contains(err.Error(), "400.002") || strings.Contains(err.Error(), "100.101") {
		t.Fatalf("Apply = %v; want ErrAlarms naming 400.002 only", err)
	}
	if s, _ := e.store.Strategy(context.Background(), strategy.Patch); s.State != strategy.ReadyToApply {
		t.Errorf("state after a refused apply: %s", s.State)
	}
	if len(e.site.Calls) != 0 {
		t.Errorf("calls after a refused apply: %v", e.site.Calls)
	}
	// Relaxed: an alarm standing before the apply does not hold it.
	e.ex.Delete(context.Background(), strategy.Patch)
	e.create(strategy.Options{AlarmRestrictions: strategy.Relaxed})
	if _, err := e.ex.Apply(context.Background(), strategy.Patch); err != nil {
		t.Fatalf("Apply(relaxed) = %v", err)
	}
	if s := e.await(strategy.Applied, strategy.ApplyFailed); s.State != strategy.Applied {
		t.Fatalf("state %s: %s", s.State, s.Reason)
	}
}

// A new management-affecting alarm during a health gate stops the
// strategy at that gate.
func TestHealthGateNewAlarm(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, nil), true)
	e.tmo.Stabilize = 200 * time.Millisecond
	e.site.OnCall = func(call, host string) {
		if call == "unlock" && host == "controller-1" {
			go e.site.SetAlarms(strategy.Alarm{ID: "400.002", Entity: "service_group=controller", Severity: "major", MgmtAffecting: "major"})
		}
	}
	e.start()
	e.create(strategy.Options{})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.ApplyFailed, strategy.Applied)
	if s.State != strategy.ApplyFailed || !strings.Contains(s.Reason, "400.002") || !strings.Contains(s.Reason, "system-stabilize controller-1") {
		t.Fatalf("state %s: %q; want apply-failed at controller-1's gate naming 400.002", s.State, s.Reason)
	}
}

// TestHealthGateSettles: a rebooted host that raises an alarm for a
// moment after it is back (a controller's pair re-forming) does not pass
// its gate until the gate has held for Settle without a break — the next
// stage's alarm query never sees the transient.
func TestHealthGateSettles(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, nil), true)
	e.tmo.Settle = 300 * time.Millisecond
	var mu sync.Mutex
	var cleared time.Time
	e.site.OnCall = func(call, host string) {
		if call == "unlock" && host == "controller-1" {
			go func() {
				time.Sleep(50 * time.Millisecond) // the host is back; then the transient
				e.site.SetAlarms(strategy.Alarm{ID: "200.009", Entity: "host=controller-1", Severity: "major", MgmtAffecting: "major"})
				time.Sleep(150 * time.Millisecond)
				e.site.SetAlarms()
				mu.Lock()
				cleared = time.Now()
				mu.Unlock()
			}()
		}
	}
	e.start()
	e.create(strategy.Options{})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.ApplyFailed, strategy.Applied)
	if s.State != strategy.Applied {
		t.Fatalf("state %s: %q; want applied (the transient alarm waited out)", s.State, s.Reason)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, st := range s.Stages {
		for _, step := range st.Steps {
			if step.Action == strategy.SystemStabilize && step.Target == "controller-1" {
				if step.EndedAt == nil || step.EndedAt.Sub(cleared) < e.tmo.Settle {
					t.Errorf("controller-1's gate passed at %v, %s after the alarm cleared; want at least %s", step.EndedAt,
						step.EndedAt.Sub(cleared), e.tmo.Settle)
				}
			}
		}
	}
}

// A host that does not come back stops the strategy at its gate with
// 900.004; the hosts after it are untouched; abort leaves the site
// consistent; the strategy can be deleted.
func TestHostNotBack(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, nil), true)
	e.tmo.Stabilize = 300 * time.Millisecond
	e.site.NeverBack["controller-1"] = true
	e.start()
	e.create(strategy.Options{})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.ApplyFailed, strategy.Applied)
	if s.State != strategy.ApplyFailed || !strings.Contains(s.Reason, "controller-1 did not come back") {
		t.Fatalf("state %s: %q", s.State, s.Reason)
	}
	if e.site.Raised["900.004"] != 1 {
		t.Errorf("900.004 raised %d times", e.site.Raised["900.004"])
	}
	for _, c := range e.site.Calls {
		if !strings.HasSuffix(c, "controller-1") {
			t.Errorf("call %q: a host after the failed one was touched", c)
		}
	}
	failed := 0
	for _, st := range s.Stages {
		for _, step := range st.Steps {
			if step.State == strategy.StepFailed {
				failed++
				if step.Action != strategy.SystemStabilize || step.Target != "controller-1" {
					t.Errorf("failed step %s %s", step.Action, step.Target)
				}
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed steps", failed)
	}
	if err := e.ex.Delete(context.Background(), strategy.Patch); err != nil {
		t.Fatalf("Delete(apply-failed) = %v", err)
	}
}

func TestAbortUnlocksWhatItLocked(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, map[string][]string{"worker-1": {"vm-a"}}), true)
	e.site.OnCall = func(call, host string) {
		if call == "lock" && host == "worker-1" {
			go e.ex.Abort(context.Background(), strategy.Patch)
		}
	}
	e.start()
	e.create(strategy.Options{WorkerApplyType: strategy.Parallel, InstanceAction: strategy.StopStart})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.Aborted)
	if h := e.site.Host("worker-1"); h.Administrative != inventory.Unlocked {
		t.Errorf("worker-1 after the abort: %+v", h)
	}
	if st := e.site.Stopped(); len(st) != 0 {
		t.Errorf("servers still stopped after the abort: %v", st)
	}
	if len(s.Locked) != 0 || !strings.Contains(s.Reason, "aborted") {
		t.Errorf("after abort: locked %v, reason %q", s.Locked, s.Reason)
	}
	for _, st := range s.Stages {
		for _, step := range st.Steps {
			if step.State == strategy.StepInitial || step.State == strategy.StepApplying {
				t.Errorf("step %s %s left %s", step.Action, step.Target, step.State)
			}
		}
	}
	if _, err := e.ex.Apply(context.Background(), strategy.Patch); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("Apply(aborted) = %v", err)
	}
}

// A swact stops the active site controller, as a failover does; the new
// active's executor resumes from the stored step.
func TestResumeAfterSwactAndRestart(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, map[string][]string{"worker-0": {"vm-a"}}), true)
	var once sync.Once
	e.site.OnSwact = func() { go func() { e.halt(); e.start() }() }
	e.site.OnCall = func(call, host string) {
		if call == "install" && host == "worker-1" {
			once.Do(func() { go func() { e.halt(); e.start() }() }) // a restart mid-step
		}
	}
	e.start()
	e.create(strategy.Options{})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.Applied, strategy.ApplyFailed)
	if s.State != strategy.Applied {
		t.Fatalf("state %s: %s", s.State, s.Reason)
	}
	if e.site.MaxDown != 1 {
		t.Errorf("at most %d hosts down; want 1", e.site.MaxDown)
	}
	for _, n := range []string{"controller-0", "controller-1", "worker-0", "worker-1"} {
		if h := e.site.Host(n); !h.PatchCurrent || h.Administrative != inventory.Unlocked {
			t.Errorf("%s: %+v", n, h)
		}
	}
}

func TestCreateOnePerType(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(1, nil), false)
	e.start()
	e.create(strategy.Options{})
	if _, err := e.ex.Create(context.Background(), e.shape, strategy.Options{}); !errors.Is(err, strategy.ErrExists) {
		t.Errorf("second Create = %v; want ErrExists", err)
	}
	if _, err := e.ex.Abort(context.Background(), strategy.Patch); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.store.Strategy(context.Background(), strategy.Patch); s.State != strategy.Aborted {
		t.Errorf("abort of a ready strategy: %s", s.State)
	}
}

// A lock refused for a while is retried; an install that fails stops the
// strategy at once, naming the patch.
func TestLockRetriedInstallFailureStops(t *testing.T) {
	e := newEnv(t, inventory.MultiServer, siteHosts(2, nil), true)
	e.site.RefuseLock["controller-1"] = 3
	e.site.FailInstall["worker-0"] = true
	e.start()
	e.create(strategy.Options{})
	e.ex.Apply(context.Background(), strategy.Patch)
	s := e.await(strategy.ApplyFailed, strategy.Applied)
	if s.State != strategy.ApplyFailed || !strings.Contains(s.Reason, "sw-patch-hosts worker-0") || !strings.Contains(s.Reason, "P-1") {
		t.Fatalf("state %s: %q; want apply-failed at worker-0's install naming P-1", s.State, s.Reason)
	}
	if h := e.site.Host("controller-1"); !h.PatchCurrent {
		t.Errorf("controller-1 (lock refused 3 times first): %+v", h)
	}
	n := 0
	for _, c := range e.site.Calls {
		if c == "lock controller-1" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("controller-1 lock called %d times; want 4 (3 refused)", n)
	}
	if h := e.site.Host("worker-1"); h.Administrative != inventory.Unlocked || h.PatchCurrent {
		t.Errorf("worker-1, after the failed worker-0: %+v; want untouched", h)
	}
	// Abort: worker-0, locked by the strategy, is unlocked.
	if _, err := e.ex.Abort(context.Background(), strategy.Patch); err != nil {
		t.Fatal(err)
	}
	e.await(strategy.Aborted)
	if h := e.site.Host("worker-0"); h.Administrative != inventory.Unlocked {
		t.Errorf("worker-0 after abort: %+v", h)
	}
}
