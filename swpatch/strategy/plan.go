package strategy

import (
	"cmp"
	"slices"
	"strings"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
)

// Host is one host as the planner sees it.
type Host struct {
	Name           string                 `json:"name"`
	Personality    inventory.Personality  `json:"personality"`
	Subfunctions   []string               `json:"subfunctions,omitempty"`
	Administrative inventory.AdminState   `json:"administrative"`
	Operational    inventory.OperState    `json:"operational"`
	Availability   inventory.Availability `json:"availability"`
	// Active: the controller whose services are active.
	Active bool `json:"active,omitempty"`
	// PatchCurrent: the host already runs every applied patch.
	PatchCurrent bool `json:"patch_current"`
	// Servers are the servers on the host (any status but deleted).
	Servers []string `json:"servers,omitempty"`
}

// compute reports whether h runs servers: a worker, or an all-in-one
// controller (one with the worker subfunction).
func (h Host) compute() bool {
	return h.Personality == inventory.Worker || slices.Contains(h.Subfunctions, "worker")
}

// Snapshot is what the planner plans from.
type Snapshot struct {
	Shape inventory.Shape `json:"shape"`
	Hosts []Host          `json:"hosts"`
	// Patches are the applied patches (deploying or removing) some host
	// has yet to install.
	Patches []string `json:"patches"`
	// RebootRequired: one of Patches needs a reboot.
	RebootRequired bool `json:"reboot_required"`
}

// Stage names (sw-manager's).
const (
	StageControllers = "sw-patch-controllers"
	StageWorkers     = "sw-patch-worker-hosts"
)

// Plan turns a snapshot and options into a strategy in state ready-to-apply.
// It is pure: the same input always gives the same plan.
//
// Controllers go one at a time, the active one last and after a swact to
// its patched peer; then workers in batches of one (serial) or up to
// MaxParallelWorkerHosts (parallel), never more at once than leave room
// for the servers being migrated. Each stage opens with query-alarms and
// closes with system-stabilize, the health gate. A patch without a reboot
// installs in service: no lock. A simplex host cannot migrate its servers:
// with a reboot it needs instance action stop-start.
func Plan(snap Snapshot, opts Options) (Strategy, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return Strategy{}, err
	}
	if len(snap.Patches) == 0 {
		return Strategy{}, ErrNothingToDo
	}
	var ctls, workers []Host
	for _, h := range snap.Hosts {
		if h.PatchCurrent {
			continue
		}
		switch h.Personality {
		case inventory.Controller:
			ctls = append(ctls, h)
		case inventory.Worker:
			workers = append(workers, h)
		default:
			continue // storage and unprovisioned hosts are not patched here
		}
		if h.Administrative == inventory.Unlocked && h.Availability != inventory.Available && h.Availability != inventory.Degraded {
			return Strategy{}, errs.Wrapf(errs.Conflict, "host %s is %s: recover or lock it before building a strategy", h.Name, h.Availability)
		}
	}
	if opts.ControllerApplyType == Ignore {
		ctls = nil
	}
	if opts.WorkerApplyType == Ignore {
		workers = nil
	}
	if len(ctls)+len(workers) == 0 {
		return Strategy{}, ErrNothingToDo
	}
	simplex := snap.Shape == inventory.Simplex
	p := planner{snap: snap, opts: opts}

	// Controllers: standby ones first (by name), the active one last.
	slices.SortFunc(ctls, func(a, b Host) int {
		if a.Active != b.Active {
			if a.Active {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	var stages []Stage
	for _, h := range ctls {
		if simplex && snap.RebootRequired && opts.InstanceAction == Migrate && len(h.Servers) > 0 && h.Administrative == inventory.Unlocked {
			return Strategy{}, errs.Field("instance_action", "a simplex site has nowhere to migrate %s's servers: use stop-start", h.Name)
		}
		swact := h.Active && !simplex && snap.RebootRequired && h.Administrative == inventory.Unlocked
		stages = append(stages, p.stage(StageControllers, []Host{h}, swact))
	}

	// Workers: hosts without servers first, then by name.
	slices.SortFunc(workers, func(a, b Host) int {
		if (len(a.Servers) == 0) != (len(b.Servers) == 0) {
			if len(a.Servers) == 0 {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	for _, batch := range p.batches(workers) {
		stages = append(stages, p.stage(StageWorkers, batch, false))
	}
	return Strategy{
		Type:           Patch,
		Scope:          ScopeSite,
		State:          ReadyToApply,
		Options:        opts,
		Stages:         stages,
		Patches:        slices.Clone(snap.Patches),
		RebootRequired: snap.RebootRequired,
	}, nil
}

type planner struct {
	snap Snapshot
	opts Options
}

// batches splits the workers (in order) into the batches taken together.
func (p planner) batches(workers []Host) [][]Host {
	size := 1
	if p.opts.WorkerApplyType == Parallel {
		size = p.opts.MaxParallelWorkerHosts
	}
	// Servers migrated off a batch need an unlocked compute host outside
	// it: with migrate and a reboot, a batch holding servers leaves at
	// least one compute host of the site up.
	computes := 0
	for _, h := range p.snap.Hosts {
		if h.compute() && h.Administrative == inventory.Unlocked {
			computes++
		}
	}
	var out [][]Host
	var cur []Host
	curServers := false
	for _, h := range workers {
		hasServers := len(h.Servers) > 0 && h.Administrative == inventory.Unlocked
		limit := size
		if p.snap.RebootRequired && p.opts.InstanceAction == Migrate && (curServers || hasServers) {
			limit = min(size, max(1, computes-1))
		}
		if len(cur) >= limit {
			out = append(out, cur)
			cur, curServers = nil, false
		}
		cur = append(cur, h)
		curServers = curServers || hasServers
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// stage is the steps for one batch of hosts.
func (p planner) stage(name string, hosts []Host, swact bool) Stage {
	var unlocked, all []string
	servers := false
	for _, h := range hosts {
		all = append(all, h.Name)
		if h.Administrative == inventory.Unlocked {
			unlocked = append(unlocked, h.Name)
			if len(h.Servers) > 0 {
				servers = true
			}
		}
	}
	reboot := p.snap.RebootRequired && len(unlocked) > 0
	stopStart := reboot && servers && p.opts.InstanceAction == StopStart
	var steps []Step
	add := func(a Action, hosts []string) {
		steps = append(steps, Step{Action: a, Target: strings.Join(hosts, ","), Hosts: slices.Clone(hosts), State: StepInitial})
	}
	add(QueryAlarms, nil)
	if swact {
		add(SwactHosts, unlocked)
	}
	if stopStart {
		add(StopInstances, unlocked)
	}
	if reboot {
		add(LockHosts, unlocked)
		steps[len(steps)-1].Force = p.snap.Shape == inventory.Simplex
	}
	add(SwPatchHosts, all)
	if reboot {
		add(UnlockHosts, unlocked)
	}
	if stopStart {
		add(StartInstances, unlocked)
	}
	if len(unlocked) > 0 { // a host left locked is checked when an operator unlocks it
		add(SystemStabilize, unlocked)
	}
	return Stage{Name: name, State: StepInitial, Steps: steps}
}
