package servicemgr

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Assigned is one host's member in a group's assignment.
type Assigned struct {
	Role Role `json:"role"`
	Slot int  `json:"slot"` // an active's slot, 0..N-1; -1 for a standby
}

// Placement is a group's members and the epoch they carry, as recorded
// in etcd.
type Placement struct {
	Epoch   uint64              `json:"epoch"`
	Members map[string]Assigned `json:"members"` // host name -> member
}

func (a Placement) clone() Placement {
	return Placement{Epoch: a.Epoch, Members: maps.Clone(a.Members)}
}

// Equal reports whether two assignments have the same members (epochs
// aside).
func (a Placement) Equal(b Placement) bool { return maps.Equal(a.Members, b.Members) }

// HostView is what the planner knows of a host.
type HostView struct {
	Name string
	// Eligible: in the inventory, unlocked, available or degraded, and its
	// agent reports members this boot.
	Eligible bool
	// Healthy: available (not degraded); healthy hosts are placed first.
	Healthy bool
	// Leaving: locked, deleted, or no longer named by the group: its
	// members move away gracefully (deactivated before anyone else is
	// activated).
	Leaving bool
	// Down: confirmed fenced or dead (BMC read back off, or it booted
	// again): its members are gone, their slots free at once. DownReason
	// says how it was confirmed.
	Down       bool
	DownReason string
	// Silent: heartbeat lost, not (yet) confirmed: its members stay as
	// they are — never reassigned on heartbeat loss alone.
	Silent bool
}

// Observed is what a host's agent last reported of a member.
type Observed struct {
	Status MemberStatus
	// Current: the agent has applied this group's current assignment
	// (its report carries the current epoch).
	Current bool
}

// PlanInput is everything a plan depends on.
type PlanInput struct {
	Spec     Spec
	Model    Model
	Hosts    map[string]HostView // every host that holds a member or is eligible
	Current  Placement
	Observed map[string]Observed // host -> the member there
	// DependencyDown names a dependency with no active member ("" if all
	// have one): no member of this group may be active meanwhile.
	DependencyDown string
	// HoldPromotions: too many promotions lately (an activation storm):
	// no standby is promoted until the backoff ends.
	HoldPromotions bool
}

// Decision is one change of a plan, with its reason: every decision
// becomes an event.
type Decision struct {
	Host   string
	What   string // promote, place-active, place-standby, demote, remove, hold
	Reason string
}

func (d Decision) String() string {
	if d.Host == "" {
		return d.What + ": " + d.Reason
	}
	return d.What + " " + d.Host + ": " + d.Reason
}

// Plan is the next assignment of a group and its status.
type Plan struct {
	Next      Placement // Epoch as Current's: the committer bumps it when Changed
	Changed   bool
	Decisions []Decision
	Status    Status
	Reason    string
	Members   []Member
}

