// Package compute runs tenants' virtual machines on a site's hypervisor
// hosts. This is its groundwork (issue 7): the hypervisor interface the
// instance manager will consume, the domain description it passes, and
// per-instance disks (a qcow2 overlay on a raw or qcow2 base image). It
// also owns a site's images (content-addressed raw or qcow2 disks, with
// their state machine and verified uploads) and flavors.
//
// Its subpackages: compute/libvirt implements Hypervisor on a libvirtd
// through github.com/digitalocean/go-libvirt; compute/libvirtd runs a
// private libvirtd (the lab's per-host daemon, and the tests'); and
// compute/guestimage builds the bootable test images petrel-test and
// petrel-test-v2 from Debian packages; compute/computedb stores images and
// flavors. See docs/compute.md.
package compute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/uuid"
)

// ErrNotFound is returned for a domain the hypervisor does not know.
var ErrNotFound = errors.New("compute: domain not found")

// ErrInvalidSpec is returned (wrapped, with the reason) for a DomainSpec
// that cannot be defined.
var ErrInvalidSpec = errors.New("compute: invalid domain spec")

// DomainSpec is what a hypervisor needs to define a VM.
type DomainSpec struct {
	// ID is the domain's UUID, equal to the server ID.
	ID string
	// Name is the domain's name on its host; unique there.
	Name      string
	VCPUs     int
	MemoryMiB int
	// Disk is the instance's qcow2 overlay (see NewOverlay), as its host's
	// daemon sees the path.
	Disk string
	// ConsoleLog is the file the serial console (ttyS0) is appended to.
	ConsoleLog string
}

// MinMemoryMiB is the least memory a guest gets: the Debian kernel's
// decompressor resets silently with 64 MiB.
const MinMemoryMiB = 80

// Validate reports what is wrong with the spec, wrapping ErrInvalidSpec.
func (s DomainSpec) Validate() error {
	var why string
	switch {
	case uuid.Validate(s.ID) != nil:
		why = fmt.Sprintf("id %q is not a UUID", s.ID)
	case s.Name == "" || len(s.Name) > 64:
		why = "name must be 1 to 64 characters"
	case s.VCPUs < 1 || s.VCPUs > 64:
		why = fmt.Sprintf("vcpus %d not in 1..64", s.VCPUs)
	case s.MemoryMiB < MinMemoryMiB:
		why = fmt.Sprintf("memory %d MiB is under %d MiB", s.MemoryMiB, MinMemoryMiB)
	case !filepath.IsAbs(s.Disk):
		why = fmt.Sprintf("disk %q is not an absolute path", s.Disk)
	case !filepath.IsAbs(s.ConsoleLog):
		why = fmt.Sprintf("console log %q is not an absolute path", s.ConsoleLog)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidSpec, why)
}

// State is a domain's run state as the hypervisor reports it.
type State string

// Domain states (libvirt's virDomainState).
const (
	StateUnknown      State = "unknown"
	StateRunning      State = "running"
	StateBlocked      State = "blocked"
	StatePaused       State = "paused"
	StateShuttingDown State = "shutting-down"
	StateShutoff      State = "shutoff"
	StateCrashed      State = "crashed"
	StateSuspended    State = "pm-suspended"
)

// Domain is one entry of a hypervisor's domain list.
type Domain struct {
	ID    string
	Name  string
	State State
}

// Hypervisor is one host's VM runtime, as the instance manager uses it.
// Every method is idempotent where the operation allows: starting a running
// domain, destroying a stopped one and undefining an absent one succeed.
type Hypervisor interface {
	// Define creates or updates the persistent definition of a domain.
	Define(ctx context.Context, spec DomainSpec) error
	// Start boots a defined domain.
	Start(ctx context.Context, id string) error
	// Stop asks the guest to power off (ACPI power button) and destroys it
	// if it has not stopped within timeout.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Destroy stops a domain at once (power pulled).
	Destroy(ctx context.Context, id string) error
	// Undefine removes a domain's definition (not its disk).
	Undefine(ctx context.Context, id string) error
	// State reports a domain's run state; ErrNotFound if it is not defined.
	State(ctx context.Context, id string) (State, error)
	// ConsoleLog returns the end of the domain's serial console log.
	ConsoleLog(ctx context.Context, id string) ([]byte, error)
	// List returns every domain defined or running on the host.
	List(ctx context.Context) ([]Domain, error)
	// Reboot restarts a running domain: hard resets it at once, soft
	// asks the guest (ACPI) to reboot.
	Reboot(ctx context.Context, id string, hard bool) error
	// HostInfo describes the host as its hypervisor sees it.
	HostInfo(ctx context.Context) (HostInfo, error)
	// Stats reads a domain's resource use.
	Stats(ctx context.Context, id string) (DomainStats, error)
	// Events delivers the host's domain lifecycle events until ctx ends or
	// the connection fails (then the channel is closed).
	Events(ctx context.Context) (<-chan DomainEvent, error)
}

