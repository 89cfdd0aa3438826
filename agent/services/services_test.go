package services_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/services"
	"github.com/petrel-edge/petrel/agent/services/servicestest"
	"github.com/petrel-edge/petrel/servicemgr"
)

const (
	active  = servicemgr.RoleActive
	standby = servicemgr.RoleStandby
)

// TestStandbyBecomesActiveAndBack walks a member through starting,
// standby, active and standby again, checking the order of what happens
// on the way, and measures how long activation takes.
func TestStandbyBecomesActiveAndBack(t *testing.T) {
	e := newEnv(t, "", nil)
	dir := e.memberDir("web")
	actions := filepath.Join(dir, "actions.json")
	a := assignment(t, "web", standby, 1)
	a.Actions.Start = helper(t, "run", "{state_dir}/run.json", "{host}", "{group}", "{mgmt}", "{cluster}", "{floating}", "{nope}")
	a.Actions.Activate = helper(t, "record", actions, "activate", "{floating}")
	a.Actions.Deactivate = helper(t, "record", actions, "deactivate")
	e.apply(1, a)
	e.await("web", servicemgr.MemberStandby)

	// The start process: placeholders expanded, environment, directory, role.json.
	var runs []seen
	waitFor(t, "the start process to record itself", func() bool { runs = readSeen(t, filepath.Join(dir, "run.json")); return len(runs) == 1 })
	if got, want := runs[0].Args, []string{"host-1", "web", "127.0.0.1", "127.0.0.2", "", "{nope}"}; !slices.Equal(got, want) {
		t.Errorf("start args = %q; want %q", got, want)
	}
	wantEnv := map[string]string{"PETREL_GROUP": "web", "PETREL_HOST": "host-1", "PETREL_ROLE": "standby", "PETREL_EPOCH": "1", "PETREL_STATE_DIR": dir}
	for k, v := range wantEnv {
		if runs[0].Env[k] != v {
			t.Errorf("start env %s = %q; want %q", k, runs[0].Env[k], v)
		}
	}
	if runs[0].Dir != dir || !strings.Contains(runs[0].Role, `"role":"standby"`) {
		t.Errorf("start process ran in %s with role.json %s; want %s and standby", runs[0].Dir, runs[0].Role, dir)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("member directory %v, %v; want mode 700", fi, err)
	}
	if rf := e.roleFile("web"); rf != (servicemgr.RoleFile{Host: "host-1", Group: "web", Role: standby, Epoch: 1}) {
		t.Errorf("role.json = %+v; want standby at epoch 1", rf)
	}
	if n := e.addrs.Held(); n != 0 {
		t.Errorf("a standby holds %d addresses", n)
	}

	// Activation: role.json, the activate action, then the address, announced.
	a = assignment(t, "web", active, 2)
	a.Actions.Start = helper(t, "run", "{state_dir}/run.json", "{host}", "{group}", "{mgmt}", "{cluster}", "{floating}", "{nope}")
	a.Actions.Activate = helper(t, "record", actions, "activate", "{floating}")
	a.Actions.Deactivate = helper(t, "record", actions, "deactivate")
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	t0 := time.Now()
	e.apply(2, a)
	waitFor(t, "the floating address", func() bool { return e.addrs.Holds("mgmt", "10.20.0.9/24") })
	took := time.Since(t0)
	m := e.await("web", servicemgr.MemberActive)
	t.Logf("standby -> active: %v to the address being added (including the activate action), %v to active", took, time.Since(t0))
	if m.Epoch != 2 || m.Role != active || m.Restarts != 0 {
		t.Errorf("status = %+v; want active at epoch 2", m)
	}
	if got := readSeen(t, filepath.Join(dir, "run.json")); len(got) != 1 {
		t.Errorf("the process started %d times; activation must not restart it", len(got))
	}
	acts := readSeen(t, actions)
	if len(acts) != 1 || !slices.Equal(acts[0].Args, []string{"activate", "10.20.0.9"}) || acts[0].Env["PETREL_ROLE"] != "active" ||
		acts[0].Env["PETREL_EPOCH"] != "2" || !strings.Contains(acts[0].Role, `"role":"active"`) {
		t.Fatalf("actions = %+v; want activate with {floating}, PETREL_ROLE=active and role.json active", acts)
	}
	calls := e.addrs.Calls()
	if len(calls) != 2 || calls[0].Op != servicestest.OpAdd || calls[1].Op != servicestest.OpAnnounce || calls[1].Addr != "10.20.0.9" ||
		calls[0].At.UnixNano() < acts[0].At {
		t.Errorf("address calls = %+v (activate ran at %d); want add after the activate action, then announce", calls, acts[0].At)
	}

	// Deactivation: the address first, then role.json and the action.
	a.Role, a.Epoch, a.Slot, a.Floating, a.Network = standby, 3, -1, "", ""
	e.apply(3, a)
	e.await("web", servicemgr.MemberStandby)
	acts = readSeen(t, actions)
	calls = e.addrs.Calls()
	if len(acts) != 2 || acts[1].Args[0] != "deactivate" || !strings.Contains(acts[1].Role, `"role":"standby"`) ||
		acts[1].Env["PETREL_ROLE"] != "standby" {
		t.Fatalf("actions = %+v; want deactivate with role.json standby", acts)
	}
	if len(calls) != 3 || calls[2].Op != servicestest.OpDel || calls[2].At.UnixNano() > acts[1].At || e.addrs.Held() != 0 {
		t.Errorf("address calls = %+v (deactivate ran at %d); want the address removed before the deactivate action", calls, acts[1].At)
	}
	if rf := e.roleFile("web"); rf.Role != standby || rf.Epoch != 3 {
		t.Errorf("role.json = %+v; want standby at epoch 3", rf)
	}
}

