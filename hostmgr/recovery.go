// Package hostmgr is host maintenance at a site: it watches every host
// (heartbeat per network, the agent's reports, the BMC) and decides its
// availability and recovery as brief §4 specifies — never on heartbeat
// loss alone. The decision logic is pure (Machine.Step); the site
// controller feeds it observations and carries out the actions it returns.
package hostmgr

import (
	"fmt"
	"time"

	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/inventory"
)

// Phase is where the recovery of a host stands.
type Phase string

const (
	PhaseNone        Phase = ""             // in service, or nothing to do
	PhaseSuspect     Phase = "suspect"      // silent on every network: asking its BMC
	PhaseGrace       Phase = "grace"        // silent, BMC reads on: waiting G for it to return
	PhaseReboot      Phase = "reboot"       // asked the agent to reboot
	PhaseBMCReset    Phase = "bmc-reset"    // reset through the BMC
	PhasePowerCycle  Phase = "power-cycle"  // power-cycled through the BMC
	PhasePowerOn     Phase = "power-on"     // lost power: powering on through the BMC
	PhaseHold        Phase = "hold"         // MNFA, or the BMC cannot confirm: no destructive action
	PhaseGaveUp      Phase = "gave-up"      // failed: lock and unlock to retry
	PhaseOperatorOff Phase = "operator-off" // powered off by an operator (locked): stays off
	PhaseFence       Phase = "fence"        // silent with power on while holding an active service role: powering off, reading back off
)

// phaseMoves is the transition table of recovery: every move Step makes
// is listed here, and Step refuses any other (a programming error).
var phaseMoves = map[Phase][]Phase{
	PhaseNone:        {PhaseSuspect, PhaseHold, PhaseOperatorOff},
	PhaseSuspect:     {PhaseNone, PhaseGrace, PhaseFence, PhasePowerOn, PhaseHold, PhaseOperatorOff},
	PhaseFence:       {PhaseNone, PhasePowerOn, PhaseHold, PhaseOperatorOff},
	PhaseGrace:       {PhaseNone, PhaseReboot, PhaseHold, PhaseOperatorOff},
	PhaseReboot:      {PhaseNone, PhaseBMCReset, PhaseHold, PhaseOperatorOff},
	PhaseBMCReset:    {PhaseNone, PhasePowerCycle, PhaseHold, PhaseOperatorOff},
	PhasePowerCycle:  {PhaseNone, PhaseGaveUp, PhaseHold, PhaseOperatorOff},
	PhasePowerOn:     {PhaseNone, PhasePowerOn, PhaseGaveUp, PhaseHold, PhaseOperatorOff},
	PhaseHold:        {PhaseNone, PhaseSuspect, PhaseGrace, PhaseFence, PhasePowerOn, PhaseOperatorOff},
	PhaseGaveUp:      {PhaseNone, PhaseOperatorOff},
	PhaseOperatorOff: {PhaseNone},
}

// Power is a BMC's reading of a host's power.
type Power string

const (
	PowerOn          Power = "on"
	PowerOff         Power = "off"
	PowerUnreachable Power = "unreachable" // the BMC did not answer: no confirmation
)

// Timing bounds recovery.
type Timing struct {
	Grace        time.Duration // G: a silent host with power gets this long to return; default 5 s, never under 3 s
	StepTimeout  time.Duration // how long a reboot, reset or power-cycle gets to bring heartbeats back; default 60 s
	PowerOnTries int           // power-on attempts after a power loss; default 3
}

func (t *Timing) defaults() {
	if t.Grace == 0 {
		t.Grace = 5 * time.Second
	}
	t.Grace = max(t.Grace, 3*time.Second)
	if t.StepTimeout == 0 {
		t.StepTimeout = 60 * time.Second
	}
	if t.PowerOnTries == 0 {
		t.PowerOnTries = 3
	}
}

// Host is what the machine knows of one host.
type Host struct {
	Name      string
	Admin     inventory.AdminState
	Avail     inventory.Availability
	Phase     Phase
	Attempt   int       // power-on attempts in PhasePowerOn
	Deadline  time.Time // when the current phase times out (zero: none)
	Heartbeat map[heartbeat.Network]heartbeat.State
	// HoldsActive: the host runs an active service member that a standby
	// elsewhere can take over. Silent with power on, such a host is
	// fenced at once (BMC power-off, read back off) instead of getting
	// the grace period: its service cannot wait G.
	HoldsActive bool
}

