package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Host is a handle on one lab host: its namespace and cgroup. It holds no
// state of its own, so any number of handles on the same host, in any
// process, act on the same objects. Get one from Lab.AddHost or Lab.Host.
type Host struct {
	lab     *Lab
	site    string
	name    string
	netns   string
	cgroup  cgroup
	addrs   []netip.Addr // indexed like Networks()
	siteIdx int
}

// Name is the host's name.
func (h *Host) Name() string { return h.name }

// Site is the name of the host's site.
func (h *Host) Site() string { return h.site }

// Netns is the name of the host's network namespace (for ListenIn, DialIn,
// `ip netns exec`).
func (h *Host) Netns() string { return h.netns }

// Cgroup is the directory of the host's cgroup v2 group.
func (h *Host) Cgroup() string { return string(h.cgroup) }

// Addr is the host's address on network n; the zero Addr for an invalid n.
func (h *Host) Addr(n Network) netip.Addr {
	for i, m := range Networks() {
		if m == n {
			return h.addrs[i]
		}
	}
	return netip.Addr{}
}

func (h *Host) setLink(ctx context.Context, n Network, state string) error {
	if !n.Valid() {
		return fmt.Errorf("%w: network %q", ErrInvalidName, n)
	}
	_, err := run(ctx, "", "ip", "-n", h.netns, "link", "set", string(n), state)
	return err
}

// LinkDown takes the host's interface on network n down: the host goes
// silent there, with no RST and no ICMP; connects to it time out.
func (h *Host) LinkDown(ctx context.Context, n Network) error { return h.setLink(ctx, n, "down") }

// LinkUp brings the host's interface on network n back up.
func (h *Host) LinkUp(ctx context.Context, n Network) error {
	if err := h.setLink(ctx, n, "up"); err != nil {
		return err
	}
	if n == Mgmt {
		return h.ensureBMCRoute(ctx)
	}
	return nil
}

// iptables chains inside a host namespace. Each chain holds rules without
// interface matches; the jumps into it from INPUT and OUTPUT carry them,
// so one chain serves both directions.
const (
	lossChainPrefix = "petrel-loss-" // + network name
	freezeChain     = "petrel-freeze"
)

// jump is a rule of a built-in chain that jumps to one of ours:
// chain, then match arguments.
type jump []string