// TestActivationLatency measures standby -> active without actions: the
// runner itself must add nothing but milliseconds.
func TestActivationLatency(t *testing.T) {
	e := newEnv(t, "", nil)
	e.apply(1, assignment(t, "db", standby, 1))
	e.await("db", servicemgr.MemberStandby)
	var worst time.Duration
	for i := range 5 {
		epoch := uint64(2 + 2*i)
		a := assignment(t, "db", active, epoch)
		a.Floating, a.Network = "10.20.0.10/24", "cluster"
		t0 := time.Now()
		e.apply(epoch, a)
		waitFor(t, "active", func() bool { m, _ := e.member("db"); return m.State == servicemgr.MemberActive })
		d := time.Since(t0)
		worst = max(worst, d)
		t.Logf("standby -> active (address added and announced, role.json written): %v", d)
		e.apply(epoch+1, assignment(t, "db", standby, epoch+1))
		e.await("db", servicemgr.MemberStandby)
	}
	if worst > 500*time.Millisecond {
		t.Errorf("slowest activation took %v; want milliseconds", worst)
	}
}

func TestEpochs(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, nil)
	e.apply(1, assignment(t, "g", standby, 5))
	e.await("g", servicemgr.MemberStandby)

	// An older epoch is refused: the member keeps its assignment.
	e.apply(2, assignment(t, "g", active, 4))
	// An equal epoch is the assignment in effect, even if it says otherwise.
	e.apply(3, assignment(t, "g", active, 5))
	// An older controller is refused as a whole: it cannot remove the member.
	e.r.Apply(servicemgr.AgentServices{Version: 4, ControllerEpoch: 0})
	waitFor(t, "version 3 applied", func() bool { return e.r.Status().Version == 3 })
	if m, _ := e.member("g"); m.State != servicemgr.MemberStandby || m.Epoch != 5 || m.Role != standby {
		t.Errorf("after older and equal epochs: %+v; want standby at epoch 5", m)
	}
	if e.addrs.Held() != 0 || e.r.Epoch("g") != 5 {
		t.Errorf("held %d addresses, epoch %d; want none and 5", e.addrs.Held(), e.r.Epoch("g"))
	}
	var onDisk struct {
		Controller uint64            `json:"controller"`
		Groups     map[string]uint64 `json:"groups"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "services-epochs.json"))
	if err != nil || json.Unmarshal(b, &onDisk) != nil || onDisk.Groups["g"] != 5 || onDisk.Controller != 1 {
		t.Fatalf("services-epochs.json = %s, %v; want g at 5, controller 1", b, err)
	}

	// A restarted agent runs nothing until told, and still refuses epoch 4.
	e.stop()
	e2 := newEnv(t, dir, nil)
	if st := e2.r.Status(); len(st.Members) != 0 {
		t.Fatalf("after a restart the agent runs %+v; want nothing until told", st.Members)
	}
	e2.apply(5, assignment(t, "g", active, 4))
	waitFor(t, "version 5 applied", func() bool { return e2.r.Status().Version == 5 })
	if st := e2.r.Status(); len(st.Members) != 0 {
		t.Errorf("a restarted agent took an older epoch: %+v", st.Members)
	}
	e2.apply(6, assignment(t, "g", active, 5))
	if m := e2.await("g", servicemgr.MemberActive); m.Epoch != 5 {
		t.Errorf("status = %+v; want active at epoch 5", m)
	}
}

func TestInvalidAssignmentsAreRefused(t *testing.T) {
	e := newEnv(t, "", nil)
	bad := []servicemgr.Assignment{
		assignment(t, "../etc", standby, 1),
		{Group: "nostart", Role: standby, Epoch: 1, Health: servicemgr.HealthCheck{Type: "process"}},
		assignment(t, "badrole", "leader", 1),
		assignment(t, "badhealth", standby, 1),
		assignment(t, "badfloat", active, 1),
		assignment(t, "badnet", active, 1),
	}
	bad[3].Health.Type = "ping"
	bad[4].Floating, bad[4].Network = "10.0.0.300/24", "mgmt"
	bad[5].Floating, bad[5].Network = "10.0.0.3/24", "mgmt/../x"
	e.apply(1, bad...)
	waitFor(t, "version 1 applied", func() bool { return e.r.Status().Version == 1 })
	if st := e.r.Status(); len(st.Members) != 0 {
		t.Errorf("invalid assignments run: %+v", st.Members)
	}
	for _, a := range bad {
		if e.r.Epoch(a.Group) != 0 {
			t.Errorf("an invalid assignment of %q recorded an epoch", a.Group)
		}
	}
}

// TestFailedMemberStaysStandby: an active member whose process dies
// releases its address, is reported failed, restarts after its backoff
// and comes back as standby; it is active again only on a newer
// assignment.
func TestFailedMemberStaysStandby(t *testing.T) {
	e := newEnv(t, "", func(c *services.Config) { c.BackoffMin = 50 * time.Millisecond })
	a := assignment(t, "web", active, 2)
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	e.apply(1, a)
	e.await("web", servicemgr.MemberActive)
	first := e.started("web", 1)

	syscall.Kill(first[0].Pid, syscall.SIGKILL)
	m := e.await("web", servicemgr.MemberFailed)
	if !strings.Contains(m.Reason, "killed") || m.Role != standby || m.Backoff != 50*time.Millisecond {
		t.Errorf("failed status = %+v; want the reason, role standby, backoff 50ms", m)
	}
	if e.addrs.Holds("mgmt", "10.20.0.9/24") {
		t.Error("a failed member still holds its floating address")
	}
	m = e.await("web", servicemgr.MemberStandby)
	if m.Restarts != 1 || m.Role != standby || m.Epoch != 2 {
		t.Errorf("restarted status = %+v; want standby, 1 restart", m)
	}
	if rf := e.roleFile("web"); rf.Role != standby {
		t.Errorf("role.json = %+v after the restart; want standby", rf)
	}
	// The same assignment again does not make it active.
	e.apply(2, a)
	waitFor(t, "version 2 applied", func() bool { return e.r.Status().Version == 2 })
	if m, _ := e.member("web"); m.State != servicemgr.MemberStandby || e.addrs.Held() != 0 {
		t.Errorf("status %+v after the same assignment; want standby without the address", m)
	}
	// A newer one does.
	a.Epoch = 3
	e.apply(3, a)
	if m := e.await("web", servicemgr.MemberActive); m.Restarts != 1 || m.Epoch != 3 || m.Role != active {
		t.Errorf("status = %+v; want active at epoch 3", m)
	}
	if !e.addrs.Holds("mgmt", "10.20.0.9/24") {
		t.Error("active again without its address")
	}
}

// TestCrashLoopBacksOff: a member that exits at once restarts after 20,
// 40, 80, 80 ms ... and never becomes active.
func TestCrashLoopBacksOff(t *testing.T) {
	e := newEnv(t, "", nil)
	a := assignment(t, "loop", active, 1)
	a.Actions.Start = helper(t, "exit", "3")
	a.Floating, a.Network = "10.20.0.11/24", "mgmt"
	e.apply(1, a)
	backoffs := map[int]time.Duration{}
	waitFor(t, "4 restarts", func() bool {
		m, _ := e.member("loop")
		if m.State == servicemgr.MemberFailed {
			backoffs[m.Restarts] = m.Backoff
			if !strings.Contains(m.Reason, "exited with status 3") {
				t.Fatalf("reason = %q; want the exit status", m.Reason)
			}
		}
		return m.Restarts >= 4
	})
	want := []time.Duration{20, 40, 80, 80}
	for restarts, b := range backoffs {
		if restarts < len(want) && b != want[restarts]*time.Millisecond {
			t.Errorf("backoff after %d restarts = %v; want %v", restarts, b, want[restarts]*time.Millisecond)
		}
	}
	// It may have been active before it first failed, never after.
	adds := 0
	for _, c := range e.addrs.Calls() {
		if c.Op == servicestest.OpAdd {
			adds++
		}
	}
	if adds > 1 {
		t.Errorf("a crash-looping member took its address %d times; want at most once, before its first failure", adds)
	}
}

func TestHealthChecks(t *testing.T) {
	// Each check turns the member healthy, then failed when what it
	// checks breaks.
	for _, kind := range []string{"tcp", "http", "command"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, "", nil)
			a := assignment(t, "svc", standby, 1)
			a.Health = servicemgr.HealthCheck{Type: kind, IntervalMS: 10, TimeoutMS: 200, Failures: 2}
			var breakIt func()
			switch kind {
			case "tcp":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
				_, port, _ := net.SplitHostPort(ln.Addr().String())
				a.Health.Target = "{mgmt}:" + port
				breakIt = func() { ln.Close() }
			case "http":
				var status atomic.Int32
				status.Store(http.StatusNoContent)
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(status.Load())) }))
				t.Cleanup(srv.Close)
				a.Health.Target = strings.TrimPrefix(srv.URL, "http://") + "/healthz"
				breakIt = func() { status.Store(http.StatusServiceUnavailable) }
			case "command":
				flag := filepath.Join(t.TempDir(), "ok")
				os.WriteFile(flag, nil, 0o600)
				a.Health.Command = helper(t, "exists", flag)
				breakIt = func() { os.Remove(flag) }
			}
			e.apply(1, a)
			e.await("svc", servicemgr.MemberStandby)
			breakIt()
			m := e.await("svc", servicemgr.MemberFailed)
			if !strings.Contains(m.Reason, "2 times in a row") || !strings.Contains(m.Reason, kind) {
				t.Errorf("reason = %q; want the %s check failing twice", m.Reason, kind)
			}
			t.Logf("failed: %s", m.Reason)
		})
	}
}

// TestStartingGetsItsGrace: failed checks do not fail a starting member
// before StartGrace; then they do.
func TestStartingGetsItsGrace(t *testing.T) {
	e := newEnv(t, "", func(c *services.Config) { c.StartGrace = 300 * time.Millisecond })
	a := assignment(t, "slow", standby, 1)
	a.Health = servicemgr.HealthCheck{Type: "tcp", Target: "127.0.0.1:1", IntervalMS: 10, Failures: 2}
	t0 := time.Now()
	e.apply(1, a)
	e.await("slow", servicemgr.MemberFailed)
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("a starting member failed after %v; want the 300ms grace first", d)
	}
}

// TestStopKillsTheProcessGroup: a process that ignores SIGTERM, and its
// child, are killed after the grace; the stop action runs first.
func TestStopKillsTheProcessGroup(t *testing.T) {
	e := newEnv(t, "", func(c *services.Config) { c.StopGrace = time.Second })
	dir := e.memberDir("stubborn")
	a := assignment(t, "stubborn", standby, 1)
	a.Actions.Start = helper(t, "ignore-term", "{state_dir}/run.json")
	a.Actions.Stop = helper(t, "record", "{state_dir}/stop.json", "stop")
	e.apply(1, a)
	e.await("stubborn", servicemgr.MemberStandby)
	var parent, child []seen
	waitFor(t, "the process and its child", func() bool {
		parent, child = readSeen(t, filepath.Join(dir, "run.json")), readSeen(t, filepath.Join(dir, "run.json.child"))
		return len(parent) == 1 && len(child) == 1
	})
	t0 := time.Now()
	e.apply(2)
	waitFor(t, "the member to be gone", func() bool { _, ok := e.member("stubborn"); return !ok })
	took := time.Since(t0)
	for _, p := range []int{parent[0].Pid, child[0].Pid} {
		if alive(p) {
			t.Errorf("process %d outlived its member", p)
		}
	}
	if took < time.Second {
		t.Errorf("stopped in %v; a process ignoring SIGTERM gets the 1s grace", took)
	}
	if got := readSeen(t, filepath.Join(dir, "stop.json")); len(got) != 1 {
		t.Errorf("the stop action ran %d times; want once", len(got))
	}
}

// TestRemovedActiveMember: the address goes before the deactivate
// action, then the process; the member leaves the report.
func TestRemovedActiveMember(t *testing.T) {
	e := newEnv(t, "", nil)
	dir := e.memberDir("web")
	a := assignment(t, "web", active, 1)
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	a.Actions.Deactivate = helper(t, "record", "{state_dir}/deact.json")
	e.apply(1, a)
	e.await("web", servicemgr.MemberActive)
	runs := e.started("web", 1)
	e.apply(2)
	waitFor(t, "the member to leave the status", func() bool { _, ok := e.member("web"); return !ok })
	deact := readSeen(t, filepath.Join(dir, "deact.json"))
	var del servicestest.Call
	for _, c := range e.addrs.Calls() {
		if c.Op == servicestest.OpDel {
			del = c
		}
	}
	if len(deact) != 1 || del.At.IsZero() || del.At.UnixNano() > deact[0].At || e.addrs.Held() != 0 {
		t.Errorf("deactivate %+v, del %+v; want the address off before the deactivate action", deact, del)
	}
	if len(runs) != 1 || alive(runs[0].Pid) {
		t.Errorf("the member's process still runs")
	}
	if rf := e.roleFile("web"); rf.Role != standby {
		t.Errorf("role.json = %+v; want standby once removed", rf)
	}
	// The last report no longer lists it.
	waitFor(t, "a report without the member", func() bool {
		rs := e.site.all()
		return len(rs) > 0 && rs[len(rs)-1].Version == 2 && len(rs[len(rs)-1].Members) == 0
	})
}

// TestAgentStopReleasesEverything: when Run ends, active members are
// deactivated and stopped, their addresses released.
func TestAgentStopReleasesEverything(t *testing.T) {
	e := newEnv(t, "", nil)
	a := assignment(t, "web", active, 1)
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	e.apply(1, a)
	e.await("web", servicemgr.MemberActive)
	runs := e.started("web", 1)
	e.stop()
	if e.addrs.Held() != 0 || len(runs) != 1 || alive(runs[0].Pid) {
		t.Errorf("after Run returned: %d addresses held, process alive %v", e.addrs.Held(), alive(runs[0].Pid))
	}
	b, _ := os.ReadFile(filepath.Join(e.dir, "services-addresses.json"))
	if strings.Contains(string(b), "10.20.0.9") {
		t.Errorf("services-addresses.json = %s; want the address released", b)
	}
}

// TestLeftoverAddressesAreReleased: addresses recorded by a run that died
// holding them are released at the next start.
func TestLeftoverAddressesAreReleased(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "services-addresses.json"), []byte(`{"web":{"iface":"mgmt","prefix":"10.20.0.9/24"}}`), 0o600)
	e := newEnv(t, dir, nil)
	waitFor(t, "the leftover address to be released", func() bool {
		cs := e.addrs.Calls()
		return len(cs) == 1 && cs[0].Op == servicestest.OpDel && cs[0].Iface == "mgmt" && cs[0].Addr == "10.20.0.9/24"
	})
	waitFor(t, "the record to be cleared", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "services-addresses.json"))
		return string(b) == "{}"
	})
}

// TestAddressFailures: an address that cannot be added fails the member
// (which then keeps restarting as standby); one that cannot be announced
// does not.
func TestAddressFailures(t *testing.T) {
	e := newEnv(t, "", nil)
	e.addrs.SetError(servicestest.OpAnnounce, errors.New("no arp today"))
	a := assignment(t, "web", active, 1)
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	e.apply(1, a)
	e.await("web", servicemgr.MemberActive)

	e.addrs.SetError(servicestest.OpAdd, errors.New("no such device"))
	a.Epoch, a.Floating = 2, "10.20.0.10/24" // another slot
	e.apply(2, a)
	m := e.await("web", servicemgr.MemberFailed)
	if !strings.Contains(m.Reason, "no such device") || e.addrs.Held() != 0 {
		t.Errorf("status %+v, %d addresses held; want failed for the address, none held", m, e.addrs.Held())
	}
	if m = e.await("web", servicemgr.MemberStandby); m.Role != standby {
		t.Errorf("restarted: %+v; want standby", m)
	}
}

// TestActivateActionFails: the member fails; its deactivate action runs;
// it never holds the address.
func TestActivateActionFails(t *testing.T) {
	e := newEnv(t, "", nil)
	dir := e.memberDir("web")
	a := assignment(t, "web", active, 1)
	a.Floating, a.Network = "10.20.0.9/24", "mgmt"
	a.Actions.Activate = helper(t, "exit", "4")
	a.Actions.Deactivate = helper(t, "record", "{state_dir}/deact.json")
	e.apply(1, a)
	m := e.await("web", servicemgr.MemberFailed)
	if !strings.Contains(m.Reason, "activate action") || !strings.Contains(m.Reason, "exit status 4") {
		t.Errorf("reason = %q; want the activate action's exit", m.Reason)
	}
	waitFor(t, "the deactivate action", func() bool { return len(readSeen(t, filepath.Join(dir, "deact.json"))) == 1 })
	for _, c := range e.addrs.Calls() {
		if c.Op == servicestest.OpAdd {
			t.Errorf("address added although activation failed: %+v", c)
		}
	}
	e.await("web", servicemgr.MemberStandby)
}

// TestReportsNeverHoldUpMembers: while the site does not answer a report,
// members still change state; one report at a time; the latest state is
// reported once the site answers; and a report goes every interval.
func TestReportsNeverHoldUpMembers(t *testing.T) {
	e := newEnv(t, "", func(c *services.Config) { c.ReportInterval = 30 * time.Millisecond })
	block := make(chan struct{})
	e.site.mu.Lock()
	e.site.block = block
	e.site.mu.Unlock()
	a := assignment(t, "web", active, 1)
	e.apply(1, a)
	e.await("web", servicemgr.MemberActive)
	e.apply(2, assignment(t, "web", standby, 2))
	e.await("web", servicemgr.MemberStandby)
	e.site.mu.Lock()
	e.site.block = nil
	e.site.mu.Unlock()
	close(block)
	waitFor(t, "the latest state reported", func() bool {
		rs := e.site.all()
		if len(rs) == 0 {
			return false
		}
		last := rs[len(rs)-1]
		return last.Version == 2 && len(last.Members) == 1 && last.Members[0].State == servicemgr.MemberStandby && last.Members[0].Epoch == 2
	})
	n := len(e.site.all())
	waitFor(t, "periodic reports", func() bool { return len(e.site.all()) >= n+3 })
	e.site.mu.Lock()
	defer e.site.mu.Unlock()
	if e.site.maxIn != 1 {
		t.Errorf("%d reports were in flight at once; want 1", e.site.maxIn)
	}
}

func TestMemberLogIsCapped(t *testing.T) {
	e := newEnv(t, "", func(c *services.Config) { c.LogMax = 2000 })
	a := assignment(t, "chatty", standby, 1)
	a.Actions.Start = helper(t, "spew", "5000")
	e.apply(1, a)
	e.await("chatty", servicemgr.MemberStandby)
	log := filepath.Join(e.memberDir("chatty"), "member.log")
	waitFor(t, "member.log rotated", func() bool {
		_, err := os.Stat(log + ".1")
		return err == nil
	})
	for _, f := range []string{log, log + ".1"} {
		fi, err := os.Stat(f)
		switch {
		case err != nil && f == log && errors.Is(err, os.ErrNotExist):
			// Just rotated: the next line written creates it again.
		case err != nil:
			t.Errorf("%s: %v", f, err)
		case fi.Size() > 2000:
			t.Errorf("%s: %d bytes; want at most 2000", f, fi.Size())
		}
	}
}

func TestNewNeedsItsCollaborators(t *testing.T) {
	if _, err := services.New(services.Config{StateDir: t.TempDir()}); err == nil {
		t.Error("New without Platform, Report and Logger succeeded")
	}
}

// TestAgentKilled: when the agent dies (SIGKILL), its members die with it,
// and the next run releases the floating address the dead one held,
// remembers the epochs and runs nothing until told.
func TestAgentKilled(t *testing.T) {
	dir := t.TempDir()
	agent := exec.Command(helper(t, "agent", dir)[0], helper(t, "agent", dir)[1:]...)
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	var runs []seen
	waitFor(t, "the member to run", func() bool {
		runs = readSeen(t, filepath.Join(dir, "services", "web", "run.json"))
		return len(runs) == 1
	})
	waitFor(t, "the member to hold its address", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "services-addresses.json"))
		return strings.Contains(string(b), "10.20.0.9/24")
	})
	agent.Process.Signal(syscall.SIGKILL)
	agent.Wait()
	waitFor(t, "the member to die with the agent", func() bool { return !alive(runs[0].Pid) })

	e := newEnv(t, dir, nil)
	waitFor(t, "the leftover address to be released", func() bool { return len(e.addrs.Calls()) == 1 })
	if c := e.addrs.Calls()[0]; c.Op != servicestest.OpDel || c.Iface != "mgmt" || c.Addr != "10.20.0.9/24" {
		t.Errorf("first address call = %+v; want del 10.20.0.9/24 on mgmt", c)
	}
	if e.r.Epoch("web") != 7 {
		t.Errorf("epoch of web = %d after the restart; want 7", e.r.Epoch("web"))
	}
	if st := e.r.Status(); len(st.Members) != 0 {
		t.Errorf("the restarted agent runs %+v; want nothing until told", st.Members)
	}
	if _, err := os.Stat(filepath.Join(dir, "services", "web", "role.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("role.json of the dead run: %v; want it removed", err)
	}
}
