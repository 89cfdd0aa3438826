package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/fleet"
	"github.com/petrel-edge/petrel/swpatch/fleet/fleettest"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategytest"
)

func sites(names ...string) []fleet.Site {
	var out []fleet.Site
	for _, n := range names {
		out = append(out, fleet.Site{Name: n, Group: "Default", Managed: true})
	}
	return out
}

func TestPlan(t *testing.T) {
	t.Parallel()
	snap := fleet.Snapshot{Sites: append(sites("site-c", "site-a", "site-e", "site-b"),
		fleet.Site{Name: "site-d", Group: "Default"}, // unmanaged: left out
		fleet.Site{Name: "site-f", Group: "edge", Managed: true})}
	s, err := fleet.Plan(snap, strategy.Options{Patches: []string{"P-1"}, MaxParallel: 2, Group: "Default"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, stg := range s.Stages {
		var names []string
		for _, st := range stg.Steps {
			if st.Action != strategy.PatchSubcloud || st.State != strategy.StepInitial || st.Site == nil || st.Site.Phase != strategy.PhaseWaiting {
				t.Errorf("step %+v; want an initial patch-subcloud step, waiting", st)
			}
			names = append(names, st.Target)
		}
		got = append(got, stg.Name+":"+strings.Join(names, ","))
	}
	want := []string{"sw-patch-subclouds-1:site-a,site-b", "sw-patch-subclouds-2:site-c,site-e"}
	if !slices.Equal(got, want) {
		t.Errorf("Plan stages = %v; want %v", got, want)
	}
	if s.Scope != strategy.ScopeFleet || s.State != strategy.ReadyToApply || !slices.Equal(s.Patches, []string{"P-1"}) ||
		s.Options.InstanceAction != strategy.Migrate || s.Options.MaxParallelWorkerHosts != 2 {
		t.Errorf("Plan = scope %s state %s patches %v options %+v", s.Scope, s.State, s.Patches, s.Options)
	}
	all, err := fleet.Plan(snap, strategy.Options{Patches: []string{"P-1"}, MaxParallel: 10})
	if err != nil || len(all.Stages) != 1 || len(all.Stages[0].Steps) != 5 {
		t.Errorf("Plan(no group) = %+v, %v; want one stage of the 5 managed sites", all.Stages, err)
	}

	for _, tc := range []struct {
		name  string
		snap  fleet.Snapshot
		opts  strategy.Options
		field string
		kind  error
	}{
		{"no patch", snap, strategy.Options{MaxParallel: 2}, "patches", errs.Invalid},
		{"bad patch id", snap, strategy.Options{MaxParallel: 2, Patches: []string{"../x"}}, "patches", errs.Invalid},
		{"patch twice", snap, strategy.Options{MaxParallel: 2, Patches: []string{"P", "P"}}, "patches", errs.Invalid},
		{"max-parallel 0", snap, strategy.Options{Patches: []string{"P"}}, "max_parallel", errs.Invalid},
		{"max-parallel 501", snap, strategy.Options{Patches: []string{"P"}, MaxParallel: 501}, "max_parallel", errs.Invalid},
		{"bad site option", snap, strategy.Options{Patches: []string{"P"}, MaxParallel: 2, WorkerApplyType: "sideways"}, "worker_apply_type", errs.Invalid},
		{"empty group", snap, strategy.Options{Patches: []string{"P"}, MaxParallel: 2, Group: "nobody"}, "", fleet.ErrNoSites},
	} {
		_, err := fleet.Plan(tc.snap, tc.opts)
		var fe *errs.FieldError
		if !errors.Is(err, tc.kind) || tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
			t.Errorf("%s: Plan = %v; want %v on field %q", tc.name, err, tc.kind, tc.field)
		}
	}
}

// env is a fleet of fake sites and central's executor over a memory store.
type env struct {
	t      *testing.T
	fleet  *fleettest.Fleet
	store  *strategytest.MemStore
	alarms *fleettest.Alarms
	cfg    fleet.Config
	mu     sync.Mutex
	stop   context.CancelFunc
	done   chan struct{}
	ex     *fleet.Executor
}

func newEnv(t *testing.T, shapes map[string]inventory.Shape) *env {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, fleet: fleettest.New(ctx, []string{"P-1"}, shapes), store: strategytest.NewMemStore(), alarms: &fleettest.Alarms{}}
	e.cfg = fleet.Config{Logger: slog.New(slog.NewTextHandler(tlog{t}, nil)), Store: e.store, Sites: e.fleet, Alarms: e.alarms, Poll: 2 * time.Millisecond, OfflineWait: 5 * time.Second}
	t.Cleanup(e.halt)
	return e
}

