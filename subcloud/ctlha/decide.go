package ctlha

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Role is a controller's role in the pair, as the runner holds it and as
// its heartbeats announce it.
type Role string

const (
	// RoleStarting: just started (or a dead-office recovery), no role yet.
	RoleStarting Role = "starting"
	// RoleStandby: database hot standby of the peer.
	RoleStandby Role = "standby"
	// RoleTakingOver: promoting the database and claiming the address.
	// The peer treats it as active.
	RoleTakingOver Role = "taking-over"
	// RoleActive: database primary, serving the API on the floating
	// address.
	RoleActive Role = "active"
	// RoleSteppingDown: has stopped accepting writes and released the
	// floating address; its database is becoming the peer's standby.
	RoleSteppingDown Role = "stepping-down"
)

// transitions lists the roles the runner may move to from each role. A
// process restart begins at RoleStarting whatever the role was.
var transitions = map[Role][]Role{
	RoleStarting:     {RoleStandby, RoleTakingOver, RoleActive},
	RoleStandby:      {RoleTakingOver},
	RoleTakingOver:   {RoleActive, RoleStandby},
	RoleActive:       {RoleSteppingDown},
	RoleSteppingDown: {RoleStandby},
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { _, ok := transitions[r]; return ok }

// claimsActivity reports whether a controller in role r acts, or is about
// to act, as the active one.
func (r Role) claimsActivity() bool { return r == RoleActive || r == RoleTakingOver }

// CanTransition reports whether the runner may move from one role to
// another.
func CanTransition(from, to Role) bool { return slices.Contains(transitions[from], to) }

// Network names one of the site networks the controllers share.
type Network string

const (
	NetMgmt    Network = "mgmt"
	NetCluster Network = "cluster"
)

// Power is a BMC's power reading.
type Power string

const (
	PowerOn      Power = "on"
	PowerOff     Power = "off"
	PowerUnknown Power = "unknown"
)

// Verdict is the witness's word about the peer.
type Verdict string

const (
	VerdictUnknown   Verdict = "unknown"
	VerdictPeerAlive Verdict = "peer-alive" // the peer renewed its lease within the TTL
	VerdictPeerLost  Verdict = "peer-lost"  // the peer's lease expired
)

// Mode is how the pair arbitrates.
type Mode string

const (
	// ModeDuplex: epochs in the replicated database row, countersigned by
	// the central witness; a BMC fencing race when the witness is away.
	ModeDuplex Mode = "duplex"
	// ModeMultiServer: epochs in etcd (three members); the quorum decides.
	ModeMultiServer Mode = "multi-server"
)

// Timing holds the pair's timers. Zero fields take the defaults.
type Timing struct {
	// LostAfter: the peer silent on every network this long is lost
	// (default 600 ms: 6 beats at the 100 ms period).
	LostAfter time.Duration
	// FenceDelay: the standby's delay before fencing the active in the
	// BMC race (default 2 s); the active's is 0.
	FenceDelay time.Duration
	// FenceTimeout: a power-off not read back off by then holds
	// (default 10 s).
	FenceTimeout time.Duration
	// LeaseTTL: the lease at the witness (default 3 s). Decide does not
	// read it: the runner turns it into WitnessView.LeaseValid.
	LeaseTTL time.Duration
}

// WithDefaults returns t with its zero fields set to the defaults.
func (t Timing) WithDefaults() Timing {
	if t.LostAfter <= 0 {
		t.LostAfter = 600 * time.Millisecond
	}
	if t.FenceDelay <= 0 {
		t.FenceDelay = 2 * time.Second
	}
	if t.FenceTimeout <= 0 {
		t.FenceTimeout = 10 * time.Second
	}
	if t.LeaseTTL <= 0 {
		t.LeaseTTL = 3 * time.Second
	}
	return t
}

// WitnessView is what a controller knows of the central witness (duplex).
type WitnessView struct {
	Configured bool
	// Reachable: the witness answers now; Verdict, Granted, Holder and
	// HolderEpoch are fresh. Implies LeaseValid.
	Reachable bool
	// LeaseValid: my own lease at the witness is still valid by my clock
	// (renewed less than LeaseTTL minus a safety margin ago). While it is,
	// the witness grants my peer nothing against me.
	LeaseValid bool
	// Held: the stretches of the last minutes in which my lease was
	// valid without a break, as ages. Beats sent in them told the peer
	// I held it.
	Held    []LeaseRun
	Verdict Verdict // about the peer
	// Granted: the witness granted me the next epoch (after a claim);
	// Holder is then me and HolderEpoch that epoch.
	Granted bool
	// Holder and HolderEpoch: the controller the witness last
	// countersigned an epoch for, and that epoch.
	Holder      string
	HolderEpoch uint64
}

// LeaseRun is a stretch of time in which a controller's witness lease was
// valid without a break, as ages: it began From ago and ended To ago (0:
// it still is).
type LeaseRun struct{ From, To time.Duration }

// heldThrough reports whether my lease was valid throughout the time from
// `from` ago to `to` ago (from >= to).
func (w WitnessView) heldThrough(from, to time.Duration) bool {
	for _, r := range w.Held {
		if r.From >= from && r.To <= to {
			return true
		}
	}
	return false
}

// BMCView is what a controller reads from its peer's BMC.
type BMCView struct {
	Configured bool
	Reachable  bool
	Power      Power
	// FenceIssuedAgo: how long ago this controller issued a power-off to
	// the peer (0: none issued).
	FenceIssuedAgo time.Duration
	// ReachableFor: how long the BMC has answered without a break (0
	// while it does not). A standby that comes back from its own
	// isolation reaches the BMC before the peer's beats arrive: its
	// fence delay counts from here too (D59).
	ReachableFor time.Duration
}

// EtcdView is what a controller knows of the site's etcd (multi-server).
type EtcdView struct {
	// Quorum: my member is part of a quorum (linearisable reads work).
	Quorum bool
	// Leader: the controller holding the election key ("" none).
	Leader string
	// LeaderEpoch: the epoch recorded in etcd, the current leader's or,
	// with no leader, the last one's.
	LeaderEpoch uint64
	// EpochHolder: the controller that committed LeaderEpoch.
	EpochHolder string
	// PeerLease: the peer's session lease is alive (it renews through a
	// quorum).
	PeerLease bool
}

// View is what one controller knows at one instant: Decide's input.
type View struct {
	Mode       Mode
	Self, Peer string
	Role       Role
	// Epoch: the highest epoch this controller has committed (active) or
	// replayed (standby).
	Epoch uint64
	// LSN: its last committed (active) or replayed (standby) WAL position.
	LSN uint64
	// Sync: as a standby, I was the synchronous standby and caught up when
	// the active was last heard (a former active that stepped down with no
	// successor holds every write it acknowledged: Sync); as the active,
	// the peer is my synchronous standby now.
	Sync bool
	// Async: as the active, replication was already switched to
	// asynchronous (the standby was confirmed failed).
	Async bool
	// PeerStreaming: as the active, the peer streams from my database and
	// has caught up with it once (pg_stat_replication state "streaming":
	// what PostgreSQL requires of a synchronous standby). Under steady
	// writes the LSN the peer last reported is always a little behind
	// mine; this is how the active knows it caught up all the same.
	PeerStreaming bool
	// PeerLinks: a fresh peer heartbeat per network.
	PeerLinks map[Network]bool
	// PeerLostFor: how long the peer has been silent on every network (0
	// if fresh on any; since start if never heard).
	PeerLostFor time.Duration
	// PeerBeat: the peer's last heartbeat (nil: never heard since start).
	PeerBeat *Beat
	// PeerUnaware: when last heard (by this process or, from the state
	// file, an earlier one) the peer was active and had not heard me hold
	// a witness lease. Cut off, it would stay active rather than step
	// down for a controller the witness grants (D73).
	PeerUnaware bool
	Witness     WitnessView
	BMC         BMCView
	Etcd        EtcdView // multi-server only
	// Force: the operator forced a takeover or swact (--force).
	Force bool
	// Swact: non-empty when the operator asked activity to move to this
	// controller.
	Swact  string
	Timing Timing
}

// Action is what Decide tells the runner to do.
type Action string

const (
	Stay     Action = "stay"      // keep the role; nothing to do
	Hold     Action = "hold"      // keep the role but do not proceed (an active's writes stay blocked)
	TakeOver Action = "take-over" // become active: claim the epoch (witness grant, etcd campaign, or locally), promote, claim the address
	Fence    Action = "fence"     // power the peer off through its BMC (if not issued yet) and read the power back
	GoAsync  Action = "go-async"  // new epoch, replication asynchronous (countersigned at the witness when it answers)
	GoSync   Action = "go-sync"   // replication synchronous again
	StepDown Action = "step-down" // stop writes, release the address, rejoin as standby
	Follow   Action = "follow"    // become (or stay) the peer's standby
	WaitPeer Action = "wait-peer" // no role yet: wait for the peer or the witness
)

// Alarms Decide raises (faultmgr/alarms.yaml).
const (
	// AlarmLostRedundancy: the standby failed; replication is
	// asynchronous (entity service-group=controller).
	AlarmLostRedundancy = "400.002"
	// AlarmHeld: the controllers cannot agree: takeover or writes held
	// (entity the site).
	AlarmHeld = "400.004"
)

// Decision is Decide's output.
type Decision struct {
	Action Action
	Reason string
	Row    string // the decision table row (docs/ha.md), e.g. "D21"
	// Alarm: raised while decisions name it; the runner clears it once a
	// decision no longer does ("" none).
	Alarm string
	// Force: taken only because the operator forced it.
	Force bool
	// Claim: ask the witness for the next epoch (with the BMC evidence
	// when the peer reads off).
	Claim bool
}

func (d Decision) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", d.Row, d.Action)
	if d.Force {
		b.WriteString(" (forced)")
	}
	if d.Claim {
		b.WriteString(" +claim")
	}
	if d.Alarm != "" {
		b.WriteString(" [" + d.Alarm + "]")
	}
	b.WriteString(": " + d.Reason)
	return b.String()
}

func decision(row string, a Action, alarm, format string, args ...any) Decision {
	return Decision{Action: a, Row: row, Alarm: alarm, Reason: fmt.Sprintf(format, args...)}
}

// Decide is the arbitration table of docs/ha.md. It is pure: the runner
// gathers the view, calls Decide, carries the decision out, and calls
// again on every change. The first matching row decides.
func Decide(v View) Decision {
	v.Timing = v.Timing.WithDefaults()
	if v.Witness.Reachable {
		v.Witness.LeaseValid = true
	}
	if msg := v.invalid(); msg != "" {
		return decision("D1", Hold, AlarmHeld, "invalid view: %s", msg)
	}
	p := peerOf(v)
	switch v.Role {
	case RoleSteppingDown:
		return decision("D2", StepDown, "", "stepping down: finish it")
	case RoleTakingOver:
		if p.seen && p.beat.Role.claimsActivity() && p.beat.Epoch >= v.Epoch {
			return decision("D3", StepDown, "", "abort the takeover: %s is %s at epoch %d (mine %d)", v.Peer, p.beat.Role, p.beat.Epoch, v.Epoch)
		}
		return decision("D4", TakeOver, "", "taking over: finish it")
	case RoleActive:
		return decideActive(v, p)
	case RoleStandby:
		return decideStandby(v, p)
	default: // RoleStarting; invalid() rejected the rest
		return decideStarting(v, p)
	}
}

func (v View) invalid() string {
	switch {
	case v.Self == "" || v.Peer == "":
		return "Self and Peer are required"
	case v.Self == v.Peer:
		return "Self and Peer are the same controller " + v.Self
	case !v.Role.Valid():
		return fmt.Sprintf("unknown role %q", v.Role)
	case v.Mode != ModeDuplex && v.Mode != ModeMultiServer:
		return fmt.Sprintf("unknown mode %q", v.Mode)
	}
	return ""
}

// peer is what the view says of the peer, derived once.
type peer struct {
	seen     bool      // a fresh beat on at least one network
	lost     bool      // silent on every network for at least LostAfter
	beat     *Beat     // its last beat (nil: never heard)
	stale    []Network // networks without a fresh beat, while seen
	peerName string
	silent   time.Duration
}

// lostText says how long the peer has been silent, for reasons.
func (p peer) lostText() string {
	return fmt.Sprintf("%s silent on every network for %s", p.peerName, p.silent)
}

func peerOf(v View) peer {
	p := peer{beat: v.PeerBeat}
	for n, up := range v.PeerLinks {
		if up {
			p.seen = true
		} else {
			p.stale = append(p.stale, n)
		}
	}
	slices.Sort(p.stale)
	if p.beat == nil { // links without a beat: inconsistent; trust nothing
		p.seen = false
	}
	p.lost = !p.seen && v.PeerLostFor >= v.Timing.LostAfter
	p.peerName, p.silent = v.Peer, v.PeerLostFor
	return p
}

// hadWitness reports whether the peer held a witness lease when last
// heard; never heard counts as yes (the cautious answer).
func (p peer) hadWitness() bool { return p.beat == nil || p.beat.Witness }

// peerDefers reports whether a lost peer, if it is alive and cut off from
// the witness too, defers to the witness rather than race at the BMC (D26
// and D57 read the last beat it heard from me): its beat b, the last I
// heard, says it had heard me hold a lease, and my lease held throughout
// the time around then, so the beats of mine it can have heard after
// that said so too. The peer is assumed to have stopped hearing me about
// when I stopped hearing it: a link that fails one way first is not
// covered (docs/ha.md). If it does not defer, why.
func peerDefers(v View, b *Beat) (bool, string) {
	switch {
	case b == nil:
		return false, v.Peer + " was never heard"
	case !b.PeerWitness:
		return false, "when last heard, " + v.Peer + " had not heard me hold a witness lease"
	case !v.Witness.heldThrough(v.PeerLostFor+v.Timing.LostAfter, max(0, v.PeerLostFor-v.Timing.LostAfter)):
		return false, "my witness lease was not valid throughout the time " + v.Peer + " was last heard"
	}
	return true, ""
}

// ranksAbove reports whether (epoch, lsn, name) a ranks above b: higher
// epoch, then higher LSN, then the lower name.
func ranksAbove(aEpoch, aLSN uint64, aName string, bEpoch, bLSN uint64, bName string) bool {
	if aEpoch != bEpoch {
		return aEpoch > bEpoch
	}
	if aLSN != bLSN {
		return aLSN > bLSN
	}
	return aName < bName
}

func (v View) ranksAbovePeer(b *Beat) bool {
	return ranksAbove(v.Epoch, v.LSN, v.Self, b.Epoch, b.LSN, v.Peer)
}

func (v View) bmcOff() bool {
	return v.BMC.Configured && v.BMC.Reachable && v.BMC.Power == PowerOff
}

func (v View) bmcOn() bool {
	return v.BMC.Configured && v.BMC.Reachable && v.BMC.Power == PowerOn
}

func (v View) fenceTimedOut() bool {
	return v.BMC.FenceIssuedAgo > 0 && v.BMC.FenceIssuedAgo >= v.Timing.FenceTimeout
}

// bmcText describes the BMC for reasons.
func (v View) bmcText() string {
	switch {
	case !v.BMC.Configured:
		return "no BMC configured"
	case !v.BMC.Reachable:
		return "its BMC unreachable"
	}
	return "its BMC reads " + string(v.BMC.Power)
}

