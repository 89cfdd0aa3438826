package hostmgr

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/inventory"
)

type run struct {
	t   *testing.T
	m   *Machine
	h   Host
	now time.Time
	all []Action
}

func newRun(t *testing.T) *run {
	return &run{t: t, m: NewMachine(Timing{}), now: time.Unix(1000, 0),
		h: Host{Name: "worker-1", Admin: inventory.Unlocked, Avail: inventory.Available,
			Heartbeat: map[heartbeat.Network]heartbeat.State{heartbeat.Mgmt: heartbeat.OK, heartbeat.Cluster: heartbeat.OK}}}
}

func (r *run) ev(e Event) []Action {
	r.t.Helper()
	h, acts, err := r.m.Step(r.h, e, r.now)
	if err != nil {
		r.t.Fatal(err)
	}
	r.h, r.all = h, append(r.all, acts...)
	return acts
}

func (r *run) silent() []Action {
	r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Mgmt, State: heartbeat.Lost})
	return r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Cluster, State: heartbeat.Lost})
}

func (r *run) back() []Action {
	r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Mgmt, State: heartbeat.OK})
	return r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Cluster, State: heartbeat.OK})
}

// after advances the clock past the phase deadline and fires the timer.
func (r *run) after() []Action {
	r.now = r.h.Deadline
	return r.ev(Event{Kind: EvTimer})
}

func kinds(acts []Action) []ActionKind {
	var out []ActionKind
	for _, a := range acts {
		if a.Kind != ActLog {
			out = append(out, a.Kind)
		}
	}
	return out
}

func has(acts []Action, k ActionKind) bool { return slices.Contains(kinds(acts), k) }

var destructive = []ActionKind{ActBMCPowerOn, ActBMCPowerOff, ActBMCReset, ActBMCCycle, ActAgentReboot}

func anyDestructive(acts []Action) bool {
	for _, a := range acts {
		if slices.Contains(destructive, a.Kind) {
			return true
		}
	}
	return false
}

// Brief §4, power loss of an unlocked host: the BMC reads off -> failed +
// 200.004 at once, no reboot attempts; powered on through the BMC; back.
func TestPowerLoss(t *testing.T) {
	r := newRun(t)
	if acts := r.silent(); !has(acts, ActReadPower) || anyDestructive(acts) {
		t.Fatalf("silent host: %v; want a BMC read and nothing destructive", kinds(acts))
	}
	acts := r.ev(Event{Kind: EvPower, Power: PowerOff})
	if r.h.Avail != inventory.Failed || !has(acts, ActRaise) || !has(acts, ActBMCPowerOn) || has(acts, ActAgentReboot) || has(acts, ActBMCReset) {
		t.Fatalf("BMC reads off: %s, %v", r.h.Avail, kinds(acts))
	}
	r.back()
	if r.h.Avail != inventory.Available || r.h.Phase != PhaseNone {
		t.Errorf("after power-on: %s/%s", r.h.Avail, r.h.Phase)
	}
	// A BMC that ignores power-on: bounded attempts, then gave up, saying so.
	r = newRun(t)
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerOff})
	ons := 1
	for r.h.Phase == PhasePowerOn {
		if has(r.after(), ActBMCPowerOn) {
			ons++
		}
	}
	if ons != 3 || r.h.Phase != PhaseGaveUp || r.h.Avail != inventory.Failed {
		t.Errorf("BMC ignoring power-on: %d attempts, %s/%s; want 3, gave up, failed", ons, r.h.Phase, r.h.Avail)
	}
}

// A 2 s hang (BMC on) is within G: no reboot. A longer one escalates:
// reboot via the agent, BMC reset, BMC power-cycle, then failed with
// "lock and unlock to retry"; unlocking again starts over.
func TestHangWithinGraceAndEscalation(t *testing.T) {
	r := newRun(t)
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerOn})
	if r.h.Phase != PhaseGrace || r.h.Deadline.Sub(r.now) != 5*time.Second {
		t.Fatalf("BMC on: %s until %s", r.h.Phase, r.h.Deadline.Sub(r.now))
	}
	r.now = r.now.Add(2 * time.Second)
	r.ev(Event{Kind: EvTimer}) // not yet due: ignored
	r.back()
	if anyDestructive(r.all) || r.h.Avail != inventory.Available {
		t.Fatalf("a 2 s hang: %v, %s; want no reboot, available", kinds(r.all), r.h.Avail)
	}

	r = newRun(t)
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerOn})
	var steps []ActionKind
	for r.h.Phase != PhaseGaveUp {
		for _, k := range kinds(r.after()) {
			if slices.Contains(destructive, k) {
				steps = append(steps, k)
			}
		}
	}
	want := []ActionKind{ActAgentReboot, ActBMCReset, ActBMCCycle}
	if !slices.Equal(steps, want) || r.h.Avail != inventory.Failed {
		t.Fatalf("escalation %v, %s; want %v, failed", steps, r.h.Avail, want)
	}
	if last := r.all[len(r.all)-1]; last.Kind != ActRaise || last.Alarm != AlarmFailed {
		t.Errorf("gave up with %+v; want 200.004 saying lock/unlock", last)
	}
	r.ev(Event{Kind: EvLock})
	r.ev(Event{Kind: EvUnlock})
	if r.h.Phase != PhaseSuspect {
		t.Errorf("unlock of a gave-up host still silent: %s; want a new attempt (suspect)", r.h.Phase)
	}
}

