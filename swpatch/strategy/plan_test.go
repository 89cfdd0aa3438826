package strategy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the planner's output")

func host(name string, p inventory.Personality, servers ...string) strategy.Host {
	h := strategy.Host{Name: name, Personality: p, Administrative: inventory.Unlocked,
		Operational: inventory.Enabled, Availability: inventory.Available, Servers: servers}
	if p == inventory.Controller {
		h.Subfunctions = []string{"controller"}
	}
	return h
}

func aio(name string, active bool, servers ...string) strategy.Host {
	h := host(name, inventory.Controller, servers...)
	h.Subfunctions = []string{"controller", "worker"}
	h.Active = active
	return h
}

func active(h strategy.Host) strategy.Host { h.Active = true; return h }

func multi(workers int, serversOn map[string][]string) []strategy.Host {
	hs := []strategy.Host{active(host("controller-0", inventory.Controller)), host("controller-1", inventory.Controller)}
	for i := range workers {
		n := fmt.Sprintf("worker-%d", i)
		hs = append(hs, host(n, inventory.Worker, serversOn[n]...))
	}
	return hs
}

// render is a plan as the golden files hold it: the steps one a line, as
// strategy show prints them, then the JSON.
func render(s strategy.Strategy) []byte {
	var b bytes.Buffer
	for _, st := range s.Stages {
		fmt.Fprintf(&b, "%s\n", st.Name)
		for _, step := range st.Steps {
			fmt.Fprintf(&b, "  %-16s %s\n", step.Action, step.Target)
		}
	}
	j, _ := json.MarshalIndent(s, "", "  ")
	b.Write(j)
	b.WriteByte('\n')
	return b.Bytes()
}

func TestPlanGolden(t *testing.T) {
	rr := []string{"P-2"}
	cases := []struct {
		name string
		snap strategy.Snapshot
		opts strategy.Options
	}{
		{"simplex-stop-start", strategy.Snapshot{Shape: inventory.Simplex, Patches: rr, RebootRequired: true,
			Hosts: []strategy.Host{aio("controller-0", true, "vm-a", "vm-b")}}, strategy.Options{InstanceAction: strategy.StopStart}},
		{"simplex-in-service", strategy.Snapshot{Shape: inventory.Simplex, Patches: rr,
			Hosts: []strategy.Host{aio("controller-0", true, "vm-a")}}, strategy.Options{}},
		{"duplex-migrate", strategy.Snapshot{Shape: inventory.Duplex, Patches: rr, RebootRequired: true,
			Hosts: []strategy.Host{aio("controller-0", true, "vm-a"), aio("controller-1", false, "vm-b")}}, strategy.Options{}},
		{"multi-serial", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr, RebootRequired: true,
			Hosts: multi(2, map[string][]string{"worker-0": {"vm-a"}})}, strategy.Options{}},
		// Two workers with a server between them: parallel still takes one
		// at a time, or the server would have nowhere to go.
		{"multi-parallel-2-workers", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr, RebootRequired: true,
			Hosts: multi(2, map[string][]string{"worker-1": {"vm-a"}})}, strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 2}},
		{"multi-parallel-6-workers", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr, RebootRequired: true,
			Hosts: multi(6, map[string][]string{"worker-1": {"vm-a"}, "worker-4": {"vm-b", "vm-c"}})},
			strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 3}},
		{"multi-parallel-stop-start", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr, RebootRequired: true,
			Hosts: multi(3, map[string][]string{"worker-0": {"vm-a"}, "worker-2": {"vm-b"}})},
			strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 3, InstanceAction: strategy.StopStart, AlarmRestrictions: strategy.Relaxed}},
		{"multi-in-service-parallel", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr,
			Hosts: multi(3, map[string][]string{"worker-0": {"vm-a"}})}, strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 2}},
		{"multi-some-current-one-locked", strategy.Snapshot{Shape: inventory.MultiServer, Patches: rr, RebootRequired: true,
			Hosts: func() []strategy.Host {
				hs := multi(3, nil)
				hs[0].PatchCurrent = true // controller-0 already runs it
				hs[3].Administrative = inventory.Locked
				hs[3].Availability = inventory.Online
				return hs
			}()}, strategy.Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := strategy.Plan(c.snap, c.opts)
			if err != nil {
				t.Fatalf("Plan = %v", err)
			}
			again, _ := strategy.Plan(c.snap, c.opts)
			if !bytes.Equal(render(s), render(again)) {
				t.Fatal("Plan is not deterministic")
			}
			got := render(s)
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Plan(%s) differs from %s:\n%s", c.name, path, got)
			}
		})
	}
}

