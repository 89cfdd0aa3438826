package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petrel-edge/petrel/agent"
)

// netnsHelperEnv makes the test binary run netnsHelper (see TestMain):
// it is started inside a network namespace the test created.
const netnsHelperEnv = "AGENT_TEST_NETNS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(netnsHelperEnv) != "" {
		if err := netnsHelper(); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		fmt.Println("PASS")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestLabPlatformAddressesInNetns adds, announces and removes a floating
// address through the lab platform for real, inside a network namespace
// of its own (a veth pair: mgmt, and peer to listen on), never in the
// machine's.
func TestLabPlatformAddressesInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (it creates a network namespace); CI must run it as root")
		}
		t.Skip("needs root: it creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip(8) is missing: %v", err)
	}
	var b [4]byte
	rand.Read(b[:])
	ns := "petrel-agt-" + hex.EncodeToString(b[:])
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	run("-n", ns, "link", "add", "mgmt", "type", "veth", "peer", "name", "peer")
	run("-n", ns, "link", "set", "mgmt", "up")
	run("-n", ns, "link", "set", "peer", "up")

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), netnsHelperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	t.Logf("helper in %s:\n%s", ns, out)
	if err != nil || !bytes.Contains(out, []byte("PASS")) {
		t.Fatalf("the helper in the namespace failed: %v", err)
	}
}

// netnsHelper runs inside the test's namespace.
func netnsHelper() error {
	ctx := context.Background()
	p, err := agent.NewLabPlatform(os.TempDir(), "")
	if err != nil {
		return err
	}
	const prefix, addr = "10.123.0.50/24", "10.123.0.50"
	want := netip.MustParsePrefix(prefix)
	for range 2 { // adding twice is no error
		if err := p.AddAddress(ctx, "mgmt", prefix); err != nil {
			return fmt.Errorf("AddAddress: %w", err)
		}
	}
	if !has("mgmt", want) {
		return errors.New("the address is not on mgmt after AddAddress")
	}
	fmt.Println("added", prefix, "on mgmt")

	// Listen on the other end of the veth for the announcement.
	peer, err := net.InterfaceByName("peer")
	if err != nil {
		return err
	}
	mgmt, err := net.InterfaceByName("mgmt")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: peer.Index}); err != nil {
		return err
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return err
	}
	t0 := time.Now()
	if err := p.Announce(ctx, "mgmt", addr); err != nil {
		return fmt.Errorf("Announce: %w", err)
	}
	sent := time.Since(t0)
	ops := map[uint16]bool{}
	buf := make([]byte, 1500)
	for !ops[1] || !ops[2] {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("no gratuitous ARP request and reply on peer (got ops %v): %w", ops, err)
		}
		f := buf[:n]
		if n < 42 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_ARP {
			continue
		}
		arp := f[14:]
		sha, spa, tpa := net.HardwareAddr(arp[8:14]), net.IP(arp[14:18]), net.IP(arp[24:28])
		if !bytes.Equal(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || sha.String() != mgmt.HardwareAddr.String() ||
			spa.String() != addr || tpa.String() != addr {
			continue // some other ARP (the kernel's own)
		}
		ops[binary.BigEndian.Uint16(arp[6:8])] = true
	}
	fmt.Printf("announced %s from %s in %v: gratuitous ARP request and reply seen on peer\n", addr, mgmt.HardwareAddr, sent)

	for range 2 { // removing what is not there is no error
		if err := p.DelAddress(ctx, "mgmt", prefix); err != nil {
			return fmt.Errorf("DelAddress: %w", err)
		}
	}
	if has("mgmt", want) {
		return errors.New("the address is still on mgmt after DelAddress")
	}
	if err := p.DelAddress(ctx, "nosuch0", prefix); err != nil {
		return fmt.Errorf("DelAddress on a missing interface: %w", err)
	}
	if err := p.AddAddress(ctx, "mgmt", "-d/24"); err == nil {
		return errors.New("AddAddress took a malformed prefix")
	}
	if err := p.AddAddress(ctx, "nosuch0", prefix); err == nil {
		return errors.New("AddAddress on a missing interface succeeded")
	}
	fmt.Println("removed", prefix)
	return nil
}

func has(iface string, p netip.Prefix) bool {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return false
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if a.String() == p.String() {
			return true
		}
	}
	return false
}

func htons(v uint16) uint16 { return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)) }

// TestLabPlatformRefusesTheRootNetns: from the machine's own namespace,
// the lab platform changes no address.
func TestLabPlatformRefusesTheRootNetns(t *testing.T) {
	// The root namespace is PID 1's, or kthreadd's where PID 1's is unreadable.
	var self, root unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil ||
		(unix.Stat("/proc/1/ns/net", &root) != nil && unix.Stat("/proc/2/ns/net", &root) != nil) {
		t.Skip("cannot read the namespaces here (not root?); the platform refuses then too")
	}
	if self.Ino != root.Ino {
		t.Skip("this test does not run in the machine's root network namespace")
	}
	p, err := agent.NewLabPlatform(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for name, err := range map[string]error{
		"AddAddress": p.AddAddress(ctx, "lo", "127.77.0.1/32"),
		"DelAddress": p.DelAddress(ctx, "lo", "127.77.0.1/32"),
		"Announce":   p.Announce(ctx, "lo", "127.77.0.1"),
	} {
		if !errors.Is(err, agent.ErrRootNetns) {
			t.Errorf("%s in the root namespace = %v; want ErrRootNetns", name, err)
		}
	}
}

func TestHostPlatformAddressesRefusedUnderTest(t *testing.T) {
	var p agent.HostPlatform
	ctx := t.Context()
	for name, err := range map[string]error{
		"AddAddress": p.AddAddress(ctx, "lo", "127.77.0.1/32"),
		"DelAddress": p.DelAddress(ctx, "lo", "127.77.0.1/32"),
		"Announce":   p.Announce(ctx, "lo", "127.77.0.1"),
	} {
		if !errors.Is(err, agent.ErrRealPlatformRefused) {
			t.Errorf("HostPlatform.%s under go test = %v; want ErrRealPlatformRefused", name, err)
		}
	}
}
