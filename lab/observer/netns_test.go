package observer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/lab/observer"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/demo"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (it creates network namespaces); CI must run it as root")
	}
	t.Skip("this test needs root: it creates network namespaces")
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// member is one demo service member in a network namespace of its own,
// created for the test: its loopback holding addr (this kernel has no
// dummy interfaces; a namespace's loopback is as private), the
// demo service serving on addr:8080 in-process (its socket opened inside
// the namespace), and its state directory.
type member struct {
	host, ns, addr, stateDir string
	stop                     func() // stops the demo service
}

func newMember(t *testing.T, host, addr string) *member {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	m := &member{host: host, ns: "obs" + hex.EncodeToString(b) + "-" + host, addr: addr, stateDir: t.TempDir()}
	ip(t, "netns", "add", m.ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", m.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", m.ns, err, out)
		}
	})
	ip(t, "-n", m.ns, "link", "set", "lo", "up")
	ip(t, "-n", m.ns, "addr", "add", addr+"/32", "dev", "lo")

	ln, err := hostnet.ListenIn(t.Context(), m.ns, addr+":8080")
	if err != nil {
		t.Fatal(err)
	}
	s, err := demo.New(demo.Config{StateDir: m.stateDir, Host: host, Group: "g",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("member", host)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	m.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo service of %s: %v", host, err)
		}
		m.stop = func() {}
	}
	t.Cleanup(func() { m.stop() }) // before the namespace goes: its listener keeps it alive
	return m
}

func (m *member) role(t *testing.T, role servicemgr.Role, epoch uint64) {
	t.Helper()
	b, _ := json.Marshal(servicemgr.RoleFile{Host: m.host, Group: "g", Role: role, Epoch: epoch})
	if err := atomicfile.Write(filepath.Join(m.stateDir, demo.RoleFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (m *member) target() observer.Target {
	return observer.Target{Host: m.host, Netns: m.ns, URL: "http://" + m.addr + ":8080/"}
}

// TestObserverInNamespaces runs the observer for real against two demo
// service members, each in a namespace of its own: a failover, then a split
// brain (two actives, one address in two namespaces), then a member that
// stops. No packet leaves the test's namespaces.
func TestObserverInNamespaces(t *testing.T) {
	requireRoot(t)
	const floating = "10.89.254.100"
	a := newMember(t, "a", "10.89.254.10")
	b := newMember(t, "b", "10.89.254.11")
	a.role(t, servicemgr.RoleActive, 1)
	b.role(t, servicemgr.RoleStandby, 1)
	ip(t, "-n", a.ns, "addr", "add", floating+"/32", "dev", "lo")

	o, err := observer.New(observer.Config{
		Members: []observer.Target{a.target(), b.target()}, N: 1, Group: "g",
		Floating: []string{floating},
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	waitFor := func(what string, pred func(observer.Snapshot) bool) time.Time {
		t.Helper()
		wctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		at, err := o.WaitFor(wctx, pred)
		if err != nil {
			t.Fatalf("WaitFor(%s) = %v; latest round: %s", what, err, o.Snapshot())
		}
		return at
	}
	state := func(actives []observer.Active, holders ...string) func(observer.Snapshot) bool {
		return func(s observer.Snapshot) bool {
			return slices.Equal(s.Actives, actives) && slices.Equal(s.Holders[floating], holders)
		}
	}

	waitFor("a@1 active, holding the address", state([]observer.Active{{Host: "a", Epoch: 1}}, "a"))
	s := o.Snapshot()
	if m := s.Members[1]; m.Status != 503 || m.Role != servicemgr.RoleStandby || m.Epoch != 1 {
		t.Errorf("b's answer = %+v; want 503 standby at epoch 1", m)
	}

	// A clean failover: a steps down and lets the address go, then b takes
	// both.
	a.role(t, servicemgr.RoleStandby, 2)
	ip(t, "-n", a.ns, "addr", "del", floating+"/32", "dev", "lo")
	ip(t, "-n", b.ns, "addr", "add", floating+"/32", "dev", "lo")
	b.role(t, servicemgr.RoleActive, 2)
	waitFor("b@2 active, holding the address", state([]observer.Active{{Host: "b", Epoch: 2}}, "b"))
	if v := o.Violations(); len(v) != 0 {
		t.Fatalf("Violations() after a clean failover = %+v; want none", v)
	}

	// Split brain.
	a.role(t, servicemgr.RoleActive, 2)
	ip(t, "-n", a.ns, "addr", "add", floating+"/32", "dev", "lo")
	waitFor("a and b active, both holding the address",
		state([]observer.Active{{Host: "a", Epoch: 2}, {Host: "b", Epoch: 2}}, "a", "b"))
	var kinds []observer.ViolationKind
	for _, v := range o.Violations() {
		kinds = append(kinds, v.Kind)
	}
	slices.Sort(kinds)
	if want := []observer.ViolationKind{observer.SharedAddress, observer.TooManyActives}; !slices.Equal(kinds, want) {
		t.Errorf("violations after a split brain = %v; want %v", kinds, want)
	}

	// From one namespace (Config.DialNetns) only what that namespace
	// reaches answers: a's own address, not b's.
	o2, err := observer.New(observer.Config{Members: []observer.Target{a.target(), b.target()}, DialNetns: a.ns,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 15*time.Second)
	done2 := make(chan error, 1)
	go func() { done2 <- o2.Run(ctx2) }()
	_, err = o2.WaitFor(ctx2, func(s observer.Snapshot) bool { return s.Members[0].Status == 200 && s.Members[1].Status == 0 })
	cancel2()
	<-done2
	if err != nil {
		t.Errorf("dialing from %s: WaitFor(a answers, b does not) = %v; latest round: %+v", a.ns, err, o2.Snapshot().Members)
	}

	// a's service stops: no answer from a.
	a.stop()
	waitFor("a silent", func(s observer.Snapshot) bool { return s.Members[0].Status == 0 && s.Members[0].Err != "" })
	if s := o.Snapshot(); !slices.Equal(s.Actives, []observer.Active{{Host: "b", Epoch: 2}}) {
		t.Errorf("actives with a stopped = %v; want b@2", s.Actives)
	}
}
