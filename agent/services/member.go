package services

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/servicemgr"
)

// member is one service-group member on this host. Its goroutine (run)
// owns its state; the runner hands it assignments through want and wake,
// and it hands back its status through publish.
type member struct {
	r     *Runner
	group string
	dir   string // its state directory, {state_dir}
	log   *slog.Logger
	out   *logFile      // member.log
	wake  chan struct{} // want changed
	env   atomic.Pointer[[]string]

	// Guarded by r.mu.
	want     *servicemgr.Assignment // nil once removed
	retiring bool                   // removed: it stops and ends
	status   servicemgr.MemberStatus

	// Owned by run.
	state        state
	since        time.Time
	cur          servicemgr.Assignment // the assignment in effect
	hold         bool                  // failed at cur's epoch: standby until a newer assignment
	proc         *process
	check        *checker
	spec         healthSpec
	fails        int // health checks failed in a row
	startedAt    time.Time
	healthySince time.Time     // zero unless standby or active
	backoff      time.Duration // the wait after the next failure
	wait         time.Duration // the wait before the pending restart
	retry        *time.Timer
	restarts     int
	reason       string
	addr         *heldAddress // the floating address on the host, or that may be
	activated    bool         // activation began; deactivation has not run since
	role         servicemgr.RoleFile
}

func (r *Runner) newMember(a servicemgr.Assignment) *member {
	dir := filepath.Join(r.cfg.StateDir, membersDir, a.Group)
	return &member{r: r, group: a.Group, dir: dir, log: r.log.With("group", a.Group),
		out: newLogFile(dir, r.cfg.LogMax), wake: make(chan struct{}, 1), want: &a, backoff: r.cfg.BackoffMin}
}

// run drives the member until it is gone: removed from the host, or the
// agent stops (ctx), in which case it is deactivated and stopped too.
func (m *member) run(ctx context.Context) {
	defer m.out.Close()
	a := m.r.wantOf(m)
	if a == nil {
		return // removed before it began
	}
	m.cur = *a
	m.start(ctx)
	for m.state != gone {
		select {
		case <-ctx.Done():
			// The agent stops: nothing may stay active behind it.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.r.cfg.ActionTimeout+m.r.cfg.StopGrace+5*time.Second)
			m.retire(sctx, "the agent is stopping")
			cancel()
			return
		case <-m.wake:
			m.reconcile(ctx)
		case <-m.procDone():
			m.fail(ctx, "its process "+describeExit(m.proc.err))
		case res := <-m.healthResults():
			m.checked(ctx, res)
		case <-m.retryC():
			m.retry = nil
			m.restarts++
			m.log.Info("restarting after a failure", "restarts", m.restarts)
			m.start(ctx)
		}
		m.publish()
	}
}

func (m *member) procDone() <-chan struct{} {
	if m.proc == nil {
		return nil
	}
	return m.proc.done
}

func (m *member) healthResults() <-chan healthResult {
	if m.check == nil {
		return nil
	}
	return m.check.results
}

func (m *member) retryC() <-chan time.Time {
	if m.retry == nil {
		return nil
	}
	return m.retry.C
}

// to moves the member to next and publishes it. Staying put is no
// transition (except starting again).
func (m *member) to(next state) {
	if m.state == next && next != starting {
		return
	}
	if !(m.state == "" && next == starting) && !m.state.canTo(next) {
		m.log.Error("invalid member state transition", "from", m.state, "to", next)
	}
	m.log.Info("member state", "from", m.state, "to", next, "epoch", m.cur.Epoch, "role", m.cur.Role)
	m.state, m.since = next, time.Now()
	m.publish()
}

// publish hands the member's status to the runner for reporting.
func (m *member) publish() {
	if m.state == gone || m.state == "" {
		return
	}
	role := m.cur.Role
	if m.hold {
		role = servicemgr.RoleStandby
	}
	st := servicemgr.MemberStatus{Group: m.group, Epoch: m.cur.Epoch, Role: role, State: m.state.wire(),
		Reason: m.reason, Restarts: m.restarts, Since: m.since}
	if m.state == failed {
		st.Backoff = m.wait
	}
	m.r.publish(m, st)
}

// wantActive: the member is to be active.
func (m *member) wantActive() bool { return m.cur.Role == servicemgr.RoleActive && !m.hold }

// reconcile takes the assignment the runner wants in effect.
func (m *member) reconcile(ctx context.Context) {
	a := m.r.wantOf(m)
	if a == nil {
		m.retire(ctx, "removed from this host")
		return
	}
	if a.Epoch != m.cur.Epoch {
		prev := m.cur
		m.cur, m.hold = *a, false
		m.log.Info("new assignment", "epoch", a.Epoch, "role", a.Role, "slot", a.Slot, "floating", a.Floating)
		if m.state != failed && (!slices.Equal(prev.Actions.Start, a.Actions.Start) || !sameHealth(prev.Health, a.Health)) {
			m.log.Info("restarting: its start action or health check changed")
			if m.state == active && !m.deactivate(ctx) {
				return
			}
			m.stop(ctx)
			m.start(ctx)
			return
		}
	}
	m.converge(ctx)
}

// converge moves a running member to the role it is to have.
func (m *member) converge(ctx context.Context) {
	switch m.state {
	case standby:
		if m.wantActive() {
			m.activate(ctx)
			return
		}
		m.refreshRole(servicemgr.RoleStandby)
	case active:
		switch {
		case !m.wantActive():
			m.deactivate(ctx)
		case m.addressMoved():
			// Another slot: the actions see its {floating}.
			if m.deactivate(ctx) {
				m.activate(ctx)
			}
		default:
			m.refreshRole(servicemgr.RoleActive)
		}
	case starting:
		m.refreshRole(servicemgr.RoleStandby)
	}
}

// start starts the member's process and its health check.
func (m *member) start(ctx context.Context) {
	m.stopRetry()
	m.to(starting)
	m.startedAt, m.fails, m.healthySince = time.Now(), 0, time.Time{}
	if err := m.releaseAddress(ctx); err != nil { // one an earlier failure could not release
		m.fail(ctx, "releasing its floating address: "+err.Error())
		return
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		m.fail(ctx, "state directory: "+err.Error())
		return
	}
	if err := os.Chmod(m.dir, 0o700); err != nil {
		m.fail(ctx, "state directory: "+err.Error())
		return
	}
	if err := m.writeRole(servicemgr.RoleStandby); err != nil {
		m.fail(ctx, err.Error())
		return
	}
	v := m.vars()
	argv := v.argv(m.cur.Actions.Start)
	p, err := startProcess(argv, m.environ(), m.dir, m.out)
	if err != nil {
		m.out.note("start %q: %v", argv, err)
		m.fail(ctx, "start: "+err.Error())
		return
	}
	m.proc = p
	m.out.note("started %q (pid %d, epoch %d)", argv, p.pid(), m.cur.Epoch)
	m.spec = newHealthSpec(m.cur.Health, v)
	m.check = startChecker(ctx, m.spec, p, func(ctx context.Context, argv []string, out io.Writer) error {
		return runOnce(ctx, argv, *m.env.Load(), m.dir, out) // runs on the checker's goroutine
	})
}

// checked counts a health check's outcome.
func (m *member) checked(ctx context.Context, res healthResult) {
	if res.err == nil {
		m.fails = 0
		if m.state == starting {
			m.healthySince = time.Now()
			m.to(standby)
			m.converge(ctx)
		}
		return
	}
	m.fails++
	m.log.Debug("health check failed", "fails", m.fails, "err", res.err)
	if m.state == starting && time.Since(m.startedAt) < m.r.cfg.StartGrace {
		return
	}
	if m.fails >= m.spec.failures {
		m.fail(ctx, fmt.Sprintf("health check failed %d times in a row: %v", m.fails, res.err))
	}
}

// activate makes a healthy standby active: role.json, its activate
// action, then its floating address, added and announced.
func (m *member) activate(ctx context.Context) {
	t0 := time.Now()
	m.activated = true
	if err := m.writeRole(servicemgr.RoleActive); err != nil {
		m.fail(ctx, err.Error())
		return
	}
	if err := m.action(ctx, "activate", m.cur.Actions.Activate, servicemgr.RoleActive); err != nil {
		m.fail(ctx, err.Error())
		return
	}
	if m.cur.Floating != "" {
		if err := m.takeAddress(ctx); err != nil {
			m.fail(ctx, err.Error())
			return
		}
	}
	m.to(active)
	m.log.Info("activated", "epoch", m.cur.Epoch, "slot", m.cur.Slot, "floating", m.cur.Floating, "took", time.Since(t0))
}

