package servicemgr

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
)

type memSpecs struct {
	mu   sync.Mutex
	recs map[string]Record
}

func (s *memSpecs) Groups(context.Context) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, n := range sortedKeys(s.recs) {
		out = append(out, s.recs[n])
	}
	return out, nil
}

func (s *memSpecs) Put(_ context.Context, r Record, create bool) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[r.Spec.Name]; ok && create {
		return Record{}, errs.Wrapf(errs.Conflict, "exists")
	}
	r.CreatedAt = time.Now()
	s.recs[r.Spec.Name] = r
	return r, nil
}

func (s *memSpecs) Delete(_ context.Context, n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, n)
	return nil
}

// memLedger is an in-memory Ledger with the etcd ledger's rules: epochs
// compare-and-bump, slots held by live host leases.
type memLedger struct {
	mu     sync.Mutex
	places map[string]Placement
	slots  map[string]map[int]string // group -> slot -> host
	leases map[string]bool           // host -> lease alive
}

func newMemLedger() *memLedger {
	return &memLedger{places: map[string]Placement{}, slots: map[string]map[int]string{}, leases: map[string]bool{}}
}

func (l *memLedger) Load(_ context.Context, g string) (Placement, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.places[g]
	return Placement{Epoch: p.Epoch, Members: maps.Clone(p.Members)}, nil
}

func (l *memLedger) Commit(_ context.Context, g string, prev uint64, next Placement) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.places[g].Epoch != prev {
		return 0, ErrStale
	}
	held := l.slots[g]
	if held == nil {
		held = map[int]string{}
	}
	for h, m := range next.Members {
		if m.Role == RoleActive {
			if cur, ok := held[m.Slot]; ok && cur != h && l.leases[cur] && next.Members[cur].Role == RoleActive {
				return 0, ErrSlotHeld
			}
		}
	}
	held = map[int]string{}
	for h, m := range next.Members {
		if m.Role == RoleActive {
			held[m.Slot] = h
			l.leases[h] = true
		}
	}
	l.slots[g] = held
	next.Epoch = prev + 1
	l.places[g] = Placement{Epoch: next.Epoch, Members: maps.Clone(next.Members)}
	return next.Epoch, nil
}

func (l *memLedger) Remove(_ context.Context, g string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.places, g)
	delete(l.slots, g)
	return nil
}

func (l *memLedger) Release(_ context.Context, h string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.leases, h)
	return nil
}

type fakeHosts struct {
	mu    sync.Mutex
	hosts map[string]HostInfo
}

func (f *fakeHosts) ServiceHosts(context.Context) ([]HostInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []HostInfo
	for _, n := range sortedKeys(f.hosts) {
		out = append(out, f.hosts[n])
	}
	return out, nil
}

type fakeAlarms struct {
	mu     sync.Mutex
	active map[string]bool
	logs   []string
}

func (a *fakeAlarms) Raise(_ context.Context, id, entity string, _ map[string]string) (faultmgr.Alarm, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active[id+" "+entity] = true
	return faultmgr.Alarm{}, true, nil
}

func (a *fakeAlarms) Clear(_ context.Context, id, entity string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.active, id+" "+entity)
	return true, nil
}

func (a *fakeAlarms) Log(_ context.Context, id, entity string, f map[string]string) (faultmgr.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.logs = append(a.logs, f["detail"])
	return faultmgr.Event{}, nil
}

func (a *fakeAlarms) has(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active[key]
}

// agentsSim plays every host's agent: it runs what it is told at once.
type agentsSim struct {
	t     *testing.T
	m     *Manager
	hosts *fakeHosts
	boots map[string]string
	dead  map[string]bool
}

func (s *agentsSim) sync(ctx context.Context) {
	for name, h := range s.hosts.hosts {
		if s.dead[name] {
			continue
		}
		d, err := s.m.Desired(ctx, h.UUID, s.boots[name], 0, false, 0)
		if err != nil {
			s.t.Fatal(err)
		}
		st := AgentStatus{BootID: s.boots[name], Version: d.Version}
		for _, a := range d.Members {
			state := MemberStandby
			if a.Role == RoleActive {
				state = MemberActive
			}
			st.Members = append(st.Members, MemberStatus{Group: a.Group, Epoch: a.Epoch, Role: a.Role, State: state})
		}
		if err := s.m.Report(h.UUID, st); err != nil {
			s.t.Fatal(err)
		}
	}
}

