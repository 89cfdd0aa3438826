package servicemgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
)

// Record is a stored group spec.
type Record struct {
	Spec      Spec
	Source    string // api or config
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Specs stores group specs (servicemgr/servicedb).
type Specs interface {
	Groups(ctx context.Context) ([]Record, error)
	Put(ctx context.Context, rec Record, create bool) (Record, error)
	Delete(ctx context.Context, name string) error
}

// ErrStale is a ledger commit whose expected epoch is no longer the
// recorded one (another commit came first).
var ErrStale = errors.New("servicemgr: the group's epoch moved")

// ErrSlotHeld is a ledger commit that would give an active slot to a host
// while another host's lease still holds it (its death not confirmed).
var ErrSlotHeld = errors.New("servicemgr: an active slot is still held by another host's lease")

// Ledger is where placements and their epochs are recorded (etcd): every
// commit is one transaction that bumps the group's epoch, conditional on
// this controller still leading and on the epoch being prevEpoch. Active
// slots are held by their hosts' leases.
type Ledger interface {
	Load(ctx context.Context, group string) (Placement, error)
	Commit(ctx context.Context, group string, prevEpoch uint64, next Placement) (uint64, error)
	Remove(ctx context.Context, group string) error
	// Release revokes a host's lease at once (the host is confirmed
	// fenced or dead): every slot it held is free.
	Release(ctx context.Context, host string) error
}

// HostInfo is what service management reads of a host.
type HostInfo struct {
	UUID, Name string
	Locked     bool
	Available  bool // available or degraded
	Healthy    bool // available
	Silent     bool // heartbeat lost on every network
	BootID     string
}

// Hosts is the inventory as service management reads it.
type Hosts interface {
	ServiceHosts(ctx context.Context) ([]HostInfo, error)
}

// Alarms raises, clears and logs (faultmgr.Manager).
type Alarms interface {
	Raise(ctx context.Context, id, entity string, fields map[string]string) (faultmgr.Alarm, bool, error)
	Clear(ctx context.Context, id, entity string) (bool, error)
	Log(ctx context.Context, id, entity string, fields map[string]string) (faultmgr.Event, error)
}

// Alarm IDs (faultmgr/alarms.yaml).
const (
	AlarmFailed   = "400.001" // fewer than N actives
	AlarmDegraded = "400.002" // fewer than M standbys
	AlarmFlapping = "400.003" // a member keeps failing
	LogDecision   = "400.010" // a decision, with its reason
)

// Config configures a Manager.
type Config struct {
	Specs  Specs
	Ledger Ledger
	Hosts  Hosts
	Alarms Alarms
	Logger *slog.Logger
	// ControllerEpoch is this controller's leadership epoch, sent to
	// agents with every desired state.
	ControllerEpoch uint64
	// Every is how often every group is reconsidered without a trigger;
	// default 1 s.
	Every time.Duration
	// StormFailures active failures of a group within StormWindow hold
	// its promotions for a backoff that doubles from StormBackoff (max
	// 1 min). Defaults 3, 60 s, 5 s.
	StormFailures int
	StormWindow   time.Duration
	StormBackoff  time.Duration
	// FlapRestarts restarts of a member raise 400.003; default 3.
	FlapRestarts int
}

// Manager keeps the site's service groups: it places members, watches the
// agents' reports and host deaths, promotes standbys, and serves each
// agent its desired members. Run carries out the decisions, one group at
// a time.
type Manager struct {
	cfg  Config
	kick chan struct{}

	mu       sync.Mutex
	groups   map[string]*groupState
	hosts    map[string]HostInfo            // by name
	byUUID   map[string]string              // uuid -> name
	observed map[string]map[string]Observed // by host UUID, then group
	agents   map[string]*agentState         // by host UUID (names change)
	down     map[string]downInfo            // by host name
	loaded   bool
	leading  bool // between Lead and Follow
}

type groupState struct {
	rec      Record
	model    Model
	place    Placement
	plan     Plan
	failures []time.Time // active failures, for the storm guard
	flapping map[string]bool
	status   Status
}

type agentState struct {
	bootID  string
	version uint64
	list    []Assignment
	changed chan struct{} // closed and replaced when list changes
	seen    bool
}

type downInfo struct {
	reason string
	bootID string // the boot that died
}

// New returns a manager; Run must be running for it to act.
func New(cfg Config) (*Manager, error) {
	if cfg.Specs == nil || cfg.Ledger == nil || cfg.Hosts == nil || cfg.Alarms == nil || cfg.Logger == nil {
		return nil, errors.New("servicemgr: Specs, Ledger, Hosts, Alarms and Logger are required")
	}
	if cfg.Every == 0 {
		cfg.Every = time.Second
	}
	if cfg.StormFailures == 0 {
		cfg.StormFailures = 3
	}
	if cfg.StormWindow == 0 {
		cfg.StormWindow = time.Minute
	}
	if cfg.StormBackoff == 0 {
		cfg.StormBackoff = 5 * time.Second
	}
	if cfg.FlapRestarts == 0 {
		cfg.FlapRestarts = 3
	}
	return &Manager{cfg: cfg, kick: make(chan struct{}, 1), groups: map[string]*groupState{},
		hosts: map[string]HostInfo{}, byUUID: map[string]string{}, observed: map[string]map[string]Observed{},
		agents: map[string]*agentState{}, down: map[string]downInfo{}}, nil
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run reconciles every group on every trigger and every cfg.Every until
// ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("service groups: reconcile failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-t.C:
		}
	}
}

// load reads the specs and their placements once.
func (m *Manager) load(ctx context.Context) error {
	recs, err := m.cfg.Specs.Groups(ctx)
	if err != nil {
		return err
	}
	groups := map[string]*groupState{}
	for _, r := range recs {
		model, err := ParseModel(r.Spec.Model)
		if err != nil {
			return fmt.Errorf("servicemgr: stored group %s: %w", r.Spec.Name, err)
		}
		p, err := m.cfg.Ledger.Load(ctx, r.Spec.Name)
		if err != nil {
			return fmt.Errorf("servicemgr: load %s: %w", r.Spec.Name, err)
		}
		groups[r.Spec.Name] = &groupState{rec: r, model: model, place: p, flapping: map[string]bool{}}
	}
	m.mu.Lock()
	m.groups, m.loaded = groups, true
	m.mu.Unlock()
	return nil
}

// Lead starts a term of leadership: epoch is the term's fencing token
// (the etcd revision of this controller's election key), sent to agents
// with every desired state so that they refuse an older term's; and the
// specs and the ledger are read again (another controller may have
// changed them).
func (m *Manager) Lead(epoch uint64) {
	m.mu.Lock()
	m.cfg.ControllerEpoch = epoch
	m.loaded, m.leading = false, true
	for _, a := range m.agents { // waiting polls answer with the new term
		a.version++
		close(a.changed)
		a.changed = make(chan struct{})
	}
	m.mu.Unlock()
	m.poke()
}

// Follow ends a term of leadership: the API answers unavailable until
// the next Lead (another controller keeps the groups meanwhile).
func (m *Manager) Follow() {
	m.mu.Lock()
	m.leading, m.loaded = false, false
	m.mu.Unlock()
}

// ErrNotLeading is every call while this controller does not lead.
var ErrNotLeading = errs.New(errs.Unavailable, "service management is not running here yet: this controller does not lead the site's coordination")

// reconcile plans every group (dependencies first) and commits changes.
func (m *Manager) reconcile(ctx context.Context) error {
	if err := m.ensureLoaded(ctx); err != nil {
		return err
	}
	hosts, err := m.cfg.Hosts.ServiceHosts(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.hosts = map[string]HostInfo{}
	for _, h := range hosts {
		m.hosts[h.Name] = h
		m.byUUID[h.UUID] = h.Name // a rename takes effect here; agents are keyed by UUID
	}
	order := m.topoOrder()
	m.mu.Unlock()
	var firstErr error
	for _, name := range order {
		if err := m.reconcileGroup(ctx, name); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	m.forgetDead()
	m.publish()
	return firstErr
}

// uuidOf is a host's UUID by its name ("" if unknown).
func (m *Manager) uuidOf(name string) string {
	if hi, ok := m.hosts[name]; ok {
		return hi.UUID
	}
	for id, n := range m.byUUID {
		if n == name {
			return id
		}
	}
	return ""
}

// forgetDead ends a host's down mark once it booted again and no group
// keeps a member on it: it is a spare host again.
func (m *Manager) forgetDead() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, di := range m.down {
		a := m.agents[m.uuidOf(h)]
		if a == nil || a.bootID == di.bootID {
			continue
		}
		held := false
		for _, g := range m.groups {
			_, has := g.place.Members[h]
			held = held || has
		}
		if !held {
			delete(m.down, h)
		}
	}
}

// topoOrder lists groups so that every group follows its dependencies.
func (m *Manager) topoOrder() []string {
	var out []string
	done := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if done[n] || m.groups[n] == nil {
			return
		}
		done[n] = true
		for _, d := range m.groups[n].rec.Spec.DependsOn {
			visit(d)
		}
		out = append(out, n)
	}
	for _, n := range sortedKeys(m.groups) {
		visit(n)
	}
	return out
}