// One network lost, the other fine: degraded with its alarm, never a
// reboot, whatever the BMC says.
func TestOneNetworkDegrades(t *testing.T) {
	r := newRun(t)
	acts := r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Cluster, State: heartbeat.Lost})
	if r.h.Avail != inventory.Degraded || !slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == ActRaise && a.Alarm == AlarmClusterLost }) {
		t.Fatalf("cluster lost: %s, %+v", r.h.Avail, acts)
	}
	r.ev(Event{Kind: EvPower, Power: PowerOn})
	r.now = r.now.Add(time.Hour)
	r.ev(Event{Kind: EvTimer})
	if anyDestructive(r.all) || has(r.all, ActReadPower) {
		t.Errorf("one network lost led to %v", kinds(r.all))
	}
	r.ev(Event{Kind: EvHeartbeat, Network: heartbeat.Cluster, State: heartbeat.OK})
	if r.h.Avail != inventory.Available {
		t.Errorf("cluster back: %s", r.h.Avail)
	}
}

// MNFA holds destructive actions; when it ends, a host still silent is
// confirmed through its BMC as usual.
func TestMNFAHolds(t *testing.T) {
	r := newRun(t)
	r.ev(Event{Kind: EvMNFA, MNFA: true})
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerOff})
	r.now = r.now.Add(time.Hour)
	r.ev(Event{Kind: EvTimer})
	if anyDestructive(r.all) || has(r.all, ActReadPower) || r.h.Phase != PhaseHold {
		t.Fatalf("during MNFA: %v, %s", kinds(r.all), r.h.Phase)
	}
	if acts := r.ev(Event{Kind: EvMNFA, MNFA: false}); !has(acts, ActReadPower) {
		t.Fatalf("MNFA over, host still silent: %v; want a BMC read", kinds(acts))
	}
	// Hosts that return during MNFA recover gracefully.
	r = newRun(t)
	r.ev(Event{Kind: EvMNFA, MNFA: true})
	r.silent()
	r.back()
	if anyDestructive(r.all) || r.h.Avail != inventory.Available {
		t.Errorf("returned during MNFA: %v, %s", kinds(r.all), r.h.Avail)
	}
}

// An operator's power-off of a locked host stays off: no recovery.
func TestOperatorPowerOffStaysOff(t *testing.T) {
	r := newRun(t)
	if _, _, err := r.m.Step(r.h, Event{Kind: EvPowerOff}, r.now); err == nil {
		t.Error("power-off of an unlocked host accepted")
	}
	r.ev(Event{Kind: EvLock})
	if acts := r.ev(Event{Kind: EvPowerOff}); !has(acts, ActBMCPowerOff) || r.h.Avail != inventory.PowerOff {
		t.Fatalf("power-off: %v, %s", kinds(acts), r.h.Avail)
	}
	before := len(r.all)
	r.silent()
	r.now = r.now.Add(time.Hour)
	r.ev(Event{Kind: EvTimer})
	if anyDestructive(r.all[before:]) || has(r.all[before:], ActReadPower) || r.h.Avail != inventory.PowerOff {
		t.Errorf("after an operator's power-off: %v, %s", kinds(r.all[before:]), r.h.Avail)
	}
}

// A BMC that cannot be reached gives no confirmation: failed, held, no
// destructive action; asked again later.
func TestUnreachableBMCHolds(t *testing.T) {
	r := newRun(t)
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerUnreachable})
	if r.h.Phase != PhaseHold || r.h.Avail != inventory.Failed || anyDestructive(r.all) {
		t.Fatalf("BMC unreachable: %s/%s %v", r.h.Phase, r.h.Avail, kinds(r.all))
	}
	if acts := r.after(); !has(acts, ActReadPower) {
		t.Errorf("held host not re-checked: %v", kinds(acts))
	}
}

