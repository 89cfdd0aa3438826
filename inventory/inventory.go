// Package inventory owns a site's hosts: their identity, personality, the
// three X.731 states (administrative, operational, availability) and the
// hardware each host reports. It has no persistence dependencies so the host
// agent can share its types; inventorydb stores them.
package inventory

import (
	"context"
	"regexp"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/swpatch"
)

// Shape is a site's layout of hosts.
type Shape string

const (
	Simplex     Shape = "simplex"
	Duplex      Shape = "duplex"
	MultiServer Shape = "multi-server"
)

// Valid reports whether s is a known shape.
func (s Shape) Valid() bool { return s == Simplex || s == Duplex || s == MultiServer }

var siteName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateSiteName checks a site name: it becomes part of host names,
// certificates and URLs.
func ValidateSiteName(field, name string) error {
	if !siteName.MatchString(name) {
		return errs.Field(field, "must be 1-63 characters: a lower-case letter, then lower-case letters, digits or '-'")
	}
	return nil
}

// Personality is a host's role in its site. A discovered host has none until
// an operator assigns one.
type Personality string

const (
	PersonalityNone Personality = ""
	Controller      Personality = "controller"
	Worker          Personality = "worker"
	Storage         Personality = "storage"
)

// Valid reports whether p is a known personality (or none).
func (p Personality) Valid() bool {
	switch p {
	case PersonalityNone, Controller, Worker, Storage:
		return true
	}
	return false
}

// ProvisioningState tells how far a host is from being usable.
type ProvisioningState string

const (
	Unprovisioned ProvisioningState = "unprovisioned"
	Provisioning  ProvisioningState = "provisioning"
	Provisioned   ProvisioningState = "provisioned"
)

// Valid reports whether p is a known provisioning state.
func (p ProvisioningState) Valid() bool {
	return p == Unprovisioned || p == Provisioning || p == Provisioned
}

// AdminState is the administrative state an operator sets (desired state).
type AdminState string

const (
	Locked   AdminState = "locked"
	Unlocked AdminState = "unlocked"
)

// Valid reports whether s is a known administrative state.
func (s AdminState) Valid() bool { return s == Locked || s == Unlocked }

// OperState is the observed operational state.
type OperState string

const (
	Enabled  OperState = "enabled"
	Disabled OperState = "disabled"
)

// Valid reports whether s is a known operational state.
func (s OperState) Valid() bool { return s == Enabled || s == Disabled }

// Availability is the observed availability state.
type Availability string

const (
	Available Availability = "available"
	Degraded  Availability = "degraded"
	Failed    Availability = "failed"
	Offline   Availability = "offline"
	Online    Availability = "online"
	InTest    Availability = "intest"
	PowerOff  Availability = "power-off"
)

// Valid reports whether a is a known availability state.
func (a Availability) Valid() bool {
	switch a {
	case Available, Degraded, Failed, Offline, Online, InTest, PowerOff:
		return true
	}
	return false
}

// BMC describes a host's board management controller (never its secret).
type BMC struct {
	Type    string `json:"type"` // ipmi | redfish | dynamic | "" (none)
	Address string `json:"address"`
	Status  string `json:"status"`
}

// Heartbeat is the per-network heartbeat status.
type Heartbeat struct {
	Mgmt    string `json:"mgmt"`
	Cluster string `json:"cluster"`
}

// Recovery is host management's recovery of a host (docs/hostmgr.md).
type Recovery struct {
	Phase        string     `json:"phase"`          // "" (none), suspect, grace, reboot, bmc-reset, power-cycle, power-on, hold, gave-up, operator-off
	LastAction   string     `json:"last_action"`    // e.g. bmc-power-on, bmc-reset, agent-reboot
	LastActionAt *time.Time `json:"last_action_at"` // when
}

// Hardware is what a host reports about itself, optionally overlaid with a
// simulated profile (Simulated is then true).
type Hardware struct {
	CPUModel  string      `json:"cpu_model"`
	Cores     int         `json:"cores"`
	Threads   int         `json:"threads"`
	NUMANodes int         `json:"numa_nodes"`
	MemoryMiB int64       `json:"memory_mib"`
	Disks     []Disk      `json:"disks"`
	NICs      []NIC       `json:"nics"`
	PCI       []PCIDevice `json:"pci_devices"`
	Simulated bool        `json:"simulated"`
}

// Disk is a block device.
type Disk struct {
	Name    string `json:"name"`
	SizeGiB int64  `json:"size_gib"`
	Type    string `json:"type"` // hdd | ssd | nvme
}

// NIC is a network interface.
type NIC struct {
	Name  string `json:"name"`
	MAC   string `json:"mac"`
	Speed int    `json:"speed_mbps"`
	// Addresses are the interface's IP prefixes (e.g. 10.88.0.11/24). An
	// interface named after a site network (mgmt, cluster) is the host's
	// interface on it: heartbeats go to its address.
	Addresses []string `json:"addresses,omitempty"`
}

// PCIDevice is a PCI device such as a GPU or accelerator.
type PCIDevice struct {
	Address string `json:"address"`
	Vendor  string `json:"vendor"`
	Device  string `json:"device"`
	Class   string `json:"class"`
}

