package swpatch

import (
	"fmt"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// State is a patch's state at a site (StarlingX release states).
type State string

const (
	Available State = "available" // uploaded, verified, not applied
	Deploying State = "deploying" // applied; some hosts have not installed it
	Deployed  State = "deployed"  // every host runs it
	Committed State = "committed" // made permanent: can no longer be removed
	Removing  State = "removing"  // being taken off the hosts
)

// next lists each state's allowed successors. Deploying becomes deployed,
// and removing available, when every host is current with them.
var next = map[State][]State{
	Available: {Deploying},
	Deploying: {Deployed, Removing},
	Deployed:  {Committed, Removing, Deploying},
	Committed: nil,
	Removing:  {Available, Deploying},
}

// Valid reports whether s is a known state.
func (s State) Valid() bool { _, ok := next[s]; return ok }

// Terminal reports whether s has no successor.
func (s State) Terminal() bool { return s.Valid() && len(next[s]) == 0 }

// Applied reports whether hosts should run a patch in state s.
func (s State) Applied() bool { return s == Deploying || s == Deployed || s == Committed }

// CanTransition reports whether from → to is allowed.
func CanTransition(from, to State) bool { return slices.Contains(next[from], to) }

// HostState is where one host stands towards one patch.
type HostState string

const (
	HostCurrent       HostState = "patch-current"  // the host runs the patch (or, removing, no longer does)
	HostPending       HostState = "pending"        // the host has yet to install (or remove) it
	HostInstallFailed HostState = "install-failed" // the host's last install failed or rolled back
)

var hostNext = map[HostState][]HostState{
	HostPending:       {HostCurrent, HostInstallFailed},
	HostCurrent:       {HostPending},
	HostInstallFailed: {HostPending, HostCurrent},
}

// Valid reports whether s is a known host state.
func (s HostState) Valid() bool { _, ok := hostNext[s]; return ok }

// CanHostTransition reports whether from → to is allowed for a host.
func CanHostTransition(from, to HostState) bool { return slices.Contains(hostNext[from], to) }

// Store errors.
var (
	ErrPatchNotFound = errs.New(errs.NotFound, "patch not found")
	ErrPatchExists   = errs.New(errs.Conflict, "patch already uploaded")
	// ErrDowngrade: the patch is older than the software deployed.
	ErrDowngrade = errs.New(errs.Conflict, "patch is older than the deployed software")
	// ErrMissingRequirement: a patch's requirement is not applied.
	ErrMissingRequirement = errs.New(errs.Conflict, "patch requires a patch that is not applied")
)

// Record is a patch as a site keeps it. JSON keys are the API contract
// (brief §8).
type Record struct {
	ID             string               `json:"id"`
	Version        string               `json:"version"`
	State          State                `json:"state"`
	Requires       []string             `json:"requires"`
	RebootRequired bool                 `json:"reboot_required"`
	Hosts          map[string]HostState `json:"hosts"`
	Description    string               `json:"description,omitempty"`
	HasBinary      bool                 `json:"has_binary"`
	Files          int                  `json:"files"`
	Size           int64                `json:"size"`   // archive bytes
	SHA256         string               `json:"sha256"` // of the archive
	CreatedAt      time.Time            `json:"created_at"`
	UpdatedAt      time.Time            `json:"updated_at"`
}

// To moves r to state to, refusing a transition the table does not allow.
func (r *Record) To(to State, now time.Time) error {
	if !CanTransition(r.State, to) {
		return fmt.Errorf("patch %s: %s -> %s: %w", r.ID, r.State, to, errs.InvalidTransition)
	}
	r.State, r.UpdatedAt = to, now
	return nil
}

// HostSoftware is what a host reports about its software: the patches
// its running slot holds and, if it failed, the patch it failed on.
type HostSoftware struct {
	Name    string
	Patches []string // in the running slot
	Staged  []string // in the slot marked for the next boot
	Failed  string   // the patch whose install failed or rolled back, if any
}

// HostStateOf says where host h stands towards a patch in state st.
func HostStateOf(id string, st State, h HostSoftware) HostState {
	has := slices.Contains(h.Patches, id)
	switch {
	case st == Removing && !has, st != Removing && has:
		return HostCurrent
	case h.Failed == id:
		return HostInstallFailed
	}
	return HostPending
}

// Settle recomputes r's per-host states from the hosts' reports and moves
// it on when every host is current: deploying → deployed, removing →
// available. It reports whether r changed.
func Settle(r *Record, hosts []HostSoftware, now time.Time) bool {
	states := map[string]HostState{}
	all := len(hosts) > 0
	for _, h := range hosts {
		s := HostStateOf(r.ID, r.State, h)
		states[h.Name] = s
		if s != HostCurrent {
			all = false
		}
	}
	if r.State == Available { // hosts are not asked to run it
		states = map[string]HostState{}
	}
	changed := !mapsEqual(states, r.Hosts)
	r.Hosts = states
	switch {
	case r.State == Deploying && all:
		changed = r.To(Deployed, now) == nil || changed
	case r.State == Deployed && !all && len(hosts) > 0:
		changed = r.To(Deploying, now) == nil || changed // a host no longer runs it
	case r.State == Removing && all:
		changed = r.To(Available, now) == nil || changed
		r.Hosts = map[string]HostState{}
	}
	if changed {
		r.UpdatedAt = now
	}
	return changed
}

func mapsEqual(a, b map[string]HostState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
