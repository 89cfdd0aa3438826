package hostmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/inventory"
)

// Hosts is the inventory as host management uses it.
type Hosts interface {
	Host(ctx context.Context, id string) (inventory.Host, error)
	// UpdateHost applies fn to the stored host and stores the result,
	// retrying if another writer got there first.
	UpdateHost(ctx context.Context, id string, fn func(*inventory.Host) error) (inventory.Host, error)
}

// Alarms raises, clears and logs (faultmgr.Manager).
type Alarms interface {
	Raise(ctx context.Context, id, entity string, fields map[string]string) (faultmgr.Alarm, bool, error)
	Clear(ctx context.Context, id, entity string) (bool, error)
	Log(ctx context.Context, id, entity string, fields map[string]string) (faultmgr.Event, error)
}

// BMC is a host's board management controller.
type BMC interface {
	Power(ctx context.Context) (Power, error)
	PowerOn(ctx context.Context) error
	PowerOff(ctx context.Context) error
	Reset(ctx context.Context) error
	PowerCycle(ctx context.Context) error
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Site   string
	Timing Timing
	Hosts  Hosts
	Alarms Alarms
	// BMC returns a host's BMC client, or nil when it has none: a silent
	// host without one is never confirmed, so never recovered by force.
	BMC func(hostID string) BMC
	// AgentReboot asks a host's agent to reboot it; nil: not possible.
	AgentReboot func(ctx context.Context, hostID string) error
	// WithdrawCommands drops a host's commands its agent has not taken
	// yet (recovery ended, the host was locked, MNFA began).
	WithdrawCommands func(hostID string)
	// MNFAHold bounds an MNFA episode: hosts still silent after it are
	// confirmed through their BMCs as usual (several hosts can truly lose
	// power together). Default 2 min.
	MNFAHold time.Duration
	// HoldsActive reports whether a host runs an active service member a
	// standby can take over (servicemgr): such a host is fenced at once
	// when it falls silent with power on. Nil: none does.
	HoldsActive func(hostID string) bool
	// HostDown tells service management a host is confirmed down (its
	// BMC read back off). Nil: nobody listens.
	HostDown func(hostID, reason string)
	// FenceConfirm bounds how long a fence reads the power back after the
	// power-off; default 10 s.
	FenceConfirm time.Duration
	Logger       *slog.Logger
	// CallTimeout bounds one BMC call (both protocols of a dynamic BMC);
	// default 45 s.
	CallTimeout time.Duration
}

// Runner feeds observations of every host to the recovery machine, one at
// a time, and carries out what it decides: it keeps availability and
// heartbeat in the inventory, raises and clears alarms, logs each step,
// and calls BMCs (asynchronously: a slow BMC never holds another host).
type Runner struct {
	cfg   RunnerConfig
	m     *Machine
	in    chan input
	local []input       // inputs Run gives itself: handled after the current one
	done  chan struct{} // closed when Run returns: senders stop waiting
	hosts map[string]*Host
	mnfa  MNFA
	began time.Time                     // when the MNFA episode began
	calls map[string]context.CancelFunc // per host: its BMC calls in flight
}

type input struct {
	host   string
	ev     Event
	track  []heartbeat.Network // track: start (non-nil) or stop (forget)
	forget bool
}

// NewRunner returns a runner; Run must be running.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Hosts == nil || cfg.Alarms == nil || cfg.Logger == nil {
		return nil, errors.New("hostmgr: Hosts, Alarms and Logger are required")
	}
	if cfg.BMC == nil {
		cfg.BMC = func(string) BMC { return nil }
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 45 * time.Second
	}
	if cfg.MNFAHold == 0 {
		cfg.MNFAHold = 2 * time.Minute
	}
	if cfg.HoldsActive == nil {
		cfg.HoldsActive = func(string) bool { return false }
	}
	if cfg.HostDown == nil {
		cfg.HostDown = func(string, string) {}
	}
	if cfg.FenceConfirm == 0 {
		cfg.FenceConfirm = 10 * time.Second
	}
	if cfg.WithdrawCommands == nil {
		cfg.WithdrawCommands = func(string) {}
	}
	return &Runner{cfg: cfg, m: NewMachine(cfg.Timing), in: make(chan input, 4096), done: make(chan struct{}),
		hosts: map[string]*Host{}, calls: map[string]context.CancelFunc{}}, nil
}

// send queues an input, unless Run has stopped.
func (r *Runner) send(in input) {
	select {
	case r.in <- in:
	case <-r.done:
	}
}

// Track watches a host pulsed on networks: new ones start ok, ones no
// longer pulsed are dropped.
func (r *Runner) Track(hostID string, networks []heartbeat.Network) {
	r.send(input{host: hostID, track: networks})
}