// start runs an executor, as a newly leading central does.
func (e *env) start() *fleet.Executor {
	e.mu.Lock()
	defer e.mu.Unlock()
	ex, err := fleet.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ex.Run(ctx) }()
	e.stop, e.done, e.ex = cancel, done, ex
	return ex
}

// halt stops the executor, as a central losing its leadership does.
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

func (e *env) snapshot() fleet.Snapshot {
	var names []string
	for _, n := range []string{"site-a", "site-b", "site-c", "site-d", "site-e"} {
		if e.fleet.Site(n) != nil {
			names = append(names, n)
		}
	}
	return fleet.Snapshot{Sites: sites(names...), RebootRequired: true}
}

func (e *env) await(cond func(strategy.Strategy) bool, what string) strategy.Strategy {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last strategy.Strategy
	for time.Now().Before(deadline) {
		s, err := e.store.Strategy(context.Background(), strategy.Patch)
		if err == nil {
			last = s
			if cond(s) {
				return s
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	e.t.Fatalf("waiting for %s: strategy is %s (%s): %s", what, last.State, last.Reason, describe(last))
	return last
}

func (e *env) awaitState(want ...strategy.State) strategy.Strategy {
	e.t.Helper()
	return e.await(func(s strategy.Strategy) bool { return slices.Contains(want, s.State) }, fmt.Sprint(want))
}

func describe(s strategy.Strategy) string {
	var parts []string
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			p := ""
			if st.Site != nil {
				p = fmt.Sprintf(" [%s %s %d/%d]", st.Site.Phase, st.Site.State, st.Site.StepsDone, st.Site.StepsTotal)
			}
			parts = append(parts, fmt.Sprintf("%s=%s%s %q", st.Target, st.State, p, st.Reason))
		}
	}
	return strings.Join(parts, "; ")
}

func stepOf(s strategy.Strategy, site string) strategy.Step {
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			if st.Target == site {
				return st
			}
		}
	}
	return strategy.Step{}
}

var three = map[string]inventory.Shape{"site-a": inventory.Simplex, "site-b": inventory.Duplex, "site-c": inventory.MultiServer}

