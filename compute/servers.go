package compute

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// Server is a tenant's VM: a libvirt domain on one hypervisor host of the
// site, whose domain UUID is the server's ID.
type Server struct {
	ID      string       `json:"id"` // UUID; the libvirt domain UUID
	Name    string       `json:"name"`
	Project string       `json:"project"`
	Status  ServerStatus `json:"status"`
	// Task is the operation in progress on the server, if any (Nova's
	// task_state): the status it leads to is decided when it ends.
	Task Task `json:"task"`
	// Power is the domain's run state when it was last seen.
	Power State `json:"power_state"`
	// Host is the hypervisor host (its name) the server is placed on.
	Host string `json:"host"`
	// Image is the ID of the image the server's disk was built from;
	// ImageName its name then.
	Image     string `json:"image"`
	ImageName string `json:"image_name"`
	// Flavor is a copy of the flavor at creation: deleting or changing
	// the flavor later does not change the server.
	Flavor ServerFlavor `json:"flavor"`
	// Group is the ID of the server group the server belongs to, if any.
	Group string `json:"group,omitempty"`
	// Fault says why the server is in error (or why its last operation
	// failed).
	Fault      string     `json:"fault,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	LaunchedAt *time.Time `json:"launched_at"`
	// Migration is the server's last (or running) live migration.
	Migration *Migration `json:"migration,omitempty"`
	// Rev increases with every stored change.
	Rev uint64 `json:"revision"`
}

// ServerFlavor is a server's copy of its flavor.
type ServerFlavor struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	VCPUs   int    `json:"vcpus"`
	RAMMiB  int    `json:"ram_mib"`
	DiskGiB int    `json:"disk_gib"`
}

// ServerStatus is where a server is in its life cycle.
type ServerStatus string

// Server statuses (Nova's vm_state, lower-case).
const (
	ServerBuilding  ServerStatus = "building"  // placed; its disk and domain are being made and booted
	ServerActive    ServerStatus = "active"    // the domain runs
	ServerShutoff   ServerStatus = "shutoff"   // the domain is defined and stopped
	ServerMigrating ServerStatus = "migrating" // a live migration moves it (issue 8)
	ServerError     ServerStatus = "error"     // it failed or its host did; Fault says why
	// ServerDeleted is where every server ends; its record is removed.
	ServerDeleted ServerStatus = "deleted"
)

// serverNext is the server state machine.
var serverNext = map[ServerStatus][]ServerStatus{
	ServerBuilding:  {ServerActive, ServerShutoff, ServerError, ServerDeleted},
	ServerActive:    {ServerShutoff, ServerMigrating, ServerError, ServerDeleted, ServerActive},
	ServerShutoff:   {ServerActive, ServerError, ServerDeleted, ServerShutoff},
	ServerMigrating: {ServerActive, ServerShutoff, ServerError},
	ServerError:     {ServerActive, ServerShutoff, ServerError, ServerDeleted},
}

// Valid reports whether s is a known status.
func (s ServerStatus) Valid() bool { _, ok := serverNext[s]; return ok || s == ServerDeleted }

// CanTo reports whether a server may move from s to next.
func (s ServerStatus) CanTo(next ServerStatus) bool { return slices.Contains(serverNext[s], next) }

// Task is an operation in progress on a server.
type Task string

// Tasks.
const (
	TaskNone      Task = ""
	TaskSpawning  Task = "spawning"
	TaskStopping  Task = "powering-off"
	TaskStarting  Task = "powering-on"
	TaskRebooting Task = "rebooting"
	// TaskRebootingHard is a hard reboot (reset) in progress.
	TaskRebootingHard Task = "rebooting-hard"
	TaskRebuilding    Task = "rebuilding"
	TaskDeleting      Task = "deleting"
	TaskMigrating     Task = "migrating"
	// TaskEvacuating rebuilds a server of a failed host on another host
	// from its image.
	TaskEvacuating Task = "evacuating"
)

// Action is an operation a caller asks of a server.
type Action string

// Actions.
const (
	ActionStop    Action = "stop"
	ActionStart   Action = "start"
	ActionReboot  Action = "reboot"  // soft: ACPI reboot request; hard: reset
	ActionRebuild Action = "rebuild" // a new disk from an image, same ID, host and flavor
	ActionMigrate Action = "migrate" // live-migrate to another host
)

// Migration is a live migration: where it stands, and how it ended.
type Migration struct {
	Source string         `json:"source"`
	Dest   string         `json:"dest"`
	Phase  MigrationPhase `json:"phase"`
	// Reason says why it failed or was aborted.
	Reason    string            `json:"reason,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	EndedAt   *time.Time        `json:"ended_at,omitempty"`
	Progress  MigrationProgress `json:"progress"`
	// MaxDowntime is the downtime limit in force (raised step by step
	// while the copy does not converge).
	MaxDowntime time.Duration `json:"max_downtime"`
	PostCopy    bool          `json:"post_copy,omitempty"`
}

