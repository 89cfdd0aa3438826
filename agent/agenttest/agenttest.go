// Package agenttest builds fake /proc and /sys trees for agent tests, and
// a fake platform whose resource readings a test sets and that records
// the addresses it is asked to take.
package agenttest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/agent/services/servicestest"
	"github.com/petrel-edge/petrel/swpatch"
)

// SysRoot writes a small machine under a temporary root: 2 sockets x 2
// cores x 2 threads, 2 NUMA nodes, 8 GiB, one SSD and one NVMe disk, NICs
// mgmt and cluster, and one GPU.
func SysRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	cpuinfo := ""
	for p := 0; p < 2; p++ {
		for c := 0; c < 2; c++ {
			for th := 0; th < 2; th++ {
				cpuinfo += "processor\t: x\nmodel name\t: Test CPU 9000\nphysical id\t: " + string(rune('0'+p)) +
					"\ncore id\t\t: " + string(rune('0'+c)) + "\n\n"
			}
		}
	}
	Write(t, root, "proc/cpuinfo", cpuinfo)
	Write(t, root, "proc/meminfo", "MemTotal:        8388608 kB\nMemFree: 1 kB\n")
	Write(t, root, "sys/devices/system/node/node0/cpulist", "0-3")
	Write(t, root, "sys/devices/system/node/node1/cpulist", "4-7")
	Write(t, root, "sys/block/sda/size", "937703088")
	Write(t, root, "sys/block/sda/queue/rotational", "0")
	Write(t, root, "sys/block/nvme0n1/size", "1953525168")
	Write(t, root, "sys/block/loop0/size", "100")
	Write(t, root, "sys/class/net/lo/address", "00:00:00:00:00:00")
	Write(t, root, "sys/class/net/mgmt/address", "52:54:00:aa:00:01")
	Write(t, root, "sys/class/net/mgmt/speed", "10000")
	Write(t, root, "sys/class/net/cluster/address", "52:54:00:bb:00:01")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/vendor", "0x10de")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/device", "0x20b5")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/class", "0x030200")
	return root
}

// Write creates root/rel with content.
func Write(t testing.TB, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Platform is an agent platform for tests: it changes nothing, and its
// resource readings follow the load a test sets. It has 2 CPUs, 8 GiB of
// memory and a 100 GiB software root.
type Platform struct {
	// Addresses records the floating addresses the agent takes and
	// releases; it changes nothing.
	servicestest.Addresses

	mu      sync.Mutex
	booted  time.Time
	cpuPct  float64 // of the 2 CPUs, since at
	cpuUsec uint64  // CPU time used up to at
	at      time.Time
	memPct  float64
	fsPct   float64
	err     error
	reboots int

	sw         swpatch.Status
	installErr error
	installed  []string
	confirms   int
}

var _ agent.Platform = (*Platform)(nil)

// NewPlatform returns a platform booted now and idle.
func NewPlatform() *Platform {
	now := time.Now()
	return &Platform{booted: now.UTC(), at: now}
}

func (p *Platform) Kind() string        { return "test" }
func (p *Platform) BootedAt() time.Time { return p.booted }

// Reboot counts the request: a test host has nothing to reboot.
func (p *Platform) Reboot(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reboots++
	return nil
}

// Reboots is how many reboots were asked for.
func (p *Platform) Reboots() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reboots
}

// SetLoad makes the host use cpuPct of its CPUs from now on, and memPct
// of its memory and fsPct of its software root's file system.
func (p *Platform) SetLoad(cpuPct, memPct, fsPct float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance(time.Now())
	p.cpuPct, p.memPct, p.fsPct = cpuPct, memPct, fsPct
}

// SetError makes Usage fail with err (nil: succeed again).
func (p *Platform) SetError(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *Platform) advance(now time.Time) {
	if d := now.Sub(p.at); d > 0 {
		p.cpuUsec += uint64(p.cpuPct / 100 * 2 * float64(d.Microseconds()))
		p.at = now
	}
}

// Usage reports the load set, as the counters of a real host would show it.
func (p *Platform) Usage(context.Context) (monitor.Usage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return monitor.Usage{}, p.err
	}
	p.advance(time.Now())
	const mem, fs = 8 << 30, 100 << 30
	return monitor.Usage{At: p.at,
		CPU:    &monitor.CPU{UsageUsec: p.cpuUsec, CPUs: 2},
		Memory: &monitor.Memory{UsedBytes: uint64(p.memPct / 100 * mem), LimitBytes: mem, Source: "memory.current"},
		Filesystems: []monitor.Filesystem{{Name: agent.SoftwareRootFS, Path: "/srv/petrel",
			UsedBytes: uint64(p.fsPct / 100 * fs), SizeBytes: fs}}}, nil
}

// SetSoftware sets the software status the platform reports.
func (p *Platform) SetSoftware(st swpatch.Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sw = st
}

// SetInstallError makes every install fail with err (nil: succeed).
func (p *Platform) SetInstallError(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.installErr = err
}

// Installed lists the patches handed to the platform, in order, with
// "staged:" or "in-service:" before each.
func (p *Platform) Installed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.installed)
}

// Confirms is how many boots were confirmed.
func (p *Platform) Confirms() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirms
}

// Software reports the status set (slot "a" at first).
func (p *Platform) Software(context.Context) (swpatch.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.sw.Clone()
	if st.Slot == "" {
		st.Slot = "a"
	}
	if st.Patches == nil {
		st.Patches = []string{}
	}
	return st, nil
}

// StageSoftware records the patches as staged in slot b (nothing is
// written).
func (p *Platform) StageSoftware(_ context.Context, pts []*swpatch.Patch) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.installErr != nil {
		p.sw.Failed, p.sw.FailedReason = pts[0].Manifest.ID, p.installErr.Error()
		return p.installErr
	}
	p.sw.NextSlot = "b"
	p.sw.NextPatches = slices.Clone(p.sw.Patches)
	for _, pt := range pts {
		p.installed = append(p.installed, "staged:"+pt.Manifest.ID)
		p.sw.NextPatches = append(p.sw.NextPatches, pt.Manifest.ID)
		p.sw.NextVersion = pt.Manifest.Version
	}
	return nil
}

// StageRemoval records the removal.
func (p *Platform) StageRemoval(_ context.Context, ids []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.installErr != nil {
		return p.installErr
	}
	for _, id := range ids {
		p.installed = append(p.installed, "remove:"+id)
	}
	return nil
}

// InstallInService records the patch as running.
func (p *Platform) InstallInService(_ context.Context, pt *swpatch.Patch) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.installErr != nil {
		p.sw.Failed, p.sw.FailedReason = pt.Manifest.ID, p.installErr.Error()
		return p.installErr
	}
	p.installed = append(p.installed, "in-service:"+pt.Manifest.ID)
	p.sw.Patches = append(p.sw.Patches, pt.Manifest.ID)
	p.sw.Version = pt.Manifest.Version
	return nil
}

// ConfirmBoot counts the confirmation; the status's trial ends.
func (p *Platform) ConfirmBoot(context.Context) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.confirms++
	trial := p.sw.Trial
	p.sw.Trial = false
	return trial, nil
}
