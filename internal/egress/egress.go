// Package egress decides which addresses a daemon may connect out to on a
// user's behalf (webhook targets today): an allow list and a deny list of
// address prefixes, checked when a target is registered and again on every
// dial, so a name that resolves to an allowed address at registration and
// to a denied one later (DNS rebinding) is still refused.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrDenied reports an address the policy does not allow.
var ErrDenied = errors.New("address not allowed by the egress policy")

// DefaultDeny is always denied, whatever the configuration: addresses no
// legitimate receiver has, and the cloud metadata services.
var DefaultDeny = []string{
	"0.0.0.0/8",          // "this network"; 0.0.0.0 reaches the local host
	"169.254.0.0/16",     // link-local, with the metadata service at 169.254.169.254
	"100.100.100.200/32", // Alibaba Cloud metadata
	"224.0.0.0/4",        // multicast
	"240.0.0.0/4",        // reserved, with the broadcast address
	"::/128",             // unspecified
	"fe80::/10",          // link-local
	"ff00::/8",           // multicast
	"fd00:ec2::254/128",  // AWS metadata over IPv6
}

// Policy allows an address when the allow list is empty or holds it, and no
// deny prefix (DefaultDeny and the configured ones) holds it: deny wins.
// IPv4-mapped IPv6 addresses and NAT64 addresses (64:ff9b::/96) are
// checked as the IPv4 address they carry too.
type Policy struct {
	allow, deny []netip.Prefix
}

// NewPolicy parses allow and deny lists of CIDR prefixes (a bare address is
// a prefix of one address). deny adds to DefaultDeny.
func NewPolicy(allow, deny []string) (*Policy, error) {
	p := &Policy{}
	var err error
	if p.allow, err = parsePrefixes("allow", allow); err != nil {
		return nil, err
	}
	if p.deny, err = parsePrefixes("deny", append(append([]string(nil), DefaultDeny...), deny...)); err != nil {
		return nil, err
	}
	return p, nil
}

func parsePrefixes(list string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("egress: %s %q: want a CIDR prefix or an address", list, s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("egress: %s %q: want a CIDR prefix or an address", list, s)
		}
		if pf.Addr().Is4In6() {
			pf = netip.PrefixFrom(pf.Addr().Unmap(), max(pf.Bits()-96, 0))
		}
		out = append(out, pf.Masked())
	}
	return out, nil
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Check returns nil if the policy allows a, else an error wrapping ErrDenied.
func (p *Policy) Check(a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("invalid address: %w", ErrDenied)
	}
	a = a.Unmap().WithZone("")
	forms := []netip.Addr{a}
	if nat64.Contains(a) {
		b := a.As16()
		forms = append(forms, netip.AddrFrom4([4]byte(b[12:])))
	}
	for _, f := range forms {
		for _, d := range p.deny {
			if d.Contains(f) {
				return fmt.Errorf("%s is in denied range %s: %w", a, d, ErrDenied)
			}
		}
	}
	if len(p.allow) == 0 {
		return nil
	}
	for _, al := range p.allow {
		if al.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%s is in no allowed range: %w", a, ErrDenied)
}

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ErrResolve reports a host name that did not resolve.
var ErrResolve = errors.New("host name does not resolve")

// Resolve returns host's addresses (an address literal stands for itself),
// refusing the host if any of them is denied.
func (p *Policy) Resolve(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, p.Check(a)
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return nil, fmt.Errorf("%s: %w", host, ErrResolve)
	}
	for _, a := range addrs {
		if err := p.Check(a); err != nil {
			return nil, fmt.Errorf("%s resolves to %w", host, err)
		}
	}
	return addrs, nil
}

// Control checks the address a socket is about to connect to; set it as a
// net.Dialer's Control so no connection reaches a denied address, however
// the address was found.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: dial %q: %w", address, ErrDenied)
	}
	return p.Check(ap.Addr())
}

// DialContext returns a dial function for an http.Transport: it resolves
// the host with r, refuses it if any address is denied, and dials the
// addresses in turn through d with Control checking each socket.
func (p *Policy) DialContext(r Resolver, d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dd := *d
	dd.Control = p.Control
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := p.Resolve(ctx, r, host)
		if err != nil {
			return nil, err
		}
		var first error
		for _, a := range addrs {
			c, err := dd.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			if first == nil {
				first = err
			}
		}
		return nil, first
	}
}