func decideActive(v View, p peer) Decision {
	b := p.beat
	w := v.Witness
	ms := v.Mode == ModeMultiServer
	switch {
	case b != nil && b.Epoch > v.Epoch:
		// Whatever its role: a newer epoch means it held activity after
		// mine (a peer restarted since is starting, and waits for me: D83).
		return decision("D5", StepDown, "", "%s is %s at epoch %d, newer than mine (%d)", v.Peer, b.Role, b.Epoch, v.Epoch)
	case !ms && w.Reachable && w.Holder == v.Peer && w.HolderEpoch > v.Epoch:
		return decision("D6", StepDown, "", "the witness countersigned epoch %d for %s (mine %d)", w.HolderEpoch, v.Peer, v.Epoch)
	case ms && !v.Etcd.Quorum:
		return decision("D7", StepDown, "", "no etcd quorum: the election lease cannot be renewed")
	case ms && v.Etcd.Leader == v.Peer:
		return decision("D8", StepDown, "", "%s holds the election key", v.Peer)
	case ms && v.Etcd.Leader != v.Self:
		return decision("D9", StepDown, "", "the election key is gone: my term ended")
	case b != nil && b.Role == RoleActive && b.Epoch == v.Epoch:
		if !v.ranksAbovePeer(b) {
			return decision("D10", StepDown, AlarmHeld, "%s is active at my epoch %d and ranks higher (LSN %d vs %d, then name): I yield; writes of the two may have diverged", v.Peer, v.Epoch, b.LSN, v.LSN)
		}
		return decision("D11", Stay, AlarmHeld, "%s is active at my epoch %d and ranks lower (LSN %d vs %d, then name): it yields", v.Peer, v.Epoch, b.LSN, v.LSN)
	}
	if v.Swact == v.Peer && p.seen { // a swact to a peer not heard is moot: the rows below handle it
		ready := b.Role == RoleStandby
		why := ""
		switch {
		case b.Role != RoleStandby:
			why = fmt.Sprintf("%s is %s, not standby", v.Peer, b.Role)
		case !b.Sync:
			why = v.Peer + " is not my synchronous standby"
		case b.LSN < v.LSN:
			why = fmt.Sprintf("%s has replayed LSN %d of %d", v.Peer, b.LSN, v.LSN)
		default:
			return decision("D12", StepDown, "", "swact to %s: it is synchronous and caught up", v.Peer)
		}
		if ready && v.Force {
			d := decision("F1", StepDown, "", "forced swact to %s although %s: writes it lacks are lost", v.Peer, why)
			d.Force = true
			return d
		}
		return decision("D13", Stay, "", "swact to %s refused: %s", v.Peer, why)
	}
	if p.seen {
		if v.Async && b.Role == RoleStandby && (b.LSN >= v.LSN || v.PeerStreaming) {
			return decision("D14", GoSync, "", "%s is back and has replayed LSN %d (streaming: %t): synchronous again", v.Peer, b.LSN, v.PeerStreaming)
		}
		alarm, more := "", ""
		if v.Async {
			alarm, more = AlarmLostRedundancy, fmt.Sprintf("; replication asynchronous until it replays LSN %d (at %d)", v.LSN, b.LSN)
		}
		if len(p.stale) > 0 {
			return decision("D15", Stay, alarm, "%s is heard; lost on %v only: no action on one network%s", v.Peer, p.stale, more)
		}
		return decision("D15", Stay, alarm, "%s is heard%s", v.Peer, more)
	}
	if !p.lost {
		return decision("D16", Stay, "", "%s silent for %s, under %s: never act on heartbeat loss alone", v.Peer, v.PeerLostFor, v.Timing.LostAfter)
	}
	if v.Async {
		return decision("D17", Stay, AlarmLostRedundancy, "%s; replication already asynchronous", p.lostText())
	}
	if ms {
		if !v.Etcd.PeerLease || v.bmcOff() {
			return decision("D18", GoAsync, AlarmLostRedundancy, "%s, its etcd lease expired or %s: standby failed; replication asynchronous", p.lostText(), v.bmcText())
		}
		return decision("D19", Hold, AlarmHeld, "%s but its etcd lease is alive (cut off from me only): replication stays synchronous, writes block", p.lostText())
	}
	if w.Configured && w.Reachable {
		defers, why := peerDefers(v, b)
		switch {
		case v.bmcOff():
			return decision("D20", GoAsync, AlarmLostRedundancy, "%s and %s: standby failed; replication asynchronous (witness countersigns with the BMC evidence)", p.lostText(), v.bmcText())
		case w.Verdict == VerdictPeerLost && !defers && (b == nil || !b.NoPeerBMC):
			// The standby may be alive, cut off from me and from the
			// witness, and not know that I hold a lease: it would race at
			// the BMC (D58-D60) and take over without the writes I
			// acknowledge once asynchronous. It is powered off first.
			// (A standby that has no BMC of mine never races: D62.)
			switch {
			case v.bmcOn() && !v.fenceTimedOut():
				return decision("D80", Fence, "", "%s and its witness lease expired, but %s: fence it before going asynchronous (it could take over through the BMC race without my writes)", p.lostText(), why)
			case v.bmcOn():
				return decision("D81", Hold, AlarmHeld, "%s and its witness lease expired, but %s; the fence issued %s ago is not read back off: replication stays synchronous, writes block", p.lostText(), why, v.BMC.FenceIssuedAgo)
			}
			return decision("D81", Hold, AlarmHeld, "%s and its witness lease expired, but %s and %s: it could take over through the BMC race, so replication stays synchronous and writes block until it is heard or read off", p.lostText(), why, v.bmcText())
		case w.Verdict == VerdictPeerLost:
			return decision("D21", GoAsync, AlarmLostRedundancy, "%s and its witness lease expired: standby failed; replication asynchronous (witness countersigns)", p.lostText())
		case w.Verdict == VerdictPeerAlive:
			return decision("D22", Hold, AlarmHeld, "%s but the witness sees it alive: a partition between the controllers; replication stays synchronous, writes block until the link returns or its lease lapses", p.lostText())
		}
		return decision("D23", Hold, "", "%s; waiting for the witness's verdict", p.lostText())
	}
	if w.Configured && w.LeaseValid {
		if v.bmcOff() {
			return decision("D24", GoAsync, AlarmLostRedundancy, "%s and %s; the witness is silent but my lease is valid: standby failed; replication asynchronous (epoch registered at the witness later)", p.lostText(), v.bmcText())
		}
		return decision("D25", Hold, "", "%s; the witness is silent and my lease still valid: waiting for it or for the lease to lapse", p.lostText())
	}
	if w.Configured && p.hadWitness() {
		return decision("D26", StepDown, AlarmHeld, "%s; my witness lease lapsed while %s still held one when last heard: it may be taking over through the witness", p.lostText(), v.Peer)
	}
	// The BMC race.
	arb := "no witness"
	if w.Configured {
		arb = "the witness unreachable (the standby had no lease either)"
	}
	switch {
	case v.bmcOff():
		return decision("D27", GoAsync, AlarmLostRedundancy, "%s, %s and %s: standby failed; replication asynchronous", p.lostText(), arb, v.bmcText())
	case v.bmcOn() && !v.fenceTimedOut():
		return decision("D28", Fence, "", "%s, %s and %s: fence it (the active's fence delay is 0)", p.lostText(), arb, v.bmcText())
	case v.bmcOn():
		return decision("D29", Hold, AlarmHeld, "%s, %s; the fence issued %s ago is not read back off: writes block", p.lostText(), arb, v.BMC.FenceIssuedAgo)
	}
	if w.Configured {
		return decision("D30", Hold, AlarmHeld, "cannot confirm the standby's state: witness unreachable and %s; writes block", v.bmcText())
	}
	return decision("D30", Hold, AlarmHeld, "cannot confirm the standby's state: no witness and no BMC (%s); writes block", v.bmcText())
}

