// Package strategy plans and runs patch orchestration: the rolling install
// of a site's applied patches on every host (StarlingX sw-manager's patch
// strategy).
//
// Plan is pure: an inventory snapshot and the options in, stages and steps
// out; no I/O, no clock. The plan is what `petrel strategy show` prints before
// anything is applied. States and their successors are transition tables, so
// a strategy, a stage and a step can only move the ways listed here.
package strategy

import (
	"fmt"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Type is what a strategy orchestrates.
type Type string

// Patch is the only strategy type so far.
const Patch Type = "patch"

// Valid reports whether t is a known type.
func (t Type) Valid() bool { return t == Patch }

// Scope is where a strategy runs: one site, or a fleet of sites from
// central (swpatch/fleet).
type Scope string

const (
	ScopeSite  Scope = "site"
	ScopeFleet Scope = "fleet"
)

// State is a strategy's state (brief §8).
type State string

const (
	Initial      State = "initial"
	Building     State = "building"
	ReadyToApply State = "ready-to-apply"
	Applying     State = "applying"
	Applied      State = "applied"
	ApplyFailed  State = "apply-failed"
	Aborting     State = "aborting"
	Aborted      State = "aborted"
)

// next lists each state's allowed successors. An apply-failed strategy can
// be applied again (it resumes at the step that failed) or aborted.
var next = map[State][]State{
	Initial:      {Building},
	Building:     {ReadyToApply},
	ReadyToApply: {Applying, Aborted},
	Applying:     {Applied, ApplyFailed, Aborting},
	Applied:      nil,
	ApplyFailed:  {Applying, Aborting},
	Aborting:     {Aborted},
	Aborted:      nil,
}

// Valid reports whether s is a known state.
func (s State) Valid() bool { _, ok := next[s]; return ok }

// Terminal reports whether s has no successor.
func (s State) Terminal() bool { return s.Valid() && len(next[s]) == 0 }

// CanTransition reports whether from → to is allowed.
func CanTransition(from, to State) bool { return slices.Contains(next[from], to) }

// StepState is a stage's or a step's state.
type StepState string

const (
	StepInitial  StepState = "initial"
	StepApplying StepState = "applying"
	StepApplied  StepState = "applied"
	StepFailed   StepState = "failed"
	StepAborted  StepState = "aborted"
)

// stepNext lists each step state's successors. A failed step is tried
// again when the strategy is applied again; applying → applying is a
// step resumed by a new leader.
var stepNext = map[StepState][]StepState{
	StepInitial:  {StepApplying, StepAborted},
	StepApplying: {StepApplying, StepApplied, StepFailed, StepAborted},
	StepApplied:  nil,
	StepFailed:   {StepApplying, StepAborted},
	StepAborted:  nil,
}

// Valid reports whether s is a known step state.
func (s StepState) Valid() bool { _, ok := stepNext[s]; return ok }

// CanStepTransition reports whether from → to is allowed for a step.
func CanStepTransition(from, to StepState) bool { return slices.Contains(stepNext[from], to) }

// Action is what a step does. The names are sw-manager's.
type Action string

const (
	// QueryAlarms checks the site's alarms against the alarm restrictions.
	QueryAlarms Action = "query-alarms"
	// SwactHosts moves the active controller's services to its peer.
	SwactHosts Action = "swact-hosts"
	// StopInstances stops the servers of the step's hosts.
	StopInstances Action = "stop-instances"
	// LockHosts locks the hosts; a lock live-migrates their servers away.
	LockHosts Action = "lock-hosts"
	// SwPatchHosts installs the applied patches on the hosts.
	SwPatchHosts Action = "sw-patch-hosts"
	// UnlockHosts unlocks the hosts; a host with a staged slot reboots into it.
	UnlockHosts Action = "unlock-hosts"
	// StartInstances starts the servers StopInstances stopped.
	StartInstances Action = "start-instances"
	// SystemStabilize is the health gate: every host of the step
	// available and patch-current, and no new management-affecting alarm.
	SystemStabilize Action = "system-stabilize"
	// PatchSubcloud is a fleet strategy's step (central): the patches
	// synced to one site and applied there, then the site's own strategy
	// created, applied and followed to its end.
	PatchSubcloud Action = "patch-subcloud"
)

var actions = []Action{QueryAlarms, SwactHosts, StopInstances, LockHosts, SwPatchHosts, UnlockHosts, StartInstances, SystemStabilize,
	PatchSubcloud}

// Valid reports whether a is a known action.
func (a Action) Valid() bool { return slices.Contains(actions, a) }

// ApplyType is how the hosts of one personality are taken.
type ApplyType string

const (
	Serial   ApplyType = "serial"
	Parallel ApplyType = "parallel"
	Ignore   ApplyType = "ignore" // leave these hosts alone
)

// InstanceAction is what happens to a host's servers before it is locked.
type InstanceAction string

const (
	Migrate   InstanceAction = "migrate"    // live-migrate them away (the lock does)
	StopStart InstanceAction = "stop-start" // stop them, start them after the unlock
)

// AlarmRestrictions says which alarms refuse a strategy's apply.
type AlarmRestrictions string

const (
	// Strict: any management-affecting alarm refuses (but the strategy's own).
	Strict AlarmRestrictions = "strict"
	// Relaxed: management-affecting alarms present when the apply starts
	// are tolerated; new ones still stop it.
	Relaxed AlarmRestrictions = "relaxed"
)

// Limits of MaxParallelWorkerHosts (sw-manager's).
const (
	MinParallelWorkerHosts = 2
	MaxParallelWorkerHosts = 10
)

// Options are a strategy's options (brief §4). The last four are a fleet
// strategy's (central only); a site refuses them.
type Options struct {
	ControllerApplyType    ApplyType         `json:"controller_apply_type"`
	WorkerApplyType        ApplyType         `json:"worker_apply_type"`
	MaxParallelWorkerHosts int               `json:"max_parallel_worker_hosts"`
	InstanceAction         InstanceAction    `json:"instance_action"`
	AlarmRestrictions      AlarmRestrictions `json:"alarm_restrictions"`
	// Group limits a fleet strategy to one subcloud group ("": every
	// managed subcloud).
	Group string `json:"group,omitempty"`
	// MaxParallel is how many sites a fleet strategy patches at once
	// (the size of each stage).
	MaxParallel int `json:"max_parallel,omitempty"`
	// StopOnFailure: no new site starts once one has failed.
	StopOnFailure bool `json:"stop_on_failure,omitempty"`
	// Patches are the patches (uploaded at central) a fleet strategy
	// installs at every site.
	Patches []string `json:"patches,omitempty"`
}

// SiteOnly returns o without the fleet options.
func (o Options) SiteOnly() Options {
	o.Group, o.MaxParallel, o.StopOnFailure, o.Patches = "", 0, false, nil
	return o
}

// WithDefaults fills the options left empty with sw-manager's defaults.
func (o Options) WithDefaults() Options {
	if o.ControllerApplyType == "" {
		o.ControllerApplyType = Serial
	}
	if o.WorkerApplyType == "" {
		o.WorkerApplyType = Serial
	}
	if o.MaxParallelWorkerHosts == 0 {
		o.MaxParallelWorkerHosts = MinParallelWorkerHosts
	}
	if o.InstanceAction == "" {
		o.InstanceAction = Migrate
	}
	if o.AlarmRestrictions == "" {
		o.AlarmRestrictions = Strict
	}
	return o
}

// Validate checks options already filled by WithDefaults.
func (o Options) Validate() error {
	if o.ControllerApplyType != Serial && o.ControllerApplyType != Ignore {
		return errs.Field("controller_apply_type", "must be serial or ignore")
	}
	switch o.WorkerApplyType {
	case Serial, Parallel, Ignore:
	default:
		return errs.Field("worker_apply_type", "must be serial, parallel or ignore")
	}
	if o.MaxParallelWorkerHosts < MinParallelWorkerHosts || o.MaxParallelWorkerHosts > MaxParallelWorkerHosts {
		return errs.Field("max_parallel_worker_hosts", "must be %d..%d", MinParallelWorkerHosts, MaxParallelWorkerHosts)
	}
	if o.InstanceAction != Migrate && o.InstanceAction != StopStart {
		return errs.Field("instance_action", "must be migrate or stop-start")
	}
	if o.AlarmRestrictions != Strict && o.AlarmRestrictions != Relaxed {
		return errs.Field("alarm_restrictions", "must be strict or relaxed")
	}
	switch {
	case o.Group != "":
		return errs.Field("group", "is a fleet strategy's option (central)")
	case o.MaxParallel != 0:
		return errs.Field("max_parallel", "is a fleet strategy's option (central)")
	case o.StopOnFailure:
		return errs.Field("stop_on_failure", "is a fleet strategy's option (central)")
	case len(o.Patches) > 0:
		return errs.Field("patches", "is a fleet strategy's option (central); a site strategy installs the applied patches")
	}
	return nil
}

// Step is one action on one or more hosts.
type Step struct {
	Action Action   `json:"action"`
	Target string   `json:"target"` // the hosts, comma-separated ("" for site-wide steps)
	Hosts  []string `json:"hosts,omitempty"`
	// Force: lock-hosts of a simplex site's only controller (its servers
	// were stopped, or it has none), which a plain lock refuses.
	Force  bool      `json:"force,omitempty"`
	State  StepState `json:"state"`
	Reason string    `json:"reason"` // why it failed or was aborted
	// Servers are the servers StopInstances stopped, so StartInstances
	// starts exactly those after a resume.
	Servers   []string   `json:"servers,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// Site is a fleet step's progress at its site (central only).
	Site *SiteProgress `json:"site,omitempty"`
}

// SitePhase is where a fleet step stands at its site.
type SitePhase string

const (
	PhaseWaiting     SitePhase = "waiting"      // not started
	PhaseSyncPatches SitePhase = "sync-patches" // archives uploaded to the site
	PhaseApplyPatch  SitePhase = "apply-patches"
	PhaseCreate      SitePhase = "create-strategy" // the site strategy created (or adopted)
	PhaseApply       SitePhase = "apply-strategy"  // the site strategy applying, followed
	PhaseAbort       SitePhase = "abort-strategy"  // the site strategy being aborted
	PhaseDone        SitePhase = "done"
)

// SiteProgress is a fleet step's view of its site: where the step stands
// and, once the site strategy exists, that strategy's state and current
// step. JSON keys are the API contract (docs/api.md).
type SiteProgress struct {
	Phase SitePhase `json:"phase"`
	// State is the site strategy's state ("" before it exists).
	State State `json:"state,omitempty"`
	// StepsDone and StepsTotal count the site strategy's steps.
	StepsDone  int `json:"steps_done"`
	StepsTotal int `json:"steps_total"`
	// Stage, Action and Hosts are the site strategy's current step.
	Stage  string   `json:"stage,omitempty"`
	Action Action   `json:"action,omitempty"`
	Hosts  []string `json:"hosts,omitempty"`
	// Reason is the site strategy's reason (why it failed or was aborted).
	Reason string `json:"reason,omitempty"`
	// PatchesApplied are the patches this step applied at the site (an
	// abort before the site strategy starts removes them again).
	PatchesApplied []string `json:"patches_applied,omitempty"`
	// OfflineSince is when the step first found the site unreachable
	// (cleared when it answers).
	OfflineSince *time.Time `json:"offline_since,omitempty"`
	UpdatedAt    time.Time  `json:"updated_at"`
}

// Progress summarises s (a site strategy) for a fleet step.
func (s Strategy) Progress() SiteProgress {
	p := SiteProgress{State: s.State, Reason: s.Reason}
	current := false
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			p.StepsTotal++
			if st.State == StepApplied {
				p.StepsDone++
				continue
			}
			if !current && st.State != StepInitial {
				p.Stage, p.Action, p.Hosts, current = stg.Name, st.Action, st.Hosts, true
			}
		}
	}
	return p
}

// Stage is a sequence of steps on one batch of hosts; stages run one after
// another.
type Stage struct {
	Name  string    `json:"name"`
	State StepState `json:"state"`
	Steps []Step    `json:"steps"`
}

// Strategy is a strategy as a site keeps it. JSON keys are the API contract
// (brief §8).
type Strategy struct {
	Type    Type    `json:"type"`
	Scope   Scope   `json:"scope"`
	State   State   `json:"state"`
	Options Options `json:"options"`
	Stages  []Stage `json:"stages"`
	// Patches are the applied patches the strategy installs.
	Patches []string `json:"patches"`
	// RebootRequired: some patch needs its hosts locked and rebooted.
	RebootRequired bool `json:"reboot_required"`
	// Reason says why the strategy failed or was aborted.
	Reason string `json:"reason,omitempty"`
	// BaselineAlarms are the management-affecting alarms standing when the
	// apply started (alarm ID and entity, "ID/entity"): relaxed
	// restrictions tolerate them, and the health gate looks for new ones.
	BaselineAlarms []string `json:"baseline_alarms,omitempty"`
	// Locked lists the hosts this strategy locked and has not yet
	// unlocked, so an abort unlocks exactly those.
	Locked    []string  `json:"locked,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Rev increases with every stored change.
	Rev uint64 `json:"revision"`
}

// Errors.
var (
	ErrNotFound = errs.New(errs.NotFound, "strategy not found")
	ErrExists   = errs.New(errs.Conflict, "a strategy of this type already exists; delete it first")
	// ErrNothingToDo: every host already runs the applied patches.
	ErrNothingToDo = errs.New(errs.Conflict, "no host needs a patch: apply a patch first (petrel patch apply)")
)

// To moves s to state to, refusing a transition the table does not allow.
func (s *Strategy) To(to State, now time.Time) error {
	if !CanTransition(s.State, to) {
		return fmt.Errorf("strategy %s: %s -> %s: %w", s.Type, s.State, to, errs.InvalidTransition)
	}
	s.State, s.UpdatedAt = to, now
	return nil
}

// StepTo moves step j of stage i to state to, with the stage's state
// following its steps.
func (s *Strategy) StepTo(i, j int, to StepState, reason string, now time.Time) error {
	st := &s.Stages[i].Steps[j]
	if !CanStepTransition(st.State, to) {
		return fmt.Errorf("strategy %s: step %s %s: %s -> %s: %w", s.Type, st.Action, st.Target, st.State, to, errs.InvalidTransition)
	}
	st.State, st.Reason = to, reason
	t := now
	switch to {
	case StepApplying:
		if st.StartedAt == nil {
			st.StartedAt = &t
		}
		st.EndedAt = nil
	default:
		st.EndedAt = &t
	}
	s.Stages[i].State = stageState(s.Stages[i].Steps)
	s.UpdatedAt = now
	return nil
}

// stageState derives a stage's state from its steps.
func stageState(steps []Step) StepState {
	all := true
	started := false
	for _, st := range steps {
		switch st.State {
		case StepFailed:
			return StepFailed
		case StepAborted:
			return StepAborted
		case StepApplying:
			return StepApplying
		case StepApplied:
			started = true
		default:
			all = false
		}
	}
	switch {
	case all:
		return StepApplied
	case started:
		return StepApplying
	}
	return StepInitial
}

// Next returns the first step not yet applied, or ok=false when every step is.
func (s *Strategy) Next() (i, j int, ok bool) {
	for i := range s.Stages {
		for j := range s.Stages[i].Steps {
			if s.Stages[i].Steps[j].State != StepApplied {
				return i, j, true
			}
		}
	}
	return 0, 0, false
}
