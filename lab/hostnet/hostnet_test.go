package hostnet_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab/hostnet"
)

// helperEnv makes the test binary an echo server on the address it holds
// (see TestMain): a real process to start inside a host.
const helperEnv = "HOSTNET_TEST_ECHO_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		echoServerMain(addr)
		return
	}
	os.Exit(m.Run())
}

// echoServerMain listens on addr, prints "ready" and echoes every
// connection until killed.
func echoServerMain(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(3)
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

// Timeouts: a dial that must fail waits shortTimeout; anything that must
// succeed gets up to longTimeout (the machine may be loaded).
const (
	shortTimeout = 500 * time.Millisecond
	longTimeout  = 10 * time.Second
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("hostnet tests need root (network namespaces, cgroups, routes); CI must run them as root")
	}
	t.Skip("hostnet tests need root: they create network namespaces, cgroups and routes")
}

// newLab returns a Lab with a unique prefix, torn down after the test,
// which then fails if anything of it is left.
func newLab(t *testing.T) *hostnet.Lab {
	t.Helper()
	requireRoot(t)
	l, err := hostnet.New(hostnet.Config{Prefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Teardown(ctx); err != nil {
			t.Errorf("Teardown() = %v", err)
		}
		if leaks, err := l.Leaks(ctx); err != nil || len(leaks) > 0 {
			t.Errorf("Leaks() after Teardown = %q, %v; want none", leaks, err)
		}
	})
	return l
}