func TestApplyPatchesEverySiteWithinMaxParallel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]inventory.Shape{"site-a": inventory.Simplex, "site-b": inventory.Duplex, "site-c": inventory.MultiServer,
		"site-d": inventory.Duplex, "site-e": inventory.MultiServer})
	ex := e.start()
	ctx := context.Background()
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 2, InstanceAction: strategy.StopStart}); err != nil {
		t.Fatal(err)
	}
	e.fleet.Site("site-a").Target.RebootPolls = 50 // slow enough to watch
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	// Progress is visible while a site applies its own strategy.
	e.await(func(s strategy.Strategy) bool {
		st := stepOf(s, "site-a")
		return st.Site != nil && st.Site.State == strategy.Applying && st.Site.StepsTotal > 0
	}, "site-a's progress while applying")
	if !e.alarms.Has(strategy.AlarmInProgress, fleet.AlarmEntity) {
		t.Errorf("900.001 not raised while the fleet strategy applies")
	}
	s := e.awaitState(strategy.Applied, strategy.ApplyFailed)
	if s.State != strategy.Applied {
		t.Fatalf("strategy %s: %s: %s", s.State, s.Reason, describe(s))
	}
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			site := e.fleet.Site(st.Target)
			if st.State != strategy.StepApplied || st.Site.Phase != strategy.PhaseDone || st.Site.State != strategy.Applied ||
				st.Site.StepsDone != st.Site.StepsTotal {
				t.Errorf("step %s = %s %+v", st.Target, st.State, *st.Site)
			}
			if got := site.PatchStates()["P-1"]; got != swpatch.Deployed {
				t.Errorf("site %s: P-1 is %s; want deployed", st.Target, got)
			}
			if site.Creates != 1 || site.Uploads != 1 {
				t.Errorf("site %s: %d creates, %d uploads; want 1 and 1", st.Target, site.Creates, site.Uploads)
			}
		}
	}
	if e.fleet.MaxRunning > 2 || e.fleet.MaxRunning < 1 {
		t.Errorf("at most %d sites applied at once; want 1..2 (max-parallel 2)", e.fleet.MaxRunning)
	}
	if e.alarms.Has(strategy.AlarmInProgress, fleet.AlarmEntity) {
		t.Errorf("900.001 still raised after the strategy applied")
	}
	if _, err := ex.Apply(ctx); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("Apply(applied) = %v; want InvalidTransition", err)
	}
	if err := ex.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStopOnFailure(t *testing.T) {
	t.Parallel()
	for _, stop := range []bool{true, false} {
		t.Run(fmt.Sprintf("stop-on-failure=%t", stop), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, three)
			// site-b's install fails: its site strategy ends apply-failed.
			e.fleet.Site("site-b").Target.FailInstall["controller-1"] = true
			ex := e.start()
			ctx := context.Background()
			if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 1, StopOnFailure: stop,
				InstanceAction: strategy.StopStart}); err != nil {
				t.Fatal(err)
			}
			if _, err := ex.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			s := e.awaitState(strategy.ApplyFailed, strategy.Applied)
			if s.State != strategy.ApplyFailed || !strings.Contains(s.Reason, "site-b") {
				t.Fatalf("strategy %s (%s); want apply-failed naming site-b", s.State, s.Reason)
			}
			if st := stepOf(s, "site-b"); st.State != strategy.StepFailed || !strings.Contains(st.Reason, "apply-failed") {
				t.Errorf("site-b's step = %s %q", st.State, st.Reason)
			}
			c := stepOf(s, "site-c")
			if stop && (c.State != strategy.StepInitial || e.fleet.Site("site-c").Uploads != 0) {
				t.Errorf("stop-on-failure: site-c's step %s, %d uploads; want it never started", c.State, e.fleet.Site("site-c").Uploads)
			}
			if !stop && c.State != strategy.StepApplied {
				t.Errorf("without stop-on-failure: site-c's step %s; want applied", c.State)
			}
			if !e.alarms.Has(strategy.AlarmFailed, fleet.AlarmEntity) || e.alarms.Has(strategy.AlarmInProgress, fleet.AlarmEntity) {
				t.Errorf("alarms %v; want 900.004 and no 900.001", e.alarms.Active)
			}
		})
	}
}

func TestAbortStartsNoNewSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, three)
	ex := e.start()
	ctx := context.Background()
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 1, InstanceAction: strategy.StopStart}); err != nil {
		t.Fatal(err)
	}
	// site-a's hosts reboot slowly, so the abort finds its strategy applying.
	e.fleet.Site("site-a").Target.RebootPolls = 200
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	e.await(func(s strategy.Strategy) bool {
		st := stepOf(s, "site-a")
		return st.Site != nil && st.Site.State == strategy.Applying
	}, "site-a applying")
	if _, err := ex.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	s := e.awaitState(strategy.Aborted)
	a := stepOf(s, "site-a")
	if a.State != strategy.StepAborted || !strings.Contains(a.Reason, "site strategy aborted") {
		t.Errorf("site-a's step = %s %q; want aborted with the site strategy's outcome", a.State, a.Reason)
	}
	siteA, err := e.fleet.Site("site-a").Store.Strategy(ctx, strategy.Patch)
	if err != nil || siteA.State != strategy.Aborted || len(siteA.Locked) != 0 {
		t.Errorf("site-a's strategy = %s locked %v, %v; want aborted with nothing locked", siteA.State, siteA.Locked, err)
	}
	for _, n := range []string{"site-b", "site-c"} {
		if st := stepOf(s, n); st.State != strategy.StepAborted || e.fleet.Site(n).Uploads != 0 || e.fleet.Site(n).Creates != 0 {
			t.Errorf("%s: step %s, %d uploads, %d creates; want aborted and never started", n, st.State, e.fleet.Site(n).Uploads, e.fleet.Site(n).Creates)
		}
	}
	if e.alarms.Has(strategy.AlarmInProgress, fleet.AlarmEntity) {
		t.Errorf("900.001 still raised after the abort")
	}
	if err := ex.Delete(ctx); err != nil {
		t.Errorf("Delete(aborted) = %v", err)
	}
}

func TestOfflineSiteFailsAfterTheWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t, three)
	e.cfg.OfflineWait = 100 * time.Millisecond
	e.fleet.Site("site-b").SetOffline(true)
	ex := e.start()
	ctx := context.Background()
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 3, InstanceAction: strategy.StopStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	s := e.awaitState(strategy.ApplyFailed, strategy.Applied)
	b := stepOf(s, "site-b")
	if s.State != strategy.ApplyFailed || b.State != strategy.StepFailed || !strings.Contains(b.Reason, "unreachable for 100ms") {
		t.Fatalf("strategy %s, site-b's step %s %q; want apply-failed, failed: unreachable", s.State, b.State, b.Reason)
	}
	for _, n := range []string{"site-a", "site-c"} {
		if st := stepOf(s, n); st.State != strategy.StepApplied {
			t.Errorf("%s's step = %s; want applied (the others go on)", n, st.State)
		}
	}
	// Back online, the strategy applied again retries site-b only.
	e.fleet.Site("site-b").SetOffline(false)
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.awaitState(strategy.Applied, strategy.ApplyFailed); s.State != strategy.Applied {
		t.Fatalf("after retry: %s (%s)", s.State, s.Reason)
	}
	if n := e.fleet.Site("site-a").Creates; n != 1 {
		t.Errorf("site-a: %d site strategies created; want 1", n)
	}
}

func TestRefusedUploadFailsTheSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, three)
	e.fleet.Site("site-c").RefuseUpload = fmt.Errorf("%w: patch is older than the deployed software", swpatch.ErrDowngrade)
	ex := e.start()
	ctx := context.Background()
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 3, InstanceAction: strategy.StopStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	s := e.awaitState(strategy.ApplyFailed, strategy.Applied)
	if c := stepOf(s, "site-c"); c.State != strategy.StepFailed || !strings.Contains(c.Reason, "older than the deployed") {
		t.Errorf("site-c's step = %s %q; want failed, naming the refusal", c.State, c.Reason)
	}
	if e.fleet.Site("site-c").Creates != 0 {
		t.Errorf("site-c: a site strategy was created after the upload was refused")
	}
}

func TestResumeAdoptsSiteStrategies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, three)
	ex := e.start()
	ctx := context.Background()
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{Patches: []string{"P-1"}, MaxParallel: 2, InstanceAction: strategy.StopStart}); err != nil {
		t.Fatal(err)
	}
	e.fleet.Site("site-a").Target.RebootPolls = 100
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	e.await(func(s strategy.Strategy) bool {
		st := stepOf(s, "site-a")
		return st.Site != nil && st.Site.State == strategy.Applying
	}, "site-a applying")
	e.halt() // central fails over mid-step
	e.start()
	s := e.awaitState(strategy.Applied, strategy.ApplyFailed)
	if s.State != strategy.Applied {
		t.Fatalf("after resume: %s (%s): %s", s.State, s.Reason, describe(s))
	}
	for _, n := range []string{"site-a", "site-b", "site-c"} {
		if c := e.fleet.Site(n).Creates; c != 1 {
			t.Errorf("%s: %d site strategies created; want 1 (adopted after the resume)", n, c)
		}
	}
}

func TestCreateAndDeleteRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, three)
	ex := e.start()
	ctx := context.Background()
	opts := strategy.Options{Patches: []string{"P-1"}, MaxParallel: 1, InstanceAction: strategy.StopStart}
	if _, err := ex.Create(ctx, e.snapshot(), strategy.Options{MaxParallel: 1}); !errors.Is(err, errs.Invalid) {
		t.Errorf("Create(no patch) = %v; want Invalid", err)
	}
	if _, err := e.store.Strategy(ctx, strategy.Patch); !errors.Is(err, strategy.ErrNotFound) {
		t.Errorf("a refused create stored a strategy: %v", err)
	}
	if _, err := ex.Create(ctx, e.snapshot(), opts); err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Create(ctx, e.snapshot(), opts); !errors.Is(err, strategy.ErrExists) {
		t.Errorf("Create(second) = %v; want ErrExists", err)
	}
	e.fleet.Site("site-a").Target.RebootPolls = 100
	if _, err := ex.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ex.Delete(ctx); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("Delete(applying) = %v; want InvalidTransition", err)
	}
	if _, err := ex.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	e.awaitState(strategy.Aborted)
	if _, err := ex.Abort(ctx); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("Abort(aborted) = %v; want InvalidTransition", err)
	}
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }
