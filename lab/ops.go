package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/lab/vbmc"
)

// tools the lab needs, with the Debian package of each.
var tools = map[string]string{"ip": "iproute2", "ss": "iproute2", "iptables": "iptables"}

// Packages are the Debian packages the lab installs besides its tools:
// libvirtd and QEMU for the hypervisor hosts (compute/libvirtd) and what
// the test guest images are built with (compute/guestimage).
func Packages() []string {
	return append(append([]string{}, libvirtd.Packages...), guestimage.Packages...)
}

// Prerequisites checks the lab can run here: root, the tools above and
// Packages; as root it installs what is missing with apt-get
// --no-install-recommends (idempotent: nothing is run when all are
// present), otherwise it fails at once naming them. It also creates the
// libvirt-qemu user the hypervisor hosts' daemons need.
func Prerequisites(ctx context.Context) error {
	var missing []string
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil && !contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	for _, pkg := range missingPackages(ctx, Packages()) {
		if !contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	if os.Geteuid() != 0 {
		msg := "lab: petrel lab needs root (network namespaces, cgroups)"
		if len(missing) > 0 {
			msg += "; missing Debian packages: " + strings.Join(missing, " ")
		}
		return errors.New(msg)
	}
	if len(missing) > 0 {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)} {
			cmd := exec.CommandContext(ictx, "apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("lab: apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
			}
		}
	}
	if err := libvirtd.Installed(); err != nil {
		return fmt.Errorf("lab: hypervisor hosts: %w", err)
	}
	return libvirtd.EnsureUser(ctx)
}

// missingPackages lists the packages of pkgs that dpkg does not have
// installed (all of them if dpkg-query cannot say).
func missingPackages(ctx context.Context, pkgs []string) []string {
	// Exit status 1 names unknown packages on stderr; the rest are listed.
	out, _ := exec.CommandContext(ctx, "dpkg-query", append([]string{"-W", "-f=${Package} ${db:Status-Abbrev}\n"}, pkgs...)...).Output()
	installed := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "ii" {
			installed[strings.SplitN(f[0], ":", 2)[0]] = true
		}
	}
	var missing []string
	for _, p := range pkgs {
		if !installed[p] {
			missing = append(missing, p)
		}
	}
	return missing
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// AddHost adds a bare host to a running lab's site: a namespace, cgroup,
// software root and chassis, and a join token, with no personality. It
// returns once the host's agent has reported (T11 measures this).
func AddHost(ctx context.Context, dir, site, binary string) (HostEntry, time.Duration, error) {
	f, err := Load(dir)
	if err != nil {
		return HostEntry{}, 0, err
	}
	si := -1
	for i, s := range f.Sites {
		if s.Name == site {
			si = i
		}
	}
	if si < 0 {
		return HostEntry{}, 0, fmt.Errorf("lab: no site %q in %s", site, dir)
	}
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return HostEntry{}, 0, err
		}
	}
	hn, err := hostnet.New(hostnet.Config{Prefix: prefixFor(f.Dir)})
	if err != nil {
		return HostEntry{}, 0, err
	}
	idx := len(f.Sites[si].Hosts)
	key := fmt.Sprintf("host-%d", idx)
	shape := inventory.Shape(f.Sites[si].Shape)
	start := time.Now()
	he, id, err := buildHost(ctx, hn, f.Dir, prefixFor(f.Dir), binary,
		hostSpec{Site: site, Shape: shape, SiteIndex: si, Index: idx}, key,
		"https://"+netJoin(siteAPIAddr(shape, si).String(), SiteAPIPort))
	if err != nil {
		return HostEntry{}, 0, err
	}
	api, err := client.New(client.Config{URL: f.Sites[si].URL, CACert: f.CACert, Token: f.Sites[si].Token})
	if err != nil {
		return HostEntry{}, 0, err
	}
	if err := giveJoinToken(ctx, api, pathsOf(f.Dir, site, key)); err != nil {
		return HostEntry{}, 0, err
	}
	if err := waitReported(ctx, api, id, 30*time.Second); err != nil {
		return HostEntry{}, 0, err
	}
	took := time.Since(start)
	f.Sites[si].Hosts = append(f.Sites[si].Hosts, he)
	return he, took, f.save()
}

