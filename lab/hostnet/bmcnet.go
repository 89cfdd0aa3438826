package hostnet

import (
	"context"
	"fmt"
	"net/netip"
)

// The BMC network. Each host's BMC (its chassis, `petrel vbmc`) has an
// address on its site's management network, in a subnet of its own:
// 10.90.<site>.<host+10>/24, held by the site namespace's mgmt bridge (a
// BMC's port on the management switch). Every host routes that subnet
// out of its mgmt interface, and the site namespace routes the site's
// mgmt subnet back, so a site controller on any host reaches every BMC of
// its site, and nothing outside the site does. The chassis process, in
// the root namespace, opens its sockets in the site namespace
// (ListenIn, ListenPacketIn); a BMC therefore stays reachable while its
// host is powered off, as a real BMC on standby power does.

// BMCSubnet is the whole lab range of BMC addresses, 10.90.0.0/16;
// the root namespace blackholes it like the site networks.
func BMCSubnet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, 0, 0}), 16)
}

// BMCAddr is the BMC address of host hostIdx of site siteIdx:
// 10.90.<siteIdx>.<hostIdx+10>.
func BMCAddr(siteIdx, hostIdx int) (netip.Addr, error) {
	if siteIdx < 0 || siteIdx >= MaxSites || hostIdx < 0 || hostIdx >= MaxHosts {
		return netip.Addr{}, fmt.Errorf("%w: site %d host %d", ErrInvalidAddr, siteIdx, hostIdx)
	}
	b := BMCSubnet().Addr().As4()
	b[2], b[3] = byte(siteIdx), byte(hostIdx+hostAddrBase)
	return netip.AddrFrom4(b), nil
}

// labRanges are the ranges the root namespace blackholes.
func labRanges() []netip.Prefix {
	out := []netip.Prefix{}
	for _, n := range Networks() {
		out = append(out, n.Subnet())
	}
	return append(out, BMCSubnet())
}

// bmcSubnetOf is site siteIdx's BMC /24 and mgmtSubnetOf its mgmt /24.
func bmcSubnetOf(siteIdx int) netip.Prefix {
	a, _ := BMCAddr(siteIdx, 0)
	return netip.PrefixFrom(a, sitePrefix).Masked()
}

func mgmtSubnetOf(siteIdx int) netip.Prefix {
	a, _ := Addr(Mgmt, siteIdx, 0)
	return netip.PrefixFrom(a, sitePrefix).Masked()
}

// EnsureBMC gives the BMC of host hostIdx of site (index siteIdx) its
// address on the site's mgmt bridge and makes sure the site namespace
// routes the site's mgmt subnet; it returns the address and the site
// namespace to listen in. Idempotent.
func (l *Lab) EnsureBMC(ctx context.Context, site string, siteIdx, hostIdx int) (netip.Addr, string, error) {
	a, err := BMCAddr(siteIdx, hostIdx)
	if err != nil {
		return netip.Addr{}, "", err
	}
	if err := l.EnsureSite(ctx, site); err != nil {
		return netip.Addr{}, "", err
	}
	ns := l.SiteNetns(site)
	if _, err := run(ctx, "", "ip", "-n", ns, "addr", "replace", netip.PrefixFrom(a, sitePrefix).String(), "dev", string(Mgmt)); err != nil {
		return netip.Addr{}, "", err
	}
	if _, err := run(ctx, "", "ip", "-n", ns, "route", "replace", mgmtSubnetOf(siteIdx).String(), "dev", string(Mgmt), "scope", "link"); err != nil {
		return netip.Addr{}, "", err
	}
	return a, ns, nil
}

// ensureBMCRoute routes the site's BMC subnet out of the host's mgmt
// interface. The kernel drops the route whenever the interface goes down,
// so it is set again after every link up.
func (h *Host) ensureBMCRoute(ctx context.Context) error {
	_, err := run(ctx, "", "ip", "-n", h.netns, "route", "replace", bmcSubnetOf(h.siteIdx).String(), "dev", string(Mgmt), "scope", "link")
	return err
}

// GatewayAddr is the address of site siteIdx's own namespace on its mgmt
// network, 10.88.<site>.1: where the site's hosts reach the lab's
// forwarders (the WAN link to central).
func GatewayAddr(siteIdx int) (netip.Addr, error) {
	if siteIdx < 0 || siteIdx >= MaxSites {
		return netip.Addr{}, fmt.Errorf("%w: site %d: want [0,%d)", ErrInvalidAddr, siteIdx, MaxSites)
	}
	b := Mgmt.Subnet().Addr().As4()
	b[2], b[3] = byte(siteIdx), 1
	return netip.AddrFrom4(b), nil
}

// EnsureGateway gives the site namespace its gateway address on the mgmt
// bridge and returns it with the namespace's name. Idempotent.
func (l *Lab) EnsureGateway(ctx context.Context, site string, siteIdx int) (netip.Addr, string, error) {
	a, err := GatewayAddr(siteIdx)
	if err != nil {
		return netip.Addr{}, "", err
	}
	if err := l.EnsureSite(ctx, site); err != nil {
		return netip.Addr{}, "", err
	}
	ns := l.SiteNetns(site)
	if _, err := run(ctx, "", "ip", "-n", ns, "addr", "replace", netip.PrefixFrom(a, sitePrefix).String(), "dev", string(Mgmt)); err != nil {
		return netip.Addr{}, "", err
	}
	return a, ns, nil
}
