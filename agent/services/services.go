// Package services runs, on a host, the service-group members its site
// controller assigns to it (package servicemgr has the protocol): it
// starts and stops their processes, checks their health, activates and
// deactivates them, takes and releases their floating addresses, refuses
// assignments older than the newest epoch it has seen of their group, and
// reports what it runs.
//
// The desired state is level-triggered: Apply gives the Runner everything
// the host must run, and the Runner converges. Each member has its own
// state machine (starting, standby, active, failed, stopping, gone) run by
// one goroutine that exists while the member does; the activation of a
// healthy standby waits for nothing but its own activate action. Roles are
// never persisted: after a restart of the agent, or of the host, nothing
// runs until the site says so again, so a host that comes back after being
// fenced can never resume an old active role.
package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/servicemgr"
)

// AddressPlatform changes the host's addresses: the part of the agent's
// platform that floating addresses need.
type AddressPlatform interface {
	// AddAddress puts prefix ("ADDR/LEN") on the interface iface; it is
	// not an error when it is there already.
	AddAddress(ctx context.Context, iface, prefix string) error
	// DelAddress takes prefix off iface; it is not an error when it is
	// not there (nor when iface is gone).
	DelAddress(ctx context.Context, iface, prefix string) error
	// Announce tells the interface's network that addr (no prefix) is
	// here now (a gratuitous ARP for IPv4).
	Announce(ctx context.Context, iface, addr string) error
}

// Config configures a Runner. StateDir, Platform, Report and Logger are
// required; zero durations take the defaults documented on each.
type Config struct {
	// StateDir keeps services-epochs.json and services-addresses.json;
	// each member's own directory is StateDir/services/GROUP (0700).
	StateDir string
	// Host is the host's name for {host}, PETREL_HOST and role.json when
	// the site does not name it (servicemgr.AgentServices.Host).
	Host string
	// Addrs returns this host's address on each network ("mgmt",
	// "cluster"), for {mgmt} and {cluster}. Optional.
	Addrs    func() map[string]string
	Platform AddressPlatform
	// Report sends the status of every member to the site. It runs on a
	// goroutine of its own, one call at a time; it never holds up a
	// member.
	Report func(ctx context.Context, st servicemgr.AgentStatus) error
	Logger *slog.Logger

	// ReportInterval: a report at least this often; default 10 s.
	ReportInterval time.Duration
	// BackoffMin, BackoffMax: the wait before restarting a failed member
	// doubles from BackoffMin (default 1 s) up to BackoffMax (default 60
	// s); it is back to BackoffMin once the member has stayed healthy for
	// BackoffReset (default 60 s).
	BackoffMin, BackoffMax, BackoffReset time.Duration
	// StopGrace is how long a stopping process has to end before its
	// process group is killed; default 5 s.
	StopGrace time.Duration
	// ActionTimeout bounds an activate or deactivate action; default 30 s.
	ActionTimeout time.Duration
	// StartGrace: while starting, failed health checks fail the member
	// only once it has run this long; default 10 s.
	StartGrace time.Duration
	// LogMax is the size at which member.log is rotated to member.log.1;
	// default 1 MiB.
	LogMax int64
}

// File names in StateDir.
const (
	epochsFile    = "services-epochs.json"
	addressesFile = "services-addresses.json"
	membersDir    = "services"
	roleFile      = "role.json"
)

// Runner runs the members assigned to this host.
type Runner struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{} // Run must reconcile: desired state changed, or a member ended

	changed chan struct{} // a member's status changed: report

	mu      sync.Mutex
	seen    epochs                           // the newest epochs seen, persisted
	desired map[string]servicemgr.Assignment // accepted assignments, by group
	version uint64                           // of the desired state applied
	host    string                           // the site's name for this host, if it gave one
	members map[string]*member               // members with a goroutine, by group
	held    map[string]heldAddress           // floating addresses held, by group, persisted
	running bool
}