func TestManagerFailsOverOnConfirmedDeath(t *testing.T) {
	ctx := context.Background()
	hosts := &fakeHosts{hosts: map[string]HostInfo{}}
	boots := map[string]string{}
	for _, n := range []string{"w0", "w1", "w2", "w3"} {
		hosts.hosts[n] = HostInfo{UUID: "uuid-" + n, Name: n, Available: true, Healthy: true, BootID: "b1-" + n}
		boots[n] = "b1-" + n
	}
	alarms := &fakeAlarms{active: map[string]bool{}}
	ledger := newMemLedger()
	m, err := New(Config{Specs: &memSpecs{recs: map[string]Record{}}, Ledger: ledger, Hosts: hosts, Alarms: alarms,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m.Lead(1)
	sim := &agentsSim{t: t, m: m, hosts: hosts, boots: boots, dead: map[string]bool{}}
	// Agents report first (eligibility needs a report this boot).
	if err := m.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	sim.sync(ctx)
	if _, err := m.Create(ctx, spec("demo", "3+2", "w0", "w1", "w2", "w3"), "api"); !errors.Is(err, errs.Invalid) {
		t.Fatalf("3+2 over 4 hosts = %v; want invalid", err)
	}
	if _, err := m.Create(ctx, spec("demo", "2+1", "w0", "w1", "w2", "w3"), "api"); err != nil {
		t.Fatal(err)
	}
	round := func() Group {
		t.Helper()
		for range 3 {
			if err := m.reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			sim.sync(ctx)
		}
		g, err := m.Group(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := round()
	if g.Status != StatusOK || roles(ledger.places["demo"]) != "w0=a w1=a w2=s" {
		t.Fatalf("placed = %s %s %v; want ok w0=a w1=a w2=s", g.Status, g.Reason, roles(ledger.places["demo"]))
	}
	if !m.HoldsActive("uuid-w0") || m.HoldsActive("uuid-w2") {
		t.Error("HoldsActive: want w0 yes, w2 no")
	}
	if err := m.CanLock("uuid-w0"); err != nil {
		t.Errorf("lock of an active's host with a healthy standby = %v; want allowed", err)
	}
	// The standby fails: locking an active's host would cost a slot.
	if err := m.Report("uuid-w2", AgentStatus{BootID: "b1-w2", Members: []MemberStatus{{Group: "demo", State: MemberFailed}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.CanLock("uuid-w0"); !errors.Is(err, errs.InvalidTransition) || m.CanLock("uuid-w2") != nil {
		t.Errorf("lock with the standby failed: w0 %v, w2 %v; want w0 refused, w2 allowed", err, m.CanLock("uuid-w2"))
	}
	sim.sync(ctx)
	epoch := g.Epoch
	// w0 loses power: silent first (nothing moves), then confirmed.
	sim.dead["w0"] = true
	hosts.mu.Lock()
	hosts.hosts["w0"] = HostInfo{UUID: "uuid-w0", Name: "w0", Silent: true, BootID: "b1-w0"}
	hosts.mu.Unlock()
	round()
	if roles(ledger.places["demo"]) != "w0=a w1=a w2=s" {
		t.Fatalf("moved on heartbeat loss alone: %s", roles(ledger.places["demo"]))
	}
	// A long-poll waiting on w2 wakes when it is promoted.
	d0, _ := m.Desired(ctx, "uuid-w2", "b1-w2", 0, false, 0)
	woke := make(chan AgentServices, 1)
	go func() {
		d, _ := m.Desired(ctx, "uuid-w2", "b1-w2", d0.Version, true, 10*time.Second)
		woke <- d
	}()
	m.HostDown("uuid-w0", "BMC reads power off")
	g = round()
	if got := roles(ledger.places["demo"]); got != "w1=a w2=a w3=s" {
		t.Fatalf("after w0 confirmed down = %s; want w1=a w2=a w3=s", got)
	}
	if g.Epoch <= epoch || g.Status != StatusOK {
		t.Errorf("epoch %d -> %d, status %s; want a newer epoch and ok", epoch, g.Epoch, g.Status)
	}
	select {
	case d := <-woke:
		if len(d.Members) != 1 || d.Members[0].Role != RoleActive || d.Members[0].Epoch != g.Epoch {
			t.Errorf("w2's long-poll answered %+v; want it active at epoch %d", d.Members, g.Epoch)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("w2's long-poll never woke")
	}
	// w0 comes back (new boot): a spare, never its old role.
	sim.dead["w0"] = false
	boots["w0"] = "b2-w0"
	hosts.mu.Lock()
	hosts.hosts["w0"] = HostInfo{UUID: "uuid-w0", Name: "w0", Available: true, Healthy: true, BootID: "b2-w0"}
	hosts.mu.Unlock()
	round()
	if got := roles(ledger.places["demo"]); got != "w1=a w2=a w3=s" {
		t.Fatalf("after w0 returned = %s; want unchanged w1=a w2=a w3=s", got)
	}
	// w1 crashes and reboots at once: its new boot ID confirms the loss.
	boots["w1"] = "b2-w1"
	hosts.mu.Lock()
	hosts.hosts["w1"] = HostInfo{UUID: "uuid-w1", Name: "w1", Available: true, Healthy: true, BootID: "b2-w1"}
	hosts.mu.Unlock()
	// Its first poll, before any report of the new boot: no member (it
	// must not resume the role of its previous boot).
	if d, err := m.Desired(ctx, "uuid-w1", "b2-w1", 0, false, 0); err != nil || len(d.Members) != 0 {
		t.Fatalf("first poll of a new boot = %+v, %v; want no member", d.Members, err)
	}
	if err := m.Report("uuid-w1", AgentStatus{BootID: "b2-w1"}); err != nil {
		t.Fatal(err)
	}
	g = round()
	if got := roles(ledger.places["demo"]); got != "w0=s w2=a w3=a" && got != "w1=s w2=a w3=a" {
		t.Fatalf("after w1 rebooted = %s; want w3 promoted and a new standby", got)
	}
	if g.Status != StatusOK || alarms.has("400.001 service-group=demo") || alarms.has("400.002 service-group=demo") {
		t.Errorf("status %s, alarms %v; want ok and none", g.Status, alarms.active)
	}
}