// Host is one server of a site. JSON keys are the API contract (brief §8).
type Host struct {
	UUID            string            `json:"uuid"`
	Name            string            `json:"name"`
	Personality     Personality       `json:"personality"`
	Subfunctions    []string          `json:"subfunctions"`
	Provisioning    ProvisioningState `json:"provisioning"`
	Administrative  AdminState        `json:"administrative"`
	Operational     OperState         `json:"operational"`
	Availability    Availability      `json:"availability"`
	UptimeS         int64             `json:"uptime_s"`
	SoftwareVersion string            `json:"software_version"`
	PatchCurrent    bool              `json:"patch_current"`
	BMC             BMC               `json:"bmc"`
	Heartbeat       Heartbeat         `json:"heartbeat"`
	Inventory       Hardware          `json:"inventory"`
	// BootedAt, BootID, ReportGeneration and LastReport come from the
	// host's agent; UptimeS is derived from BootedAt when the host is read.
	BootedAt         *time.Time `json:"booted_at"`
	BootID           string     `json:"boot_id"`
	ReportGeneration uint64     `json:"report_generation"`
	LastReport       *time.Time `json:"last_report"`
	// ResourceAlarms are the alarms the agent asserted in its last
	// accepted report, sorted; the site raises them on host=Name.
	ResourceAlarms []ResourceAlarm `json:"resource_alarms"`
	// Recovery is where host management's recovery of the host stands,
	// and the last thing it did.
	Recovery Recovery `json:"recovery"`
	// Software is what the host's agent last reported about its software
	// slots (swpatch); nil until it has.
	Software  *swpatch.Status `json:"software,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	// Rev increases with every stored change; writers pass the revision they
	// read so a stale write fails with ErrConflict.
	Rev uint64 `json:"revision"`
}

// Clone returns a deep copy of h, sharing no slices with it.
func (h Host) Clone() Host {
	h.Subfunctions = slices.Clone(h.Subfunctions)
	h.Inventory.Disks = slices.Clone(h.Inventory.Disks)
	h.Inventory.NICs = slices.Clone(h.Inventory.NICs)
	h.Inventory.PCI = slices.Clone(h.Inventory.PCI)
	h.ResourceAlarms = cloneResourceAlarms(h.ResourceAlarms)
	if h.Software != nil {
		sw := h.Software.Clone()
		h.Software = &sw
	}
	return h
}

// WithUptime returns h with UptimeS computed at now from BootedAt, for a
// host that is up (online or better).
func (h Host) WithUptime(now time.Time) Host {
	h.UptimeS = 0
	switch h.Availability {
	case Offline, PowerOff, Failed:
		return h
	}
	if h.BootedAt != nil && now.After(*h.BootedAt) {
		h.UptimeS = int64(now.Sub(*h.BootedAt) / time.Second)
	}
	return h
}

// Field returns the value of a filterable field (see HostFilters).
func (h Host) Field(name string) string {
	switch name {
	case "personality":
		return string(h.Personality)
	case "administrative":
		return string(h.Administrative)
	case "operational":
		return string(h.Operational)
	case "availability":
		return string(h.Availability)
	case "provisioning":
		return string(h.Provisioning)
	}
	return ""
}

// Validate checks the host's enumerated fields.
func (h Host) Validate() error {
	switch {
	case h.UUID == "":
		return errs.Field("uuid", "is required")
	case h.Name == "":
		return errs.Field("name", "is required")
	case !h.Personality.Valid():
		return errs.Field("personality", "must be controller, worker or storage, not %q", h.Personality)
	case !h.Provisioning.Valid():
		return errs.Field("provisioning", "unknown state %q", h.Provisioning)
	case !h.Administrative.Valid():
		return errs.Field("administrative", "unknown state %q", h.Administrative)
	case !h.Operational.Valid():
		return errs.Field("operational", "unknown state %q", h.Operational)
	case !h.Availability.Valid():
		return errs.Field("availability", "unknown state %q", h.Availability)
	}
	return nil
}

// Errors of this package.
var (
	ErrHostNotFound = errs.New(errs.NotFound, "host not found")
	ErrHostExists   = errs.New(errs.Conflict, "host already exists")
	ErrStale        = errs.New(errs.Conflict, "host changed since it was read")
)

// Store keeps a site's hosts. Implementations: inventorydb (gorm).
type Store interface {
	// Host returns the host with the given UUID or name.
	Host(ctx context.Context, id string) (Host, error)
	// PutHost creates (ifRev 0) or replaces (ifRev = the revision read) a
	// host, returning it with its new revision. ErrHostExists, ErrStale.
	PutHost(ctx context.Context, h Host, ifRev uint64) (Host, error)
	// Hosts lists hosts by name; filters: personality, administrative,
	// operational, availability, provisioning.
	Hosts(ctx context.Context, opts page.Options) ([]Host, string, error)
	DeleteHost(ctx context.Context, id string) error
}

// HostFilters are the filter fields Hosts accepts.
var HostFilters = []string{"personality", "administrative", "operational", "availability", "provisioning"}