// epochs is services-epochs.json.
type epochs struct {
	Controller uint64            `json:"controller"`
	Groups     map[string]uint64 `json:"groups"`
}

// heldAddress is a floating address a member holds (or may hold: it is
// recorded before it is added).
type heldAddress struct {
	Iface  string `json:"iface"`
	Prefix string `json:"prefix"`
}

// New checks cfg and loads the epochs seen before. It starts nothing.
func New(cfg Config) (*Runner, error) {
	if cfg.StateDir == "" || cfg.Platform == nil || cfg.Report == nil || cfg.Logger == nil {
		return nil, errors.New("services: StateDir, Platform, Report and Logger are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ReportInterval, 10*time.Second)
	def(&cfg.BackoffMin, time.Second)
	def(&cfg.BackoffMax, time.Minute)
	def(&cfg.BackoffReset, time.Minute)
	def(&cfg.StopGrace, 5*time.Second)
	def(&cfg.ActionTimeout, 30*time.Second)
	def(&cfg.StartGrace, 10*time.Second)
	if cfg.LogMax <= 0 {
		cfg.LogMax = 1 << 20
	}
	if cfg.Addrs == nil {
		cfg.Addrs = func() map[string]string { return nil }
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, membersDir), 0o700); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), changed: make(chan struct{}, 1),
		desired: map[string]servicemgr.Assignment{}, members: map[string]*member{}}
	if err := readJSON(filepath.Join(cfg.StateDir, epochsFile), &r.seen); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	if r.seen.Groups == nil {
		r.seen.Groups = map[string]uint64{}
	}
	if err := readJSON(filepath.Join(cfg.StateDir, addressesFile), &r.held); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	if r.held == nil {
		r.held = map[string]heldAddress{}
	}
	return r, nil
}

// readJSON reads path into v; a missing file leaves v as it is.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// groupName is what a group name must look like: it names a directory.
var groupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ifaceName is what an interface name may look like (IFNAMSIZ).
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)

// validate checks what the agent needs of an assignment.
func validate(a servicemgr.Assignment) error {
	if !groupName.MatchString(a.Group) {
		return fmt.Errorf("group name %q", a.Group)
	}
	if a.Role != servicemgr.RoleActive && a.Role != servicemgr.RoleStandby {
		return fmt.Errorf("role %q", a.Role)
	}
	if len(a.Actions.Start) == 0 || a.Actions.Start[0] == "" {
		return errors.New("no start action")
	}
	if err := validHealth(a.Health); err != nil {
		return err
	}
	if a.Floating != "" {
		if err := validPrefix(a.Floating); err != nil {
			return err
		}
		if !ifaceName.MatchString(a.Network) {
			return fmt.Errorf("network %q of floating address %s", a.Network, a.Floating)
		}
	}
	return nil
}

