package hostnet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds how long killing a cgroup's processes may take when
// the caller's context has no earlier deadline.
const killTimeout = 10 * time.Second

// cgroupCandidates are the usual cgroup v2 mount points: a pure v2
// ("unified") machine mounts it at /sys/fs/cgroup, a hybrid one (v1
// controllers plus v2) at /sys/fs/cgroup/unified.
var cgroupCandidates = [...]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// detectCgroup2 returns the first of cgroupCandidates that is a cgroup v2
// mount.
func detectCgroup2() (string, error) {
	for _, p := range cgroupCandidates {
		if isCgroup2(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked at %s)", ErrNoCgroup2, strings.Join(cgroupCandidates[:], ", "))
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroup is the directory of one cgroup v2 group.
type cgroup string

func (c cgroup) file(name string) string { return filepath.Join(string(c), name) }

func (c cgroup) create() error {
	if err := os.MkdirAll(string(c), 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	return nil
}

func (c cgroup) exists() bool {
	_, err := os.Stat(c.file("cgroup.procs"))
	return err == nil
}

// pids lists the processes in the cgroup (not in its children), sorted.
func (c cgroup) pids() ([]int, error) {
	b, err := os.ReadFile(c.file("cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: bad pid %q", c.file("cgroup.procs"), f)
		}
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids, nil
}

// event reads one key ("populated", "frozen") of cgroup.events.
func (c cgroup) event(key string) (bool, error) {
	b, err := os.ReadFile(c.file("cgroup.events"))
	if err != nil {
		return false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == key {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("%s: no %q line", c.file("cgroup.events"), key)
}

// freezeRequested reports whether cgroup.freeze is set, whether or not
// the group has finished freezing.
func (c cgroup) freezeRequested() (bool, error) {
	b, err := os.ReadFile(c.file("cgroup.freeze"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// setFrozen writes cgroup.freeze and waits until cgroup.events reports
// the new state.
func (c cgroup) setFrozen(ctx context.Context, frozen bool) error {
	v := "0"
	if frozen {
		v = "1"
	}
	if err := os.WriteFile(c.file("cgroup.freeze"), []byte(v), 0); err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		got, err := c.event("frozen")
		return got == frozen, err
	})
}

// kill kills every process in the cgroup and waits until it is empty.
// It uses cgroup.kill (Linux 5.14+), which is atomic and works on a frozen
// group; without it, it sends SIGKILL to each listed process and thaws
// the group so that the signals are delivered, until the group is empty.
func (c cgroup) kill(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, killTimeout)
	defer cancel()
	err := os.WriteFile(c.file("cgroup.kill"), []byte("1"), 0)
	if errors.Is(err, fs.ErrNotExist) && c.exists() {
		return poll(ctx, func() (bool, error) {
			pids, err := c.pids()
			if err != nil || len(pids) == 0 {
				return len(pids) == 0, err
			}
			for _, pid := range pids {
				// ESRCH: it exited meanwhile. Anything else shows on the next round.
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return false, os.WriteFile(c.file("cgroup.freeze"), []byte("0"), 0)
		})
	}
	if err != nil {
		return fmt.Errorf("kill cgroup: %w", err)
	}
	if err := poll(ctx, func() (bool, error) {
		populated, err := c.event("populated")
		return !populated, err
	}); err != nil {
		return fmt.Errorf("wait for cgroup %s to empty: %w", c, err)
	}
	// Recreate the emptied group. On this kernel (6.18) a group that has
	// been through cgroup.kill SIGKILLs every child later forked into it
	// with CLONE_INTO_CGROUP (Start) — the fork-time kill sequence is taken
	// from the parent's group — so a powered-off host could never boot
	// again. A fresh group has a fresh kill sequence.
	if err := os.Remove(string(c)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recreate cgroup %s: %w", c, err)
	}
	if err := os.Mkdir(string(c), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("recreate cgroup %s: %w", c, err)
	}
	return nil
}

// remove kills the cgroup's processes and removes it. A missing cgroup is
// not an error.
func (c cgroup) remove(ctx context.Context) error {
	if !c.exists() {
		return nil
	}
	if err := c.kill(ctx); err != nil {
		return err
	}
	return removeCgroupTree(string(c))
}

// removeCgroupTree removes the empty cgroup dir and its descendants,
// deepest first. A missing dir is not an error.
func removeCgroupTree(dir string) error {
	subs, err := subdirs(dir)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if err := removeCgroupTree(s); err != nil {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	return nil
}

// subdirs lists the child cgroups of dir; a missing dir has none.
func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// poll calls done until it reports true, fails, or ctx ends. It starts
// at 1 ms between calls and backs off to 20 ms: cgroup state changes take
// a few milliseconds.
func poll(ctx context.Context, done func() (bool, error)) error {
	wait := time.Millisecond
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