// refuse returns a hold that the operator's --force turns into a forced
// takeover (F2: fence first when the BMC can; F3: take over).
func refuse(v View, row string, a Action, alarm, format string, args ...any) Decision {
	d := decision(row, a, alarm, format, args...)
	if !v.Force {
		return d
	}
	if v.bmcOn() && !v.fenceTimedOut() {
		return Decision{Action: Fence, Row: "F2", Force: true, Reason: "forced takeover: fence " + v.Peer + " first (" + d.Row + ": " + d.Reason + ")"}
	}
	return Decision{Action: TakeOver, Row: "F3", Force: true, Reason: "forced takeover despite " + d.Row + ": " + d.Reason + "; acknowledged writes may be lost, and if " + v.Peer + " is alive both act as active"}
}

func decideStandby(v View, p peer) Decision {
	b := p.beat
	ms := v.Mode == ModeMultiServer
	if p.seen {
		switch {
		case b.Role.claimsActivity():
			if v.Swact == v.Self {
				return decision("D31", Stay, "", "swact to me: waiting for %s to step down", v.Peer)
			}
			return decision("D31", Stay, "", "%s is %s", v.Peer, b.Role)
		case v.Swact == v.Self && (b.Role == RoleStandby || b.Role == RoleSteppingDown) && v.LSN >= b.LSN:
			return decision("D32", TakeOver, "", "swact to me: %s stepped down and I replayed its LSN %d", v.Peer, b.LSN)
		case v.Swact == v.Self && b.Role == RoleSteppingDown:
			if v.Force {
				d := decision("F3", TakeOver, "", "forced swact: %s stepped down but I replayed LSN %d of %d: the rest is lost", v.Peer, v.LSN, b.LSN)
				d.Force = true
				return d
			}
			return decision("D33", Hold, "", "swact to me: replaying to %s's LSN %d (at %d)", v.Peer, b.LSN, v.LSN)
		case b.Role == RoleSteppingDown:
			return decision("D34", Stay, "", "%s is stepping down: waiting for it to settle", v.Peer)
		case v.Swact == v.Peer && b.LSN >= v.LSN:
			return decision("D35", Stay, "", "no active: the swact target %s takes over", v.Peer)
		// A swact target behind a peer that is a standby already cannot
		// catch up (nobody writes WAL): rank instead.
		case ms && (!v.Etcd.Quorum || v.Etcd.Leader == v.Peer):
			return decision("D36", Stay, "", "no active: no etcd quorum here, or %s holds the election key", v.Peer)
		case ms && v.Etcd.Leader == v.Self:
			// Both candidacies stay queued: when the active's process
			// restarts or resigns, the standby's wins, and the restarted
			// one follows the key (D66) whatever the ranking says.
			return decision("D79", TakeOver, "", "no active and I hold the election key (%s is %s)", v.Peer, b.Role)
		case v.ranksAbovePeer(b):
			return decision("D37", TakeOver, "", "no active: I rank above %s (epoch %d/%d, LSN %d/%d)", v.Peer, v.Epoch, b.Epoch, v.LSN, b.LSN)
		}
		return decision("D38", Stay, "", "no active: %s ranks above me (epoch %d/%d, LSN %d/%d) and takes over", v.Peer, b.Epoch, v.Epoch, b.LSN, v.LSN)
	}
	if !p.lost {
		return decision("D39", Stay, "", "%s silent for %s, under %s: never act on heartbeat loss alone", v.Peer, v.PeerLostFor, v.Timing.LostAfter)
	}
	if !v.Sync {
		if !v.Force {
			return decision("D40", Hold, AlarmHeld, "%s, but I was not its synchronous, caught-up standby: taking over would lose acknowledged writes (--force takes over anyway)", p.lostText())
		}
		d := standbyPeerLost(v, p)
		if (d.Action == TakeOver || d.Action == Fence) && !d.Force {
			d.Force = true
			d.Reason += "; forced although I was not the synchronous standby: writes I lack are lost"
		}
		return d
	}
	return standbyPeerLost(v, p)
}