func (m *Manager) reconcileGroup(ctx context.Context, name string) error {
	m.mu.Lock()
	g := m.groups[name]
	if g == nil {
		m.mu.Unlock()
		return nil
	}
	now := time.Now()
	in := PlanInput{Spec: g.rec.Spec, Model: g.model, Current: g.place, Hosts: map[string]HostView{}, Observed: map[string]Observed{}}
	names := slices.Clone(g.rec.Spec.Hosts)
	for h := range g.place.Members {
		if !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	for _, h := range names {
		in.Hosts[h] = m.viewLocked(g, h)
		if o, ok := m.observed[m.uuidOf(h)][name]; ok {
			o.Current = o.Status.Epoch == g.place.Epoch
			in.Observed[h] = o
		}
	}
	for _, d := range g.rec.Spec.DependsOn {
		if dg := m.groups[d]; dg != nil && dg.status == StatusFailed && !hasActive(dg.plan) {
			in.DependencyDown = d
			break
		}
	}
	// Storm guard: repeated active failures hold promotions for a while.
	recent := g.failures[:0]
	for _, t := range g.failures {
		if now.Sub(t) < m.cfg.StormWindow {
			recent = append(recent, t)
		}
	}
	g.failures = recent
	if n := len(recent); n >= m.cfg.StormFailures {
		backoff := min(m.cfg.StormBackoff<<(n-m.cfg.StormFailures), time.Minute)
		in.HoldPromotions = now.Before(recent[n-1].Add(backoff))
	}
	m.mu.Unlock()

	p := Decide(in)
	if p.Changed {
		// Hosts confirmed down lose their leases first: their slots free
		// at once instead of at lease expiry.
		for h, hv := range in.Hosts {
			if hv.Down {
				if _, had := in.Current.Members[h]; had {
					if err := m.cfg.Ledger.Release(ctx, h); err != nil {
						return fmt.Errorf("servicemgr: release %s: %w", h, err)
					}
				}
			}
		}
		epoch, err := m.cfg.Ledger.Commit(ctx, name, in.Current.Epoch, p.Next)
		if err != nil {
			if errors.Is(err, ErrStale) {
				m.mu.Lock()
				m.loaded = false // read the ledger again
				m.mu.Unlock()
			}
			return fmt.Errorf("servicemgr: commit %s: %w", name, err)
		}
		p.Next.Epoch = epoch
		for i := range p.Members {
			p.Members[i].Epoch = epoch
		}
		for _, d := range p.Decisions {
			if d.What == "hold" {
				continue
			}
			m.cfg.Logger.Info("service group decision", "group", name, "host", d.Host, "decision", d.What, "reason", d.Reason, "epoch", epoch)
			if _, err := m.cfg.Alarms.Log(ctx, LogDecision, "service-group="+name, map[string]string{"group": name,
				"detail": fmt.Sprintf("%s (epoch %d)", d, epoch)}); err != nil {
				m.cfg.Logger.Warn("service group decision not logged", "group", name, "err", err)
			}
		}
	}
	m.mu.Lock()
	if p.Changed {
		for _, d := range p.Decisions {
			if d.What == "demote" && in.Observed[d.Host].Status.State == MemberFailed {
				g.failures = append(g.failures, now)
			}
		}
	}
	g.place, g.plan = p.Next, p
	was := g.status
	g.status = p.Status
	flapping := map[string]int{}
	for h, o := range in.Observed {
		if _, member := p.Next.Members[h]; member && o.Status.Restarts >= m.cfg.FlapRestarts {
			flapping[h] = o.Status.Restarts
		}
	}
	var stopFlap []string
	for h := range g.flapping {
		if _, still := flapping[h]; !still {
			stopFlap = append(stopFlap, h)
			delete(g.flapping, h)
		}
	}
	var startFlap []string
	for h := range flapping {
		if !g.flapping[h] {
			startFlap = append(startFlap, h)
			g.flapping[h] = true
		}
	}
	m.mu.Unlock()

	entity := "service-group=" + name
	if was != p.Status || p.Changed {
		m.cfg.Logger.Info("service group status", "group", name, "status", p.Status, "reason", p.Reason)
	}
	fields := map[string]string{"group": name, "detail": p.Reason}
	switch p.Status {
	case StatusFailed:
		m.raise(ctx, AlarmFailed, entity, fields)
		m.clear(ctx, AlarmDegraded, entity)
	case StatusDegraded:
		m.raise(ctx, AlarmDegraded, entity, fields)
		m.clear(ctx, AlarmFailed, entity)
	default:
		m.clear(ctx, AlarmFailed, entity)
		m.clear(ctx, AlarmDegraded, entity)
	}
	for _, h := range startFlap {
		m.raise(ctx, AlarmFlapping, entity+".host="+h, map[string]string{"group": name, "member": h,
			"detail": fmt.Sprintf("%d restarts", flapping[h])})
	}
	for _, h := range stopFlap {
		m.clear(ctx, AlarmFlapping, entity+".host="+h)
	}
	return nil
}

func (m *Manager) raise(ctx context.Context, id, entity string, fields map[string]string) {
	if _, _, err := m.cfg.Alarms.Raise(ctx, id, entity, fields); err != nil {
		m.cfg.Logger.Error("raising a service group alarm failed", "alarm", id, "entity", entity, "err", err)
	}
}

func (m *Manager) clear(ctx context.Context, id, entity string) {
	if _, err := m.cfg.Alarms.Clear(ctx, id, entity); err != nil {
		m.cfg.Logger.Error("clearing a service group alarm failed", "alarm", id, "entity", entity, "err", err)
	}
}

func hasActive(p Plan) bool {
	for _, mb := range p.Members {
		if mb.State == StateActive {
			return true
		}
	}
	return false
}

// viewLocked is the planner's view of host h for group g.
func (m *Manager) viewLocked(g *groupState, h string) HostView {
	hi, ok := m.hosts[h]
	hv := HostView{Name: h}
	if di, down := m.down[h]; down {
		hv.Down, hv.DownReason = true, di.reason
		return hv
	}
	switch {
	case !ok:
		hv.Leaving = true // deleted
		return hv
	case !slices.Contains(g.rec.Spec.Hosts, h) || hi.Locked:
		hv.Leaving = true
	}
	hv.Silent = hi.Silent
	hv.Healthy = hi.Healthy
	a := m.agents[hi.UUID]
	hv.Eligible = hi.Available && !hi.Silent && a != nil && a.seen && a.bootID == hi.BootID
	return hv
}

// publish recomputes each agent's desired members and wakes its waiters
// when they changed.
func (m *Manager) publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string][]Assignment{}
	for _, name := range sortedKeys(m.groups) {
		g := m.groups[name]
		for h, a := range g.place.Members {
			as := Assignment{Group: name, Role: a.Role, Epoch: g.place.Epoch, Slot: a.Slot,
				Health: g.rec.Spec.Health, Actions: g.rec.Spec.Actions}
			if a.Role == RoleActive && a.Slot >= 0 && a.Slot < len(g.rec.Spec.Floating) {
				as.Floating, as.Network = g.rec.Spec.Floating[a.Slot], g.rec.Spec.Network
			}
			want[h] = append(want[h], as)
		}
	}
	for _, hi := range m.hosts {
		if _, ok := m.agents[hi.UUID]; !ok {
			m.agents[hi.UUID] = &agentState{changed: make(chan struct{})}
		}
	}
	for id, a := range m.agents {
		h := m.byUUID[id]
		list := want[h]
		if _, down := m.down[h]; down || h == "" {
			list = nil
		}
		if !sameAssignments(a.list, list) {
			a.list = list
			a.version++
			close(a.changed)
			a.changed = make(chan struct{})
		}
	}
}