// Forget stops watching a host (deleted).
func (r *Runner) Forget(hostID string) { r.send(input{host: hostID, forget: true}) }

// Heartbeat passes a heartbeat change on (heartbeat.Monitor's OnChange).
func (r *Runner) Heartbeat(ch heartbeat.Change) {
	r.send(input{host: ch.Host.String(), ev: Event{Kind: EvHeartbeat, Network: ch.Network, State: ch.State}})
}

// Event passes an operator's action on (lock, unlock, power-off, power-on).
func (r *Runner) Event(hostID string, ev Event) { r.send(input{host: hostID, ev: ev}) }

// Run handles inputs and phase timers until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	defer close(r.done)
	defer func() {
		for _, cancel := range r.calls {
			cancel()
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-r.in:
			r.handle(ctx, in)
		case now := <-tick.C:
			if r.mnfa.Active() && now.Sub(r.began) > r.cfg.MNFAHold {
				r.cfg.Logger.Warn("MNFA held longer than its bound; confirming silent hosts through their BMCs", "hold", r.cfg.MNFAHold)
				r.mnfa.End()
				r.mnfaEnded(ctx)
			}
			for id, h := range r.hosts {
				if !h.Deadline.IsZero() && !now.Before(h.Deadline) {
					r.step(ctx, id, Event{Kind: EvTimer})
				}
			}
		}
		for len(r.local) > 0 { // what handling the input gave itself
			in := r.local[0]
			r.local = r.local[1:]
			r.handle(ctx, in)
		}
	}
}

func (r *Runner) handle(ctx context.Context, in input) {
	switch {
	case in.forget:
		if h := r.hosts[in.host]; h != nil {
			if r.mnfa.Back(h.Name) {
				r.mnfaEnded(ctx)
			}
		}
		delete(r.hosts, in.host)
	case in.track != nil:
		if h := r.hosts[in.host]; h != nil {
			keep := map[heartbeat.Network]heartbeat.State{}
			for _, n := range in.track { // networks still pulsed keep their state; new ones start ok
				st, ok := h.Heartbeat[n]
				if !ok {
					st = heartbeat.OK
				}
				keep[n] = st
			}
			h.Heartbeat = keep
			return
		}
		hb := map[heartbeat.Network]heartbeat.State{}
		for _, n := range in.track {
			hb[n] = heartbeat.OK
		}
		inv, err := r.cfg.Hosts.Host(ctx, in.host)
		if err != nil {
			r.cfg.Logger.Error("host management: cannot read a host to watch", "host", in.host, "err", err)
			return
		}
		h := &Host{Name: inv.Name, Admin: inv.Administrative, Avail: inv.Availability, Heartbeat: hb}
		// Where recovery stopped for good survives a controller restart:
		// a gave-up host is not escalated again, an operator's power-off
		// stays off.
		switch p := Phase(inv.Recovery.Phase); p {
		case PhaseGaveUp, PhaseOperatorOff:
			h.Phase = p
		}
		r.hosts[in.host] = h
	default:
		r.step(ctx, in.host, in.ev)
	}
}

// step applies ev to a host and carries out the machine's actions.
func (r *Runner) step(ctx context.Context, id string, ev Event) {
	h := r.hosts[id]
	if h == nil {
		return // not watched (yet, or any more)
	}
	inv, invErr := r.cfg.Hosts.Host(ctx, id)
	if invErr == nil {
		h.Name, h.Admin = inv.Name, inv.Administrative // renames and locks take effect
	}
	wasSilent := h.silent()
	h.HoldsActive = r.cfg.HoldsActive(id)
	next, acts, err := r.m.Step(*h, ev, time.Now())
	if err != nil {
		r.cfg.Logger.Error("host management refused an event", "host", h.Name, "err", err)
		return
	}
	before := *h
	*h = next
	if h.Phase != before.Phase || h.Admin == inventory.Locked || h.Phase == PhaseHold {
		switch h.Phase {
		case PhaseNone, PhaseHold, PhaseOperatorOff, PhaseGaveUp:
			// Nothing under way may still act: BMC calls in flight are
			// cancelled, commands the agent has not taken withdrawn.
			r.cancelCalls(id)
			r.cfg.WithdrawCommands(id)
		}
	}
	r.carryOut(ctx, id, acts)
	last := ""
	for _, a := range acts {
		switch a.Kind {
		case ActBMCPowerOn, ActBMCPowerOff, ActBMCReset, ActBMCCycle, ActAgentReboot, ActReadPower, ActFence:
			last = string(a.Kind)
		}
	}
	// The inventory follows the machine: written whenever it differs (a
	// failed write is retried at the host's next event).
	stale := invErr != nil || inv.Availability != h.Avail || inv.Recovery.Phase != string(h.Phase) ||
		inv.Heartbeat != (inventory.Heartbeat{Mgmt: hbString(h.Heartbeat, heartbeat.Mgmt), Cluster: hbString(h.Heartbeat, heartbeat.Cluster)})
	if before.Avail != h.Avail || !sameHB(before.Heartbeat, h.Heartbeat) || before.Phase != h.Phase || last != "" || stale {
		r.record(ctx, id, before.Avail, *h, last)
	}
	// MNFA: several hosts silent together hold everyone's recovery.
	switch silent := h.silent(); {
	case silent && !wasSilent:
		if r.mnfa.Silent(h.Name, time.Now()) {
			r.mnfaBegan(ctx)
		}
	case !silent && wasSilent:
		if r.mnfa.Back(h.Name) {
			r.mnfaEnded(ctx)
		}
	}
}

