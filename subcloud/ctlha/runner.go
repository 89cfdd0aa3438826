package ctlha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pgrepl"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/subcloud"
)

// Database is the controller's PostgreSQL node (pgrepl.Node).
type Database interface {
	Initialized() bool
	Bootstrap(ctx context.Context) error
	StartPrimary(ctx context.Context) error
	StartStandby(ctx context.Context, primary pgrepl.Peer) error
	CloneFrom(ctx context.Context, primary pgrepl.Peer) error
	Rejoin(ctx context.Context, primary pgrepl.Peer) error
	// Follow: Rejoin after a clean handoff (no rewind).
	Follow(ctx context.Context, primary pgrepl.Peer) error
	Promote(ctx context.Context) error
	Stop(ctx context.Context, mode pgrepl.StopMode) error
	SetSynchronous(ctx context.Context, standbys []string) error
	Status(ctx context.Context) (pgrepl.Status, error)
	DSN(db string) string
	EnsureDatabase(ctx context.Context, name string) error
}

// Addresses takes and releases the floating API address (agent.Platform).
type Addresses interface {
	AddAddress(ctx context.Context, iface, prefix string) error
	DelAddress(ctx context.Context, iface, prefix string) error
	Announce(ctx context.Context, iface, addr string) error
}

// PowerControl is the peer's BMC (hostmgr/bmc.Client through an adapter).
type PowerControl interface {
	PowerState(ctx context.Context) (Power, error)
	PowerOff(ctx context.Context) error
	PowerOn(ctx context.Context) error
}

// Site is the site controller run while this controller is active
// (subcloud.Subcloud).
type Site interface {
	Run(ctx context.Context) error
	Alarms() *faultmgr.Manager
	// Close releases a site controller that was built and will not run.
	Close()
}

// SiteFactory builds the site controller at epoch (subcloud.New with the
// HA hooks filled in), on the stores a StoreOpener opened when it did.
type SiteFactory func(ctx context.Context, ha *subcloud.HAConfig, dsn string, stores *SiteStores) (Site, error)

// SiteStores are the site controller's handles on the site's database,
// opened while the database is promoted: a backend's start costs tens of
// milliseconds on a busy controller, and sessions a standby accepted
// write once it is promoted. The site controller owns them once built.
type SiteStores struct {
	Shell, Ledger *sqldb.DB
}

// Close closes what was opened (a takeover that did not build the site).
func (s *SiteStores) Close() {
	if s == nil {
		return
	}
	for _, db := range []*sqldb.DB{s.Shell, s.Ledger} {
		if db != nil {
			db.Close()
		}
	}
}

// StoreOpener opens SiteStores on dsn.
type StoreOpener func(ctx context.Context, dsn string) (*SiteStores, error)

// Floating is the site controller's API address, held by the active.
type Floating struct {
	Interface string       // "mgmt"
	Prefix    netip.Prefix // e.g. 10.88.1.2/24
}

// Config configures one controller of the pair.
type Config struct {
	Mode       Mode
	Site       string
	Self, Peer string
	// Bootstrap: this controller creates the site's database at the
	// site's first start (the other clones it).
	Bootstrap bool
	DB        Database
	// PeerDB is how this controller's database reaches the peer's.
	PeerDB   pgrepl.Peer
	Database string // the site's database name; default "petrel"
	Beats    *Heartbeat
	Floating Floating
	Addrs    Addresses
	PeerBMC  PowerControl // nil: the peer has no BMC this controller can use
	Witness  WitnessClient
	Elector  Elector // multi-server: the etcd election; nil on duplex
	NewSite  SiteFactory
	// OpenStores, when set, opens the site controller's stores while a
	// takeover promotes the database.
	OpenStores StoreOpener
	// Warm, when set, runs once at the start: what building the site
	// controller can do ahead of a takeover.
	Warm   func() error
	Timing Timing
	Logger *slog.Logger
	// StateFile keeps the highest epoch this controller held or followed
	// across restarts (a power loss leaves the database stopped, and a
	// dead-office recovery ranks by it); "" keeps it in memory only.
	StateFile string
}

// WitnessClient is this controller's session with the central witness
// (subcloud/witness.Client); nil: none.
type WitnessClient interface {
	Set(role string, epoch, lsn uint64)
	// View: whether the witness answers, its verdict on the peer, the
	// holder of the latest epoch, and when it last answered.
	View(peer string) (reachable bool, verdict Verdict, holder string, holderEpoch uint64, at time.Time)
	// Claim asks for epoch; peerOff: the peer's BMC reads off (the
	// witness need not wait out its lease).
	Claim(ctx context.Context, epoch, lsn uint64, peerOff bool, reason string) (granted bool, why string, err error)
}

// Elector is the controllers' election in the site's etcd (multi-server):
// the leader is the active controller, the epoch its term's revision
// (EtcdElector).
type Elector interface {
	Run(ctx context.Context) error
	Campaign(ctx context.Context) (epoch uint64, err error)
	Resign(ctx context.Context) error
	Lost() <-chan struct{}
	View(ctx context.Context, peer string) EtcdView
	Record(ctx context.Context, epoch uint64, holder string) error
	// Evict removes the peer's candidacy at once (its host is confirmed
	// off): the election does not wait out its lease.
	Evict(ctx context.Context, name string) error
}

// Runner keeps one controller of the pair in its role.
type Runner struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	role    Role
	epoch   uint64
	async   bool   // replication switched to asynchronous (peer confirmed failed)
	swactTo string // the operator asked activity to move to the peer
	handoff string // stepped down for a swact to the peer (our beats say so)
	// handoffLSN is the stopped database's final LSN, what this controller
	// ranks by while handoff is set: restarted as the peer's standby, its
	// replay position is the end of that record, the peer's own, and a tie
	// would let the name decide who takes over.
	handoffLSN uint64
	forced     bool      // that swact was forced (--force)
	replLost   time.Time // active: when the peer, heard, stopped streaming from us
	replAlarm  bool      // 400.005 raised
	force      bool
	fenceAt    time.Time
	held       []heldRun // the witness lease's unbroken stretches, oldest first (leaseHistory)
	bmcSince   time.Time // the peer's BMC has answered reads since (zero: failing, or none made)
	bmcFailed  time.Time // its reads have failed since (zero: the last answered)
	reason     string    // the last decision's row, logged once
	failure    string    // the last failure, logged once
	site       context.CancelFunc
	siteErr    chan error
	alarmMgr   *faultmgr.Manager
	saved      uint64 // the epoch StateFile holds
	// peerUnaware: View.PeerUnaware; savedUnaware what StateFile holds.
	peerUnaware, savedUnaware bool
	runCtx                    context.Context // Run's, for the candidacy started later
	standOnce                 sync.Once
	since                     time.Time // in the current role
	wake                      chan struct{}

	dbMu     sync.Mutex
	siteConn *pgx.Conn // to the site's database, for the epoch row; kept open
	dbClosed bool      // Run ended: no new siteConn
}