// standbyPeerLost: the standby's rows once the active is lost (D41-D62).
func standbyPeerLost(v View, p peer) Decision {
	if v.Mode == ModeMultiServer {
		e := v.Etcd
		switch {
		case !e.Quorum:
			return decision("D41", Hold, AlarmHeld, "%s and no etcd quorum: cannot campaign", p.lostText())
		case e.LeaderEpoch > v.Epoch:
			return refuse(v, "D42", Hold, AlarmHeld, "%s; etcd holds epoch %d, newer than mine (%d): the active went on without me", p.lostText(), e.LeaderEpoch, v.Epoch)
		case e.Leader == v.Peer && v.bmcOff():
			return decision("D43", TakeOver, "", "%s and %s: revoke its election lease early and campaign", p.lostText(), v.bmcText())
		case e.Leader == v.Peer:
			return decision("D44", Hold, AlarmHeld, "%s but it still renews its election lease: cut off from me only", p.lostText())
		case e.Leader != v.Self:
			// Campaign first: when both controllers are standbys that lost
			// each other, etcd picks one, and only that one fences.
			d := decision("D45", Hold, "", "%s and its election lease expired: campaigning", p.lostText())
			d.Claim = true
			return d
		case v.bmcOn() && !v.fenceTimedOut():
			return decision("D46", Fence, "", "%s; I won the election and %s: fence it before taking over", p.lostText(), v.bmcText())
		}
		return decision("D47", TakeOver, "", "%s; I won the election (%s): take over", p.lostText(), v.bmcText())
	}
	w := v.Witness
	if w.Configured && w.Reachable {
		defers, why := peerDefers(v, p.beat)
		switch {
		case w.Holder != v.Self && w.HolderEpoch > v.Epoch:
			return refuse(v, "D48", Hold, AlarmHeld, "%s; the witness holds epoch %d for %s, newer than mine (%d): the active went on without me", p.lostText(), w.HolderEpoch, orNobody(w.Holder), v.Epoch)
		case w.Granted && v.bmcOn() && !v.fenceTimedOut():
			return decision("D49", Fence, "", "%s; the witness granted me the next epoch; %s: fence it before taking over", p.lostText(), v.bmcText())
		case w.Granted && (v.bmcOff() || defers):
			return decision("D50", TakeOver, "", "%s; the witness granted me the next epoch (%s)", p.lostText(), v.bmcText())
		case w.Granted:
			// An active cut off from me and from the witness steps down
			// only if it knows I hold a lease (D26); otherwise it stays
			// active, racing at the BMC or holding its writes.
			if v.bmcOn() {
				return refuse(v, "D82", Hold, AlarmHeld, "%s; the witness granted me the next epoch, but %s, and the fence issued %s ago is not read back off: no takeover", p.lostText(), why, v.BMC.FenceIssuedAgo)
			}
			return refuse(v, "D82", Hold, AlarmHeld, "%s; the witness granted me the next epoch, but %s and %s: it may still act as active; no takeover until it is heard or read off", p.lostText(), why, v.bmcText())
		case v.bmcOff():
			d := decision("D51", Hold, "", "%s and %s: claiming the epoch at the witness with the BMC evidence", p.lostText(), v.bmcText())
			d.Claim = true
			return d
		case w.Verdict == VerdictPeerLost:
			d := decision("D52", Hold, "", "%s and its witness lease expired: claiming the epoch at the witness", p.lostText())
			d.Claim = true
			return d
		case w.Verdict == VerdictPeerAlive:
			return refuse(v, "D53", Hold, AlarmHeld, "%s but the witness sees it alive: cut off from me only; no takeover", p.lostText())
		}
		d := decision("D54", Hold, "", "%s; no verdict from the witness yet: claiming", p.lostText())
		d.Claim = true
		return d
	}
	if w.Configured && w.LeaseValid {
		if v.bmcOff() {
			return decision("D55", TakeOver, "", "%s and %s; the witness is silent but my lease is valid, so the active cannot have gone on without me: take over (epoch registered at the witness later)", p.lostText(), v.bmcText())
		}
		return decision("D56", Hold, "", "%s; the witness is silent and my lease still valid: waiting for it or for the lease to lapse", p.lostText())
	}
	if w.Configured && p.hadWitness() {
		return refuse(v, "D57", Hold, AlarmHeld, "%s; my witness lease lapsed while %s held one when last heard: it may have gone asynchronous through the witness; deferring to it", p.lostText(), v.Peer)
	}
	// The BMC race.
	arb := "no witness"
	if w.Configured {
		arb = "the witness unreachable (the active had no lease either)"
	}
	switch {
	case v.bmcOff():
		return decision("D58", TakeOver, "", "%s, %s and %s: take over", p.lostText(), arb, v.bmcText())
	case v.bmcOn() && (v.PeerLostFor < v.Timing.LostAfter+v.Timing.FenceDelay || v.BMC.ReachableFor < v.Timing.FenceDelay):
		return decision("D59", Hold, "", "%s, %s and %s (answering for %s): the standby's fence delay (%s) runs first", p.lostText(), arb, v.bmcText(), v.BMC.ReachableFor, v.Timing.FenceDelay)
	case v.bmcOn() && !v.fenceTimedOut():
		return decision("D60", Fence, "", "%s, %s and %s: fence it, then take over", p.lostText(), arb, v.bmcText())
	case v.bmcOn():
		return refuse(v, "D61", Hold, AlarmHeld, "%s, %s; the fence issued %s ago is not read back off: no takeover", p.lostText(), arb, v.BMC.FenceIssuedAgo)
	}
	if w.Configured {
		return refuse(v, "D62", Hold, AlarmHeld, "witness unreachable and %s: the standby does not take over", v.bmcText())
	}
	return refuse(v, "D62", Hold, AlarmHeld, "no witness and no BMC (%s): the standby does not take over", v.bmcText())
}