// Decide computes a group's next assignment from its current one, what
// the agents report and the hosts' states. It is pure: the manager feeds
// it and commits its result. The rules (docs/servicemgr.md):
//   - a member on a host confirmed down is removed, its slot freed;
//   - an active whose agent reports it failed is demoted to standby (the
//     agent restarts it after a backoff);
//   - members on leaving hosts are demoted, then removed;
//   - members on silent, unconfirmed hosts stay as they are;
//   - a free slot goes to a healthy standby, else to a spare eligible
//     host, in the deterministic order (healthy first, then name) — but
//     never while a member not assigned active still reports itself
//     active on a host not confirmed down (no two actives for a slot);
//   - standbys are topped up to M on spare eligible hosts.
func Decide(in PlanInput) Plan {
	next := in.Current.clone()
	if next.Members == nil {
		next.Members = map[string]Assigned{}
	}
	var ds []Decision
	add := func(host, what, format string, a ...any) {
		ds = append(ds, Decision{Host: host, What: what, Reason: fmt.Sprintf(format, a...)})
	}
	obs := func(h string) (MemberStatus, bool) {
		o, ok := in.Observed[h]
		return o.Status, ok
	}
	// Members that must go, or step down.
	for _, h := range sortedKeys(next.Members) {
		m := next.Members[h]
		hv := in.Hosts[h]
		st, seen := obs(h)
		switch {
		case hv.Down:
			delete(next.Members, h)
			add(h, "remove", "its host is confirmed down (%s)", hv.DownReason)
		case hv.Leaving && m.Role == RoleActive:
			next.Members[h] = Assigned{Role: RoleStandby, Slot: -1}
			add(h, "demote", "its host is leaving the group (locked, deleted or no longer eligible)")
		case hv.Leaving:
			if !seen || st.State != MemberActive {
				delete(next.Members, h)
				add(h, "remove", "its host is leaving the group")
			}
		case m.Role == RoleActive && seen && in.Observed[h].Current && st.State == MemberFailed:
			next.Members[h] = Assigned{Role: RoleStandby, Slot: -1}
			add(h, "demote", "the active member failed (%s); its agent stopped it and restarts it as a standby", orUnknown(st.Reason))
		case m.Role == RoleActive && in.DependencyDown != "":
			next.Members[h] = Assigned{Role: RoleStandby, Slot: -1}
			add(h, "demote", "dependency %q has no active member", in.DependencyDown)
		}
	}
	order := placementOrder(in)
	spare := func() []string { // eligible hosts without a member, in order
		var out []string
		for _, h := range order {
			if _, has := next.Members[h]; !has {
				out = append(out, h)
			}
		}
		return out
	}
	wantActive := in.Model.N
	if in.Model.Every {
		wantActive = 0
		for _, h := range in.Spec.Hosts {
			if hv := in.Hosts[h]; hv.Eligible && !hv.Leaving {
				wantActive++
			}
		}
	}
	if in.DependencyDown != "" {
		wantActive = 0
	}
	// Zombies: reporting active without being assigned active, on a host
	// not confirmed down. Nobody takes a slot while one remains.
	zombies := 0
	for h, o := range in.Observed {
		if o.Status.State == MemberActive && next.Members[h].Role != RoleActive && !in.Hosts[h].Down {
			zombies++
			add(h, "hold", "still reports itself active: no promotion until it deactivates")
		}
	}
	actives := 0
	used := map[int]bool{}
	for _, m := range next.Members {
		if m.Role == RoleActive {
			actives++
			used[m.Slot] = true
		}
	}
	freeSlot := func() int {
		for i := 0; ; i++ {
			if !used[i] {
				return i
			}
		}
	}
	if need := wantActive - actives; need > 0 && zombies == 0 {
		if in.HoldPromotions {
			add("", "hold", "promotions back off after repeated failures (activation storm guard)")
		} else {
			// Healthy standbys first, in placement order; then starting
			// ones; then spare hosts.
			var standbys, starting []string
			for _, h := range order {
				m, ok := next.Members[h]
				if !ok || m.Role != RoleStandby {
					continue
				}
				st, seen := obs(h)
				switch {
				case seen && st.State == MemberStandby:
					standbys = append(standbys, h)
				case !seen || st.State == MemberStarting:
					starting = append(starting, h)
				}
			}
			if in.Model.Every {
				standbys, starting = nil, nil
			}
			for _, h := range append(standbys, starting...) {
				if need == 0 {
					break
				}
				s := freeSlot()
				used[s] = true
				next.Members[h] = Assigned{Role: RoleActive, Slot: s}
				need--
				add(h, "promote", "slot %d was free; promoted the standby", s)
			}
			for _, h := range spare() {
				if need == 0 {
					break
				}
				s := freeSlot()
				if in.Model.Every {
					s = slices.Index(in.Spec.Hosts, h)
				}
				used[s] = true
				next.Members[h] = Assigned{Role: RoleActive, Slot: s}
				need--
				add(h, "place-active", "slot %d was free and no standby could take it", s)
			}
		}
	}
	if !in.Model.Every {
		standbys := 0
		for _, h := range sortedKeys(next.Members) {
			if next.Members[h].Role == RoleStandby && !in.Hosts[h].Leaving {
				standbys++
			}
		}
		for _, h := range spare() {
			if standbys >= in.Model.M {
				break
			}
			next.Members[h] = Assigned{Role: RoleStandby, Slot: -1}
			standbys++
			add(h, "place-standby", "the group had fewer than %d standbys", in.Model.M)
		}
		// Too many standbys (a failed active kept as one): drop the
		// failed, then the last in order.
		if extra := standbys - in.Model.M; extra > 0 {
			cands := slices.Clone(order)
			slices.Reverse(cands)
			slices.SortStableFunc(cands, func(a, b string) int {
				fa, fb := failed(in, a), failed(in, b)
				switch {
				case fa && !fb:
					return -1
				case fb && !fa:
					return 1
				}
				return 0
			})
			for _, h := range cands {
				if extra == 0 {
					break
				}
				if m, ok := next.Members[h]; ok && m.Role == RoleStandby {
					delete(next.Members, h)
					extra--
					add(h, "remove", "more standbys than the %d the model asks", in.Model.M)
				}
			}
		}
	}
	p := Plan{Next: next, Changed: !next.Equal(in.Current), Decisions: ds}
	p.Status, p.Reason, p.Members = status(in, next, wantActive)
	return p
}