// New checks the configuration.
func New(cfg Config) (*Runner, error) {
	if cfg.Self == "" || cfg.Peer == "" || cfg.Self == cfg.Peer {
		return nil, errors.New("ctlha: Self and Peer name two controllers")
	}
	if cfg.DB == nil || cfg.Beats == nil || cfg.NewSite == nil || cfg.Addrs == nil {
		return nil, errors.New("ctlha: DB, Beats, Addrs and NewSite are required")
	}
	if cfg.Mode == ModeMultiServer && cfg.Elector == nil {
		return nil, errors.New("ctlha: a multi-server pair needs its etcd election")
	}
	if cfg.Database == "" {
		cfg.Database = "petrel"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Timing = cfg.Timing.WithDefaults()
	r := &Runner{cfg: cfg, log: cfg.Logger, role: RoleStarting, wake: make(chan struct{}, 1), since: time.Now()}
	if err := r.loadState(); err != nil {
		return nil, err
	}
	return r, nil
}

// loadState reads StateFile, if any (a missing file is a first start).
func (r *Runner) loadState() error {
	if r.cfg.StateFile == "" {
		return nil
	}
	var st pairState
	if b, err := os.ReadFile(r.cfg.StateFile); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("ctlha: %s: %w", r.cfg.StateFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	r.epoch, r.saved = st.Epoch, st.Epoch
	r.peerUnaware, r.savedUnaware = st.PeerUnaware, st.PeerUnaware
	return nil
}

// pairState is what StateFile keeps.
type pairState struct {
	Epoch uint64 `json:"epoch"`
	// PeerUnaware: View.PeerUnaware, for the next process.
	PeerUnaware bool `json:"peer_unaware,omitempty"`
}

// saveLocked records a higher epoch, or a change of peerUnaware, in
// StateFile (durably: atomic write and fsync) before it is published.
func (r *Runner) saveLocked() {
	if r.cfg.StateFile == "" || (r.epoch <= r.saved && r.peerUnaware == r.savedUnaware) {
		return
	}
	b, _ := json.Marshal(pairState{Epoch: r.epoch, PeerUnaware: r.peerUnaware})
	if err := atomicfile.Write(r.cfg.StateFile, append(b, '\n'), 0o600); err != nil {
		r.log.Error("recording the epoch", "file", r.cfg.StateFile, "err", err)
		return
	}
	r.saved, r.savedUnaware = r.epoch, r.peerUnaware
}

// Role reports this controller's role and epoch.
func (r *Runner) Role() (Role, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role, r.epoch
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run keeps the role until ctx ends; then it stops the site controller
// and leaves the database as it is (a restart finds it).
func (r *Runner) Run(ctx context.Context) error {
	r.runCtx = ctx
	defer func() {
		r.dbMu.Lock()
		r.dbClosed = true
		if r.siteConn != nil {
			r.siteConn.Close(context.Background())
			r.siteConn = nil
		}
		r.dbMu.Unlock()
	}()
	defer r.stopSite()
	// The first beat already says where this controller stands (its
	// epoch, its database's position): a restarted active must not look
	// like an empty controller to its peer, which would rank above it.
	if err := r.start(ctx); err != nil {
		return err
	}
	r.publish(r.view(ctx))
	go func() { _ = r.cfg.Beats.Run(ctx) }()
	if r.cfg.Warm != nil {
		go func() {
			if err := r.cfg.Warm(); err != nil {
				r.log.Warn("warming up the site controller", "err", err)
			}
		}()
	}
	if r.cfg.DB.Initialized() || r.cfg.Bootstrap {
		r.stand()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		r.step(ctx)
		var lost <-chan struct{}
		if r.cfg.Elector != nil && r.isActive() {
			lost = r.cfg.Elector.Lost()
		}
		r.mu.Lock()
		siteErr := r.siteErr
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.wake:
		case <-r.cfg.Beats.Changed():
		case <-lost:
			r.stepDown(ctx, "my term in the controllers' election ended")
		case err := <-siteErr:
			r.stepDown(ctx, "the site controller stopped: "+fmt.Sprint(err))
		}
	}
}

// stand enters this controller's candidacy in the election (multi-server)
// once it has a copy of the site's database (or creates it): a controller
// that has none must never win the key, or the pair waits on a database
// nobody has.
func (r *Runner) stand() {
	if r.cfg.Elector == nil {
		return
	}
	r.standOnce.Do(func() {
		ctx := r.runCtx
		go func() { _ = r.cfg.Elector.Run(ctx) }()
	})
}

func (r *Runner) isActive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role == RoleActive
}

// start finds the database as a previous run left it: a primary left
// running must not serve before the pair decides, so it is stopped (it is
// promoted again, or rejoins as standby).
func (r *Runner) start(ctx context.Context) error {
	db := r.cfg.DB
	if !db.Initialized() {
		return nil
	}
	st, err := db.Status(ctx)
	if err != nil {
		return fmt.Errorf("ctlha: database status: %w", err)
	}
	r.mu.Lock()
	r.epoch = max(r.epoch, r.readEpochLocked(ctx))
	r.saveLocked()
	r.mu.Unlock()
	if st.Running && !st.InRecovery {
		r.log.Warn("found the database running as primary at start: stopping it until the pair decides")
		if err := db.Stop(ctx, pgrepl.StopFast); err != nil {
			return err
		}
	}
	return nil
}

// step decides once and acts.
func (r *Runner) step(ctx context.Context) {
	r.mu.Lock()
	swact := r.swactTo == r.cfg.Peer && r.role == RoleActive
	r.mu.Unlock()
	if swact {
		// Swact checked the standby (synchronous, streaming): stop
		// writing; the standby replays the rest and takes over.
		r.stepDown(ctx, "swact to "+r.cfg.Peer)
		return
	}
	v := r.view(ctx)
	d := Decide(v)
	r.publish(v)
	r.note(ctx, d)
	switch d.Action {
	case TakeOver:
		if err := r.takeOver(ctx, v, d); err != nil {
			r.hold(fmt.Sprintf("takeover (%s) failed: %v", d.Row, err))
			// A database promoted by the failed takeover must not stay a
			// primary: stopped, it rejoins (or is promoted again) later.
			if st, serr := r.cfg.DB.Status(ctx); serr == nil && st.Running && !st.InRecovery {
				if err := r.cfg.DB.Stop(context.WithoutCancel(ctx), pgrepl.StopFast); err != nil {
					r.log.Error("stopping the database after a failed takeover", "err", err)
				}
			}
			r.setRole(RoleStandby, v.Epoch)
		}
	case StepDown:
		r.stepDown(ctx, d.Row+": "+d.Reason)
	case Fence:
		r.fence(ctx, d)
	case GoAsync:
		r.goAsync(ctx, v, d)
	case GoSync:
		r.goSync(ctx)
	case Follow:
		r.follow(ctx, v)
	case Stay:
		if v.Role == RoleStandby {
			// A standby keeps following whoever is active (after a
			// swact or a failover it follows a new primary).
			r.follow(ctx, v)
		}
	case Hold, WaitPeer:
		if d.Claim {
			r.claim(ctx, v, d)
		}
		if d.Alarm == AlarmHeld && !keepsFence[d.Row] {
			r.unfence(ctx, d)
		}
	}
	if v.Role == RoleActive {
		r.countersign(ctx, v)
		r.watchReplication(ctx, v)
	}
}

// replicationGrace is how long a heard standby may not stream from the
// active before 400.005 (a rejoin, a clone of a large database, takes
// time; a standby that is not heard is 400.002's business).
const replicationGrace = 30 * time.Second

// watchReplication raises 400.005 while the standby is heard but does
// not stream from this active, and clears it when it does.
func (r *Runner) watchReplication(ctx context.Context, v View) {
	r.mu.Lock()
	lost, raised := r.replLost, r.replAlarm
	down := !lost.IsZero() && time.Since(lost) > replicationGrace && anyTrue(v.PeerLinks)
	r.replAlarm = down
	r.mu.Unlock()
	switch {
	case down && !raised:
		r.raise(ctx, AlarmReplicationStopped, "site="+r.cfg.Site,
			"the standby controller "+r.cfg.Peer+" is heard but has not streamed the database for "+time.Since(lost).Round(time.Second).String())
	case !down && raised:
		r.clear(ctx, AlarmReplicationStopped, "site="+r.cfg.Site)
	}
}

// AlarmReplicationStopped: the standby is heard but does not replicate.
const AlarmReplicationStopped = "400.005"

// note logs a decision when it changes and keeps the pair's alarms: the
// held alarm (400.004) while a decision carries it.
func (r *Runner) note(ctx context.Context, d Decision) {
	r.mu.Lock()
	changed := r.reason != d.Row
	r.reason = d.Row
	role := r.role
	r.mu.Unlock()
	if !changed {
		return
	}
	if d.Action == Stay && (d.Row == "D15" || d.Row == "D31" || d.Row == "D16" || d.Row == "D39") {
		r.log.Debug("decision", "role", role, "decision", d.String())
	} else {
		r.log.Info("decision", "role", role, "decision", d.String())
	}
	if d.Alarm == AlarmHeld {
		r.raise(ctx, AlarmHeld, "site="+r.cfg.Site, d.Row+": "+d.Reason)
	} else {
		r.clear(ctx, AlarmHeld, "site="+r.cfg.Site)
	}
}

// hold logs a failure once per reason.
func (r *Runner) hold(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != reason {
		r.failure = reason
		r.log.Warn("holding", "role", r.role, "reason", reason)
	}
}

func (r *Runner) setRole(role Role, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.role != role {
		r.log.Info("role", "from", r.role, "to", role, "epoch", epoch, "after", time.Since(r.since).Round(time.Millisecond))
		r.since = time.Now()
	}
	// Epochs only grow: the highest this controller held or followed.
	r.role, r.epoch, r.failure = role, max(epoch, r.epoch), ""
	r.saveLocked()
}

// view gathers what this controller knows now.
func (r *Runner) view(ctx context.Context) View {
	r.mu.Lock()
	v := View{Mode: r.cfg.Mode, Self: r.cfg.Self, Peer: r.cfg.Peer, Role: r.role, Epoch: r.epoch, Async: r.async,
		Force: r.force, Timing: r.cfg.Timing}
	fenceAt := r.fenceAt
	handoffLSN := r.handoffLSN
	r.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := r.cfg.DB.Status(sctx); err == nil {
		switch {
		case !st.Running:
			v.LSN = st.CheckpointLSN
		case st.InRecovery:
			v.LSN = st.ReplayLSN
		default:
			v.LSN = st.FlushLSN
			streaming := false
			for _, rep := range st.Replicas {
				if rep.Name == r.cfg.Peer && rep.State == "streaming" {
					streaming = true
					v.Sync = rep.SyncState == "sync"
				}
			}
			v.PeerStreaming = streaming
			r.mu.Lock()
			switch {
			case streaming:
				r.replLost = time.Time{}
			case r.replLost.IsZero():
				r.replLost = time.Now()
			}
			r.mu.Unlock()
		}
	}
	p := r.cfg.Beats.Peer()
	v.PeerLinks, v.PeerLostFor, v.PeerBeat = p.Links, p.LostFor, p.Last
	r.mu.Lock()
	if p.Last != nil {
		r.peerUnaware = p.Last.Role.claimsActivity() && !p.Last.PeerWitness
		r.saveLocked()
	}
	v.PeerUnaware = r.peerUnaware
	r.mu.Unlock()
	if p.Last != nil {
		if v.Role != RoleActive && p.Last.Role.claimsActivity() {
			// The standby was synchronous when the active last spoke.
			v.Sync = p.Last.Sync
		}
		if p.Last.Handoff == r.cfg.Self {
			v.Swact, v.Force = r.cfg.Self, p.Last.Force
		}
	}
	if w := r.cfg.Witness; w != nil {
		v.Witness.Configured = true
		reachable, verdict, holder, holderEpoch, at := w.View(r.cfg.Peer)
		v.Witness.Reachable, v.Witness.Verdict, v.Witness.Holder, v.Witness.HolderEpoch = reachable, verdict, holder, holderEpoch
		v.Witness.LeaseValid = reachable || (!at.IsZero() && time.Since(at) < v.Timing.LeaseTTL/2)
		v.Witness.Granted = holder == r.cfg.Self && holderEpoch > v.Epoch
		r.mu.Lock()
		v.Witness.Held = r.leaseHistory(at, v.Timing.LeaseTTL/2, time.Now())
		r.mu.Unlock()
	}
	if b := r.cfg.PeerBMC; b != nil {
		v.BMC.Configured = true
		if v.PeerLostFor > 0 || v.Role == RoleStarting || !fenceAt.IsZero() {
			bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			pw, err := b.PowerState(bctx)
			cancel()
			v.BMC.Reachable, v.BMC.Power = err == nil, pw
			if err != nil {
				v.BMC.Power = PowerUnknown
			}
			r.mu.Lock()
			switch {
			case err != nil && r.bmcFailed.IsZero():
				r.bmcFailed = time.Now()
			case err != nil && time.Since(r.bmcFailed) > bmcFlaky:
				r.bmcSince = time.Time{}
			case err == nil:
				r.bmcFailed = time.Time{}
				if r.bmcSince.IsZero() {
					r.bmcSince = time.Now()
				}
			}
			v.BMC.ReachableFor = sinceOrZero(r.bmcSince)
			r.mu.Unlock()
		} else {
			// Not read while the peer is heard: the next read starts
			// afresh (its fence delay counts from there, D59).
			r.mu.Lock()
			r.bmcSince, r.bmcFailed = time.Time{}, time.Time{}
			r.mu.Unlock()
		}
		if !fenceAt.IsZero() {
			v.BMC.FenceIssuedAgo = time.Since(fenceAt)
		}
	}
	if e := r.cfg.Elector; e != nil {
		ectx, cancel := context.WithTimeout(ctx, time.Second)
		v.Etcd = e.View(ectx, r.cfg.Peer)
		cancel()
	}
	if handoffLSN != 0 {
		v.LSN = handoffLSN // see Runner.handoffLSN
	}
	if v.PeerLostFor == 0 && !fenceAt.IsZero() && v.PeerBeat != nil {
		// The peer is heard again: a fence issued earlier is over (it
		// was powered on again), and the next one must be issued anew.
		r.mu.Lock()
		r.fenceAt = time.Time{}
		r.mu.Unlock()
		v.BMC.FenceIssuedAgo = 0
	}
	return v
}

// bmcFlaky is how long a peer's BMC may fail reads before it counts as
// unreachable since (BMC.ReachableFor starts over): a lost UDP exchange now
// and then does not restart the standby's fence delay.
const bmcFlaky = time.Second

// heldRun is a stretch in which the witness lease was valid without a
// break: answers came at most the validity apart.
type heldRun struct{ from, to time.Time } // to: the lease's end by the last answer

// heldFor is how long the runner keeps lease history: more than any
// PeerLostFor a decision looks back across.
const heldFor = 10 * time.Minute

// leaseHistory records the witness's last answer at (the lease is valid
// for validity after each answer) and returns the stretches of valid lease
// as Decide reads them. Answers the runner did not see (between two
// views) only extend the lease: missing them errs on the short side.
// r.mu is held.
func (r *Runner) leaseHistory(at time.Time, validity time.Duration, now time.Time) []LeaseRun {
	if !at.IsZero() {
		end := at.Add(validity)
		if k := len(r.held) - 1; k >= 0 && !at.After(r.held[k].to) {
			if end.After(r.held[k].to) {
				r.held[k].to = end
			}
		} else {
			r.held = append(r.held, heldRun{from: at, to: end})
		}
	}
	for len(r.held) > 0 && (now.Sub(r.held[0].to) > heldFor || len(r.held) > 64) {
		r.held = r.held[1:]
	}
	out := make([]LeaseRun, 0, len(r.held))
	for _, h := range r.held {
		if h.from.After(now) {
			continue
		}
		out = append(out, LeaseRun{From: now.Sub(h.from), To: max(0, now.Sub(h.to))})
	}
	return out
}

// sinceOrZero is the time since t, or 0 for the zero time.
func sinceOrZero(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return time.Since(t)
}

// publish tells the peer and the witness where this controller stands.
func (r *Runner) publish(v View) {
	r.mu.Lock()
	b := BeatState{Role: r.role, Epoch: r.epoch, LSN: v.LSN, Sync: v.Sync, Witness: v.Witness.LeaseValid,
		PeerWitness: v.PeerBeat == nil || v.PeerBeat.Witness, NoPeerBMC: r.cfg.PeerBMC == nil, Handoff: r.handoff,
		Force: r.handoff != "" && r.forced}
	r.mu.Unlock()
	r.cfg.Beats.Set(b)
	if r.cfg.Witness != nil {
		r.cfg.Witness.Set(witnessRole(b.Role), b.Epoch, b.LSN)
	}
}

// witnessRole is a role as the witness knows them.
func witnessRole(r Role) string {
	switch r {
	case RoleActive, RoleTakingOver:
		return "active"
	case RoleStandby, RoleSteppingDown:
		return "standby"
	}
	return "starting"
}

// claim asks for the next epoch: at the witness (duplex) or by winning
// the election (multi-server; the candidacy is queued already).
func (r *Runner) claim(ctx context.Context, v View, d Decision) {
	if r.cfg.Elector != nil {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, _ = r.cfg.Elector.Campaign(cctx)
		cancel()
		return
	}
	w := r.cfg.Witness
	if w == nil || !v.Witness.Reachable || v.Witness.Granted {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	ok, why, err := w.Claim(cctx, max(v.Epoch, v.Witness.HolderEpoch)+1, v.LSN, v.BMC.Power == PowerOff, d.Row+": "+d.Reason)
	cancel()
	switch {
	case err != nil:
		r.hold("witness claim: " + err.Error())
	case !ok:
		r.hold("the witness refused the claim: " + why)
	default:
		r.log.Info("the witness granted the next epoch", "row", d.Row)
		r.poke()
	}
}

// countersign registers at the witness an epoch taken while it was away
// (takeover or asynchronous switch on BMC evidence).
func (r *Runner) countersign(ctx context.Context, v View) {
	w := r.cfg.Witness
	if w == nil || !v.Witness.Reachable || (v.Witness.Holder == r.cfg.Self && v.Witness.HolderEpoch >= v.Epoch) {
		return
	}
	if v.Witness.HolderEpoch >= v.Epoch {
		return // Decide steps down (D6)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	ok, why, err := w.Claim(cctx, v.Epoch, v.LSN, v.BMC.Power == PowerOff, "registering epoch taken while the witness was away")
	cancel()
	if err == nil && !ok {
		r.hold("the witness refused to register epoch " + fmt.Sprint(v.Epoch) + ": " + why)
	}
}

// takeOver makes this controller active, in the order of docs/ha.md:
// the peer is confirmed dead (Decide) → new epoch → promote the database
// → claim the floating address → start the site controller.
func (r *Runner) takeOver(ctx context.Context, v View, d Decision) error {
	start := time.Now()
	r.setRole(RoleTakingOver, v.Epoch)
	r.publish(v)
	// The handle for the epoch row connects while the epoch is claimed
	// and the database promoted (a standby's sessions write once it is
	// promoted).
	go r.openSiteConn(context.WithoutCancel(ctx))
	// After a swact the site controller is built while the epoch is
	// claimed and the database promoted: its stores connect to the standby
	// (sessions a standby accepted write once it is promoted), and what it
	// reads is final (the old active stopped, and this standby replayed
	// its last record). A build that fails (New wanted to write, say) is
	// done again once the database is promoted; after a failover it is
	// done then (the standby may still be replaying).
	var pre chan siteBuild
	if d.Row == "D32" && !v.Force && r.cfg.DB.Initialized() {
		pre = make(chan siteBuild, 1)
		go func() { pre <- r.buildSite(ctx) }()
	}
	preTaken := false
	defer func() {
		if pre != nil && !preTaken {
			(<-pre).discard()
		}
	}()
	epoch := max(v.Epoch, v.Witness.HolderEpoch) + 1
	switch {
	case r.cfg.Elector != nil:
		if v.BMC.Power == PowerOff {
			// The peer's host is off: its candidacy goes now instead of
			// at its lease's expiry.
			if err := r.cfg.Elector.Evict(ctx, r.cfg.Peer); err != nil {
				r.log.Warn("could not evict the peer's candidacy", "err", err)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		e, err := r.cfg.Elector.Campaign(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd election: %w", err)
		}
		epoch = max(e, v.Epoch+1)
	case v.Witness.Granted:
		epoch = v.Witness.HolderEpoch
	case v.Witness.Reachable:
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, why, err := r.cfg.Witness.Claim(cctx, epoch, v.LSN, v.BMC.Power == PowerOff, d.Row+": "+d.Reason)
		cancel()
		if err != nil {
			return fmt.Errorf("witness: %w", err)
		}
		if !ok {
			return fmt.Errorf("the witness refused epoch %d: %s", epoch, why)
		}
	}
	epochAt := time.Now()
	// The epoch is ours: the floating address is claimed while the
	// database promotes and the epoch is recorded (the old active released
	// it before it handed off, or is confirmed dead). Nothing serves on it
	// before the site controller runs, after both. A takeover that fails
	// releases it again.
	addrDone := make(chan error, 1)
	var claimedAt time.Time
	go func() {
		err := r.claimAddress(ctx)
		claimedAt = time.Now()
		addrDone <- err
	}()
	tookOver := false
	defer func() {
		if addrDone != nil {
			err := <-addrDone
			if !tookOver && err == nil {
				r.releaseAddress(ctx)
			}
		}
	}()
	db := r.cfg.DB
	fresh := false
	if !db.Initialized() {
		if !r.cfg.Bootstrap {
			return errors.New("this controller has no copy of the site's database (it never followed the active)")
		}
		if err := db.Bootstrap(ctx); err != nil {
			return err
		}
		fresh = true
	}
	st, err := db.Status(ctx)
	if err != nil {
		return err
	}
	switch {
	case fresh:
		if err := db.StartPrimary(ctx); err != nil {
			return err
		}
	case !st.Running:
		// Through recovery and promotion: a new timeline, so that the
		// peer's copy rejoins with pg_rewind if it diverged.
		if err := db.StartStandby(ctx, r.cfg.PeerDB); err != nil {
			return err
		}
		if err := db.Promote(ctx); err != nil {
			return err
		}
	case st.InRecovery:
		if err := db.Promote(ctx); err != nil {
			return err
		}
	}
	promoted := time.Now()
	// Synchronous at once after a swact: the old active already follows
	// (it started as this controller's standby when it stepped down), and
	// no acknowledged write lives on one copy only. Asynchronous after a
	// failover (the peer is confirmed dead): before anything commits, or
	// the commit would wait for it.
	var standbys []string
	if v.Swact == r.cfg.Self {
		standbys = []string{r.cfg.Peer}
	}
	if err := db.SetSynchronous(ctx, standbys); err != nil {
		return err
	}
	synced := time.Now()
	if err := db.EnsureDatabase(ctx, r.cfg.Database); err != nil {
		return err
	}
	ensured := time.Now()
	event := "takeover"
	if v.Swact == r.cfg.Self {
		event = "swact"
	}
	// Multi-server: etcd's record of the epoch is written while the
	// database commits its row (two independent round trips); both are
	// done before the site controller runs, so before any client write.
	etcdDone := make(chan error, 1)
	var etcdAt time.Time
	if r.cfg.Elector != nil {
		go func() {
			err := r.cfg.Elector.Record(ctx, epoch, r.cfg.Self)
			etcdAt = time.Now()
			etcdDone <- err
		}()
	} else {
		etcdDone <- nil
	}
	err = r.recordEpoch(ctx, epoch, event, d.Row+": "+d.Reason, true)
	rowAt := time.Now()
	if eerr := <-etcdDone; eerr != nil && err == nil {
		err = fmt.Errorf("recording epoch %d in etcd: %w", epoch, eerr)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.async = standbys == nil
	r.swactTo, r.handoff, r.force, r.fenceAt = "", "", false, time.Time{}
	r.handoffLSN = 0
	r.epoch = max(r.epoch, epoch)
	r.saveLocked()
	r.mu.Unlock()
	recorded := time.Now()
	err, addrDone = <-addrDone, nil
	if err != nil {
		return err
	}
	var b siteBuild
	if pre != nil {
		b, preTaken = <-pre, true
		if b.err != nil {
			r.log.Info("the site controller built during the takeover failed: building it again", "err", b.err)
		}
	}
	if b.site == nil {
		if b = r.buildSite(ctx); b.err != nil {
			r.releaseAddress(ctx)
			return b.err
		}
	}
	built := time.Now()
	tookOver = true
	r.runSite(b, epoch)
	r.setRole(RoleActive, epoch)
	ms := func(t time.Time) time.Duration { return after(start, t) }
	r.log.Info("took over", "epoch", epoch, "row", d.Row, "reason", d.Reason, "took", time.Since(start).Round(time.Millisecond),
		"epoch_after", ms(epochAt), "promoted_after", ms(promoted), "synced_after", ms(synced), "ensured_after", ms(ensured),
		"recorded_after", ms(recorded), "row_after", ms(rowAt), "etcd_after", ms(etcdAt),
		"address_after", ms(claimedAt), "built_after", ms(built), "synchronous", standbys != nil)
	if standbys == nil && !anyTrue(v.PeerLinks) {
		// The peer is gone (a failover); a peer that is heard is only
		// catching up (a site's first start) and goes synchronous soon.
		r.raise(ctx, AlarmLostRedundancy, "service-group="+PairGroup, "the peer controller "+r.cfg.Peer+" is not available: replication is asynchronous")
	}
	return nil
}

// after is how long after start a step was done, for the logs; 0 for a
// step not taken.
func after(start, t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(start).Round(time.Millisecond)
}

func anyTrue(m map[Network]bool) bool {
	for _, ok := range m {
		if ok {
			return true
		}
	}
	return false
}

// stepDown stops serving: the site controller, the floating address, the
// database (cleanly, so its last WAL reaches the standby), the election.
func (r *Runner) stepDown(ctx context.Context, reason string) {
	r.mu.Lock()
	was, epoch := r.role, r.epoch
	handoff := r.swactTo == r.cfg.Peer
	r.mu.Unlock()
	if was != RoleActive && was != RoleTakingOver && was != RoleSteppingDown {
		return
	}
	start := time.Now()
	r.setRole(RoleSteppingDown, epoch)
	r.publish(View{})
	// The site controller first (calls in flight finish while the
	// database is there, within a short grace), then the database: a site
	// that is still running would only keep reconnecting to a server that
	// is going down.
	r.stopSite()
	siteStopped := time.Now()
	// The address goes while the database stops: nothing serves on it any
	// more, and the peer claims it only after the handoff beat below.
	released := make(chan time.Time, 1)
	go func() {
		r.releaseAddress(ctx)
		released <- time.Now()
	}()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// Multi-server: the term is resigned while the database stops. Nothing
	// of this controller writes any more (the write guard refuses every
	// write from stepping-down on, and the site controller has stopped),
	// and the peer, whose queued candidacy wins the key now, still takes
	// over only on the beat that carries the final LSN (D32; D34 while
	// this one is stepping down): it finds its epoch ready then instead
	// of waiting for a resign after the stop.
	resigned := make(chan time.Time, 1)
	if r.cfg.Elector != nil {
		go func() {
			if err := r.cfg.Elector.Resign(sctx); err != nil {
				r.log.Warn("resign", "err", err)
			}
			resigned <- time.Now()
		}()
	} else {
		resigned <- time.Time{}
	}
	if err := r.cfg.DB.Stop(sctx, pgrepl.StopFast); err != nil {
		r.log.Error("stopping the database", "err", err)
		_ = r.cfg.DB.Stop(sctx, pgrepl.StopImmediate)
	}
	dbStopped := time.Now()
	// The epoch row's connection was to the server that just stopped: the
	// next takeover opens one while it promotes instead of finding this
	// one dead on its path.
	r.dropSiteConn()
	resignedAt, releasedAt := <-resigned, <-released
	// The database stopped cleanly: its last record (the shutdown
	// checkpoint) is what the swact target must have replayed.
	var final View
	if st, err := r.cfg.DB.Status(sctx); err == nil && !st.Running {
		final.LSN = st.CheckpointLSN
	}
	r.mu.Lock()
	r.forced = handoff && r.force
	clean := handoff && !r.forced
	r.handoffLSN = 0
	if handoff {
		r.handoffLSN = final.LSN
	}
	r.swactTo, r.force, r.async = "", false, false
	if handoff {
		r.handoff = r.cfg.Peer
	}
	r.mu.Unlock()
	r.setRole(RoleStandby, epoch)
	r.publish(final)
	ms := func(t time.Time) time.Duration { return after(start, t) }
	r.log.Info("stepped down", "reason", reason, "took", time.Since(start).Round(time.Millisecond),
		"site_stopped_after", ms(siteStopped), "address_after", ms(releasedAt), "db_stopped_after", ms(dbStopped),
		"resigned_after", ms(resignedAt))
	if clean && final.LSN != 0 {
		// A clean handoff: the peer replays this database's last record
		// and promotes. Start as its standby now, streaming from it while
		// it is still one (cascading): the promotion's new timeline
		// reaches this copy at once, and the peer's first commit (the
		// new epoch's, synchronous) does not wait for a start after it.
		// A start that fails leaves the rejoin to follow.
		if err := r.cfg.DB.StartStandby(sctx, r.cfg.PeerDB); err != nil {
			r.log.Warn("starting as the peer's standby after the handoff", "err", err)
		} else {
			r.log.Info("streaming from the peer after the handoff", "peer", r.cfg.Peer, "took", time.Since(start).Round(time.Millisecond))
		}
	}
	r.poke()
}

// follow keeps the database a standby of the active peer.
func (r *Runner) follow(ctx context.Context, v View) {
	db := r.cfg.DB
	if v.PeerBeat == nil || !v.PeerBeat.Role.claimsActivity() {
		return
	}
	var st pgrepl.Status
	if db.Initialized() {
		var err error
		if st, err = db.Status(ctx); err != nil {
			r.hold("database status: " + err.Error())
			return
		}
	}
	switch {
	case !db.Initialized():
		r.log.Info("cloning the site's database from the active controller", "peer", r.cfg.Peer)
		if err := db.CloneFrom(ctx, r.cfg.PeerDB); err != nil {
			r.hold("clone: " + err.Error())
			return
		}
		if err := db.StartStandby(ctx, r.cfg.PeerDB); err != nil {
			r.hold("start standby: " + err.Error())
			return
		}
		r.stand()
	case st.Running && st.InRecovery && st.Upstream != "":
		// Following already. After a handoff, the handoff stands until the
		// peer is active: a takeover of its that fails must be able to run
		// again (D32 needs our beats to name it).
		if v.PeerBeat.Role != RoleActive {
			return
		}
	default:
		r.mu.Lock()
		clean := r.handoff != ""
		r.mu.Unlock()
		start := time.Now()
		rejoin := db.Rejoin
		if clean {
			rejoin = db.Follow
		}
		if err := rejoin(ctx, r.cfg.PeerDB); err != nil {
			r.hold("rejoin: " + err.Error())
			return
		}
		r.log.Info("following the active controller's database", "peer", r.cfg.Peer, "after_handoff", clean,
			"took", time.Since(start).Round(time.Millisecond))
	}
	r.mu.Lock()
	r.handoff, r.handoffLSN = "", 0
	r.mu.Unlock()
	r.setRole(RoleStandby, max(v.PeerBeat.Epoch, v.Epoch))
}

// fence powers the peer off through its BMC; the next view reads it back.
func (r *Runner) fence(ctx context.Context, d Decision) {
	r.mu.Lock()
	issued := !r.fenceAt.IsZero()
	r.mu.Unlock()
	if issued || r.cfg.PeerBMC == nil {
		return
	}
	r.log.Warn("fencing the peer controller through its BMC", "peer", r.cfg.Peer, "row", d.Row, "reason", d.Reason)
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := r.cfg.PeerBMC.PowerOff(fctx)
	cancel()
	if err != nil {
		r.hold("fence: " + err.Error())
		return
	}
	r.mu.Lock()
	r.fenceAt = time.Now()
	r.mu.Unlock()
}

// keepsFence: held rows after which a fence this controller issued stands.
// They wait for the peer to read off (or be heard): powering it on again
// would only have the next step fence it anew, every FenceTimeout, and a
// single failed BMC read after a fence that worked would undo it.
var keepsFence = map[string]bool{"D81": true, "D82": true}

// unfence powers the peer on again when this controller fenced it and now
// refuses to take over (D40, say: the fence raced an active that had gone
// asynchronous without it). A fence that leads to no takeover leaves the
// site with no active at all; the peer, back on, ranks above this one.
func (r *Runner) unfence(ctx context.Context, d Decision) {
	r.mu.Lock()
	fenced := !r.fenceAt.IsZero()
	r.mu.Unlock()
	if !fenced || r.cfg.PeerBMC == nil {
		return
	}
	r.log.Warn("powering the fenced peer on again: I cannot take over", "peer", r.cfg.Peer, "row", d.Row, "reason", d.Reason)
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := r.cfg.PeerBMC.PowerOn(fctx)
	cancel()
	if err != nil {
		r.hold("unfence: " + err.Error())
		return
	}
	r.mu.Lock()
	r.fenceAt = time.Time{}
	r.mu.Unlock()
}

// goAsync stops waiting for the failed standby: commits no longer wait
// for it, under a new epoch on duplex (countersigned by the witness when
// it answers), recorded in the history.
func (r *Runner) goAsync(ctx context.Context, v View, d Decision) {
	r.mu.Lock()
	if r.async {
		r.mu.Unlock()
		return
	}
	epoch := r.epoch
	r.mu.Unlock()
	if r.cfg.Mode == ModeDuplex {
		epoch++
		if w := r.cfg.Witness; w != nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok, why, err := w.Claim(cctx, epoch, 0, v.BMC.Power == PowerOff, "standby failed: "+d.Row)
			cancel()
			if err == nil && !ok {
				r.hold("the witness refused the switch to asynchronous: " + why)
				return
			}
			// Unreachable: Decide allowed it on BMC evidence; the epoch
			// is registered when the witness answers again.
		}
	}
	// The epoch first, while commits still wait for the standby: the
	// row's commit is released with the others by the switch.
	r.mu.Lock()
	r.epoch = max(r.epoch, epoch)
	r.saveLocked()
	r.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		errc <- r.recordEpoch(context.WithoutCancel(ctx), epoch, "asynchronous", d.Row+": "+d.Reason, true)
	}()
	if err := r.cfg.DB.SetSynchronous(ctx, nil); err != nil {
		r.hold("asynchronous: " + err.Error())
		return
	}
	if err := <-errc; err != nil {
		r.log.Error("recording the switch to asynchronous", "err", err)
	}
	r.mu.Lock()
	r.async = true
	r.fenceAt = time.Time{} // the fence did its work; a later one is issued anew
	r.mu.Unlock()
	r.log.Warn("replication is asynchronous: the standby is confirmed failed", "epoch", epoch, "row", d.Row, "reason", d.Reason)
	r.raise(ctx, AlarmLostRedundancy, "service-group="+PairGroup, "the standby controller "+r.cfg.Peer+" failed: replication is asynchronous")
}

// goSync names the standby synchronous again: it streams and caught up.
func (r *Runner) goSync(ctx context.Context) {
	if err := r.cfg.DB.SetSynchronous(ctx, []string{r.cfg.Peer}); err != nil {
		r.hold("synchronous: " + err.Error())
		return
	}
	r.mu.Lock()
	was := r.async
	r.async = false
	epoch := r.epoch
	r.mu.Unlock()
	if was {
		if err := r.recordEpoch(ctx, epoch, "synchronous", r.cfg.Peer+" streams again", true); err != nil {
			r.log.Error("recording the switch to synchronous", "err", err)
		}
		r.log.Info("replication is synchronous again", "standby", r.cfg.Peer)
		r.clear(ctx, AlarmLostRedundancy, "service-group="+PairGroup)
	}
}

// ErrRefused is a swact the pair cannot do now; the message says why.
var ErrRefused = errors.New("swact refused")

// Swact hands activity to the standby (petrel host swact): refused when
// the standby is unreachable, not a standby, or not synchronous (unless
// force: then writes it has not received are lost).
func (r *Runner) Swact(ctx context.Context, force bool) error {
	r.mu.Lock()
	role := r.role
	r.mu.Unlock()
	if role != RoleActive {
		return fmt.Errorf("%w: %s is not the active controller", ErrRefused, r.cfg.Self)
	}
	p := r.cfg.Beats.Peer()
	if p.Last == nil || !anyTrue(p.Links) {
		return fmt.Errorf("%w: the standby controller %s is not reachable", ErrRefused, r.cfg.Peer)
	}
	if p.Last.Role != RoleStandby {
		return fmt.Errorf("%w: %s is %s, not a standby", ErrRefused, r.cfg.Peer, p.Last.Role)
	}
	st, err := r.cfg.DB.Status(ctx)
	if err != nil {
		return fmt.Errorf("%w: database status: %v", ErrRefused, err)
	}
	state := "not connected"
	sync := false
	for _, rep := range st.Replicas {
		if rep.Name == r.cfg.Peer {
			state = rep.State + "/" + rep.SyncState
			sync = rep.SyncState == "sync" && rep.State == "streaming"
		}
	}
	if !sync && !force {
		return fmt.Errorf("%w: the standby controller %s is not synchronous (replication %s): "+
			"--force swacts anyway, and writes it has not received are lost", ErrRefused, r.cfg.Peer, state)
	}
	r.mu.Lock()
	r.swactTo, r.force = r.cfg.Peer, force
	r.mu.Unlock()
	r.log.Info("swact requested", "to", r.cfg.Peer, "force", force, "replication", state)
	r.poke()
	return nil
}

// Pair is the controller pair as a service group (1+1).
func (r *Runner) Pair() servicemgr.Group {
	r.mu.Lock()
	role, epoch, async := r.role, r.epoch, r.async
	r.mu.Unlock()
	p := r.cfg.Beats.Peer()
	g := servicemgr.Group{Spec: servicemgr.Spec{Name: PairGroup, Model: "1+1", Hosts: []string{r.cfg.Self, r.cfg.Peer}},
		N: 1, M: 1, Status: servicemgr.StatusOK, Epoch: epoch}
	self := servicemgr.Member{Host: r.cfg.Self, State: servicemgr.StateStandby, Epoch: epoch}
	if role == RoleActive {
		self.State = servicemgr.StateActive
	}
	peer := servicemgr.Member{Host: r.cfg.Peer, State: servicemgr.StateFailed, Reason: "not heard on any network"}
	if p.Last != nil && anyTrue(p.Links) {
		peer.State, peer.Reason, peer.Epoch = servicemgr.StateStandby, "", p.Last.Epoch
		if p.Last.Role == RoleActive {
			peer.State = servicemgr.StateActive
		}
	}
	if async && peer.State != servicemgr.StateFailed {
		peer.Reason = "catching up: replication asynchronous"
	}
	// Ok means a failover now loses nothing: the standby knows it is the
	// synchronous one (it says so in its beats).
	synced := peer.State == servicemgr.StateStandby && p.Last.Sync
	if peer.State == servicemgr.StateStandby && !async && !synced {
		peer.Reason = "not yet confirmed synchronous"
	}
	if !synced || async {
		g.Status, g.Reason = servicemgr.StatusDegraded, "no synchronous standby controller"
	}
	g.Members = []servicemgr.Member{self, peer}
	return g
}

// PairGroup is the controller pair's name among the service groups.
const PairGroup = "controller"

// authority lets the site controller write while this controller is the
// active one and is not stepping down.
func (r *Runner) authority() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if (r.role != RoleActive && r.role != RoleTakingOver) || r.handoff != "" {
		return fmt.Errorf("controller %s is %s", r.cfg.Self, r.role)
	}
	return nil
}

func (r *Runner) currentEpoch() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

// recordEpoch writes the pair's epoch row and the history, in one
// transaction on the (primary) database.
//
// local commits it without waiting for the synchronous standby (a
// takeover's record): the site starts while the standby connects, and a
// client write acknowledged afterwards carries the row to the standby
// with it (WAL is one sequence). Should this controller die before any,
// the epoch is also the witness's or etcd's, and the standby was not
// synchronous with it: it takes over only when forced (docs/ha.md).
func (r *Runner) recordEpoch(ctx context.Context, epoch uint64, event, reason string, local bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r.dbMu.Lock()
	defer r.dbMu.Unlock()
	var err error
	// The connection kept from the last time may be to a server that has
	// restarted since, and the tables are missing on a site's first
	// start: once more after either.
	for attempt := 0; attempt < 3; attempt++ {
		if r.dbClosed {
			return errors.New("ctlha: the runner has stopped")
		}
		if r.siteConn == nil {
			if r.siteConn, err = pgx.Connect(ctx, r.cfg.DB.DSN(r.cfg.Database)); err != nil {
				return err
			}
		}
		err = r.writeEpoch(ctx, r.siteConn, epoch, event, reason, local)
		var pe *pgconn.PgError
		switch {
		case err == nil || ctx.Err() != nil || errors.Is(err, errEpochAbove):
			return err
		case errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
			if cerr := r.createEpochTables(ctx, r.siteConn); cerr != nil {
				return cerr
			}
		default:
			r.siteConn.Close(context.WithoutCancel(ctx))
			r.siteConn = nil
		}
	}
	return err
}

// openSiteConn opens the connection recordEpoch uses, when the database
// runs and has the site's database (a takeover opens it on the standby
// while it promotes: a session a standby accepted writes once promoted).
func (r *Runner) openSiteConn(ctx context.Context) {
	r.dbMu.Lock()
	defer r.dbMu.Unlock()
	if r.siteConn != nil || r.dbClosed || !r.cfg.DB.Initialized() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, r.cfg.DB.DSN(r.cfg.Database)); err == nil {
		r.siteConn = c
	}
}

// dropSiteConn closes the connection recordEpoch keeps (its server
// stopped).
func (r *Runner) dropSiteConn() {
	r.dbMu.Lock()
	defer r.dbMu.Unlock()
	if r.siteConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		r.siteConn.Close(ctx)
		cancel()
		r.siteConn = nil
	}
}

var errEpochAbove = errors.New("the database holds a higher epoch")

// writeEpoch writes the epoch row and its history row in one transaction
// sent as one batch: one round trip on a takeover's path.
func (r *Runner) writeEpoch(ctx context.Context, conn *pgx.Conn, epoch uint64, event, reason string, local bool) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if local {
		b.Queue("SET LOCAL synchronous_commit = local")
	}
	// The history row is written only when the epoch row is (an epoch
	// never goes down).
	b.Queue(`WITH e AS (
			INSERT INTO `+subcloud.EpochTable+` (id, epoch, controller, changed_at) VALUES (1, $1, $2, now())
			ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, controller = EXCLUDED.controller, changed_at = now()
			WHERE `+subcloud.EpochTable+`.epoch <= EXCLUDED.epoch
			RETURNING epoch)
		INSERT INTO `+HistoryTable+` (epoch, controller, event, reason, at) SELECT epoch, $2, $3, $4, now() FROM e`,
		int64(epoch), r.cfg.Self, event, reason)
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	var written int64
	var err error
	for i := 0; i < b.Len() && err == nil; i++ {
		var tag pgconn.CommandTag
		tag, err = br.Exec()
		if i == b.Len()-2 {
			written = tag.RowsAffected()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if written == 0 {
		return fmt.Errorf("%w than %d", errEpochAbove, epoch)
	}
	return nil
}

// createEpochTables creates the epoch and history tables (a site's first
// start).
func (r *Runner) createEpochTables(ctx context.Context, conn *pgx.Conn) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + subcloud.EpochTable + ` (id integer PRIMARY KEY, epoch bigint NOT NULL, controller text NOT NULL, changed_at timestamptz NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + HistoryTable + ` (seq bigserial PRIMARY KEY, epoch bigint NOT NULL, controller text NOT NULL, event text NOT NULL, reason text NOT NULL, at timestamptz NOT NULL)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("creating the epoch tables: %w", err)
		}
	}
	return nil
}