// setChain replaces the contents of chain in the host's filter table with
// rule (none if empty), creating the chain if needed, and makes sure the
// jumps into it exist. The replacement is atomic (iptables-restore).
func (h *Host) setChain(ctx context.Context, chain, rule string, jumps []jump) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", chain)
	if rule != "" {
		fmt.Fprintf(&b, "-A %s %s\n", chain, rule)
	}
	b.WriteString("COMMIT\n")
	if _, err := run(ctx, b.String(), "ip", "netns", "exec", h.netns, "iptables-restore", "-w", "--noflush"); err != nil {
		return err
	}
	for _, j := range jumps {
		spec := append(append([]string{}, j[1:]...), "-j", chain)
		_, err := h.iptables(ctx, append([]string{"-C", j[0]}, spec...)...)
		if exitCode(err) == 1 { // no such rule
			_, err = h.iptables(ctx, append([]string{"-I", j[0]}, spec...)...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Host) iptables(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "", "ip", append([]string{"netns", "exec", h.netns, "iptables", "-w"}, args...)...)
}

// Loss drops percent (0-100) of the packets the host sends or receives on
// network n, at random (iptables statistic match in the host namespace).
// 0 removes the loss; a new call replaces the previous percentage.
func (h *Host) Loss(ctx context.Context, n Network, percent int) error {
	if !n.Valid() {
		return fmt.Errorf("%w: network %q", ErrInvalidName, n)
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("hostnet: loss %d%%: want 0 to 100", percent)
	}
	var rule string
	switch percent {
	case 0:
	case 100:
		rule = "-j DROP"
	default:
		rule = "-m statistic --mode random --probability " +
			strconv.FormatFloat(float64(percent)/100, 'f', 2, 64) + " -j DROP"
	}
	return h.setChain(ctx, lossChainPrefix+string(n), rule, []jump{
		{"INPUT", "-i", string(n)},
		{"OUTPUT", "-o", string(n)},
	})
}

// LossTo drops percent of the packets the host sends to dst on network n
// (one way: what dst sends arrives), replacing any loss on n.
func (h *Host) LossTo(ctx context.Context, n Network, percent int, dst netip.Addr) error {
	if !n.Valid() {
		return fmt.Errorf("%w: network %q", ErrInvalidName, n)
	}
	if percent < 1 || percent > 100 || !dst.IsValid() {
		return fmt.Errorf("hostnet: one-way loss %d%% to %v: want 1 to 100 and an address", percent, dst)
	}
	rule := "-d " + dst.String() + " -j DROP"
	if percent < 100 {
		rule = "-d " + dst.String() + " -m statistic --mode random --probability " +
			strconv.FormatFloat(float64(percent)/100, 'f', 2, 64) + " -j DROP"
	}
	return h.setChain(ctx, lossChainPrefix+string(n), rule, []jump{{"OUTPUT", "-o", string(n)}})
}

// ClearLoss removes the loss on every network.
func (h *Host) ClearLoss(ctx context.Context) error {
	for _, n := range Networks() {
		if err := h.Loss(ctx, n, 0); err != nil {
			return err
		}
	}
	return nil
}

// Freeze hangs the host: it freezes every process of its cgroup and drops
// every packet in and out of it (loopback excepted), because a frozen
// cgroup alone still lets the host's kernel answer pings and complete TCP
// handshakes. It returns once the cgroup reports frozen.
func (h *Host) Freeze(ctx context.Context) error {
	// Freeze first: if this is interrupted, Thaw or PowerOff, which look
	// at cgroup.freeze, still clean up the drop rules.
	if err := os.WriteFile(h.cgroup.file("cgroup.freeze"), []byte("1"), 0); err != nil {
		return fmt.Errorf("freeze %s: %w", h.name, err)
	}
	if err := h.setChain(ctx, freezeChain, "-j DROP", []jump{
		{"INPUT", "!", "-i", "lo"},
		{"OUTPUT", "!", "-o", "lo"},
	}); err != nil {
		return err
	}
	if err := h.cgroup.setFrozen(ctx, true); err != nil {
		return fmt.Errorf("freeze %s: %w", h.name, err)
	}
	return nil
}

// Thaw undoes Freeze: the processes run again and traffic flows. Thawing a
// host that is not frozen does nothing.
func (h *Host) Thaw(ctx context.Context) error {
	if err := h.cgroup.setFrozen(ctx, false); err != nil {
		return fmt.Errorf("thaw %s: %w", h.name, err)
	}
	return h.setChain(ctx, freezeChain, "", nil)
}

// Frozen reports whether the host's cgroup is frozen.
func (h *Host) Frozen() (bool, error) { return h.cgroup.event("frozen") }

// PowerOff simulates a power loss: it takes both links down first (so no
// peer sees a FIN or RST from the dying processes), kills every process
// of the host's cgroup and waits until it is empty, undoes a Freeze, and
// drops all TCP state of the namespace (`ss -K`), so that orphaned
// sockets, including sockets the controller opened there, do not talk
// once the links are up again. Loss settings stay: they belong to the
// network, not the host.
func (h *Host) PowerOff(ctx context.Context) error {
	for _, n := range Networks() {
		if err := h.LinkDown(ctx, n); err != nil {
			return err
		}
	}
	// Whether it was hung, read before the kill: the kill recreates the
	// cgroup, which forgets that it was frozen, but the drop rules stay.
	frozen, err := h.cgroup.freezeRequested()
	if err != nil {
		return fmt.Errorf("power off %s: %w", h.name, err)
	}
	if err := h.cgroup.kill(ctx); err != nil {
		return fmt.Errorf("power off %s: %w", h.name, err)
	}
	if frozen {
		if err := h.Thaw(ctx); err != nil {
			return err
		}
	}
	if err := h.forgetAddrs(ctx); err != nil {
		return fmt.Errorf("power off %s: %w", h.name, err)
	}
	_, err = run(ctx, "", "ip", "netns", "exec", h.netns, "ss", "-K", "-tan", "state", "all")
	return err
}

// forgetAddrs removes every address the host's processes added to its
// interfaces (a service's floating address): a machine that loses power
// boots with its configured addresses only, while a lab host's namespace
// outlives its power.
func (h *Host) forgetAddrs(ctx context.Context) error {
	ls, err := links(ctx, h.netns)
	if err != nil {
		return err
	}
	for _, n := range Networks() {
		k, ok := ls[string(n)]
		if !ok {
			continue
		}
		for _, a := range k.Addrs {
			ip, err := netip.ParseAddr(a.Local)
			if err != nil || ip == h.Addr(n) || ip.IsLinkLocalUnicast() {
				continue
			}
			if _, err := run(ctx, "", "ip", "-n", h.netns, "addr", "del", netip.PrefixFrom(ip, a.PrefixLen).String(), "dev", string(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// PowerOn brings the links of a powered-off host back up. Starting its
// processes again is the caller's job.
func (h *Host) PowerOn(ctx context.Context) error {
	for _, n := range Networks() {
		if err := h.LinkUp(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// Start starts cmd as a process of the host: in its network namespace and
// its cgroup. cmd is rewritten to run `ip netns exec NETNS PATH ARGS...`
// (ip then execs PATH in place, so cmd.Process is PATH's process), and it
// is placed into the cgroup at creation (clone3 CLONE_INTO_CGROUP through
// SysProcAttr.UseCgroupFD, Linux 5.7+), so not even its first instruction
// runs outside it and no child can escape. It works on hybrid machines as
// well, because the group is in the v2 hierarchy; v1 memberships stay
// those of the caller.
//
// `ip netns exec` also gives the process a private mount namespace with a
// sysfs of the host namespace (/sys/class/net shows the host's
// interfaces) and without /sys/fs/cgroup, so that daemons such as libvirtd
// see no cgroupfs and leave their children in the host's cgroup.
//
// argv[0] of the program is its path. The caller waits for cmd as usual.
func (h *Host) Start(cmd *exec.Cmd) error {
	if cmd.Process != nil {
		return errors.New("hostnet: Start: command already started")
	}
	if cmd.Err != nil {
		return cmd.Err
	}
	if cmd.Path == "" {
		return errors.New("hostnet: Start: command has no path")
	}
	if st, err := statNetns(h.netns); err != nil {
		return err
	} else if st != netnsPresent {
		return fmt.Errorf("start in %s: %w", h.netns, ErrNotExist)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	dir, err := os.Open(string(h.cgroup))
	if err != nil {
		return fmt.Errorf("start in host %s: %w", h.name, err)
	}
	defer dir.Close()
	args := []string{"ip", "netns", "exec", h.netns, cmd.Path}
	if len(cmd.Args) > 1 {
		args = append(args, cmd.Args[1:]...)
	}
	cmd.Path, cmd.Args = ip, args
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(dir.Fd())
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start in host %s: %w", h.name, err)
	}
	return nil
}

// Pids lists the processes of the host's cgroup, sorted.
func (h *Host) Pids() ([]int, error) {
	pids, err := h.cgroup.pids()
	if err != nil {
		return nil, fmt.Errorf("processes of host %s: %w", h.name, err)
	}
	return pids, nil
}

// Remove deletes the host: it detaches it from the site's bridges first,
// so that even a namespace that a lingering socket keeps alive is cut off,
// kills its processes, and removes its cgroup and namespace. Removing a
// missing host does nothing.
func (h *Host) Remove(ctx context.Context) error {
	siteNS := h.lab.SiteNetns(h.site)
	if st, err := statNetns(siteNS); err != nil {
		return err
	} else if st == netnsPresent {
		siteLinks, err := links(ctx, siteNS)
		if err != nil {
			return err
		}
		for _, n := range Networks() {
			peer := h.lab.VethName(h.site, h.name, n)
			if _, ok := siteLinks[peer]; ok {
				if _, err := run(ctx, "", "ip", "-n", siteNS, "link", "del", peer); err != nil {
					return err
				}
			}
		}
	}
	if err := h.cgroup.remove(ctx); err != nil {
		return fmt.Errorf("remove host %s: %w", h.name, err)
	}
	return deleteNetns(ctx, h.netns)
}