// silent reports whether every network lost the host.
func (h Host) silent() bool {
	if len(h.Heartbeat) == 0 {
		return false
	}
	for _, s := range h.Heartbeat {
		if s != heartbeat.Lost {
			return false
		}
	}
	return true
}

// healthy reports whether every network hears the host.
func (h Host) healthy() bool {
	for _, s := range h.Heartbeat {
		if s != heartbeat.OK {
			return false
		}
	}
	return true
}

// Event is an observation or an operator's request.
type Event struct {
	Kind    EventKind
	Network heartbeat.Network // EvHeartbeat
	State   heartbeat.State   // EvHeartbeat
	Power   Power             // EvPower: the BMC's reading
	MNFA    bool              // EvMNFA: whether multi-node failure avoidance holds
}

// EventKind is the kind of an Event.
type EventKind int

const (
	EvHeartbeat EventKind = iota + 1 // a network's heartbeat state changed
	EvPower                          // the BMC answered a power read
	EvTimer                          // the phase deadline passed
	EvMNFA                           // the site entered or left MNFA
	EvLock                           // the operator locked the host
	EvUnlock                         // the operator unlocked the host
	EvPowerOff                       // the operator powered the locked host off
	EvPowerOn                        // the operator powered it on again
)

// ActionKind is what the site controller must do.
type ActionKind string

const (
	ActReadPower   ActionKind = "read-power" // ask the BMC; answer with EvPower
	ActBMCPowerOn  ActionKind = "bmc-power-on"
	ActBMCPowerOff ActionKind = "bmc-power-off"
	ActBMCReset    ActionKind = "bmc-reset"
	ActBMCCycle    ActionKind = "bmc-power-cycle"
	ActAgentReboot ActionKind = "agent-reboot"
	ActRaise       ActionKind = "raise" // Alarm on the host
	ActClear       ActionKind = "clear"
	ActLog         ActionKind = "log" // an event in the history: Reason
	// ActFence powers the host off through its BMC and reads the power
	// back until it is off; answer with EvPower (off once confirmed).
	ActFence ActionKind = "fence"
	// ActDown tells service management that the host is confirmed down
	// (BMC read back off): its members are gone. Reason says how.
	ActDown ActionKind = "down"
)

// Action is one thing to do.
type Action struct {
	Kind   ActionKind
	Alarm  string // ActRaise, ActClear: the alarm ID
	Reason string // ActLog, ActRaise fields
}

// Alarms the machine raises (faultmgr/alarms.yaml).
const (
	AlarmFailed      = "200.004" // failed and being auto-recovered
	AlarmMgmtLost    = "200.005" // management network heartbeat
	AlarmClusterLost = "200.009" // cluster network heartbeat
)

// Machine decides hosts' availability and recovery.
type Machine struct {
	t    Timing
	mnfa bool
}

// NewMachine returns a machine with timing t (zero fields: defaults).
func NewMachine(t Timing) *Machine {
	t.defaults()
	return &Machine{t: t}
}

// Step applies ev to h at now and returns the host's new state and the
// actions to carry out, in order.
func (m *Machine) Step(h Host, ev Event, now time.Time) (Host, []Action, error) {
	s := step{m: m, h: h, now: now}
	if s.h.Heartbeat == nil {
		s.h.Heartbeat = map[heartbeat.Network]heartbeat.State{}
	} else {
		s.h.Heartbeat = cloneHB(h.Heartbeat)
	}
	if err := s.apply(ev); err != nil {
		return h, nil, err
	}
	return s.h, s.acts, nil
}

