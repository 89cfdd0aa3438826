package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// The floating addresses of service-group members (package
// agent/services) are added, removed and announced through the
// platform; these are the operations both platforms share.

// ErrRootNetns is returned when the lab platform is asked to change
// addresses from the machine's root network namespace: a lab host's
// agent runs in the host's own namespace, and must never touch the
// machine's.
var ErrRootNetns = errors.New("agent: the lab platform refuses to change addresses in the machine's root network namespace")

// ifaceName is what an interface name may look like (IFNAMSIZ).
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)

// checkAddress validates an interface name and a prefix before they
// reach ip(8).
func checkAddress(iface, prefix string) (netip.Prefix, error) {
	if !ifaceName.MatchString(iface) {
		return netip.Prefix{}, fmt.Errorf("agent: interface name %q", iface)
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("agent: address: %w", err)
	}
	return p, nil
}

// addAddress puts prefix on iface (ip addr replace: no error when it is
// there already).
func addAddress(ctx context.Context, iface, prefix string) error {
	p, err := checkAddress(iface, prefix)
	if err != nil {
		return err
	}
	return ip(ctx, "addr", "replace", p.String(), "dev", iface)
}

// delAddress takes prefix off iface. An address that is not there (or an
// interface that is gone) is not an error.
func delAddress(ctx context.Context, iface, prefix string) error {
	p, err := checkAddress(iface, prefix)
	if err != nil {
		return err
	}
	err = ip(ctx, "addr", "del", p.String(), "dev", iface)
	if err != nil && !hasAddress(iface, p) {
		return nil
	}
	return err
}

// hasAddress reports whether iface has p's address with p's length.
func hasAddress(iface string, p netip.Prefix) bool {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return false
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		if got, ok := netip.AddrFromSlice(ipn.IP); ok && got.Unmap() == p.Addr().Unmap() && ones == p.Bits() {
			return true
		}
	}
	return false
}

// ip runs ip(8) with args (no shell).
func ip(ctx context.Context, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %s: %w", strings.Join(args, " "), strings.TrimSpace(out.String()), err)
	}
	return nil
}

// announce sends a gratuitous ARP for addr out of iface, as a request and
// as a reply (neighbours differ in which they take), from an AF_PACKET
// socket that receives nothing. IPv6 addresses are not announced here:
// the kernel advertises them itself when they are added.
func announce(iface, addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("agent: announce: %w", err)
	}
	if !a.Is4() {
		return nil
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("agent: announce: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("agent: announce: %s has no Ethernet address", iface)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("agent: announce: socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], broadcastMAC)
	for _, op := range []uint16{arpRequest, arpReply} {
		if err := unix.Sendto(fd, garpFrame(ifi.HardwareAddr, a.As4(), op), 0, to); err != nil {
			return fmt.Errorf("agent: announce %s on %s: %w", addr, iface, err)
		}
	}
	return nil
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ARP operations.
const (
	arpRequest = 1
	arpReply   = 2
)

// garpFrame is an Ethernet frame (padded to the minimum 60 bytes)
// carrying a gratuitous ARP: sender and target address are both ip.
func garpFrame(mac net.HardwareAddr, ip [4]byte, op uint16) []byte {
	f := make([]byte, 60)
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	arp := f[14:]
	binary.BigEndian.PutUint16(arp[0:2], 1) // hardware: Ethernet
	binary.BigEndian.PutUint16(arp[2:4], unix.ETH_P_IP)
	arp[4], arp[5] = 6, 4
	binary.BigEndian.PutUint16(arp[6:8], op)
	copy(arp[8:14], mac)
	copy(arp[14:18], ip[:])
	if op == arpReply {
		copy(arp[18:24], mac) // a request leaves the target hardware address zero
	}
	copy(arp[24:28], ip[:])
	return f
}

// htons is v in network byte order, as the kernel reads a uint16 field.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// notRootNetns returns ErrRootNetns when this process (or the calling
// thread) is in the machine's root network namespace, or when that cannot
// be told. The root namespace is that of PID 1 and, because PID 1's may be
// unreadable even to root (a VM's init that is not dumpable), also that of
// kthreadd (PID 2): kernel threads always live in the root namespace.
func notRootNetns() error {
	var roots []unix.Stat_t
	var lastErr error
	refs := []string{"/proc/1/ns/net"}
	if b, err := os.ReadFile("/proc/2/comm"); err == nil && strings.TrimSpace(string(b)) == "kthreadd" {
		refs = append(refs, "/proc/2/ns/net")
	}
	for _, ref := range refs {
		var st unix.Stat_t
		if err := unix.Stat(ref, &st); err != nil {
			lastErr = err
			continue
		}
		roots = append(roots, st)
	}
	if len(roots) == 0 {
		return fmt.Errorf("%w: cannot tell which namespace is the root one: %w", ErrRootNetns, lastErr)
	}
	for _, self := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net"} {
		var st unix.Stat_t
		if err := unix.Stat(self, &st); err != nil {
			return fmt.Errorf("%w: cannot tell which namespace this is: %w", ErrRootNetns, err)
		}
		for _, root := range roots {
			if st.Ino == root.Ino && st.Dev == root.Dev {
				return ErrRootNetns
			}
		}
	}
	return nil
}