// deactivate makes an active member standby: its floating address goes
// first, then role.json and its deactivate action. It reports whether
// the member is standby (otherwise it failed).
func (m *member) deactivate(ctx context.Context) bool {
	if err := m.releaseAddress(ctx); err != nil {
		m.fail(ctx, "releasing its floating address: "+err.Error())
		return false
	}
	if err := m.writeRole(servicemgr.RoleStandby); err != nil {
		m.fail(ctx, err.Error())
		return false
	}
	err := m.action(ctx, "deactivate", m.cur.Actions.Deactivate, servicemgr.RoleStandby)
	m.activated = false
	if err != nil {
		m.fail(ctx, err.Error())
		return false
	}
	m.to(standby)
	return true
}

// fail stops a member that failed and schedules its restart. It is
// reported failed as soon as its address is off, before its process has
// stopped; it stays standby until the site assigns it again (a newer
// epoch).
func (m *member) fail(ctx context.Context, reason string) {
	m.log.Warn("member failed", "state", m.state, "reason", reason)
	m.reason, m.hold = reason, true
	m.stopChecker()
	addrErr := m.releaseAddress(ctx)
	if m.healthySince.IsZero() || time.Since(m.healthySince) < m.r.cfg.BackoffReset {
		m.wait = m.backoff
	} else {
		m.wait = m.r.cfg.BackoffMin // it had been healthy long enough
	}
	m.backoff = min(m.wait*2, m.r.cfg.BackoffMax)
	m.healthySince = time.Time{}
	m.to(failed)
	if addrErr != nil {
		m.log.Error("releasing a failed member's floating address failed", "err", addrErr)
	}
	m.teardown(ctx)
	m.retry = time.NewTimer(m.wait)
}

// retire stops a member for good: it is removed from the host, or the
// agent stops.
func (m *member) retire(ctx context.Context, why string) {
	m.log.Info("stopping the member", "why", why)
	m.stopRetry()
	m.stopChecker()
	addrErr := m.releaseAddress(ctx)
	m.to(stopping)
	m.teardown(ctx)
	if addrErr != nil {
		if err := m.releaseAddress(ctx); err != nil {
			m.log.Error("a stopped member's floating address could not be released; the next start of the agent will try again",
				"floating", m.addr.Prefix, "err", err)
		}
	}
	m.to(gone)
}

// teardown deactivates (if it was activated) and stops a member whose
// floating address is already off.
func (m *member) teardown(ctx context.Context) {
	m.stopChecker()
	if m.activated || m.role.Role == servicemgr.RoleActive {
		if err := m.writeRole(servicemgr.RoleStandby); err != nil {
			m.log.Warn("writing role.json failed", "err", err)
		}
	}
	if m.activated {
		if err := m.action(ctx, "deactivate", m.cur.Actions.Deactivate, servicemgr.RoleStandby); err != nil {
			m.log.Warn("deactivating a failed or stopping member failed", "err", err)
		}
		m.activated = false
	}
	m.stop(ctx)
}

// stop ends the member's process: its stop action, or SIGTERM to its
// process group; SIGKILL after StopGrace.
func (m *member) stop(ctx context.Context) {
	m.stopChecker()
	if m.proc == nil {
		return
	}
	deadline := time.Now().Add(m.r.cfg.StopGrace)
	asked := false
	if len(m.cur.Actions.Stop) > 0 && !m.proc.exited() {
		sctx, cancel := context.WithDeadline(ctx, deadline)
		err := m.action(sctx, "stop", m.cur.Actions.Stop, m.role.Role)
		cancel()
		if err != nil {
			m.log.Warn("the stop action failed; sending SIGTERM", "err", err)
		}
		asked = err == nil
	}
	m.proc.stop(deadline, asked)
	m.out.note("pid %d ended: %s", m.proc.pid(), describeExit(m.proc.err))
	m.proc = nil
}

func (m *member) stopChecker() {
	if m.check != nil {
		m.check.stop()
		m.check = nil
	}
}