func sameHB(a, b map[heartbeat.Network]heartbeat.State) bool {
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

// cancelCalls cancels a host's BMC calls in flight.
func (r *Runner) cancelCalls(id string) {
	if cancel := r.calls[id]; cancel != nil {
		cancel()
		delete(r.calls, id)
	}
}

// callCtx is the context of a host's next BMC call: cancelled when its
// recovery ends or holds.
func (r *Runner) callCtx(ctx context.Context, id string) context.Context {
	cctx, cancel := context.WithCancel(ctx)
	if prev := r.calls[id]; prev != nil {
		r.calls[id] = func() { prev(); cancel() }
	} else {
		r.calls[id] = cancel
	}
	return cctx
}

func (r *Runner) mnfaBegan(ctx context.Context) {
	r.began = time.Now()
	r.cfg.Logger.Warn("MNFA: several hosts lost heartbeat together; holding destructive recovery")
	if _, _, err := r.cfg.Alarms.Raise(ctx, "200.012", "site="+r.cfg.Site, nil); err != nil {
		r.cfg.Logger.Error("raising 200.012 failed", "err", err)
	}
	for id := range r.hosts {
		r.step(ctx, id, Event{Kind: EvMNFA, MNFA: true})
	}
}

func (r *Runner) mnfaEnded(ctx context.Context) {
	r.cfg.Logger.Info("MNFA over")
	if _, err := r.cfg.Alarms.Clear(ctx, "200.012", "site="+r.cfg.Site); err != nil {
		r.cfg.Logger.Error("clearing 200.012 failed", "err", err)
	}
	for id := range r.hosts {
		r.step(ctx, id, Event{Kind: EvMNFA, MNFA: false})
	}
}

// record stores availability, heartbeat and recovery in the inventory.
func (r *Runner) record(ctx context.Context, id string, was inventory.Availability, h Host, lastAction string) {
	_, err := r.cfg.Hosts.UpdateHost(ctx, id, func(inv *inventory.Host) error {
		inv.Recovery.Phase = string(h.Phase)
		if lastAction != "" {
			now := time.Now().UTC()
			inv.Recovery.LastAction, inv.Recovery.LastActionAt = lastAction, &now
		}
		inv.Heartbeat = inventory.Heartbeat{Mgmt: hbString(h.Heartbeat, heartbeat.Mgmt), Cluster: hbString(h.Heartbeat, heartbeat.Cluster)}
		if inv.Availability != h.Avail && !inv.Availability.CanTo(h.Avail) && inv.Availability.CanTo(inventory.Online) {
			inv.Availability = inventory.Online // through online, as the availability table requires
		}
		if err := inv.SetAvailability(h.Avail); err != nil {
			return err
		}
		inv.Operational = inventory.Disabled
		if h.Admin == inventory.Unlocked && (h.Avail == inventory.Available || h.Avail == inventory.Degraded) {
			inv.Operational = inventory.Enabled
		}
		return nil
	})
	if err != nil {
		r.cfg.Logger.Error("recording a host's availability failed", "host", h.Name, "err", err)
		return
	}
	if was != h.Avail {
		r.log(ctx, h.Name, fmt.Sprintf("availability %s -> %s", was, h.Avail))
	}
}

func hbString(m map[heartbeat.Network]heartbeat.State, n heartbeat.Network) string {
	if s, ok := m[n]; ok {
		return s.String()
	}
	return ""
}

func (r *Runner) log(ctx context.Context, host, detail string) {
	if _, err := r.cfg.Alarms.Log(ctx, "200.022", "host="+host, map[string]string{"detail": detail}); err != nil {
		r.cfg.Logger.Warn("host maintenance log entry not stored", "host", host, "detail", detail, "err", err)
	}
}

// carryOut does what the machine decided, in order; BMC calls run on
// their own, their answers coming back as events.
func (r *Runner) carryOut(ctx context.Context, id string, acts []Action) {
	h := r.hosts[id]
	entity := "host=" + h.Name
	for _, a := range acts {
		switch a.Kind {
		case ActLog:
			r.log(ctx, h.Name, a.Reason)
		case ActRaise:
			if _, _, err := r.cfg.Alarms.Raise(ctx, a.Alarm, entity, map[string]string{"detail": a.Reason}); err != nil {
				r.cfg.Logger.Error("raising a host alarm failed", "host", h.Name, "alarm", a.Alarm, "err", err)
			}
		case ActClear:
			if _, err := r.cfg.Alarms.Clear(ctx, a.Alarm, entity); err != nil {
				r.cfg.Logger.Error("clearing a host alarm failed", "host", h.Name, "alarm", a.Alarm, "err", err)
			}
		case ActReadPower:
			bmc := r.cfg.BMC(id)
			if bmc == nil {
				// No BMC, no confirmation: answered after this input.
				r.local = append(r.local, input{host: id, ev: Event{Kind: EvPower, Power: PowerUnreachable}})
				continue
			}
			name, base := h.Name, r.callCtx(ctx, id)
			go func() {
				cctx, cancel := context.WithTimeout(base, r.cfg.CallTimeout)
				defer cancel()
				p, err := bmc.Power(cctx)
				if err != nil {
					r.cfg.Logger.Warn("reading a host's power through its BMC failed", "host", name, "err", err)
					p = PowerUnreachable
				}
				select {
				case r.in <- input{host: id, ev: Event{Kind: EvPower, Power: p}}:
				case <-ctx.Done():
				}
			}()
		case ActBMCPowerOn, ActBMCPowerOff, ActBMCReset, ActBMCCycle:
			bmc := r.cfg.BMC(id)
			if bmc == nil {
				r.log(ctx, h.Name, string(a.Kind)+" not possible: no BMC")
				continue
			}
			call := map[ActionKind]func(context.Context) error{ActBMCPowerOn: bmc.PowerOn, ActBMCPowerOff: bmc.PowerOff,
				ActBMCReset: bmc.Reset, ActBMCCycle: bmc.PowerCycle}[a.Kind]
			name, kind, base := h.Name, a.Kind, r.callCtx(ctx, id)
			go func() {
				cctx, cancel := context.WithTimeout(base, r.cfg.CallTimeout)
				defer cancel()
				if err := call(cctx); err != nil {
					r.cfg.Logger.Warn("a BMC action failed", "host", name, "action", kind, "err", err)
				}
			}()
		case ActDown:
			r.cfg.Logger.Info("host confirmed down", "host", h.Name, "reason", a.Reason)
			r.cfg.HostDown(id, a.Reason)
		case ActFence:
			bmc := r.cfg.BMC(id)
			if bmc == nil {
				r.local = append(r.local, input{host: id, ev: Event{Kind: EvPower, Power: PowerUnreachable}})
				continue
			}
			r.log(ctx, h.Name, "fencing: BMC power-off, then reading the power back")
			name, base := h.Name, r.callCtx(ctx, id)
			go func() {
				p := r.fence(base, bmc, name)
				select {
				case r.in <- input{host: id, ev: Event{Kind: EvPower, Power: p}}:
				case <-ctx.Done():
				}
			}()
		case ActAgentReboot:
			// The agent takes it at its next poll, if it still can; if not,
			// the next step follows at the step timeout.
			if r.cfg.AgentReboot == nil {
				r.log(ctx, h.Name, "reboot through the agent not possible")
				continue
			}
			if err := r.cfg.AgentReboot(ctx, id); err != nil {
				r.cfg.Logger.Warn("asking the agent to reboot failed", "host", h.Name, "err", err)
			}
			r.log(ctx, h.Name, "reboot through the agent requested")
		}
	}
}

// fence powers a host off through its BMC and reads the power back until
// it reads off (or the bound passes): only a read-back off confirms it.
func (r *Runner) fence(ctx context.Context, bmc BMC, name string) Power {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	err := bmc.PowerOff(cctx)
	cancel()
	if err != nil {
		r.cfg.Logger.Warn("fencing: BMC power-off failed", "host", name, "err", err)
	}
	deadline := time.Now().Add(r.cfg.FenceConfirm)
	for {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		p, err := bmc.Power(cctx)
		cancel()
		if err == nil && p == PowerOff {
			return PowerOff
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			if err != nil {
				r.cfg.Logger.Warn("fencing: reading the power back failed", "host", name, "err", err)
				return PowerUnreachable
			}
			return p
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}