// DomainStats is a domain's resource use as its hypervisor reports it.
type DomainStats struct {
	State        State `json:"state"`
	VCPUs        int   `json:"vcpus"`
	MaxMemoryMiB int64 `json:"max_memory_mib"`
	MemoryMiB    int64 `json:"memory_mib"`
	// RSSMiB is the resident memory of the domain's emulator process
	// (0 when it is not running).
	RSSMiB int64 `json:"rss_mib"`
	// CPUTimeNs is the CPU time the domain has used since it started.
	CPUTimeNs uint64 `json:"cpu_time_ns"`
}

// HostInfo is what a hypervisor reports of its host.
type HostInfo struct {
	CPUs      int
	MemoryMiB int64
	// Version is the hypervisor's version, e.g. libvirt "9.0.0".
	Version string
}

// DomainEvent is a change of a domain's run state.
type DomainEvent struct {
	ID    string // domain UUID
	State State  // the state after the event
	// Detail is the hypervisor's reason, e.g. "shutdown", "crashed",
	// "destroyed", "booted".
	Detail string
}

// InstanceFiles are an instance's files on its host, as the host's
// hypervisor sees their paths.
type InstanceFiles struct {
	Disk       string // the qcow2 overlay
	ConsoleLog string // the serial console's log
}

// HostStorage keeps base images and instance disks on one hypervisor
// host, which shares no filesystem with the site controller or other
// hosts. Every method is idempotent.
type HostStorage interface {
	// HasBase reports whether the base image with SHA-256 sum is complete
	// on the host.
	HasBase(ctx context.Context, sum string) (bool, error)
	// PutBase copies a base image — size bytes read from r, in format — to
	// the host. It is crash-safe: a copy cut off part-way is never taken
	// as complete by HasBase, and PutBase replaces it.
	PutBase(ctx context.Context, sum string, format DiskFormat, size int64, r io.Reader) error
	// CreateInstanceFiles creates instance id's qcow2 overlay on base sum
	// (which must be present) and an empty console log, replacing any
	// files id had (a rebuild).
	CreateInstanceFiles(ctx context.Context, id, sum string, format DiskFormat) (InstanceFiles, error)
	// DeleteInstanceFiles removes instance id's files; absent files are no
	// error.
	DeleteInstanceFiles(ctx context.Context, id string) error
}

// NewOverlay creates the qcow2 overlay disk of an instance on a base
// image (raw or qcow2, detected from its content), with qemu-img. The
// overlay records the base's absolute path: the base must stay there for
// the instance's life. An existing overlay is an error: rebuilding onto a
// new image removes the old overlay first.
func NewOverlay(ctx context.Context, base, overlay string) error {
	if !filepath.IsAbs(base) || !filepath.IsAbs(overlay) {
		return fmt.Errorf("compute: overlay %q and base %q must be absolute paths", overlay, base)
	}
	if _, err := os.Stat(overlay); err == nil {
		return fmt.Errorf("compute: overlay %s: %w", overlay, os.ErrExist)
	}
	format, err := imageFormat(base)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(overlay), 0o755); err != nil {
		return err
	}
	// -F is mandatory: QEMU 7.2 refuses a backing file of unstated format.
	cmd := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", format, overlay)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("compute: qemu-img create %s: %w: %s", overlay, err, bytes.TrimSpace(out))
	}
	return nil
}

// imageFormat tells qcow2 (by its magic) from raw.
func imageFormat(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("compute: base image: %w", err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.ReadAt(magic, 0); err != nil {
		return "", fmt.Errorf("compute: base image %s: %w", name, err)
	}
	if DetectFormat(magic) == FormatQCOW2 {
		return "qcow2", nil
	}
	return "raw", nil
}