func (m *member) stopRetry() {
	if m.retry != nil {
		m.retry.Stop()
		m.retry = nil
	}
}

// action runs one of the member's one-shot actions (none: nothing to do).
func (m *member) action(ctx context.Context, name string, argv []string, role servicemgr.Role) error {
	if len(argv) == 0 {
		return nil
	}
	argv = m.vars().argv(argv)
	ctx, cancel := context.WithTimeout(ctx, m.r.cfg.ActionTimeout)
	defer cancel()
	t0 := time.Now()
	m.out.note("%s: %q", name, argv)
	err := runOnce(ctx, argv, env(m.r.hostName(), m.group, role, m.cur.Epoch, m.dir), m.dir, m.out)
	if err != nil {
		m.out.note("%s: %v", name, err)
		return fmt.Errorf("%s action %s: %w", name, argv[0], err)
	}
	m.log.Debug("ran an action", "action", name, "took", time.Since(t0))
	return nil
}

// vars are the member's placeholder values now.
func (m *member) vars() vars {
	addrs := m.r.cfg.Addrs()
	return vars{host: m.r.hostName(), group: m.group, mgmt: addrs["mgmt"], cluster: addrs["cluster"],
		stateDir: m.dir, floating: floatingAddr(m.cur.Floating)}
}

// environ is the environment of the member's start process and health
// commands, with its role as role.json has it.
func (m *member) environ() []string {
	e := env(m.r.hostName(), m.group, m.role.Role, m.cur.Epoch, m.dir)
	m.env.Store(&e)
	return e
}

// writeRole writes role.json.
func (m *member) writeRole(role servicemgr.Role) error {
	rf := servicemgr.RoleFile{Host: m.r.hostName(), Group: m.group, Role: role, Epoch: m.cur.Epoch}
	b, _ := json.Marshal(rf)
	if err := atomicfile.Write(filepath.Join(m.dir, roleFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing role.json: %w", err)
	}
	m.role = rf
	m.environ()
	return nil
}

// refreshRole rewrites role.json when its epoch (or host name) is not the
// one in effect.
func (m *member) refreshRole(role servicemgr.Role) {
	if m.role.Role == role && m.role.Epoch == m.cur.Epoch && m.role.Host == m.r.hostName() {
		return
	}
	if err := m.writeRole(role); err != nil {
		m.log.Warn("refreshing role.json failed", "err", err)
	}
}

// takeAddress adds the member's floating address and announces it. The
// address is recorded first, so that an agent that dies holding it
// releases it when it starts again.
func (m *member) takeAddress(ctx context.Context) error {
	h := heldAddress{Iface: m.cur.Network, Prefix: m.cur.Floating}
	if err := m.r.hold(m.group, h); err != nil {
		return fmt.Errorf("recording its floating address: %w", err)
	}
	m.addr = &h
	if err := m.r.cfg.Platform.AddAddress(ctx, h.Iface, h.Prefix); err != nil {
		return fmt.Errorf("adding floating address %s on %s: %w", h.Prefix, h.Iface, err)
	}
	if err := m.r.cfg.Platform.Announce(ctx, h.Iface, floatingAddr(h.Prefix)); err != nil {
		m.log.Warn("announcing the floating address failed", "floating", h.Prefix, "iface", h.Iface, "err", err)
	}
	return nil
}

// releaseAddress takes the member's floating address off, if it has one.
func (m *member) releaseAddress(ctx context.Context) error {
	if m.addr == nil {
		return nil
	}
	if err := m.r.cfg.Platform.DelAddress(ctx, m.addr.Iface, m.addr.Prefix); err != nil {
		return err
	}
	m.r.unhold(m.group)
	m.addr = nil
	return nil
}

// addressMoved: the active member's floating address is not its
// assignment's.
func (m *member) addressMoved() bool {
	if m.addr == nil {
		return m.cur.Floating != ""
	}
	return m.addr.Prefix != m.cur.Floating || m.addr.Iface != m.cur.Network
}

// validPrefix checks a floating address, "ADDR/LEN".
func validPrefix(s string) error {
	if _, err := netip.ParsePrefix(s); err != nil {
		return fmt.Errorf("floating address: %w", err)
	}
	return nil
}