func uniquePrefix() string {
	b := make([]byte, 2)
	rand.Read(b)
	return "pt" + hex.EncodeToString(b)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// twoHosts builds site "s" (index 0) with hosts "a" (0) and "b" (1).
func twoHosts(t *testing.T, ctx context.Context, l *hostnet.Lab) (a, b *hostnet.Host) {
	t.Helper()
	if err := l.EnsureSite(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	a, err := l.AddHost(ctx, "s", "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err = l.AddHost(ctx, "s", "b-1", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func hostPort(h *hostnet.Host, n hostnet.Network, port int) string {
	return netip.AddrPortFrom(h.Addr(n), uint16(port)).String()
}

// echoIn serves echo on addr inside h, from the test process, until the
// test ends.
func echoIn(t *testing.T, ctx context.Context, h *hostnet.Host, addr string) {
	t.Helper()
	ln, err := hostnet.ListenIn(ctx, h.Netns(), addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// echo sends a line over c and expects it back.
func echo(c net.Conn) error {
	c.SetDeadline(time.Now().Add(longTimeout))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo = %q; want %q", line, "ping\n")
	}
	return nil
}

// echoFrom dials addr from inside from and runs one echo, within timeout.
func echoFrom(ctx context.Context, from *hostnet.Host, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := hostnet.DialIn(ctx, from.Netns(), addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c)
}

// mustEcho waits until an echo from `from` to addr works; a link that
// just came up may need a moment (ARP).
func mustEcho(t *testing.T, ctx context.Context, from *hostnet.Host, addr string) {
	t.Helper()
	deadline := time.Now().Add(longTimeout)
	for {
		err := echoFrom(ctx, from, addr, time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo from %s to %s: %v", from.Name(), addr, err)
		}
	}
}

// mustTimeOut checks that a connect from `from` to addr gets no answer at
// all: no accept, no refusal, within shortTimeout.
func mustTimeOut(t *testing.T, ctx context.Context, from *hostnet.Host, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	c, err := hostnet.DialIn(ctx, from.Netns(), addr)
	if err == nil {
		c.Close()
		t.Fatalf("connect from %s to %s succeeded; want a timeout", from.Name(), addr)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connect from %s to %s: %v; want a timeout", from.Name(), addr, err)
	}
}

// startEcho starts the echo helper inside h on addr, as a host process,
// and waits until it listens. The process is killed (by PID) and reaped
// when the test ends; the returned channel is closed once it has exited.
func startEcho(t *testing.T, h *hostnet.Host, addr string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+addr)
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	err = h.Start(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		err := cmd.Wait()
		t.Logf("echo helper %d in %s: %v", cmd.Process.Pid, h.Name(), err)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	r.SetReadDeadline(time.Now().Add(longTimeout))
	line, err := bufio.NewReader(r).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("echo helper in %s: read %q, %v; want ready", h.Name(), line, err)
	}
	return cmd, exited
}

// linkUp reports whether interface n of h is administratively up.
func linkUp(t *testing.T, ctx context.Context, h *hostnet.Host, n hostnet.Network) bool {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "-j", "-n", h.Netns(), "link", "show", string(n)).Output()
	if err != nil {
		t.Fatalf("ip -n %s link show %s: %v", h.Netns(), n, err)
	}
	var links []struct {
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show: %q: %v", out, err)
	}
	return slices.Contains(links[0].Flags, "UP")
}

func TestAddr(t *testing.T) {
	for _, tc := range []struct {
		n          hostnet.Network
		site, host int
		want       string
	}{
		{hostnet.Mgmt, 0, 0, "10.88.0.10"},
		{hostnet.Cluster, 0, 0, "10.89.0.10"},
		{hostnet.Mgmt, 3, 7, "10.88.3.17"},
		{hostnet.Cluster, 255, 244, "10.89.255.254"},
	} {
		got, err := hostnet.Addr(tc.n, tc.site, tc.host)
		if err != nil || got.String() != tc.want {
			t.Errorf("Addr(%s, %d, %d) = %v, %v; want %s", tc.n, tc.site, tc.host, got, err, tc.want)
		}
		if !tc.n.Subnet().Contains(got) {
			t.Errorf("%s.Subnet() = %v does not contain %v", tc.n, tc.n.Subnet(), got)
		}
	}
	for _, tc := range []struct {
		n          hostnet.Network
		site, host int
		want       error
	}{
		{"wan", 0, 0, hostnet.ErrInvalidName},
		{hostnet.Mgmt, -1, 0, hostnet.ErrInvalidAddr},
		{hostnet.Mgmt, 256, 0, hostnet.ErrInvalidAddr},
		{hostnet.Mgmt, 0, 245, hostnet.ErrInvalidAddr},
	} {
		if _, err := hostnet.Addr(tc.n, tc.site, tc.host); !errors.Is(err, tc.want) {
			t.Errorf("Addr(%q, %d, %d) err = %v; want %v", tc.n, tc.site, tc.host, err, tc.want)
		}
	}
}

func TestNamesAreChecked(t *testing.T) {
	for _, p := range []string{"pet-rel", "a/b", "this_prefix_is_too_long"} {
		if _, err := hostnet.New(hostnet.Config{Prefix: p}); !errors.Is(err, hostnet.ErrInvalidName) {
			t.Errorf("New(Prefix %q) err = %v; want ErrInvalidName", p, err)
		}
	}
	l, err := hostnet.New(hostnet.Config{Prefix: "pt0000"})
	if errors.Is(err, hostnet.ErrNoCgroup2) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no cgroup v2 hierarchy: %v (the lab needs one)", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "-a", "a/b", "a.b", "../x"} {
		if _, err := l.Host("s", name, 0, 0); !errors.Is(err, hostnet.ErrInvalidName) {
			t.Errorf("Host(s, %q) err = %v; want ErrInvalidName", name, err)
		}
		if _, err := l.Host(name, "h", 0, 0); !errors.Is(err, hostnet.ErrInvalidName) {
			t.Errorf("Host(%q, h) err = %v; want ErrInvalidName", name, err)
		}
	}
	if n := l.VethName("site-with-long-name", "controller-0", hostnet.Cluster); len(n) > 15 {
		t.Errorf("VethName() = %q; longer than 15 characters", n)
	}
}

func TestTwoHostsReachEachOtherOnBothNetworks(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	for _, n := range hostnet.Networks() {
		echoIn(t, ctx, a, hostPort(a, n, 7000))
		echoIn(t, ctx, b, hostPort(b, n, 7000))
	}
	for _, n := range hostnet.Networks() {
		mustEcho(t, ctx, b, hostPort(a, n, 7000))
		mustEcho(t, ctx, a, hostPort(b, n, 7000))
	}

	// Names that would share a namespace are refused.
	if err := l.EnsureSite(ctx, "s-a"); !errors.Is(err, hostnet.ErrInvalidName) {
		t.Errorf("EnsureSite(s-a) with host s/a present: err = %v; want ErrInvalidName", err)
	}
	if _, err := l.AddHost(ctx, "s-b", "1", 1, 0); !errors.Is(err, hostnet.ErrInvalidName) {
		t.Errorf("AddHost(s-b, 1) with host s/b-1 present: err = %v; want ErrInvalidName", err)
	}

	// Idempotent: building the same things again changes nothing.
	if err := l.EnsureSite(ctx, "s"); err != nil {
		t.Fatalf("EnsureSite again: %v", err)
	}
	a2, err := l.AddHost(ctx, "s", "a", 0, 0)
	if err != nil {
		t.Fatalf("AddHost again: %v", err)
	}
	if a2.Netns() != a.Netns() || a2.Addr(hostnet.Mgmt) != a.Addr(hostnet.Mgmt) {
		t.Errorf("AddHost again = %s %v; want %s %v", a2.Netns(), a2.Addr(hostnet.Mgmt), a.Netns(), a.Addr(hostnet.Mgmt))
	}
	mustEcho(t, ctx, b, hostPort(a, hostnet.Mgmt, 7000))
}

func TestRootNamespaceCannotReachLab(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, _ := twoHosts(t, ctx, l)
	echoIn(t, ctx, a, hostPort(a, hostnet.Mgmt, 7000))

	// Verify the guard before sending anything: without it, the packet
	// below would leave the machine through the default route.
	out, err := exec.CommandContext(ctx, "ip", "-o", "route", "show", "type", "blackhole").Output()
	if err != nil {
		t.Fatalf("ip route show type blackhole: %v", err)
	}
	for _, n := range hostnet.Networks() {
		if !strings.Contains(string(out), "blackhole "+n.Subnet().String()) {
			t.Fatalf("root namespace has no blackhole route for %s (ip route show type blackhole: %q); refusing to send", n.Subnet(), out)
		}
		addr := a.Addr(n).String()
		got, err := exec.CommandContext(ctx, "ip", "route", "get", addr).CombinedOutput()
		if s := string(got); err == nil && !strings.Contains(s, "blackhole") && !strings.Contains(s, "unreachable") {
			t.Errorf("ip route get %s = %q; want a blackhole or no route", addr, s)
		} else if err != nil && !strings.Contains(s, "Invalid argument") && !strings.Contains(s, "unreachable") {
			t.Errorf("ip route get %s: %v: %q; want blackhole's Invalid argument", addr, err, s)
		}
	}

	for _, n := range hostnet.Networks() {
		start := time.Now()
		c, err := net.DialTimeout("tcp", hostPort(a, n, 7000), 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("net.Dial(%s) from the root namespace succeeded; want a local failure", hostPort(a, n, 7000))
		}
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("net.Dial(%s) from the root namespace: %v; want invalid argument or unreachable", hostPort(a, n, 7000), err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("net.Dial(%s) took %v to fail; want an immediate failure", hostPort(a, n, 7000), d)
		}
	}
}

func TestNoLabInterfaceInRootNamespace(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	twoHosts(t, ctx, l)
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip -o link show: %v", err)
	}
	root := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// "2: name@peer: <FLAGS> ..."
		f := strings.Fields(line)
		if len(f) > 1 {
			root[strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]] = true
		}
	}
	forbidden := []string{string(hostnet.Mgmt), string(hostnet.Cluster)}
	for _, h := range []string{"a", "b-1"} {
		for _, n := range hostnet.Networks() {
			forbidden = append(forbidden, l.VethName("s", h, n))
		}
	}
	for _, name := range forbidden {
		if root[name] {
			t.Errorf("interface %s is in the root namespace; want it only inside lab namespaces", name)
		}
	}
	leaks, err := l.Leaks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range leaks {
		if strings.HasPrefix(leak, "root-namespace") {
			t.Errorf("Leaks() reports %s", leak)
		}
	}
	// The bridge ends are in the site namespace, on the bridges.
	out, err = exec.CommandContext(ctx, "ip", "-n", l.SiteNetns("s"), "-o", "link", "show", "master", "mgmt").Output()
	if err != nil || !strings.Contains(string(out), l.VethName("s", "a", hostnet.Mgmt)) {
		t.Errorf("ip -n %s link show master mgmt = %q, %v; want host a's veth", l.SiteNetns("s"), out, err)
	}
}