// Apply makes as the desired state. An assignment with an epoch older than
// the newest seen of its group is refused (logged) and the member keeps
// the assignment it has; one with the same epoch is the assignment in
// effect. A member that as does not list is stopped. A whole answer from an
// older controller epoch than one seen is refused. Apply returns at once;
// Run carries it out.
func (r *Runner) Apply(as servicemgr.AgentServices) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if as.ControllerEpoch < r.seen.Controller {
		r.log.Warn("refused the services of an older controller epoch", "controller_epoch", as.ControllerEpoch,
			"seen", r.seen.Controller, "version", as.Version)
		return
	}
	next := epochs{Controller: as.ControllerEpoch, Groups: maps.Clone(r.seen.Groups)}
	desired := map[string]servicemgr.Assignment{}
	for _, a := range as.Members {
		if _, dup := desired[a.Group]; dup {
			r.log.Warn("ignored a second assignment of a group", "group", a.Group, "epoch", a.Epoch)
			continue
		}
		cur, has := r.desired[a.Group]
		if err := validate(a); err != nil {
			r.log.Warn("refused an invalid assignment", "group", a.Group, "epoch", a.Epoch, "err", err)
			if has {
				desired[a.Group] = cur
			}
			continue
		}
		switch seen := next.Groups[a.Group]; {
		case a.Epoch < seen:
			r.log.Warn("refused an assignment of an older epoch", "group", a.Group, "epoch", a.Epoch, "seen", seen, "role", a.Role)
			if has {
				desired[a.Group] = cur
			}
			continue
		case a.Epoch == seen && has:
			if !sameAssignment(cur, a) {
				r.log.Warn("the site changed an assignment without a new epoch; kept the one in effect", "group", a.Group, "epoch", a.Epoch)
			}
			desired[a.Group] = cur
			continue
		}
		next.Groups[a.Group] = a.Epoch
		desired[a.Group] = a
	}
	// The epochs are on disk before anything acts on them.
	if next.Controller != r.seen.Controller || !maps.Equal(next.Groups, r.seen.Groups) {
		b, _ := json.Marshal(next)
		if err := atomicfile.Write(filepath.Join(r.cfg.StateDir, epochsFile), b, 0o600); err != nil {
			r.log.Error("refused the services: cannot record their epochs", "version", as.Version, "err", err)
			return
		}
		r.seen = next
	}
	r.desired, r.version = desired, as.Version
	if as.Host != "" {
		r.host = as.Host
	}
	signal(r.kick)
	signal(r.changed) // the version applied is reported
}

func sameAssignment(x, y servicemgr.Assignment) bool {
	return x.Group == y.Group && x.Role == y.Role && x.Epoch == y.Epoch && x.Slot == y.Slot &&
		x.Floating == y.Floating && x.Network == y.Network && sameHealth(x.Health, y.Health) &&
		slices.Equal(x.Actions.Start, y.Actions.Start) && slices.Equal(x.Actions.Stop, y.Actions.Stop) &&
		slices.Equal(x.Actions.Activate, y.Actions.Activate) && slices.Equal(x.Actions.Deactivate, y.Actions.Deactivate)
}

func sameHealth(x, y servicemgr.HealthCheck) bool {
	return x.Type == y.Type && x.Target == y.Target && slices.Equal(x.Command, y.Command) &&
		x.IntervalMS == y.IntervalMS && x.TimeoutMS == y.TimeoutMS && x.Failures == y.Failures
}

// signal wakes whoever waits on c (a channel of capacity 1) without
// blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Epoch is the newest epoch seen of group (0 if none).
func (r *Runner) Epoch(group string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen.Groups[group]
}

// Status is what the host runs now, members sorted by group.
func (r *Runner) Status() servicemgr.AgentStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := servicemgr.AgentStatus{Version: r.version, Members: []servicemgr.MemberStatus{}}
	for _, m := range r.members {
		if m.status.State != "" {
			st.Members = append(st.Members, m.status)
		}
	}
	slices.SortFunc(st.Members, func(a, b servicemgr.MemberStatus) int { return strings.Compare(a.Group, b.Group) })
	return st
}

// Run runs the members until ctx ends, then deactivates and stops them
// all (releasing their addresses first) before it returns. It first
// releases the floating addresses an earlier run of the agent may have
// left behind.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("services: Run called twice")
	}
	r.running = true
	r.mu.Unlock()
	r.releaseLeftovers(ctx)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.reportLoop(ctx) })
	signal(r.kick)
	for {
		select {
		case <-ctx.Done():
			return nil // members stop themselves; wg.Wait waits for them
		case <-r.kick:
			r.reconcile(ctx, &wg)
		}
	}
}

// reconcile gives every member what it must run: it starts a goroutine
// for each new one and tells those no longer wanted to stop. A member
// re-added while it is still stopping starts anew once it has ended.
func (r *Runner) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for g, a := range r.desired {
		m := r.members[g]
		switch {
		case m == nil:
			m = r.newMember(a)
			r.members[g] = m
			wg.Go(func() {
				m.run(ctx)
				r.ended(m)
			})
		case m.retiring: // wait for it to end
		case m.want == nil || m.want.Epoch != a.Epoch:
			m.want = &a
			signal(m.wake)
		}
	}
	for g, m := range r.members {
		if _, ok := r.desired[g]; !ok && !m.retiring {
			m.want, m.retiring = nil, true
			signal(m.wake)
		}
	}
}

