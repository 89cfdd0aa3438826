package egress_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/petrel-edge/petrel/internal/egress"
)

func TestDefaultPolicy(t *testing.T) {
	p, err := egress.NewPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for addr, allowed := range map[string]bool{
		"127.0.0.1":                   true, // loopback: allowed by default (the lab, tests)
		"::1":                         true,
		"10.20.0.5":                   true,
		"192.168.1.10":                true,
		"2001:db8::1":                 true,
		"169.254.169.254":             false, // cloud metadata
		"::ffff:169.254.169.254":      false, // the same, IPv4-mapped
		"64:ff9b::a9fe:a9fe":          false, // the same, through NAT64
		"169.254.1.1":                 false,
		"0.0.0.0":                     false,
		"0.1.2.3":                     false,
		"::":                          false,
		"224.0.0.1":                   false,
		"255.255.255.255":             false,
		"fe80::1":                     false,
		"fe80::1%eth0":                false,
		"ff02::1":                     false,
		"fd00:ec2::254":               false,
		"100.100.100.200":             false,
		"100.100.100.201":             true,
		"::ffff:10.0.0.1":             true,
		"64:ff9b::a00:1":              true, // NAT64 of 10.0.0.1
		"2001:db8:ffff:ffff::ffff:ff": true,
	} {
		err := p.Check(netip.MustParseAddr(addr))
		if got := err == nil; got != allowed {
			t.Errorf("Check(%s) = %v; want allowed=%v", addr, err, allowed)
		}
		if err != nil && !errors.Is(err, egress.ErrDenied) {
			t.Errorf("Check(%s) = %v; want ErrDenied", addr, err)
		}
	}
}

func TestAllowAndDenyLists(t *testing.T) {
	p, err := egress.NewPolicy([]string{"10.20.0.0/16", "127.0.0.1"}, []string{"10.20.9.0/24", "::ffff:10.20.8.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, allowed := range map[string]bool{
		"10.20.0.5":   true,
		"127.0.0.1":   true,
		"127.0.0.2":   false, // not in the allow list
		"10.21.0.1":   false,
		"10.20.9.1":   false, // deny wins over allow
		"10.20.8.200": false, // an IPv4-mapped deny prefix denies the IPv4 range
		"::1":         false,
	} {
		if got := p.Check(netip.MustParseAddr(addr)) == nil; got != allowed {
			t.Errorf("Check(%s) allowed=%v; want %v", addr, got, allowed)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", ""} {
		if _, err := egress.NewPolicy([]string{bad}, nil); err == nil {
			t.Errorf("NewPolicy(allow %q) accepted it", bad)
		}
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestResolveRefusesAnyDeniedAddress(t *testing.T) {
	p, _ := egress.NewPolicy(nil, nil)
	r := fakeResolver{
		"good.test":  {netip.MustParseAddr("127.0.0.1")},
		"mixed.test": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254")},
	}
	ctx := context.Background()
	if _, err := p.Resolve(ctx, r, "good.test"); err != nil {
		t.Errorf("Resolve(good.test) = %v", err)
	}
	if _, err := p.Resolve(ctx, r, "mixed.test"); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("Resolve(mixed.test) = %v; want ErrDenied", err)
	}
	if _, err := p.Resolve(ctx, r, "missing.test"); !errors.Is(err, egress.ErrResolve) {
		t.Errorf("Resolve(missing.test) = %v; want ErrResolve", err)
	}
	if _, err := p.Resolve(ctx, r, "169.254.169.254"); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("Resolve(169.254.169.254) = %v; want ErrDenied", err)
	}
}

// TestDialChecksEverySocket: the dial function refuses a name that now
// resolves to a denied address, and Control refuses a denied address even
// when the name check is bypassed.
func TestDialChecksEverySocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
	ctx := context.Background()
	r := fakeResolver{"target.test": {netip.MustParseAddr("127.0.0.1")}}

	open, _ := egress.NewPolicy(nil, nil)
	c, err := open.DialContext(r, &net.Dialer{})(ctx, "tcp", net.JoinHostPort("target.test", port))
	if err != nil {
		t.Fatalf("dial an allowed target: %v", err)
	}
	c.Close()
	// Rebinding: the same name now points at the metadata service.
	r["target.test"] = []netip.Addr{netip.MustParseAddr("169.254.169.254")}
	if _, err := open.DialContext(r, &net.Dialer{})(ctx, "tcp", net.JoinHostPort("target.test", port)); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("dial after rebinding = %v; want ErrDenied", err)
	}
	// Control alone (a dialer resolving by itself) refuses loopback when
	// the policy denies it.
	closed, _ := egress.NewPolicy(nil, []string{"127.0.0.0/8"})
	d := &net.Dialer{Control: closed.Control}
	if _, err := d.DialContext(ctx, "tcp", ln.Addr().String()); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("dial with Control denying loopback = %v; want ErrDenied", err)
	}
}