// HistoryTable records the pair's takeovers and replication switches.
const HistoryTable = "petrel_ha_history"

// readEpochLocked reads the epoch this controller last held or followed.
func (r *Runner) readEpochLocked(ctx context.Context) uint64 {
	st, err := r.cfg.DB.Status(ctx)
	if err != nil || !st.Running {
		return r.epoch
	}
	db, err := sqldb.Open(ctx, r.cfg.DB.DSN(r.cfg.Database))
	if err != nil {
		return r.epoch
	}
	defer db.Close()
	var e uint64
	if err := db.WithContext(ctx).Raw(`SELECT epoch FROM ` + subcloud.EpochTable + ` WHERE id = 1`).Scan(&e).Error; err != nil {
		return r.epoch
	}
	return max(e, r.epoch)
}

func (r *Runner) claimAddress(ctx context.Context) error {
	f := r.cfg.Floating
	if !f.Prefix.IsValid() {
		return nil
	}
	if err := r.cfg.Addrs.AddAddress(ctx, f.Interface, f.Prefix.String()); err != nil {
		return fmt.Errorf("floating address %s: %w", f.Prefix, err)
	}
	if err := r.cfg.Addrs.Announce(ctx, f.Interface, f.Prefix.Addr().String()); err != nil {
		r.log.Warn("gratuitous ARP", "addr", f.Prefix.Addr(), "err", err)
	}
	return nil
}