func failed(in PlanInput, h string) bool {
	o, ok := in.Observed[h]
	return ok && o.Status.State == MemberFailed
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// placementOrder lists the group's eligible hosts, healthy first, then by
// name.
func placementOrder(in PlanInput) []string {
	var out []string
	for _, h := range in.Spec.Hosts {
		if hv := in.Hosts[h]; hv.Eligible && !hv.Leaving && !hv.Down && !hv.Silent {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		ha, hb := in.Hosts[a].Healthy, in.Hosts[b].Healthy
		switch {
		case ha && !hb:
			return -1
		case hb && !ha:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// status derives the group's status and its members' states.
func status(in PlanInput, next Placement, wantActive int) (Status, string, []Member) {
	var members []Member
	actives, standbys := 0, 0
	for _, h := range sortedKeys(next.Members) {
		a := next.Members[h]
		m := Member{Host: h, Epoch: next.Epoch, State: StateDisabled}
		st, seen := in.Observed[h]
		hv := in.Hosts[h]
		switch {
		case hv.Silent:
			m.Reason = "its host is silent (not yet confirmed down)"
		case !seen:
			m.Reason = "not reported by its host's agent yet"
		case st.Status.State == MemberFailed:
			m.State, m.Reason = StateFailed, st.Status.Reason
			if st.Status.Restarts > 0 {
				m.Reason = fmt.Sprintf("%s (restarts %d, next in %s)", orUnknown(st.Status.Reason), st.Status.Restarts, st.Status.Backoff)
			}
		case a.Role == RoleActive && st.Status.State == MemberActive:
			m.State = StateActive
			actives++
		case a.Role == RoleStandby && st.Status.State == MemberStandby:
			m.State = StateStandby
			standbys++
		default:
			m.Reason = string(st.Status.State)
			if a.Role == RoleActive {
				m.Reason = "activating (" + string(st.Status.State) + ")"
			}
		}
		if a.Role == RoleActive {
			s := a.Slot
			m.Slot = &s
		}
		members = append(members, m)
	}
	switch {
	case in.DependencyDown != "":
		return StatusFailed, fmt.Sprintf("dependency %q has no active member", in.DependencyDown), members
	case actives < max(wantActive, 1):
		return StatusFailed, fmt.Sprintf("%d of %d active members", actives, max(wantActive, 1)), members
	case in.Model.Every && actives < len(in.Spec.Hosts):
		return StatusDegraded, fmt.Sprintf("%d of %d eligible hosts run an active member", actives, len(in.Spec.Hosts)), members
	case !in.Model.Every && standbys < in.Model.M:
		return StatusDegraded, fmt.Sprintf("%d of %d standby members", standbys, in.Model.M), members
	}
	return StatusOK, "", members
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