// TestPlanNeverTooManyDown checks every plan of many shapes and options:
// each stage takes one controller or at most the allowed workers, and a
// batch migrating servers leaves a compute host up.
func TestPlanNeverTooManyDown(t *testing.T) {
	for workers := 1; workers <= 12; workers++ {
		for _, apply := range []strategy.ApplyType{strategy.Serial, strategy.Parallel} {
			for maxp := 2; maxp <= 10; maxp++ {
				for _, act := range []strategy.InstanceAction{strategy.Migrate, strategy.StopStart} {
					servers := map[string][]string{}
					for i := 0; i < workers; i += 2 {
						servers[fmt.Sprintf("worker-%d", i)] = []string{fmt.Sprintf("vm-%d", i)}
					}
					opts := strategy.Options{WorkerApplyType: apply, MaxParallelWorkerHosts: maxp, InstanceAction: act}
					s, err := strategy.Plan(strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, RebootRequired: true, Hosts: multi(workers, servers)}, opts)
					if err != nil {
						t.Fatal(err)
					}
					allowed := 1
					if apply == strategy.Parallel {
						allowed = maxp
					}
					seen := map[string]int{}
					for _, st := range s.Stages {
						for _, step := range st.Steps {
							if step.Action != strategy.LockHosts {
								continue
							}
							for _, h := range step.Hosts {
								seen[h]++
							}
							lim := allowed
							if st.Name == strategy.StageControllers {
								lim = 1
							}
							if len(step.Hosts) > lim {
								t.Fatalf("workers=%d %+v: lock of %d hosts %v; allowed %d", workers, opts, len(step.Hosts), step.Hosts, lim)
							}
							if act == strategy.Migrate && len(step.Hosts) >= workers && workers > 1 {
								hasServers := false
								for _, h := range step.Hosts {
									hasServers = hasServers || len(servers[h]) > 0
								}
								if hasServers {
									t.Fatalf("workers=%d %+v: lock of every worker %v with servers to migrate", workers, opts, step.Hosts)
								}
							}
						}
					}
					if len(seen) != workers+2 {
						t.Fatalf("workers=%d %+v: %d hosts locked; want %d", workers, opts, len(seen), workers+2)
					}
					for h, n := range seen {
						if n != 1 {
							t.Fatalf("host %s locked %d times", h, n)
						}
					}
				}
			}
		}
	}
}

func TestPlanRefuses(t *testing.T) {
	failed := multi(2, nil)
	failed[3].Availability = inventory.Failed
	cases := []struct {
		name string
		snap strategy.Snapshot
		opts strategy.Options
		want error
	}{
		{"no patch", strategy.Snapshot{Shape: inventory.MultiServer, Hosts: multi(2, nil)}, strategy.Options{}, strategy.ErrNothingToDo},
		{"all current", strategy.Snapshot{Shape: inventory.Simplex, Patches: []string{"P"},
			Hosts: []strategy.Host{func() strategy.Host { h := aio("controller-0", true); h.PatchCurrent = true; return h }()}}, strategy.Options{}, strategy.ErrNothingToDo},
		{"simplex migrate", strategy.Snapshot{Shape: inventory.Simplex, Patches: []string{"P"}, RebootRequired: true,
			Hosts: []strategy.Host{aio("controller-0", true, "vm-a")}}, strategy.Options{}, errs.Invalid},
		{"max parallel 1", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 1}, errs.Invalid},
		{"max parallel 11", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{MaxParallelWorkerHosts: 11}, errs.Invalid},
		{"controller parallel", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{ControllerApplyType: strategy.Parallel}, errs.Invalid},
		{"bad instance action", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{InstanceAction: "evacuate"}, errs.Invalid},
		{"bad alarm restrictions", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{AlarmRestrictions: "none"}, errs.Invalid},
		{"failed host", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, RebootRequired: true, Hosts: failed}, strategy.Options{}, errs.Conflict},
		// A fleet strategy's options (central's) are refused at a site.
		{"fleet max_parallel", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{MaxParallel: 2}, errs.Invalid},
		{"fleet group", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{Group: "Default"}, errs.Invalid},
		{"fleet patches", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{Patches: []string{"P"}}, errs.Invalid},
		{"fleet stop_on_failure", strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, Hosts: multi(2, nil)},
			strategy.Options{StopOnFailure: true}, errs.Invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := strategy.Plan(c.snap, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("Plan = %v; want %v", err, c.want)
			}
			if c.name == "failed host" && !strings.Contains(err.Error(), "worker-1") {
				t.Errorf("Plan = %v; want it to name worker-1", err)
			}
		})
	}
}

// BenchmarkPlan plans a multi-server site of 2 controllers and 100
// workers (every other one running 4 servers), parallel by 10.
func BenchmarkPlan(b *testing.B) {
	servers := map[string][]string{}
	for i := 0; i < 100; i += 2 {
		servers[fmt.Sprintf("worker-%d", i)] = []string{"a", "b", "c", "d"}
	}
	snap := strategy.Snapshot{Shape: inventory.MultiServer, Patches: []string{"P"}, RebootRequired: true, Hosts: multi(100, servers)}
	opts := strategy.Options{WorkerApplyType: strategy.Parallel, MaxParallelWorkerHosts: 10}
	for b.Loop() {
		if _, err := strategy.Plan(snap, opts); err != nil {
			b.Fatal(err)
		}
	}
}