// Fault kinds this lab injects so far; host management adds the rest.
var faultKinds = []string{"power-off", "power-on", "power-cycle", "hang", "resume", "link-down", "link-up", "loss", "clear",
	"partition", "bmc-down", "bmc-slow", "bmc-ignore", "crash"}

// wanChain holds a site's WAN faults, in its controller's namespace.
const wanChain = "petrel-wan"

// wanFault partitions a site from central, drops a share of its WAN
// packets, or clears both: real packet drops (iptables) on the WAN route's
// port inside the site controller's namespace, in both directions.
func wanFault(ctx context.Context, f *File, site, kind string, percent int, delay time.Duration) error {
	// The WAN link's end is the forwarder on the site's gateway address,
	// in the site's own namespace: whichever controller is active, its
	// link to central (and its witness session) goes through it.
	var ns string
	for _, s := range f.Sites {
		if s.Name == site {
			hn, err := hostnet.New(hostnet.Config{Prefix: prefixFor(f.Dir)})
			if err != nil {
				return err
			}
			ns = hn.SiteNetns(site)
		}
	}
	if ns == "" {
		return fmt.Errorf("lab fault: no site %q in the lab", site)
	}
	ipt := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "iptables", "-w"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("lab fault: iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// The chain and its two jumps, once.
	if ipt("-n", "-L", wanChain) != nil {
		if err := ipt("-N", wanChain); err != nil {
			return err
		}
		port := fmt.Sprint(WANPort)
		if err := ipt("-I", "INPUT", "-p", "tcp", "--dport", port, "-j", wanChain); err != nil {
			return err
		}
		if err := ipt("-I", "INPUT", "-p", "tcp", "--sport", port, "-j", wanChain); err != nil {
			return err
		}
	}
	if err := ipt("-F", wanChain); err != nil {
		return err
	}
	if err := setWANDelay(f.Dir, site+"-wan", delay); err != nil {
		return err
	}
	if kind == "loss" && percent == 0 && delay > 0 {
		return nil // delay only
	}
	switch kind {
	case "partition":
		return ipt("-A", wanChain, "-j", "DROP")
	case "loss":
		if percent < 1 || percent > 100 {
			return fmt.Errorf("lab fault loss: --percent must be 1..100")
		}
		return ipt("-A", wanChain, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%.4f", float64(percent)/100), "-j", "DROP")
	case "clear":
		return nil
	}
	return fmt.Errorf("lab fault: %s does not apply to a site's WAN link (partition, loss, clear)", kind)
}

// FaultOneWay drops percent of what target (SITE/HOST) sends to the host
// to (SITE/HOST of the same site) on netName (mgmt, cluster or all); the
// other direction is untouched. clear on target undoes it.
func FaultOneWay(ctx context.Context, dir, target, to, netName string, percent int) error {
	f, err := Load(dir)
	if err != nil {
		return err
	}
	find := func(t string) (si, hi int, ok bool) {
		site, host, _ := strings.Cut(t, "/")
		for i, s := range f.Sites {
			for j, h := range s.Hosts {
				if s.Name == site && h.Name == host {
					return i, j, true
				}
			}
		}
		return 0, 0, false
	}
	si, hi, ok := find(target)
	ti, tj, ok2 := find(to)
	if !ok || !ok2 || si != ti {
		return fmt.Errorf("lab fault --oneway-to: %s and %s must be hosts of one site in the lab", target, to)
	}
	hn, err := hostnet.New(hostnet.Config{Prefix: prefixFor(f.Dir)})
	if err != nil {
		return err
	}
	site, host, _ := strings.Cut(target, "/")
	h, err := hn.Host(site, host, si, hi)
	if err != nil {
		return err
	}
	nets := []hostnet.Network{hostnet.Mgmt, hostnet.Cluster}
	switch netName {
	case "", "all":
	case "mgmt", "cluster":
		nets = []hostnet.Network{hostnet.Network(netName)}
	default:
		return fmt.Errorf("lab fault: --net %q: want mgmt, cluster or all", netName)
	}
	for _, n := range nets {
		dst, err := hostnet.Addr(n, ti, tj)
		if err != nil {
			return err
		}
		if err := h.LossTo(ctx, n, percent, dst); err != nil {
			return err
		}
	}
	d, _ := filepath.Abs(dir)
	return recordFault(d, target, "loss to "+to, netName, percent, 0)
}

// Fault injects a fault into SITE/HOST: power through the host's chassis,
// hang/resume through its cgroup, link and loss faults on one network
// (net "mgmt", "cluster" or "all").
func Fault(ctx context.Context, dir, kind, target, netName string, percent int, delay time.Duration) error {
	if err := injectFault(ctx, dir, kind, target, netName, percent, delay); err != nil {
		return err
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if target == "central" && kind != "crash" {
		// central's uplink is every site's WAN link: recorded per site, so
		// a clear of either undoes it.
		f, err := Load(d)
		if err != nil {
			return err
		}
		for _, s := range f.Sites {
			if err := recordFault(d, s.Name, kind, netName, percent, delay); err != nil {
				return err
			}
		}
		return nil
	}
	if kind == "crash" {
		return nil // over once done
	}
	return recordFault(d, target, kind, netName, percent, delay)
}

func injectFault(ctx context.Context, dir, kind, target, netName string, percent int, delay time.Duration) error {
	f, err := Load(dir)
	if err != nil {
		return err
	}
	site, host, ok := strings.Cut(target, "/")
	if target == "central" {
		return centralFault(ctx, f, kind, percent, delay)
	}
	if !ok {
		// A site alone names its WAN link to central.
		return wanFault(ctx, f, target, kind, percent, delay)
	}
	si, hi := -1, -1
	for i, s := range f.Sites {
		if s.Name == site {
			si = i
			for j, h := range s.Hosts {
				if h.Name == host {
					hi = j
				}
			}
		}
	}
	if si < 0 || hi < 0 {
		return fmt.Errorf("lab fault: no host %s in the lab", target)
	}
	p := pathsOf(f.Dir, site, host)
	chassis := vbmc.Dial(p.f("vbmc.sock"))
	switch kind {
	case "power-off", "power-on", "power-cycle":
		_, err := chassis.Power(ctx, strings.TrimPrefix(kind, "power-"))
		return err
	case "crash":
		// A kernel crash with reboot-on-panic: everything dies at once and
		// the machine boots again by itself (the chassis cycles).
		_, err := chassis.Power(ctx, "cycle")
		return err
	case "bmc-down":
		return chassis.SetBMCFault(ctx, vbmc.BMCFault{Mode: vbmc.BMCFaultDown})
	case "bmc-ignore":
		return chassis.SetBMCFault(ctx, vbmc.BMCFault{Mode: vbmc.BMCFaultIgnore})
	case "bmc-slow":
		if delay <= 0 {
			delay = 5 * time.Second
		}
		return chassis.SetBMCFault(ctx, vbmc.BMCFault{Mode: vbmc.BMCFaultSlow, DelayMS: int(delay.Milliseconds())})
	case "clear":
		if err := chassis.SetBMCFault(ctx, vbmc.BMCFault{}); err != nil {
			return err
		}
	}
	hn, err := hostnet.New(hostnet.Config{Prefix: prefixFor(f.Dir)})
	if err != nil {
		return err
	}
	h, err := hn.Host(site, host, si, hi)
	if err != nil {
		return err
	}
	nets := []hostnet.Network{hostnet.Mgmt, hostnet.Cluster}
	switch netName {
	case "", "all":
	case "mgmt", "cluster":
		nets = []hostnet.Network{hostnet.Network(netName)}
	default:
		return fmt.Errorf("lab fault: --net %q: want mgmt, cluster or all", netName)
	}
	for _, n := range nets {
		switch kind {
		case "hang":
			return h.Freeze(ctx)
		case "resume":
			return h.Thaw(ctx)
		case "link-down":
			err = h.LinkDown(ctx, n)
		case "link-up":
			err = h.LinkUp(ctx, n)
		case "loss":
			if percent < 1 || percent > 100 {
				return fmt.Errorf("lab fault loss: --percent must be 1..100")
			}
			err = h.Loss(ctx, n, percent)
		case "clear":
			return h.ClearLoss(ctx)
		default:
			return fmt.Errorf("lab fault: unknown kind %q (%s)", kind, strings.Join(faultKinds, ", "))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// teardownHosts removes every namespace, cgroup and route of the lab in dir
// and reports anything that survives.
func teardownHosts(ctx context.Context, dir string) error {
	hn, err := hostnet.New(hostnet.Config{Prefix: prefixFor(dir)})
	if err != nil {
		return err
	}
	if err := hn.Teardown(ctx); err != nil {
		return err
	}
	leaks, err := hn.Leaks(ctx)
	if err != nil {
		return err
	}
	if len(leaks) > 0 {
		return fmt.Errorf("lab: left behind after teardown: %s", strings.Join(leaks, ", "))
	}
	return nil
}

// setWANDelay records a route's one-way delay where the fabric reads it
// (zero removes it).
func setWANDelay(dir, route string, delay time.Duration) error {
	file := filepath.Join(dir, WANFaultsFile)
	var f WANFaults
	if b, err := os.ReadFile(file); err == nil {
		if err := yaml.Unmarshal(b, &f); err != nil {
			return err
		}
	}
	if f.DelayMS == nil {
		f.DelayMS = map[string]int{}
	}
	if delay > 0 {
		f.DelayMS[route] = int(delay / time.Millisecond)
	} else {
		delete(f.DelayMS, route)
	}
	return writeYAML(file, f)
}

// centralFault acts on central: crash (SIGKILL, then started again on the
// same store and ports, as its supervisor would), or partition, loss and
// clear on every site's WAN link at once (central's own uplink).
func centralFault(ctx context.Context, f *File, kind string, percent int, delay time.Duration) error {
	switch kind {
	case "partition", "loss", "clear":
		for _, s := range f.Sites {
			if err := wanFault(ctx, f, s.Name, kind, percent, delay); err != nil {
				return err
			}
		}
		return nil
	case "crash":
		return restartCentral(ctx, f)
	}
	return fmt.Errorf("lab fault: %s does not apply to central (crash, partition, loss, clear)", kind)
}

// restartCentral kills central with SIGKILL and starts it again from its
// configuration file, waiting until it is ready.
func restartCentral(ctx context.Context, f *File) error {
	pidFile := filepath.Join(f.Dir, stateDir, "central.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("lab fault crash central: %w", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if ours(pid, f.Dir) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		for deadline := time.Now().Add(10 * time.Second); ours(pid, f.Dir); {
			if time.Now().After(deadline) {
				return fmt.Errorf("lab fault crash central: pid %d still runs 10 s after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(f.Dir, "central", "central.yaml")
	logf, err := os.OpenFile(filepath.Join(f.Dir, "logs", "central.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "central", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab fault crash central: restart: %w", err)
	}
	npid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := atomicfile.Write(pidFile, []byte(strconv.Itoa(npid)+"\n"), 0o600); err != nil {
		return err
	}
	return WaitReady(ctx, f.Central.URL, f.CACert, 30*time.Second, func() bool { return ours(npid, f.Dir) })
}