func sameAssignments(a, b []Assignment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Group != y.Group || x.Role != y.Role || x.Epoch != y.Epoch || x.Slot != y.Slot || x.Floating != y.Floating ||
			!slices.Equal(x.Actions.Start, y.Actions.Start) || !slices.Equal(x.Actions.Stop, y.Actions.Stop) ||
			!slices.Equal(x.Actions.Activate, y.Actions.Activate) || !slices.Equal(x.Actions.Deactivate, y.Actions.Deactivate) ||
			x.Health.Type != y.Health.Type || x.Health.Target != y.Health.Target || !slices.Equal(x.Health.Command, y.Health.Command) ||
			x.Health.IntervalMS != y.Health.IntervalMS || x.Health.TimeoutMS != y.Health.TimeoutMS || x.Health.Failures != y.Health.Failures {
			return false
		}
	}
	return true
}

// seeBootLocked records the boot an agent runs in. A new one means the
// host's previous boot died, and every member it ran with it: the host is
// down until those members are removed.
func (m *Manager) seeBootLocked(name string, a *agentState, bootID string) {
	if bootID == "" {
		return
	}
	if a.bootID != "" && bootID != a.bootID {
		if _, down := m.down[name]; !down {
			m.down[name] = downInfo{reason: "it booted again (new boot ID)", bootID: a.bootID}
			delete(m.observed, m.uuidOf(name))
			m.cfg.Logger.Info("service members lost: their host booted again", "host", name)
			m.poke()
		}
	}
	a.bootID = bootID
}

// Desired answers an agent's poll: its members, waiting while version is
// still the current one (up to wait). bootID is the agent's boot: a host
// that booted again gets no member until the manager has removed those of
// its previous boot (it must never resume a role it held before).
func (m *Manager) Desired(ctx context.Context, hostUUID, bootID string, version uint64, wait bool, timeout time.Duration) (AgentServices, error) {
	m.mu.Lock()
	name, ok := m.byUUID[hostUUID]
	if !ok {
		m.mu.Unlock()
		if hs, err := m.cfg.Hosts.ServiceHosts(ctx); err == nil {
			m.mu.Lock()
			for _, h := range hs {
				m.byUUID[h.UUID] = h.Name
			}
			m.mu.Unlock()
		}
		m.mu.Lock()
		if name, ok = m.byUUID[hostUUID]; !ok {
			m.mu.Unlock()
			return AgentServices{}, errs.Wrapf(errs.NotFound, "host %s is not in the inventory", hostUUID)
		}
	}
	a := m.agents[hostUUID]
	if a == nil {
		a = &agentState{changed: make(chan struct{})}
		m.agents[hostUUID] = a
	}
	m.seeBootLocked(name, a, bootID)
	if wait && a.version == version {
		ch := a.changed
		m.mu.Unlock()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return AgentServices{}, ctx.Err()
		}
		m.mu.Lock()
		name = m.byUUID[hostUUID] // renamed meanwhile?
	}
	out := AgentServices{Version: a.version, ControllerEpoch: m.cfg.ControllerEpoch, Host: name, Members: slices.Clone(a.list)}
	if _, down := m.down[name]; down {
		out.Members = nil
	}
	m.mu.Unlock()
	if out.Members == nil {
		out.Members = []Assignment{}
	}
	return out, nil
}