// ended forgets a member whose goroutine has ended.
func (r *Runner) ended(m *member) {
	r.mu.Lock()
	if r.members[m.group] == m {
		delete(r.members, m.group)
	}
	r.mu.Unlock()
	signal(r.kick)
	signal(r.changed)
}

// wantOf is the assignment the runner wants m to run; nil once removed.
func (r *Runner) wantOf(m *member) *servicemgr.Assignment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m.want
}

// hostName is the host's name for placeholders, PETREL_HOST and role.json.
func (r *Runner) hostName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.host != "" {
		return r.host
	}
	return r.cfg.Host
}

// publish records m's status, and has it reported if it changed.
func (r *Runner) publish(m *member, st servicemgr.MemberStatus) {
	r.mu.Lock()
	same := m.status == st
	m.status = st
	r.mu.Unlock()
	if !same {
		signal(r.changed)
	}
}

// reportLoop reports at once, then whenever a status changed (one report
// at a time: changes meanwhile make one more) and at least every
// ReportInterval. After a failed report it waits a second before the next.
func (r *Runner) reportLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-t.C:
		}
		st := r.Status()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.cfg.Report(rctx, st)
		cancel()
		switch {
		case err == nil:
			if lastErr != "" {
				r.log.Info("reporting services works again")
			}
			lastErr = ""
		case ctx.Err() != nil:
			return
		case err.Error() != lastErr: // each distinct problem once
			lastErr = err.Error()
			r.log.Warn("reporting services failed", "err", err)
		default:
			r.log.Debug("reporting services failed", "err", err)
		}
		if err != nil {
			w := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				w.Stop()
				return
			case <-w.C:
			}
		}
		t.Reset(r.cfg.ReportInterval)
	}
}

// hold records that group may hold addr, before it is added.
func (r *Runner) hold(group string, addr heldAddress) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held[group] == addr {
		return nil
	}
	next := maps.Clone(r.held)
	next[group] = addr
	if err := r.writeHeld(next); err != nil {
		return err
	}
	r.held = next
	return nil
}

// unhold records that group no longer holds an address, once it is gone.
func (r *Runner) unhold(group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.held[group]; !ok {
		return
	}
	next := maps.Clone(r.held)
	delete(next, group)
	if err := r.writeHeld(next); err != nil {
		r.log.Warn("recording a released address failed", "group", group, "err", err)
	}
	r.held = next
}

func (r *Runner) writeHeld(held map[string]heldAddress) error {
	b, _ := json.Marshal(held)
	return atomicfile.Write(filepath.Join(r.cfg.StateDir, addressesFile), b, 0o600)
}

// releaseLeftovers takes off the floating addresses that an earlier run
// recorded and did not release (it crashed, or was killed), and removes
// the role.json files it left: nothing runs now, so nothing may hold an
// address or claim a role.
func (r *Runner) releaseLeftovers(ctx context.Context) {
	roles, _ := filepath.Glob(filepath.Join(r.cfg.StateDir, membersDir, "*", roleFile))
	for _, f := range roles {
		if err := os.Remove(f); err != nil {
			r.log.Warn("removing a role.json left by an earlier run failed", "err", err)
		}
	}
	r.mu.Lock()
	left := maps.Clone(r.held)
	r.mu.Unlock()
	for g, a := range left {
		if err := r.cfg.Platform.DelAddress(ctx, a.Iface, a.Prefix); err != nil {
			r.log.Error("releasing a floating address left by an earlier run failed", "group", g, "iface", a.Iface, "address", a.Prefix, "err", err)
			continue
		}
		r.log.Warn("released a floating address left by an earlier run", "group", g, "iface", a.Iface, "address", a.Prefix)
		r.unhold(g)
	}
}