// MigrationPhase is where a live migration is.
type MigrationPhase string

// Migration phases.
const (
	MigrationPreparing MigrationPhase = "preparing" // the destination gets the base image and the overlay
	MigrationCopying   MigrationPhase = "copying"   // memory and disk are copied; the guest runs on the source
	MigrationCleaning  MigrationPhase = "cleaning"  // the job ended; the side that lost is being cleaned
	MigrationDone      MigrationPhase = "done"      // the guest runs on the destination
	MigrationFailed    MigrationPhase = "failed"    // the guest runs on the source; Reason says why
)

// Active reports whether the migration has not ended.
func (m *Migration) Active() bool {
	return m != nil && m.Phase != MigrationDone && m.Phase != MigrationFailed
}

// actionFrom says which statuses accept an action.
var actionFrom = map[Action][]ServerStatus{
	ActionStop:    {ServerActive, ServerError},
	ActionStart:   {ServerShutoff},
	ActionReboot:  {ServerActive, ServerShutoff, ServerError},
	ActionRebuild: {ServerActive, ServerShutoff, ServerError},
	ActionMigrate: {ServerActive},
}

// Validate checks an action request's fields.
func (a ServerAction) Validate() error {
	if _, ok := actionFrom[a.Action]; !ok {
		return errs.Field("action", "must be stop, start, reboot, rebuild or migrate")
	}
	if a.Host != "" && a.Action != ActionMigrate {
		return errs.Field("host", "only migrate takes a host")
	}
	if a.PostCopy && a.Action != ActionMigrate {
		return errs.Field("post_copy", "only migrate can use post-copy")
	}
	if a.Image != "" && a.Action != ActionRebuild {
		return errs.Field("image", "only rebuild takes an image")
	}
	if a.Hard && a.Action != ActionReboot {
		return errs.Field("hard", "only reboot can be hard")
	}
	return nil
}

// CheckAction returns nil if a server in status st with no task may take
// action a, else an ErrServerState naming why.
func (sv Server) CheckAction(a Action) error {
	from, ok := actionFrom[a]
	if !ok {
		return errs.Field("action", "must be stop, start, reboot, rebuild or migrate")
	}
	if sv.Task != TaskNone {
		return fmt.Errorf("%w: server %s is busy (%s)", ErrServerState, sv.Name, sv.Task)
	}
	if !slices.Contains(from, sv.Status) {
		return fmt.Errorf("%w: cannot %s server %s while it is %s", ErrServerState, a, sv.Name, sv.Status)
	}
	return nil
}

// ServerGroupPolicy is a server group's placement rule.
type ServerGroupPolicy string

// Server group policies.
const (
	AntiAffinity ServerGroupPolicy = "anti-affinity" // every member on a different host
	Affinity     ServerGroupPolicy = "affinity"      // every member on the same host
)

// ServerGroup is a set of servers placed by one policy.
type ServerGroup struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Policy    ServerGroupPolicy `json:"policy"`
	Project   string            `json:"project"`
	Members   []string          `json:"members"` // server IDs
	CreatedAt time.Time         `json:"created_at"`
}

// Errors of servers.
var (
	ErrServerNotFound      = errs.New(errs.NotFound, "server not found")
	ErrServerExists        = errs.New(errs.Conflict, "a server with that name exists")
	ErrServerState         = errs.New(errs.Conflict, "server state does not allow this")
	ErrNoValidHost         = errs.New(errs.Conflict, "no valid host")
	ErrServerGroupNotFound = errs.New(errs.NotFound, "server group not found")
	ErrServerGroupExists   = errs.New(errs.Conflict, "a server group with that name exists")
	ErrServerGroupInUse    = errs.New(errs.Conflict, "server group has members")
)

// ServerFilters are the filters GET /v1/servers accepts.
var ServerFilters = []string{"status", "host", "project", "image", "flavor", "name"}

// CreateServer asks for a new server.
type CreateServer struct {
	Name   string `json:"name"`
	Image  string `json:"image"`  // ID or name
	Flavor string `json:"flavor"` // ID or name
	// Host, if set, pins the server to this host (admin only); the
	// filters still apply.
	Host  string `json:"host,omitempty"`
	Group string `json:"group,omitempty"` // server group ID or name
	// Project owns the server; default: the caller's.
	Project string `json:"project,omitempty"`
}

// ServerAction asks a server to do something.
type ServerAction struct {
	Action Action `json:"action"`
	// Hard, for reboot: reset at once instead of asking the guest.
	Hard bool `json:"hard,omitempty"`
	// Image, for rebuild: the image (ID or name) to rebuild on; default
	// the server's own.
	Image string `json:"image,omitempty"`
	// Host, for migrate: the destination (admin); default: the
	// scheduler picks one.
	Host string `json:"host,omitempty"`
	// PostCopy, for migrate: allow post-copy (the VM is lost if the
	// destination fails while it runs).
	PostCopy bool `json:"post_copy,omitempty"`
}

// Hypervisor describes one hypervisor host as the scheduler and the
// os-hypervisors API see it.
type HypervisorInfo struct {
	Host string `json:"host"`
	// State is "up" when its libvirtd answers, else "down"; Status is
	// "enabled" when the host takes new servers (unlocked, available).
	State        string `json:"state"`
	Status       string `json:"status"`
	VCPUs        int    `json:"vcpus"`
	VCPUsUsed    int    `json:"vcpus_used"`
	MemoryMiB    int    `json:"memory_mib"`
	MemoryMiBUse int    `json:"memory_mib_used"`
	DiskGiB      int    `json:"disk_gib"`
	DiskGiBUsed  int    `json:"disk_gib_used"`
	Servers      int    `json:"running_vms"`
	// URI is the host's libvirt URI.
	URI string `json:"hypervisor_uri"`
	// Version is the hypervisor's libvirt version, if it answered.
	Version string `json:"hypervisor_version"`
}

// Servers is the site's compute service, as its APIs (Petrel's and the
// OpenStack-compatible one) use it. The caller's identity (project, role)
// comes from ctx (auth.PrincipalFrom): readers and operators see and act
// on their project's servers, admins on every project's.
type Servers interface {
	// CreateServer places a new server (synchronously: ErrNoValidHost
	// with the reason if no host fits, and nothing is created) and
	// starts building it; the server returned is building.
	CreateServer(ctx context.Context, req CreateServer) (Server, error)
	// Server finds a server by ID or name.
	Server(ctx context.Context, id string) (Server, error)
	// ListServers lists servers by name, after opts.After, filtered by
	// ServerFilters.
	ListServers(ctx context.Context, opts page.Options) ([]Server, string, error)
	// Act starts an action; the server returned carries its task.
	Act(ctx context.Context, id string, a ServerAction) (Server, error)
	// DeleteServer starts deleting a server; it disappears from lists
	// once its domain and disk are gone.
	DeleteServer(ctx context.Context, id string) error
	// ConsoleLog returns the last lines (0: all kept) of the server's
	// serial console.
	ConsoleLog(ctx context.Context, id string, lines int) (string, error)
	// ServerStats reads the server's resource use from its hypervisor.
	ServerStats(ctx context.Context, id string) (DomainStats, error)
	// Hypervisors describes the site's hypervisor hosts.
	Hypervisors(ctx context.Context) ([]HypervisorInfo, error)

	CreateServerGroup(ctx context.Context, g ServerGroup) (ServerGroup, error)
	ServerGroup(ctx context.Context, id string) (ServerGroup, error)
	ListServerGroups(ctx context.Context) ([]ServerGroup, error)
	DeleteServerGroup(ctx context.Context, id string) error
}