// Report takes an agent's status. A new boot ID means the host's
// previous boot died: every member it ran is gone.
func (m *Manager) Report(hostUUID string, st AgentStatus) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, ok := m.byUUID[hostUUID]
	if !ok {
		return errs.Wrapf(errs.NotFound, "host %s is not in the inventory", hostUUID)
	}
	a := m.agents[hostUUID]
	if a == nil {
		a = &agentState{changed: make(chan struct{})}
		m.agents[hostUUID] = a
	}
	m.seeBootLocked(name, a, st.BootID)
	a.seen = true
	obs := map[string]Observed{}
	for _, ms := range st.Members {
		obs[ms.Group] = Observed{Status: ms}
	}
	m.observed[hostUUID] = obs
	m.poke()
	return nil
}

// HostDown tells the manager that a host is confirmed fenced or dead (its
// BMC read back off): its members are gone, their slots free at once.
func (m *Manager) HostDown(hostUUID, reason string) {
	m.mu.Lock()
	name, ok := m.byUUID[hostUUID]
	if ok {
		boot := ""
		if a := m.agents[hostUUID]; a != nil {
			boot = a.bootID
		}
		m.down[name] = downInfo{reason: reason, bootID: boot}
		delete(m.observed, hostUUID)
	}
	m.mu.Unlock()
	if ok {
		m.cfg.Logger.Info("service members lost: their host is confirmed down", "host", name, "reason", reason)
		m.poke()
	}
}

// HoldsActive reports whether a host runs an active member of a group
// with standbys (host management fences such a host at once when it
// falls silent, instead of waiting out the grace period).
func (m *Manager) HoldsActive(hostUUID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, ok := m.byUUID[hostUUID]
	if !ok {
		return false
	}
	for _, g := range m.groups {
		if a, ok := g.place.Members[name]; ok && a.Role == RoleActive && !g.model.Every && g.model.M > 0 {
			return true
		}
	}
	return false
}

// CanLock says why locking a host would cost a group its service (brief
// §4: a lock is refused if it would leave services without redundancy,
// unless forced): the host runs an active member of an N+M group and no
// healthy standby on another host can take its slot. Nil if the lock is
// safe, or when this controller does not lead (nothing is known).
func (m *Manager) CanLock(hostUUID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, ok := m.byUUID[hostUUID]
	if !ok || !m.leading {
		return nil
	}
	for _, gname := range sortedKeys(m.groups) {
		g := m.groups[gname]
		if a, ok := g.place.Members[name]; !ok || a.Role != RoleActive || g.model.Every {
			continue
		}
		covered := false
		for h, am := range g.place.Members {
			if h != name && am.Role == RoleStandby && m.observed[m.uuidOf(h)][gname].Status.State == MemberStandby {
				covered = true
			}
		}
		if !covered {
			return errs.Wrapf(errs.InvalidTransition, "host %s runs an active member of service group %q and no healthy standby can take it over; use force-lock to lock it anyway", name, gname)
		}
	}
	return nil
}

// Groups lists every group with its status.
func (m *Manager) Groups(ctx context.Context) ([]Group, error) {
	if err := m.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Group{}
	for _, n := range sortedKeys(m.groups) {
		out = append(out, m.groupLocked(m.groups[n]))
	}
	return out, nil
}

