package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/swpatch"
)

// Platform is every action of the agent that changes the machine it runs
// on (reboot, power, installing software, floating addresses) and every
// reading of the machine's resources. Nothing else in the agent may
// change the machine. The lab implementation talks only to the host's
// chassis (vbmc), writes only under the host's software root and changes
// addresses only inside the host's network namespace; the real one acts
// on the machine and cannot be constructed under the lab or tests.
type Platform interface {
	// Kind is "lab" or "host".
	Kind() string
	// BootedAt is when this host booted.
	BootedAt() time.Time
	// Reboot restarts the host.
	Reboot(ctx context.Context) error
	// Usage reads the CPU and memory counters of the host's own cgroup
	// and the space of its software root's file system (named
	// SoftwareRootFS). What cannot be read is listed in Usage.Missing; an
	// error means nothing could be read.
	Usage(ctx context.Context) (monitor.Usage, error)

	// AddAddress, DelAddress and Announce take and release the floating
	// addresses of service-group members (services.AddressPlatform):
	// prefix "ADDR/LEN" on the interface iface, added even when it is
	// there and removed even when it is not, without error; Announce
	// sends a gratuitous ARP for addr.
	AddAddress(ctx context.Context, iface, prefix string) error
	DelAddress(ctx context.Context, iface, prefix string) error
	Announce(ctx context.Context, iface, addr string) error

	// Software reports the host's software slots (swpatch.Status);
	// ErrNoSoftwareSlots when the platform has none to report.
	Software(ctx context.Context) (swpatch.Status, error)
	// StageSoftware installs verified patches, in order, into the
	// inactive slot (a copy of the active one) and marks it for the next
	// boot; StageRemoval marks the slot without the patches named;
	// InstallInService puts a patch that needs no reboot into the running
	// slot and runs its post-install hook.
	StageSoftware(ctx context.Context, patches []*swpatch.Patch) error
	StageRemoval(ctx context.Context, ids []string) error
	InstallInService(ctx context.Context, p *swpatch.Patch) error
	// ConfirmBoot tells the host's boot loader that the software it
	// booted works (the host is back at its site), ending a trial boot
	// of a new slot; it reports whether there was one.
	ConfirmBoot(ctx context.Context) (bool, error)
}

// ErrNoSoftwareSlots is returned by platforms that do not manage software.
var ErrNoSoftwareSlots = errors.New("agent: this platform does not install software")

// SoftwareRootFS is the name of the software root's file system in alarm
// entities: host=NAME.filesystem=software-root.
const SoftwareRootFS = "software-root"

// ErrRealPlatformRefused is returned when the real platform is asked for
// where it must never act: under `go test`, or inside a lab host.
var ErrRealPlatformRefused = errors.New("agent: the real host platform refuses to run under tests or the lab")

// LabPlatform is a lab host's platform.
type LabPlatform struct {
	SoftwareRoot string // the host's DIR/hosts/SITE/HOST
	Chassis      string // address of the host's vbmc control endpoint; "" until it has one
	booted       time.Time
	chassis      *http.Client // over the Chassis socket
}

// NewLabPlatform returns the platform of a lab host whose power-on is now.
func NewLabPlatform(softwareRoot, chassis string) (*LabPlatform, error) {
	if softwareRoot == "" {
		return nil, errors.New("agent: a lab platform needs its host's software root")
	}
	p := &LabPlatform{SoftwareRoot: softwareRoot, Chassis: chassis, booted: time.Now().UTC()}
	if chassis != "" {
		p.chassis = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", chassis)
			}, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	}
	return p, nil
}

func (p *LabPlatform) Kind() string        { return "lab" }
func (p *LabPlatform) BootedAt() time.Time { return p.booted }

// Reboot asks the host's chassis to power-cycle it.
func (p *LabPlatform) Reboot(ctx context.Context) error {
	if p.chassis == nil {
		return errors.New("agent: this lab host has no chassis to reboot it")
	}
	// The lab's machine restarts through its chassis: everything of the
	// host stops (this agent too) and it boots again.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://vbmc/v1/power", strings.NewReader(`{"action":"cycle"}`))
	if err != nil {
		return err
	}
	resp, err := p.chassis.Do(req)
	if err != nil {
		return fmt.Errorf("chassis: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chassis: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Usage reads the host's cgroup through its chassis — the host's own
// mount namespace has no cgroupfs (`ip netns exec` replaces /sys), the
// chassis runs outside it — and statfs of the software root here.
func (p *LabPlatform) Usage(ctx context.Context) (monitor.Usage, error) {
	var u monitor.Usage
	switch {
	case p.chassis == nil:
		u.Missing = append(u.Missing, "cpu, memory: this lab host has no chassis")
	default:
		cu, err := p.chassisUsage(ctx)
		if err != nil {
			u.Missing = append(u.Missing, "cpu, memory: "+err.Error())
		} else {
			u = cu
		}
	}
	if u.At.IsZero() {
		u.At = time.Now()
	}
	if fs, err := monitor.Statfs(SoftwareRootFS, p.SoftwareRoot); err != nil {
		u.Missing = append(u.Missing, "filesystem: "+err.Error())
	} else {
		u.Filesystems = append(u.Filesystems, fs)
	}
	return u, nil
}

// chassisUsage asks the chassis for the host's cgroup counters (GET
// /v1/usage on its control socket).
func (p *LabPlatform) chassisUsage(ctx context.Context) (monitor.Usage, error) {
	var u monitor.Usage
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vbmc/v1/usage", nil)
	if err != nil {
		return u, err
	}
	resp, err := p.chassis.Do(req)
	if err != nil {
		return u, fmt.Errorf("chassis: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return u, fmt.Errorf("chassis: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return u, fmt.Errorf("chassis: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &u); err != nil {
		return u, fmt.Errorf("chassis: %w", err)
	}
	u.Filesystems = nil // the software root is read here
	return u, nil
}

// AddAddress puts prefix on the lab host's interface iface. The agent
// must be in the host's own network namespace (ErrRootNetns otherwise).
func (p *LabPlatform) AddAddress(ctx context.Context, iface, prefix string) error {
	if err := notRootNetns(); err != nil {
		return err
	}
	return addAddress(ctx, iface, prefix)
}

// DelAddress takes prefix off the lab host's interface iface.
func (p *LabPlatform) DelAddress(ctx context.Context, iface, prefix string) error {
	if err := notRootNetns(); err != nil {
		return err
	}
	return delAddress(ctx, iface, prefix)
}

// Announce sends a gratuitous ARP for addr out of the lab host's iface.
func (p *LabPlatform) Announce(ctx context.Context, iface, addr string) error {
	if err := notRootNetns(); err != nil {
		return err
	}
	return announce(iface, addr)
}

func (p *LabPlatform) slots() swpatch.Slots { return swpatch.Slots{Root: p.SoftwareRoot} }

// Software reads the lab host's slots.
func (p *LabPlatform) Software(ctx context.Context) (swpatch.Status, error) {
	return p.slots().Status()
}

// StageSoftware installs into the lab host's inactive slot (under its
// software root only) and marks it next.
func (p *LabPlatform) StageSoftware(ctx context.Context, patches []*swpatch.Patch) error {
	return p.slots().Stage(ctx, patches, swpatch.Limits{}, swpatch.RunHook, time.Now())
}

// StageRemoval marks the lab host's slot without the patches.
func (p *LabPlatform) StageRemoval(ctx context.Context, ids []string) error {
	return p.slots().StageRemoval(ids)
}

// InstallInService installs into the lab host's running slot.
func (p *LabPlatform) InstallInService(ctx context.Context, pt *swpatch.Patch) error {
	return p.slots().InService(ctx, pt, swpatch.Limits{}, swpatch.RunHook, time.Now())
}

// ConfirmBoot ends the lab host's trial boot (trial.json, which its
// chassis watches).
func (p *LabPlatform) ConfirmBoot(ctx context.Context) (bool, error) {
	return p.slots().Confirm()
}

// Path returns rel inside the software root, refusing anything that leaves it.
func (p *LabPlatform) Path(rel string) (string, error) {
	full := filepath.Join(p.SoftwareRoot, rel)
	if full != p.SoftwareRoot && !strings.HasPrefix(full, p.SoftwareRoot+string(filepath.Separator)) {
		return "", fmt.Errorf("agent: %q leaves the host's software root", rel)
	}
	return full, nil
}

// HostPlatform acts on the real machine.
type HostPlatform struct {
	// SoftwareRoot is where Petrel's software lives; its file system is
	// watched. "" means "/".
	SoftwareRoot string
	booted       time.Time
}

// NewHostPlatform returns the real platform, or ErrRealPlatformRefused
// under `go test` or when any sign of the lab is present.
func NewHostPlatform() (*HostPlatform, error) {
	if why := labOrTest(); why != "" {
		return nil, fmt.Errorf("%w (%s)", ErrRealPlatformRefused, why)
	}
	return &HostPlatform{booted: kernelBootTime()}, nil
}

// labOrTest names the reason the real platform must not run here, if any.
func labOrTest() string {
	if testing.Testing() {
		return "running under go test"
	}
	for _, env := range []string{"PETREL_LAB_DIR", "PETREL_LAB_HOST"} {
		if os.Getenv(env) != "" {
			return env + " is set"
		}
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil && strings.Contains(string(b), "/petrel/") {
		return "in a lab host's cgroup"
	}
	// A real host's agent runs in its machine's root network namespace; a
	// named one (ip netns) is a lab host or a test.
	if self, err := os.Readlink("/proc/self/ns/net"); err == nil {
		for _, dir := range []string{"/var/run/netns", "/run/netns"} {
			matches, _ := filepath.Glob(filepath.Join(dir, "*"))
			for _, m := range matches {
				var st unix.Stat_t
				if unix.Stat(m, &st) == nil && self == fmt.Sprintf("net:[%d]", st.Ino) {
					return "in the named network namespace " + filepath.Base(m)
				}
			}
		}
	}
	return ""
}

func (p *HostPlatform) Kind() string        { return "host" }
func (p *HostPlatform) BootedAt() time.Time { return p.booted }

// Usage reads the root of the machine's cgroup v2 hierarchy, which is
// the whole machine (CPU time of every process; memory as MemTotal -
// MemAvailable), and statfs of the software root. It only reads.
func (p *HostPlatform) Usage(ctx context.Context) (monitor.Usage, error) {
	u := monitor.Usage{At: time.Now()}
	if root, err := monitor.CgroupV2Root(); err != nil {
		u.Missing = append(u.Missing, "cpu, memory: "+err.Error())
	} else {
		monitor.Cgroup{Dir: root}.Read(&u)
	}
	sw := p.SoftwareRoot
	if sw == "" {
		sw = "/"
	}
	if fs, err := monitor.Statfs(SoftwareRootFS, sw); err != nil {
		u.Missing = append(u.Missing, "filesystem: "+err.Error())
	} else {
		u.Filesystems = append(u.Filesystems, fs)
	}
	return u, nil
}

// Reboot flushes file systems and restarts the machine.
func (p *HostPlatform) Reboot(ctx context.Context) error {
	if why := labOrTest(); why != "" { // checked again at the moment of acting
		return fmt.Errorf("%w (%s)", ErrRealPlatformRefused, why)
	}
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// AddAddress puts prefix on the machine's interface iface.
func (p *HostPlatform) AddAddress(ctx context.Context, iface, prefix string) error {
	if why := labOrTest(); why != "" {
		return fmt.Errorf("%w (%s)", ErrRealPlatformRefused, why)
	}
	return addAddress(ctx, iface, prefix)
}

// DelAddress takes prefix off the machine's interface iface.
func (p *HostPlatform) DelAddress(ctx context.Context, iface, prefix string) error {
	if why := labOrTest(); why != "" {
		return fmt.Errorf("%w (%s)", ErrRealPlatformRefused, why)
	}
	return delAddress(ctx, iface, prefix)
}

// Announce sends a gratuitous ARP for addr out of the machine's iface.
func (p *HostPlatform) Announce(ctx context.Context, iface, addr string) error {
	if why := labOrTest(); why != "" {
		return fmt.Errorf("%w (%s)", ErrRealPlatformRefused, why)
	}
	return announce(iface, addr)
}

// Software: real hosts' software slots are not managed yet.
func (p *HostPlatform) Software(ctx context.Context) (swpatch.Status, error) {
	return swpatch.Status{}, ErrNoSoftwareSlots
}

// StageSoftware is refused on real hosts (not implemented).
func (p *HostPlatform) StageSoftware(ctx context.Context, _ []*swpatch.Patch) error {
	return ErrNoSoftwareSlots
}

// StageRemoval is refused on real hosts (not implemented).
func (p *HostPlatform) StageRemoval(ctx context.Context, _ []string) error { return ErrNoSoftwareSlots }

// InstallInService is refused on real hosts (not implemented).
func (p *HostPlatform) InstallInService(ctx context.Context, _ *swpatch.Patch) error {
	return ErrNoSoftwareSlots
}

// ConfirmBoot: a real host has no trial boots yet.
func (p *HostPlatform) ConfirmBoot(ctx context.Context) (bool, error) { return false, nil }

// kernelBootTime reads the boot time from /proc/stat (btime).
func kernelBootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			var sec int64
			if _, err := fmt.Sscanf(l, "btime %d", &sec); err == nil {
				return time.Unix(sec, 0).UTC()
			}
		}
	}
	return time.Now().UTC()
}