func TestLinkDownSilencesOneNetwork(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	for _, n := range hostnet.Networks() {
		echoIn(t, ctx, a, hostPort(a, n, 7000))
		mustEcho(t, ctx, b, hostPort(a, n, 7000))
	}
	if err := a.LinkDown(ctx, hostnet.Mgmt); err != nil {
		t.Fatal(err)
	}
	mustTimeOut(t, ctx, b, hostPort(a, hostnet.Mgmt, 7000))
	mustEcho(t, ctx, b, hostPort(a, hostnet.Cluster, 7000))
	if err := a.LinkUp(ctx, hostnet.Mgmt); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, ctx, b, hostPort(a, hostnet.Mgmt, 7000))
}

func TestStartPowerOffPowerOn(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	addr := hostPort(a, hostnet.Mgmt, 7100)
	cmd, exited := startEcho(t, a, addr)
	pid := cmd.Process.Pid

	pids, err := a.Pids()
	if err != nil || !slices.Contains(pids, pid) {
		t.Fatalf("Pids() = %v, %v; want it to contain %d", pids, err, pid)
	}
	// In the host's network namespace...
	procNS, err1 := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	hostNS, err2 := os.Stat(filepath.Join("/run/netns", a.Netns()))
	if err1 != nil || err2 != nil || !os.SameFile(procNS, hostNS) {
		t.Errorf("process %d net namespace %v (%v) is not %s's %v (%v)", pid, procNS, err1, a.Netns(), hostNS, err2)
	}
	// ...and in its cgroup.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	want := "0::/" + strings.TrimPrefix(a.Cgroup(), l.CgroupRoot()+"/") + "\n"
	if err != nil || !strings.Contains(string(cg), want) {
		t.Errorf("/proc/%d/cgroup = %q, %v; want a line %q", pid, cg, err, want)
	}
	mustEcho(t, ctx, b, addr)

	// An established connection must not see a FIN when the power goes.
	conn, err := hostnet.DialIn(ctx, b.Netns(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := echo(conn); err != nil {
		t.Fatal(err)
	}

	// A floating address a service added: gone with the power.
	float := a.Addr(hostnet.Cluster).Next().Next().Next().String() + "/24"
	if out, err := exec.Command("ip", "-n", a.Netns(), "addr", "add", float, "dev", string(hostnet.Cluster)).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s: %v: %s", float, err, out)
	}
	if err := a.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff() = %v", err)
	}
	if out, _ := exec.Command("ip", "-n", a.Netns(), "addr", "show", "dev", string(hostnet.Cluster)).CombinedOutput(); strings.Contains(string(out), strings.TrimSuffix(float, "/24")+"/") ||
		!strings.Contains(string(out), a.Addr(hostnet.Cluster).String()+"/24") {
		t.Errorf("after PowerOff the cluster interface has:\n%s\nwant its own address only (not %s)", out, float)
	}
	if pids, err := a.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("Pids() after PowerOff = %v, %v; want none", pids, err)
	}
	select {
	case <-exited:
	case <-time.After(longTimeout):
		t.Fatalf("process %d still running after PowerOff", pid)
	}
	for _, n := range hostnet.Networks() {
		if linkUp(t, ctx, a, n) {
			t.Errorf("link %s of %s up after PowerOff; want down", n, a.Name())
		}
	}
	conn.SetReadDeadline(time.Now().Add(shortTimeout))
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a connection to the powered-off host = %d, %v; want silence (timeout)", n, err)
	}
	mustTimeOut(t, ctx, b, addr)

	if err := a.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn() = %v", err)
	}
	for _, n := range hostnet.Networks() {
		if !linkUp(t, ctx, a, n) {
			t.Errorf("link %s of %s down after PowerOn; want up", n, a.Name())
		}
	}
	// Up, and nothing listens any more: a quick refusal, not a timeout.
	deadline := time.Now().Add(longTimeout)
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := hostnet.DialIn(dctx, b.Netns(), addr)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("connect to %s after power cycle succeeded; want refused", addr)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to %s after PowerOn: %v; want connection refused", addr, err)
		}
	}
	// The host boots again: a process started after the power cycle lives
	// (regression: on kernel 6.18 a group that went through cgroup.kill
	// SIGKILLed every later CLONE_INTO_CGROUP child, so no host ever booted
	// twice).
	for cycle := range 2 {
		_, _ = startEcho(t, a, addr)
		mustEcho(t, ctx, b, addr)
		if cycle == 0 {
			if err := a.PowerOff(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.PowerOn(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	addr := hostPort(a, hostnet.Mgmt, 7200)
	startEcho(t, a, addr)
	mustEcho(t, ctx, b, addr)

	if err := a.Freeze(ctx); err != nil {
		t.Fatalf("Freeze() = %v", err)
	}
	events, err := os.ReadFile(filepath.Join(a.Cgroup(), "cgroup.events"))
	if err != nil || !strings.Contains(string(events), "frozen 1") {
		t.Errorf("cgroup.events = %q, %v; want frozen 1", events, err)
	}
	if frozen, err := a.Frozen(); err != nil || !frozen {
		t.Errorf("Frozen() = %v, %v; want true", frozen, err)
	}
	// A hung host is silent: its kernel completes no handshake either.
	mustTimeOut(t, ctx, b, addr)
	mustTimeOut(t, ctx, b, hostPort(a, hostnet.Cluster, 7200))

	if err := a.Thaw(ctx); err != nil {
		t.Fatalf("Thaw() = %v", err)
	}
	if frozen, err := a.Frozen(); err != nil || frozen {
		t.Errorf("Frozen() after Thaw = %v, %v; want false", frozen, err)
	}
	mustEcho(t, ctx, b, addr) // the same process answers again

	// A hung host that is reset (power off, then on) is not hung any more:
	// its new processes run and its traffic flows.
	if err := a.Freeze(ctx); err != nil {
		t.Fatalf("Freeze() = %v", err)
	}
	if err := a.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff() of a hung host = %v", err)
	}
	if err := a.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn() = %v", err)
	}
	startEcho(t, a, addr)
	mustEcho(t, ctx, b, addr)
}

func TestLoss(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	for _, n := range hostnet.Networks() {
		echoIn(t, ctx, a, hostPort(a, n, 7300))
	}
	if err := a.Loss(ctx, hostnet.Mgmt, 30); err != nil {
		t.Fatalf("Loss(mgmt, 30) = %v", err)
	}
	if err := a.Loss(ctx, hostnet.Mgmt, 100); err != nil {
		t.Fatalf("Loss(mgmt, 100) = %v", err)
	}
	mustTimeOut(t, ctx, b, hostPort(a, hostnet.Mgmt, 7300))
	mustEcho(t, ctx, b, hostPort(a, hostnet.Cluster, 7300))
	if err := a.ClearLoss(ctx); err != nil {
		t.Fatalf("ClearLoss() = %v", err)
	}
	mustEcho(t, ctx, b, hostPort(a, hostnet.Mgmt, 7300))
	if err := a.Loss(ctx, hostnet.Mgmt, 101); err == nil {
		t.Errorf("Loss(mgmt, 101) succeeded; want an error")
	}
}

func TestForwarder(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, _ := twoHosts(t, ctx, l)
	target := hostPort(a, hostnet.Mgmt, 7400)
	echoIn(t, ctx, a, target)

	f, err := hostnet.Forward(ctx, "127.0.0.1:0", a.Netns(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	held, err := net.DialTimeout("tcp", f.Addr().String(), longTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echo(held); err != nil {
		t.Fatalf("echo through the forwarder: %v", err)
	}
	for range 5 {
		c, err := net.DialTimeout("tcp", f.Addr().String(), longTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if err := echo(c); err != nil {
			t.Fatalf("echo through the forwarder: %v", err)
		}
		c.Close()
	}

	if err := f.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	// Close released the forwarder's sockets in the namespace: the echo
	// server there sees them end.
	deadline := time.Now().Add(longTimeout)
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", a.Netns(), "ss", "-Htn", "state", "established").Output()
		if err != nil {
			t.Fatalf("ss in %s: %v", a.Netns(), err)
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("established connections in %s after Close: %s", a.Netns(), out)
		}
	}
	held.SetReadDeadline(time.Now().Add(longTimeout))
	if n, err := held.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a forwarded connection after Close = %d, %v; want EOF or reset", n, err)
	}
	if c, err := net.DialTimeout("tcp", f.Addr().String(), longTimeout); err == nil {
		c.Close()
		t.Errorf("dial %s after Close succeeded; want refused", f.Addr())
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}

	if _, err := hostnet.Forward(ctx, "10.88.0.1:0", a.Netns(), target); !errors.Is(err, hostnet.ErrInvalidAddr) {
		t.Errorf("Forward on a non-loopback address: err = %v; want ErrInvalidAddr", err)
	}
}

func TestRemoveHost(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	startEcho(t, a, hostPort(a, hostnet.Mgmt, 7500))
	if err := a.Remove(ctx); err != nil {
		t.Fatalf("Remove() = %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", a.Netns())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s after Remove: %v; want gone", a.Netns(), err)
	}
	if _, err := os.Stat(a.Cgroup()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s after Remove: %v; want gone", a.Cgroup(), err)
	}
	if err := a.Remove(ctx); err != nil {
		t.Errorf("Remove() again = %v", err)
	}
	// The host comes back with AddHost.
	a, err := l.AddHost(ctx, "s", "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	echoIn(t, ctx, a, hostPort(a, hostnet.Mgmt, 7500))
	mustEcho(t, ctx, b, hostPort(a, hostnet.Mgmt, 7500))

	// A namespace deleted behind the lab's back while a socket keeps it
	// alive leaves its veth ends on the site's bridges; AddHost replaces
	// them.
	held, err := hostnet.ListenIn(ctx, b.Netns(), hostPort(b, hostnet.Mgmt, 7501))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", b.Netns()).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", b.Netns(), err, out)
	}
	b, err = l.AddHost(ctx, "s", "b-1", 0, 1)
	if err != nil {
		t.Fatalf("AddHost after the namespace was deleted under a live socket: %v", err)
	}
	echoIn(t, ctx, b, hostPort(b, hostnet.Mgmt, 7500))
	mustEcho(t, ctx, a, hostPort(b, hostnet.Mgmt, 7500))
}

func TestTeardownAfterCrash(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, err := l.AddHost(ctx, "s", "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, exited := startEcho(t, a, hostPort(a, hostnet.Mgmt, 7600))
	// What a crash in the middle of AddHost leaves: a namespace without
	// links, a cgroup, and the file of an interrupted `ip netns add`.
	half := l.HostNetns("s", "half")
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", half).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", half, err, out)
	}
	if err := os.MkdirAll(filepath.Join(l.CgroupRoot(), l.Prefix(), "s", "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	// AddHost finishes a half-built host.
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", l.HostNetns("s", "half2")).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	half2, err := l.AddHost(ctx, "s", "half2", 0, 2)
	if err != nil {
		t.Fatalf("AddHost on a half-built host: %v", err)
	}
	echoIn(t, ctx, half2, hostPort(half2, hostnet.Cluster, 7600))
	mustEcho(t, ctx, a, hostPort(half2, hostnet.Cluster, 7600))

	stale := filepath.Join("/run/netns", l.HostNetns("s", "stale"))
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if leaks, err := l.Leaks(ctx); err != nil || len(leaks) < 4 {
		t.Errorf("Leaks() before Teardown = %q, %v; want site, hosts, cgroup and registration", leaks, err)
	}

	// A new process knows nothing but the prefix.
	fresh, err := hostnet.New(hostnet.Config{Prefix: l.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Teardown(ctx); err != nil {
		t.Fatalf("Teardown() = %v", err)
	}
	if leaks, err := fresh.Leaks(ctx); err != nil || len(leaks) != 0 {
		t.Errorf("Leaks() after Teardown = %q, %v; want none", leaks, err)
	}
	select {
	case <-exited:
	case <-time.After(longTimeout):
		t.Errorf("host process still running after Teardown")
	}
	if err := fresh.Teardown(ctx); err != nil {
		t.Errorf("Teardown() again = %v", err)
	}
}

// TestConcurrentDialsStayInTheirNamespace: sockets made by DialIn never
// leak into other goroutines' namespaces.
func TestConcurrentDialsStayInTheirNamespace(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, b := twoHosts(t, ctx, l)
	echoIn(t, ctx, a, hostPort(a, hostnet.Mgmt, 7700))
	root, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	go func() {
		for {
			c, err := root.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	errc := make(chan error, 40)
	for i := range cap(errc) {
		go func() {
			if i%2 == 0 {
				errc <- echoFrom(ctx, b, hostPort(a, hostnet.Mgmt, 7700), longTimeout)
				return
			}
			c, err := net.DialTimeout("tcp", root.Addr().String(), longTimeout)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			errc <- echo(c)
		}()
	}
	for range cap(errc) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestRoutesOutliveOneLab: tearing down one lab leaves the shared
// blackhole routes to the labs still running.
func TestRoutesOutliveOneLab(t *testing.T) {
	t.Parallel()
	first, second := newLab(t), newLab(t)
	ctx := testContext(t)
	for _, l := range []*hostnet.Lab{first, second} {
		if err := l.EnsureSite(ctx, "s"); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ip", "-o", "route", "show", "type", "blackhole").Output()
	if err != nil {
		t.Fatalf("ip route show type blackhole: %v", err)
	}
	for _, n := range hostnet.Networks() {
		if !strings.Contains(string(out), "blackhole "+n.Subnet().String()) {
			t.Errorf("no blackhole route for %s after tearing down one of two labs (%q)", n.Subnet(), out)
		}
	}
}
