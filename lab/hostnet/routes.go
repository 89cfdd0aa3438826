package hostnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The blackhole routes for the lab ranges are shared by every lab on the
// machine, whatever its prefix: the default lab of `petrel lab up` and the
// short-lived labs of tests run side by side. They are reference-counted
// with one registration file per lab under registryDir:
//
//   - EnsureSite (and so AddHost) registers the lab and then makes sure
//     the routes exist, before it creates any namespace.
//   - Teardown deregisters the lab last, and deletes the routes only when
//     no registration is left, and only routes it tagged itself (protocol
//     routeProto): a blackhole someone else installed stays.
//
// Both run under an exclusive flock on registryDir/lock, so that a lab
// starting up never loses its routes to one tearing down. The directory
// is on tmpfs, like the namespaces: a reboot clears both. A lab that
// crashed and was never torn down keeps the routes in place, which is
// the safe side.
const (
	registryDir = "/run/petrel-hostnet"
	routeProto  = "88" // rtnetlink protocol tag of our routes; unused by iproute2's table
)

func (l *Lab) marker() string { return filepath.Join(registryDir, "labs", l.prefix) }

// lockRegistry takes the registry lock and returns its release.
func lockRegistry() (func(), error) {
	if err := os.MkdirAll(filepath.Join(registryDir, "labs"), 0o755); err != nil {
		return nil, fmt.Errorf("lab registry: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(registryDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab registry: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab registry: flock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// register records the lab and makes sure the root namespace has a
// blackhole route for each lab range.
func (l *Lab) register(ctx context.Context) error {
	unlock, err := lockRegistry()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.WriteFile(l.marker(), nil, 0o644); err != nil {
		return fmt.Errorf("lab registry: %w", err)
	}
	for _, r := range labRanges() {
		if err := ensureBlackhole(ctx, r.String()); err != nil {
			return err
		}
	}
	return nil
}

// unregister removes the lab's record and, if no lab is left, the
// blackhole routes this package installed.
func (l *Lab) unregister(ctx context.Context) error {
	unlock, err := lockRegistry()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(l.marker()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("lab registry: %w", err)
	}
	left, err := os.ReadDir(filepath.Join(registryDir, "labs"))
	if err != nil || len(left) > 0 {
		return err
	}
	for _, r := range labRanges() {
		subnet := r.String()
		out, err := run(ctx, "", "ip", "-o", "route", "show", "type", "blackhole", "exact", subnet, "proto", routeProto)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			continue
		}
		if _, err := run(ctx, "", "ip", "route", "del", "blackhole", subnet, "proto", routeProto); err != nil {
			return err
		}
	}
	return nil
}

// ensureBlackhole adds a blackhole route for subnet to the root
// namespace's main table unless one is there. Any other route for exactly
// subnet makes the add fail: the lab then refuses to run.
func ensureBlackhole(ctx context.Context, subnet string) error {
	out, err := run(ctx, "", "ip", "-o", "route", "show", "type", "blackhole", "exact", subnet)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return nil
	}
	if _, err := run(ctx, "", "ip", "route", "add", "blackhole", subnet, "proto", routeProto); err != nil {
		return fmt.Errorf("guard lab range %s in the root namespace: %w", subnet, err)
	}
	return nil
}