// TestNeverFenceOnHeartbeatAlone drives random event sequences: a
// destructive action only ever follows a BMC reading of on or off in the
// same episode, never during MNFA, never on a locked host (but for the
// operator's own power-off), and every move is in the transition table.
func TestNeverFenceOnHeartbeatAlone(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 2))
	for range 2000 {
		r := newRun(t)
		confirmed, mnfa := false, false
		for range 40 {
			var e Event
			switch rng.IntN(8) {
			case 0, 1:
				e = Event{Kind: EvHeartbeat, Network: heartbeat.Network(1 + rng.IntN(2)), State: heartbeat.State(rng.IntN(3))}
			case 2:
				e = Event{Kind: EvPower, Power: []Power{PowerOn, PowerOff, PowerUnreachable}[rng.IntN(3)]}
			case 3, 4:
				r.now = r.now.Add(time.Duration(rng.IntN(90)) * time.Second)
				e = Event{Kind: EvTimer}
			case 5:
				e = Event{Kind: EvMNFA, MNFA: rng.IntN(2) == 0}
			case 6:
				e = Event{Kind: []EventKind{EvLock, EvUnlock}[rng.IntN(2)]}
			case 7:
				e = Event{Kind: EvPowerOff}
			}
			before := r.h
			h, acts, err := r.m.Step(r.h, e, r.now)
			if err != nil {
				if e.Kind == EvPowerOff && before.Admin != inventory.Locked {
					continue // refused: power-off needs a locked host
				}
				t.Fatalf("%+v from %+v: %v", e, before, err)
			}
			if e.Kind == EvMNFA {
				mnfa = e.MNFA
			}
			if e.Kind == EvPower && (e.Power == PowerOn || e.Power == PowerOff) && (before.Phase == PhaseSuspect || before.Phase == PhaseHold) && !mnfa {
				confirmed = true
			}
			for _, a := range acts {
				if !slices.Contains(destructive, a.Kind) {
					continue
				}
				if a.Kind == ActBMCPowerOff && e.Kind == EvPowerOff {
					continue // the operator's own request
				}
				if !confirmed || mnfa || before.Admin == inventory.Locked {
					t.Fatalf("%s after %+v from %+v (confirmed %v, mnfa %v)", a.Kind, e, before, confirmed, mnfa)
				}
			}
			r.h = h
			if h.Phase == PhaseNone || h.Phase == PhaseOperatorOff {
				confirmed = false
			}
		}
	}
}

// MNFA begins when two hosts fall silent within 2 s, not when they fall
// silent further apart, and ends when fewer than two are still silent.
func TestMNFADetector(t *testing.T) {
	var d MNFA
	t0 := time.Unix(0, 0)
	if d.Silent("a", t0) || d.Silent("b", t0.Add(3*time.Second)) || d.Active() {
		t.Fatal("two hosts silent 3 s apart began MNFA")
	}
	d.Back("a")
	d.Back("b")
	if d.Silent("a", t0.Add(10*time.Second)) {
		t.Fatal("one silent host began MNFA")
	}
	if !d.Silent("b", t0.Add(11*time.Second)) || !d.Active() {
		t.Fatal("two hosts silent 1 s apart: no MNFA")
	}
	d.Silent("c", t0.Add(30*time.Second)) // joins the episode
	if d.Back("a") || !d.Active() {
		t.Fatal("MNFA ended with two hosts still silent")
	}
	if !d.Back("b") || d.Active() {
		t.Fatal("MNFA did not end with one host silent")
	}
}

// A silent host with power on that holds an active service role is fenced
// at once (no grace): power-off, and only a read-back off confirms it down
// (ActDown) and starts powering it on again. A fence that does not read
// back off confirms nothing.
func TestFenceHostHoldingActiveRole(t *testing.T) {
	r := newRun(t)
	r.h.HoldsActive = true
	r.silent()
	acts := r.ev(Event{Kind: EvPower, Power: PowerOn})
	if r.h.Phase != PhaseFence || !has(acts, ActFence) || has(acts, ActDown) {
		t.Fatalf("silent, power on, holding an active role: %s %v; want fence, not yet down", r.h.Phase, kinds(acts))
	}
	acts = r.ev(Event{Kind: EvPower, Power: PowerOff})
	if !has(acts, ActDown) || !has(acts, ActBMCPowerOn) || r.h.Avail != inventory.Failed || r.h.Phase != PhasePowerOn {
		t.Fatalf("fence read back off: %s/%s %v; want down, failed, powering on", r.h.Phase, r.h.Avail, kinds(acts))
	}
	r = newRun(t)
	r.h.HoldsActive = true
	r.silent()
	r.ev(Event{Kind: EvPower, Power: PowerOn})
	acts = r.ev(Event{Kind: EvPower, Power: PowerOn})
	if has(acts, ActDown) || r.h.Phase != PhaseHold {
		t.Fatalf("fence not confirmed: %s %v; want hold and no down", r.h.Phase, kinds(acts))
	}
	// Without an active role the grace period applies as before.
	r = newRun(t)
	r.silent()
	if r.ev(Event{Kind: EvPower, Power: PowerOn}); r.h.Phase != PhaseGrace {
		t.Errorf("no active role: phase %s; want grace", r.h.Phase)
	}
	// Power loss also reports the host down.
	r = newRun(t)
	r.silent()
	if acts := r.ev(Event{Kind: EvPower, Power: PowerOff}); !has(acts, ActDown) {
		t.Errorf("power loss: %v; want down", kinds(acts))
	}
}
