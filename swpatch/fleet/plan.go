// Package fleet plans and runs fleet patch strategies at central
// (dcmanager's patch orchestration): the subclouds of a group, in stages
// of at most max-parallel sites; at each site the patches are synced and
// applied, then the site's own strategy (package strategy) is created,
// applied and followed to its end.
//
// A fleet strategy is a strategy.Strategy with scope fleet: the same
// states, stages and steps, each step a patch-subcloud step whose target
// is a site and whose Site field carries that site's progress. Plan is
// pure; the Executor drives the sites through a consumer-side interface
// (central implements it over the relay) and stores every step's
// progress, so a restarted or new leader resumes where the last stopped.
package fleet

import (
	"fmt"
	"slices"
	"strings"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// Limits of Options.MaxParallel (a subcloud group's).
const (
	MinParallel = 1
	MaxParallel = 500
)

// Site is one subcloud as the planner sees it.
type Site struct {
	Name    string `json:"name"`
	Group   string `json:"group"`
	Managed bool   `json:"managed"`
}

// Snapshot is what the planner plans from.
type Snapshot struct {
	Sites []Site `json:"sites"`
	// RebootRequired: one of the patches needs its hosts rebooted.
	RebootRequired bool `json:"reboot_required"`
}

// ErrNoSites: the group has no managed subcloud.
var ErrNoSites = errs.New(errs.Conflict, "no managed subcloud to patch")

// ValidateOptions fills the site options' defaults and checks every
// option a fleet strategy takes (max_parallel already defaulted).
func ValidateOptions(o strategy.Options) (strategy.Options, error) {
	site := o.SiteOnly().WithDefaults()
	if err := site.Validate(); err != nil {
		return o, err
	}
	if o.MaxParallel < MinParallel || o.MaxParallel > MaxParallel {
		return o, errs.Field("max_parallel", "must be from %d to %d", MinParallel, MaxParallel)
	}
	if len(o.Patches) == 0 {
		return o, errs.Field("patches", "name at least one patch uploaded at central (petrel patch upload FILE)")
	}
	seen := map[string]bool{}
	for _, id := range o.Patches {
		if !swpatch.ValidID(id) {
			return o, errs.Field("patches", "%q is not a patch ID", id)
		}
		if seen[id] {
			return o, errs.Field("patches", "%s is named twice", id)
		}
		seen[id] = true
	}
	site.Group, site.MaxParallel, site.StopOnFailure, site.Patches = o.Group, o.MaxParallel, o.StopOnFailure, slices.Clone(o.Patches)
	return site, nil
}

// Plan turns the subclouds and options into a fleet strategy, ready to
// apply: the managed subclouds (of the group, when one is given) by name,
// in stages of at most MaxParallel sites. It is pure.
func Plan(snap Snapshot, opts strategy.Options) (strategy.Strategy, error) {
	opts, err := ValidateOptions(opts)
	if err != nil {
		return strategy.Strategy{}, err
	}
	var names []string
	for _, s := range snap.Sites {
		if s.Managed && (opts.Group == "" || s.Group == opts.Group) {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		where := "in the fleet"
		if opts.Group != "" {
			where = "in group " + opts.Group
		}
		return strategy.Strategy{}, fmt.Errorf("%w %s", ErrNoSites, where)
	}
	slices.Sort(names)
	s := strategy.Strategy{Type: strategy.Patch, Scope: strategy.ScopeFleet, State: strategy.ReadyToApply, Options: opts,
		Patches: slices.Clone(opts.Patches), RebootRequired: snap.RebootRequired, Stages: []strategy.Stage{}}
	for k := 0; k < len(names); k += opts.MaxParallel {
		batch := names[k:min(k+opts.MaxParallel, len(names))]
		stg := strategy.Stage{Name: fmt.Sprintf("sw-patch-subclouds-%d", len(s.Stages)+1), State: strategy.StepInitial}
		for _, n := range batch {
			stg.Steps = append(stg.Steps, strategy.Step{Action: strategy.PatchSubcloud, Target: n, State: strategy.StepInitial,
				Site: &strategy.SiteProgress{Phase: strategy.PhaseWaiting}})
		}
		s.Stages = append(s.Stages, stg)
	}
	return s, nil
}

// failedSites names the fleet's failed steps' sites.
func failedSites(s strategy.Strategy) []string {
	var out []string
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			if st.State == strategy.StepFailed {
				out = append(out, st.Target)
			}
		}
	}
	return out
}

func failedReason(s strategy.Strategy) string {
	var parts []string
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			if st.State == strategy.StepFailed {
				parts = append(parts, st.Target+" ("+st.Reason+")")
			}
		}
	}
	return "failed at " + strings.Join(parts, "; ")
}