// Group returns one group.
func (m *Manager) Group(ctx context.Context, name string) (Group, error) {
	if err := m.ensureLoaded(ctx); err != nil {
		return Group{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[name]
	if g == nil {
		return Group{}, errs.Wrapf(errs.NotFound, "service group %q not found", name)
	}
	return m.groupLocked(g), nil
}

func (m *Manager) ensureLoaded(ctx context.Context) error {
	m.mu.Lock()
	loaded, leading := m.loaded, m.leading
	m.mu.Unlock()
	if !leading {
		return ErrNotLeading
	}
	if loaded {
		return nil
	}
	return m.load(ctx)
}

func (m *Manager) groupLocked(g *groupState) Group {
	out := Group{Spec: g.rec.Spec, N: g.model.N, M: g.model.M, Status: g.plan.Status, Reason: g.plan.Reason,
		Epoch: g.place.Epoch, Members: slices.Clone(g.plan.Members), CreatedAt: g.rec.CreatedAt}
	if g.model.Every {
		out.N, out.M = len(g.rec.Spec.Hosts), 0
	}
	if out.Status == "" {
		out.Status, out.Reason = StatusFailed, "not placed yet"
	}
	if out.Members == nil {
		out.Members = []Member{}
	}
	return out
}

// Create validates a spec against the site's hosts and the other groups,
// stores it, and places it.
func (m *Manager) Create(ctx context.Context, s Spec, source string) (Group, error) {
	return m.put(ctx, s, source, true)
}

// Apply declares groups (the site configuration's file): each is created,
// or its spec replaced.
func (m *Manager) Apply(ctx context.Context, specs []Spec) error {
	if err := m.ensureLoaded(ctx); err != nil {
		return err
	}
	all, err := m.withSpecs(ctx, specs)
	if err != nil {
		return err
	}
	if _, err := Check(all, m.hostExists(ctx)); err != nil {
		return err
	}
	for _, s := range specs {
		if _, err := m.put(ctx, s, "config", false); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) withSpecs(ctx context.Context, specs []Spec) ([]Spec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []Spec
	for _, n := range sortedKeys(m.groups) {
		if !slices.ContainsFunc(specs, func(s Spec) bool { return s.Name == n }) {
			all = append(all, m.groups[n].rec.Spec)
		}
	}
	return append(all, specs...), nil
}

func (m *Manager) hostExists(ctx context.Context) func(string) bool {
	hs, err := m.cfg.Hosts.ServiceHosts(ctx)
	names := map[string]bool{}
	if err == nil {
		for _, h := range hs {
			names[h.Name] = true
		}
	}
	return func(n string) bool { return names[n] }
}

func (m *Manager) put(ctx context.Context, s Spec, source string, create bool) (Group, error) {
	if err := m.ensureLoaded(ctx); err != nil {
		return Group{}, err
	}
	m.mu.Lock()
	if create && m.groups[s.Name] != nil {
		m.mu.Unlock()
		return Group{}, errs.Wrapf(errs.Conflict, "service group %q exists", s.Name)
	}
	m.mu.Unlock()
	all, err := m.withSpecs(ctx, []Spec{s})
	if err != nil {
		return Group{}, err
	}
	models, err := Check(all, m.hostExists(ctx))
	if err != nil {
		return Group{}, err
	}
	// Check filled the defaults in its copy.
	s = all[len(all)-1]
	rec, err := m.cfg.Specs.Put(ctx, Record{Spec: s, Source: source}, create)
	if err != nil {
		return Group{}, err
	}
	p, err := m.cfg.Ledger.Load(ctx, s.Name)
	if err != nil {
		return Group{}, err
	}
	m.mu.Lock()
	if g := m.groups[s.Name]; g != nil {
		g.rec, g.model = rec, models[s.Name]
	} else {
		m.groups[s.Name] = &groupState{rec: rec, model: models[s.Name], place: p, flapping: map[string]bool{}}
	}
	out := m.groupLocked(m.groups[s.Name])
	m.mu.Unlock()
	m.poke()
	return out, nil
}

// Delete removes a group: its members are stopped, its alarms cleared.
// A group others depend on cannot be deleted.
func (m *Manager) Delete(ctx context.Context, name string) error {
	if err := m.ensureLoaded(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	g := m.groups[name]
	if g == nil {
		m.mu.Unlock()
		return errs.Wrapf(errs.NotFound, "service group %q not found", name)
	}
	for _, n := range sortedKeys(m.groups) {
		if slices.Contains(m.groups[n].rec.Spec.DependsOn, name) {
			m.mu.Unlock()
			return errs.Wrapf(errs.Conflict, "service group %q depends on %q: delete it first", n, name)
		}
	}
	m.mu.Unlock()
	if err := m.cfg.Specs.Delete(ctx, name); err != nil {
		return err
	}
	if err := m.cfg.Ledger.Remove(ctx, name); err != nil {
		return err
	}
	m.mu.Lock()
	flapping := g.flapping
	delete(m.groups, name)
	m.mu.Unlock()
	entity := "service-group=" + name
	m.clear(ctx, AlarmFailed, entity)
	m.clear(ctx, AlarmDegraded, entity)
	for h := range flapping {
		m.clear(ctx, AlarmFlapping, entity+".host="+h)
	}
	m.publish()
	m.poke()
	return nil
}