func cloneHB(m map[heartbeat.Network]heartbeat.State) map[heartbeat.Network]heartbeat.State {
	out := make(map[heartbeat.Network]heartbeat.State, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

type step struct {
	m    *Machine
	h    Host
	now  time.Time
	acts []Action
}

func (s *step) do(a ...Action) { s.acts = append(s.acts, a...) }

// move changes phase through the transition table.
func (s *step) move(p Phase, deadline time.Duration) error {
	if p != s.h.Phase {
		ok := false
		for _, q := range phaseMoves[s.h.Phase] {
			ok = ok || q == p
		}
		if !ok {
			return fmt.Errorf("hostmgr: %s: no move from %q to %q", s.h.Name, s.h.Phase, p)
		}
		s.do(Action{Kind: ActLog, Reason: fmt.Sprintf("recovery %s -> %s", orNone(s.h.Phase), orNone(p))})
	}
	s.h.Phase = p
	s.h.Deadline = time.Time{}
	if deadline > 0 {
		s.h.Deadline = s.now.Add(deadline)
	}
	return nil
}

func orNone(p Phase) string {
	if p == PhaseNone {
		return "none"
	}
	return string(p)
}

func (s *step) apply(ev Event) error {
	switch ev.Kind {
	case EvMNFA:
		s.m.mnfa = ev.MNFA
		switch s.h.Phase {
		case PhaseSuspect, PhaseGrace, PhaseFence, PhaseReboot, PhaseBMCReset, PhasePowerCycle, PhasePowerOn:
			if ev.MNFA { // every destructive step waits for MNFA to end
				return s.move(PhaseHold, 0)
			}
		}
		if !ev.MNFA && s.h.Phase == PhaseHold && s.h.silent() {
			// MNFA over and the host still silent: now ask its BMC.
			return s.suspect()
		}
		return nil
	case EvLock:
		s.h.Admin = inventory.Locked
		if s.h.Phase != PhaseNone && s.h.Phase != PhaseOperatorOff {
			// A locked host is out of service: its recovery stops.
			if err := s.move(PhaseNone, 0); err != nil {
				return err
			}
			s.h.Attempt = 0
		}
		return s.settle()
	case EvUnlock:
		s.h.Admin = inventory.Unlocked
		if s.h.Phase == PhaseGaveUp || s.h.Phase == PhaseOperatorOff {
			if err := s.move(PhaseNone, 0); err != nil {
				return err
			}
			s.h.Attempt = 0
		}
		return s.settle()
	case EvPowerOff:
		if s.h.Admin != inventory.Locked {
			return fmt.Errorf("hostmgr: %s: power-off needs a locked host", s.h.Name)
		}
		if err := s.move(PhaseOperatorOff, 0); err != nil {
			return err
		}
		s.h.Avail = inventory.PowerOff
		s.do(Action{Kind: ActBMCPowerOff})
		return nil
	case EvPowerOn:
		if s.h.Phase == PhaseOperatorOff {
			if err := s.move(PhaseNone, 0); err != nil {
				return err
			}
		}
		return s.settle()
	case EvHeartbeat:
		s.h.Heartbeat[ev.Network] = ev.State
		return s.settle()
	case EvPower:
		return s.power(ev.Power)
	case EvTimer:
		if s.h.Deadline.IsZero() || s.now.Before(s.h.Deadline) {
			return nil // a stale timer
		}
		return s.timeout()
	}
	return fmt.Errorf("hostmgr: unknown event %d", ev.Kind)
}

// settle derives availability from the heartbeats and starts or ends
// recovery.
func (s *step) settle() error {
	h := &s.h
	if h.Phase == PhaseOperatorOff {
		return nil // stays off until an operator acts
	}
	if h.healthy() {
		if h.Phase != PhaseNone {
			s.do(Action{Kind: ActLog, Reason: "heard again on every network"})
		}
		if err := s.move(PhaseNone, 0); err != nil {
			return err
		}
		h.Attempt = 0
		h.Avail = inventory.Available
		if h.Admin == inventory.Locked {
			h.Avail = inventory.Online // in service only once unlocked
		}
		s.do(Action{Kind: ActClear, Alarm: AlarmFailed}, Action{Kind: ActClear, Alarm: AlarmMgmtLost},
			Action{Kind: ActClear, Alarm: AlarmClusterLost})
		return nil
	}
	if !h.silent() {
		// Heard on some network: degraded on the others, never a reboot.
		for n, st := range h.Heartbeat {
			id := AlarmMgmtLost
			if n == heartbeat.Cluster {
				id = AlarmClusterLost
			}
			if st == heartbeat.OK {
				s.do(Action{Kind: ActClear, Alarm: id})
			} else {
				s.do(Action{Kind: ActRaise, Alarm: id, Reason: st.String()})
			}
		}
		// Heard again on some network: whatever recovery was under way
		// stops (a host that answers is not reset or power-cycled).
		if err := s.move(PhaseNone, 0); err != nil {
			return err
		}
		h.Attempt = 0
		h.Avail = inventory.Degraded
		return nil
	}
	// Silent on every network.
	if h.Admin == inventory.Locked {
		// A locked host is out of service: observed, never recovered.
		h.Avail = inventory.Offline
		return nil
	}
	switch h.Phase {
	case PhaseNone:
		return s.suspect()
	default:
		return nil // recovery is under way
	}
}

// suspect starts confirming a silent host through its BMC, unless MNFA
// holds destructive actions.
func (s *step) suspect() error {
	if s.m.mnfa {
		if err := s.move(PhaseHold, 0); err != nil {
			return err
		}
		s.do(Action{Kind: ActLog, Reason: "silent during MNFA: holding"})
		return nil
	}
	if err := s.move(PhaseSuspect, s.m.t.StepTimeout); err != nil {
		return err
	}
	s.do(Action{Kind: ActReadPower})
	return nil
}

// power acts on the BMC's answer.
func (s *step) power(p Power) error {
	h := &s.h
	switch h.Phase {
	case PhaseSuspect, PhaseHold, PhaseFence:
	default:
		return nil // only a pending confirmation uses the reading
	}
	if s.m.mnfa || h.Admin == inventory.Locked {
		return nil
	}
	if h.Phase == PhaseFence {
		if p != PowerOff {
			// Not confirmed off: nothing may take its role. Hold, and
			// confirm again at the step timeout.
			h.Avail = inventory.Failed
			s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "fencing did not confirm power off"})
			return s.move(PhaseHold, s.m.t.StepTimeout)
		}
		h.Avail = inventory.Failed
		s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "fenced: silent with power on while holding an active service role"},
			Action{Kind: ActDown, Reason: "fenced (BMC power-off, read back off)"})
		h.Attempt = 1
		if err := s.move(PhasePowerOn, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActBMCPowerOn})
		return nil
	}
	switch p {
	case PowerOff:
		// Power loss: failed at once, no reboot attempts; power it on.
		h.Avail = inventory.Failed
		s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "power loss"},
			Action{Kind: ActDown, Reason: "power loss (BMC reads off)"})
		h.Attempt = 1
		if err := s.move(PhasePowerOn, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActBMCPowerOn})
	case PowerOn:
		if h.HoldsActive {
			// The grace period does not protect a host whose active
			// service role a standby waits to take: fence it now.
			if err := s.move(PhaseFence, s.m.t.StepTimeout); err != nil {
				return err
			}
			s.do(Action{Kind: ActFence})
			return nil
		}
		return s.move(PhaseGrace, s.m.t.Grace)
	default:
		// No second channel: never act on heartbeat loss alone.
		h.Avail = inventory.Failed
		s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "silent; its BMC cannot confirm"})
		return s.move(PhaseHold, s.m.t.StepTimeout)
	}
	return nil
}