func decideStarting(v View, p peer) Decision {
	b := p.beat
	ms := v.Mode == ModeMultiServer
	switch {
	case p.seen && b.Role.claimsActivity() && b.Epoch < v.Epoch:
		// Following would rewind my newer history away. It is stale (back
		// from a hang, say) and steps down on my beats (D5).
		return decision("D83", WaitPeer, "", "%s is %s at epoch %d, older than mine (%d): waiting for it to step down", v.Peer, b.Role, b.Epoch, v.Epoch)
	case p.seen && b.Role.claimsActivity():
		return decision("D63", Follow, "", "%s is %s at epoch %d: join as its standby", v.Peer, b.Role, b.Epoch)
	case p.seen && b.Role == RoleSteppingDown:
		return decision("D64", WaitPeer, "", "%s is stepping down: waiting for it to settle", v.Peer)
	case ms && !v.Etcd.Quorum:
		return decision("D65", WaitPeer, "", "no etcd quorum: nothing can be decided")
	case ms && v.Etcd.Leader == v.Peer:
		return decision("D66", Follow, "", "%s holds the election key", v.Peer)
	case ms && v.Etcd.Leader == v.Self:
		return decision("D67", TakeOver, "", "I hold the election key: resume")
	case p.seen && v.ranksAbovePeer(b):
		return decision("D68", TakeOver, "", "dead-office recovery: I rank above %s (epoch %d/%d, LSN %d/%d)", v.Peer, v.Epoch, b.Epoch, v.LSN, b.LSN)
	case p.seen:
		return decision("D69", Follow, "", "dead-office recovery: %s ranks above me (epoch %d/%d, LSN %d/%d)", v.Peer, b.Epoch, v.Epoch, b.LSN, v.LSN)
	case v.PeerLostFor < v.Timing.LostAfter:
		return decision("D70", WaitPeer, "", "listening for %s (%s so far)", v.Peer, v.PeerLostFor)
	}
	if ms {
		e := v.Etcd
		if e.Leader == "" && e.EpochHolder == v.Self && v.Epoch >= e.LeaderEpoch {
			return decision("D71", TakeOver, "", "%s not heard; I committed the latest epoch (%d): campaign", v.Peer, e.LeaderEpoch)
		}
		return refuse(v, "D72", WaitPeer, "", "%s not heard; etcd's epoch %d was committed by %s: the latest state may be its", v.Peer, e.LeaderEpoch, orNobody(e.EpochHolder))
	}
	w := v.Witness
	if w.Configured && w.Reachable {
		// Mine: the witness holds my epoch as the latest (or, on a new site,
		// none at all). Once it granted me the next, HolderEpoch is that.
		mine := w.Holder == v.Self || (w.Holder == "" && w.HolderEpoch == 0)
		if mine && (v.Epoch >= w.HolderEpoch || w.Granted) {
			switch {
			case !v.bmcOff() && (v.BMC.Configured || v.PeerUnaware):
				// Powered, or unknown: it may be an active cut off from me
				// that never heard my lease (D82's case), and it would race
				// or stay active. Without a BMC that can happen only if it
				// was, when last heard, an active that had not heard my lease.
				return refuse(v, "D73", WaitPeer, "", "%s not heard but %s (unaware of my lease when last heard: %t): it may be active and cut off; waiting", v.Peer, v.bmcText(), v.PeerUnaware)
			case w.Granted:
				return decision("D74", TakeOver, "", "%s not heard; the witness holds my epoch %d as the latest and granted me the next", v.Peer, w.HolderEpoch)
			case w.Verdict == VerdictPeerAlive:
				return decision("D75", WaitPeer, "", "%s not heard but renews at the witness: cut off from me; waiting", v.Peer)
			}
			d := decision("D76", WaitPeer, "", "%s not heard; the witness holds my epoch %d as the latest: claiming the next", v.Peer, w.HolderEpoch)
			d.Claim = true
			return d
		}
		return refuse(v, "D77", WaitPeer, "", "%s not heard; the witness holds epoch %d for %s (mine %d): the latest state is not mine", v.Peer, w.HolderEpoch, orNobody(w.Holder), v.Epoch)
	}
	return refuse(v, "D78", WaitPeer, AlarmHeld, "%s not heard and no witness answers: cannot tell who holds the latest state", v.Peer)
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}