func (r *Runner) releaseAddress(ctx context.Context) {
	f := r.cfg.Floating
	if !f.Prefix.IsValid() {
		return
	}
	if err := r.cfg.Addrs.DelAddress(context.WithoutCancel(ctx), f.Interface, f.Prefix.String()); err != nil {
		r.log.Error("releasing the floating address", "addr", f.Prefix, "err", err)
	}
}

// siteBuild is a site controller built and not yet run.
type siteBuild struct {
	site   Site
	ctx    context.Context
	cancel context.CancelFunc
	err    error
}

// discard releases a build that will not run.
func (b siteBuild) discard() {
	if b.site != nil {
		b.site.Close()
	}
	if b.cancel != nil {
		b.cancel()
	}
}

// buildSite builds the site controller (its stores opened first, when
// OpenStores is set).
func (r *Runner) buildSite(ctx context.Context) siteBuild {
	dsn := r.cfg.DB.DSN(r.cfg.Database)
	var stores *SiteStores
	if open := r.cfg.OpenStores; open != nil {
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := open(octx, dsn)
		cancel()
		if err == nil {
			stores = st // else the site opens its own
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	ha := &subcloud.HAConfig{Controller: r.cfg.Self, Epoch: r.currentEpoch, Authority: r.authority,
		Swact: r.Swact, Pair: r.Pair}
	site, err := r.cfg.NewSite(sctx, ha, dsn, stores)
	if err != nil {
		cancel()
		return siteBuild{err: fmt.Errorf("site controller: %w", err)}
	}
	return siteBuild{site: site, ctx: sctx, cancel: cancel}
}

// runSite runs a built site controller at epoch.
func (r *Runner) runSite(b siteBuild, epoch uint64) {
	r.mu.Lock()
	r.epoch = max(r.epoch, epoch)
	r.saveLocked()
	r.mu.Unlock()
	errc := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		err := b.site.Run(b.ctx)
		if b.ctx.Err() == nil {
			errc <- err
		}
		done <- err
	}()
	r.mu.Lock()
	r.site = func() {
		b.cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			r.log.Error("the site controller did not stop within 15 s")
		}
	}
	r.siteErr = errc
	r.alarmMgr = b.site.Alarms()
	r.mu.Unlock()
}

func (r *Runner) stopSite() {
	r.mu.Lock()
	stop := r.site
	r.site, r.siteErr, r.alarmMgr = nil, nil, nil
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (r *Runner) alarms() *faultmgr.Manager {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alarmMgr
}

// raise and clear the pair's alarms through the active site controller
// (a standby's database is read-only: it logs instead).
func (r *Runner) raise(ctx context.Context, id, entity, reason string) {
	m := r.alarms()
	if m == nil {
		return
	}
	if _, _, err := m.Raise(ctx, id, entity, map[string]string{"group": PairGroup, "reason": reason}); err != nil {
		r.log.Error("raise", "alarm", id, "err", err)
	}
}

func (r *Runner) clear(ctx context.Context, id, entity string) {
	m := r.alarms()
	if m == nil {
		return
	}
	if _, err := m.Clear(ctx, id, entity); err != nil {
		r.log.Error("clear", "alarm", id, "err", err)
	}
}