// timeout moves a phase whose deadline passed to the next step.
func (s *step) timeout() error {
	h := &s.h
	if h.Admin == inventory.Locked && h.Phase != PhaseOperatorOff {
		// Locked meanwhile: recovery stops, nothing destructive.
		return s.move(PhaseNone, 0)
	}
	if s.m.mnfa && h.Phase != PhaseSuspect && h.Phase != PhaseHold && h.Phase != PhaseGaveUp {
		// MNFA holds every destructive step; the host is confirmed anew
		// when it ends.
		return s.move(PhaseHold, 0)
	}
	switch h.Phase {
	case PhaseFence:
		// The fence never confirmed: hold, and ask again.
		h.Avail = inventory.Failed
		s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "fencing did not confirm power off"})
		if err := s.move(PhaseHold, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActReadPower})
	case PhaseSuspect:
		// The BMC never answered: hold, and ask again.
		if err := s.move(PhaseHold, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActReadPower})
	case PhaseHold:
		if s.m.mnfa {
			return nil
		}
		if err := s.move(PhaseSuspect, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActReadPower})
	case PhaseGrace:
		h.Avail = inventory.Failed
		s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: "silent with power on"})
		if err := s.move(PhaseReboot, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActAgentReboot})
	case PhaseReboot:
		if err := s.move(PhaseBMCReset, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActBMCReset})
	case PhaseBMCReset:
		if err := s.move(PhasePowerCycle, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActBMCCycle})
	case PhasePowerCycle:
		return s.giveUp("reboot, BMC reset and power-cycle did not bring it back")
	case PhasePowerOn:
		if h.Attempt >= s.m.t.PowerOnTries {
			return s.giveUp(fmt.Sprintf("%d power-on attempts through the BMC did not bring it back", h.Attempt))
		}
		h.Attempt++
		if err := s.move(PhasePowerOn, s.m.t.StepTimeout); err != nil {
			return err
		}
		s.do(Action{Kind: ActBMCPowerOn})
	}
	return nil
}

func (s *step) giveUp(why string) error {
	s.h.Avail = inventory.Failed
	if err := s.move(PhaseGaveUp, 0); err != nil {
		return err
	}
	s.do(Action{Kind: ActRaise, Alarm: AlarmFailed, Reason: why + "; lock and unlock to retry"})
	return nil
}
