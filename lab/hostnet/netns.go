package hostnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts named network namespaces.
const netnsDir = "/run/netns"

// netnsPath is the file of the named network namespace ns.
func netnsPath(ns string) (string, error) {
	if ns == "" || ns == "." || ns == ".." || strings.ContainsRune(ns, '/') {
		return "", fmt.Errorf("%w: network namespace %q", ErrInvalidName, ns)
	}
	return filepath.Join(netnsDir, ns), nil
}

// netnsState tells whether the named namespace exists. A file that is not
// a namespace mount is what an interrupted `ip netns add` leaves behind.
type netnsState int

const (
	netnsMissing netnsState = iota
	netnsStale              // the file exists but is no namespace
	netnsPresent
)

func statNetns(ns string) (netnsState, error) {
	p, err := netnsPath(ns)
	if err != nil {
		return netnsMissing, err
	}
	var st unix.Statfs_t
	switch err := unix.Statfs(p, &st); {
	case errors.Is(err, fs.ErrNotExist):
		return netnsMissing, nil
	case err != nil:
		return netnsMissing, fmt.Errorf("statfs %s: %w", p, err)
	case st.Type == unix.NSFS_MAGIC:
		return netnsPresent, nil
	default:
		return netnsStale, nil
	}
}

// ensureNetns creates the named namespace unless it exists, replacing a
// stale file. It reports whether it created the namespace.
func ensureNetns(ctx context.Context, ns string) (bool, error) {
	st, err := statNetns(ns)
	if err != nil {
		return false, err
	}
	switch st {
	case netnsPresent:
		return false, nil
	case netnsStale:
		if _, err := run(ctx, "", "ip", "netns", "del", ns); err != nil {
			return false, err
		}
	}
	if _, err := run(ctx, "", "ip", "netns", "add", ns); err != nil {
		// Someone else may have created it meanwhile.
		if st, _ := statNetns(ns); st == netnsPresent {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// deleteNetns deletes the named namespace; a missing one is not an error.
// The kernel frees the namespace, and with it its interfaces, once the
// last process or socket in it is gone.
func deleteNetns(ctx context.Context, ns string) error {
	st, err := statNetns(ns)
	if err != nil || st == netnsMissing {
		return err
	}
	_, err = run(ctx, "", "ip", "netns", "del", ns)
	return err
}

// listNetns lists the named namespaces whose names start with prefix.
func listNetns(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// inNetns runs fn with the calling OS thread switched into the named
// network namespace. Sockets fn creates belong to that namespace for their
// whole life, whichever thread uses them later; fn must not start
// goroutines that create sockets.
//
// fn runs on a fresh goroutine locked to its thread. If switching back
// fails, that goroutine exits with the thread still locked, and the Go
// runtime then destroys the thread instead of reusing it: no goroutine
// ever runs unlocked on a thread in a foreign namespace.
func inNetns(ns string, fn func() error) error {
	p, err := netnsPath(ns)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- onThreadInNetns(ns, p, fn) }()
	return <-errc
}

func onThreadInNetns(ns, path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the thread dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// ListenIn opens a TCP listener on addr ("ip:port") inside the named
// network namespace ns, from a process in any namespace. The listener keeps
// the namespace alive until it is closed, even after `ip netns del`.
func ListenIn(ctx context.Context, ns, addr string) (net.Listener, error) {
	if err := checkAddrPort(addr); err != nil {
		return nil, err
	}
	var l net.Listener
	err := inNetns(ns, func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", ns, err)
	}
	return l, nil
}

// ListenPacketIn opens a UDP socket on addr ("ip:port") inside the named
// network namespace ns. Like ListenIn's listener, it keeps the namespace
// alive until it is closed.
func ListenPacketIn(ctx context.Context, ns, addr string) (*net.UDPConn, error) {
	if err := checkAddrPort(addr); err != nil {
		return nil, err
	}
	var c *net.UDPConn
	err := inNetns(ns, func() error {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", ns, err)
	}
	return c, nil
}

// DialIn opens a TCP connection to addr ("ip:port") from inside the named
// network namespace ns. The connection keeps the namespace alive until it
// is closed.
func DialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	if err := checkAddrPort(addr); err != nil {
		return nil, err
	}
	var c net.Conn
	err := inNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial in %s: %w", ns, err)
	}
	return c, nil
}

// checkAddrPort insists on a literal "ip:port": resolving a name could
// open sockets on other goroutines, outside the namespace.
func checkAddrPort(addr string) error {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidAddr, err)
	}
	return nil
}
