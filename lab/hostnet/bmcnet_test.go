package hostnet_test

import (
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/lab/hostnet"
)

// TestBMCNetwork: a BMC address on the site's mgmt bridge is reachable
// from the site's hosts, also after a mgmt link flap and a power cycle of
// the host reaching it, and not from the root namespace.
func TestBMCNetwork(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := testContext(t)
	a, _ := twoHosts(t, ctx, l)
	addr, ns, err := l.EnsureBMC(ctx, "s", 0, 1)
	if err != nil {
		t.Fatalf("EnsureBMC: %v", err)
	}
	if want, _ := hostnet.BMCAddr(0, 1); addr != want || ns != l.SiteNetns("s") {
		t.Fatalf("EnsureBMC = %v in %s; want %v in %s", addr, ns, want, l.SiteNetns("s"))
	}
	if _, _, err := l.EnsureBMC(ctx, "s", 0, 1); err != nil {
		t.Fatalf("EnsureBMC again: %v", err)
	}
	target := netip.AddrPortFrom(addr, 6230).String()
	ln, err := hostnet.ListenIn(ctx, ns, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	mustEcho(t, ctx, a, target)

	if err := a.LinkDown(ctx, hostnet.Mgmt); err != nil {
		t.Fatal(err)
	}
	if err := a.LinkUp(ctx, hostnet.Mgmt); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, ctx, a, target)
	if err := a.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, ctx, a, target)

	out, err := exec.CommandContext(ctx, "ip", "-o", "route", "show", "type", "blackhole").Output()
	if err != nil || !strings.Contains(string(out), "blackhole "+hostnet.BMCSubnet().String()) {
		t.Fatalf("root namespace has no blackhole route for %s (%q, %v); refusing to send", hostnet.BMCSubnet(), out, err)
	}
	if c, err := net.DialTimeout("tcp", target, shortTimeout); err == nil {
		c.Close()
		t.Errorf("dial %s from the root namespace succeeded; want a local failure", target)
	}
}
