package central

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// Availability is whether central can see a subcloud (observed: the
// tracker drives it from the site's link).
type Availability string

const (
	Online  Availability = "online"
	Offline Availability = "offline"
)

// Management is whether central manages (syncs, orchestrates) a subcloud
// (desired: operators set it).
type Management string

const (
	Managed   Management = "managed"
	Unmanaged Management = "unmanaged"
)

// DeployStatus is where a subcloud's deployment stands (brief §4): the
// deploy engine moves it as the Ansible bootstrap and configuration run.
type DeployStatus string

const (
	DeployNotDeployed     DeployStatus = "not-deployed"
	DeployBootstrapping   DeployStatus = "bootstrapping"
	DeployBootstrapFailed DeployStatus = "bootstrap-failed"
	DeployBootstrapped    DeployStatus = "bootstrapped"
	DeployConfiguring     DeployStatus = "configuring"
	DeployConfigFailed    DeployStatus = "config-failed"
	DeployComplete        DeployStatus = "complete"
)

// The state machines, as transition tables (availabilityNext, which the
// tracker drives, is in availability.go). Every state is a key, terminal
// ones with no successors, so Valid knows them all. docs/central.md draws
// deployNext.
var (
	managementNext = map[Management][]Management{
		Unmanaged: {Managed},
		Managed:   {Unmanaged},
	}
	deployNext = map[DeployStatus][]DeployStatus{
		DeployNotDeployed:     {DeployBootstrapping},
		DeployBootstrapping:   {DeployBootstrapped, DeployBootstrapFailed},
		DeployBootstrapFailed: {DeployBootstrapping},
		DeployBootstrapped:    {DeployConfiguring},
		DeployConfiguring:     {DeployComplete, DeployConfigFailed},
		DeployConfigFailed:    {DeployConfiguring},
		DeployComplete:        nil,
	}
)

// Valid reports whether a is a known availability.
func (a Availability) Valid() bool { _, ok := availabilityNext[a]; return ok }

// Valid reports whether m is a known management state.
func (m Management) Valid() bool { _, ok := managementNext[m]; return ok }

// CanTo reports whether management may change from m to next.
func (m Management) CanTo(next Management) bool { return slices.Contains(managementNext[m], next) }

// Valid reports whether d is a known deploy status.
func (d DeployStatus) Valid() bool { _, ok := deployNext[d]; return ok }

// CanTo reports whether the deploy status may change from d to next.
func (d DeployStatus) CanTo(next DeployStatus) bool { return slices.Contains(deployNext[d], next) }

// Transitional reports whether a deploy step is running in d: the
// subcloud's record must not be deleted or its bootstrap data changed.
func (d DeployStatus) Transitional() bool {
	return d == DeployBootstrapping || d == DeployConfiguring
}

// Failed reports whether d is one of the *-failed states.
func (d DeployStatus) Failed() bool { return strings.HasSuffix(string(d), "-failed") }

// DeployStatuses lists every deploy status, in table order of a deploy.
func DeployStatuses() []DeployStatus {
	return []DeployStatus{DeployNotDeployed, DeployBootstrapping, DeployBootstrapFailed, DeployBootstrapped,
		DeployConfiguring, DeployConfigFailed, DeployComplete}
}

// SetAvailability moves sc's availability; staying put is not a
// transition and always succeeds (every update of an online site says
// online again).
func (sc *Subcloud) SetAvailability(next Availability) error {
	if sc.Availability == next {
		return nil
	}
	if !sc.Availability.CanTo(next) {
		return fmt.Errorf("%w: subcloud %s availability %q cannot become %q", ErrInvalidTransition, sc.Name, sc.Availability, next)
	}
	sc.Availability = next
	return nil
}

// SetManagement moves sc's management state, or explains why not: a
// subcloud is managed only once central can see it and no deploy step is
// running or failed (complete, or not-deployed for a site brought up
// outside Petrel's deploy, as the lab does).
func (sc *Subcloud) SetManagement(next Management) error {
	if !sc.Management.CanTo(next) {
		return fmt.Errorf("%w: subcloud %s is %s, cannot become %s", ErrInvalidTransition, sc.Name, sc.Management, next)
	}
	if next == Managed {
		if sc.Availability != Online {
			return fmt.Errorf("%w: subcloud %s is %s; only an online subcloud can be managed", ErrInvalidTransition, sc.Name, sc.Availability)
		}
		if sc.DeployStatus.Transitional() || sc.DeployStatus.Failed() || sc.DeployStatus == DeployBootstrapped {
			return fmt.Errorf("%w: subcloud %s deploy status is %s; it can be managed when complete", ErrInvalidTransition, sc.Name, sc.DeployStatus)
		}
	}
	sc.Management = next
	return nil
}

// SetDeployStatus moves sc's deploy status along deployNext, or explains
// why not.
func (sc *Subcloud) SetDeployStatus(next DeployStatus) error {
	if !sc.DeployStatus.CanTo(next) {
		return fmt.Errorf("%w: subcloud %s deploy status %s cannot become %s", ErrInvalidTransition, sc.Name, sc.DeployStatus, next)
	}
	sc.DeployStatus = next
	return nil
}

// Deletable explains why sc may not be removed from the registry, or
// returns nil: it must be unmanaged, offline, and no deploy step running.
func (sc *Subcloud) Deletable() error {
	switch {
	case sc.Management == Managed:
		return fmt.Errorf("%w: subcloud %s is managed; unmanage it first", ErrSubcloudInUse, sc.Name)
	case sc.Availability == Online:
		return fmt.Errorf("%w: subcloud %s is online; power it off or disconnect it first", ErrSubcloudInUse, sc.Name)
	case sc.DeployStatus.Transitional():
		return fmt.Errorf("%w: subcloud %s deploy status is %s; wait for it to finish or fail", ErrSubcloudInUse, sc.Name, sc.DeployStatus)
	}
	return nil
}

// SyncStatus is the state of one synchronised resource type at a subcloud.
type SyncStatus string

const (
	InSync      SyncStatus = "in-sync"
	OutOfSync   SyncStatus = "out-of-sync"
	SyncUnknown SyncStatus = "unknown"
)

// Valid reports whether s is one of the sync statuses.
func (s SyncStatus) Valid() bool { return s == InSync || s == OutOfSync || s == SyncUnknown }

// Status is a subcloud's health at a glance.
type Status string

const (
	StatusOK       Status = "ok"
	StatusDegraded Status = "degraded"
	StatusCritical Status = "critical"
	StatusOffline  Status = "offline"
)

// AlarmSummary counts a subcloud's active alarms per severity.
type AlarmSummary struct {
	Critical int `json:"critical"`
	Major    int `json:"major"`
	Minor    int `json:"minor"`
	Warning  int `json:"warning"`
}

// SiteCertificate records the certificate central issued to a site; any
// other certificate, including an earlier one, is refused on its link.
type SiteCertificate struct {
	Serial   string    `json:"serial"`
	IssuedAt time.Time `json:"issued_at"`
	NotAfter time.Time `json:"not_after"`
}

// HostCounts counts a subcloud's hosts, as it last reported them.
type HostCounts struct {
	Total          int            `json:"total"`
	ByAvailability map[string]int `json:"by_availability"`
}

// StatusOf computes a subcloud's status (brief §4): offline when central
// cannot see it, critical with any critical alarm, degraded with any major or
// minor alarm, else ok.
func StatusOf(a Availability, s AlarmSummary) Status {
	switch {
	case a != Online:
		return StatusOffline
	case s.Critical > 0:
		return StatusCritical
	case s.Major > 0 || s.Minor > 0:
		return StatusDegraded
	}
	return StatusOK
}

// Subcloud is a site as central sees it. JSON keys are the API contract.
type Subcloud struct {
	Name        string          `json:"name"`
	Shape       inventory.Shape `json:"shape"`
	Description string          `json:"description"`
	Location    string          `json:"location"`
	Group       string          `json:"group"` // a SubcloudGroup's name; DefaultGroup when none given
	// BootstrapAddress is the OAM address Ansible reaches controller-0 at
	// ("" for a site brought up outside Petrel's deploy); unique in the fleet.
	BootstrapAddress string `json:"bootstrap_address"`
	// BootstrapValues are the validated values written to the deploy's
	// vars file (bootstrap.go); nil when none were given.
	BootstrapValues map[string]any        `json:"bootstrap_values"`
	Availability    Availability          `json:"availability"`
	Management      Management            `json:"management"`
	DeployStatus    DeployStatus          `json:"deploy_status"`
	Sync            map[string]SyncStatus `json:"sync"`
	AlarmSummary    AlarmSummary          `json:"alarm_summary"`
	Hosts           HostCounts            `json:"hosts"`
	SoftwareVersion string                `json:"software_version"`
	Certificate     *SiteCertificate      `json:"certificate"` // the one certificate its link may use
	Status          Status                `json:"status"`
	LastSeen        *time.Time            `json:"last_seen"`
	CreatedAt       time.Time             `json:"created_at"`
}

// Errors of this package.
var (
	ErrSubcloudNotFound = errs.New(errs.NotFound, "subcloud not found")
	ErrSubcloudExists   = errs.New(errs.Conflict, "subcloud already exists")
	// ErrBootstrapAddressInUse: another subcloud has that bootstrap address.
	ErrBootstrapAddressInUse = errs.New(errs.Conflict, "bootstrap address already in use")
	// ErrSubcloudInUse: the subcloud's state forbids the change (delete).
	ErrSubcloudInUse = errs.New(errs.Conflict, "subcloud in use")
)

// SubcloudStore keeps the subcloud registry and the subcloud groups.
// Implementations: sqlStore (SQLite, PostgreSQL).
type SubcloudStore interface {
	Subcloud(ctx context.Context, name string) (Subcloud, error)
	// Subclouds lists by name; filters: SubcloudFilters.
	Subclouds(ctx context.Context, opts rest.ListOptions) ([]Subcloud, string, error)
	// CreateSubcloud adds s in one transaction: ErrSubcloudExists,
	// ErrBootstrapAddressInUse, or ErrSubcloudGroupNotFound, and then
	// nothing is stored. An empty group is DefaultGroup.
	CreateSubcloud(ctx context.Context, s Subcloud) error
	// UpdateSubcloud applies fn to the stored subcloud in one transaction;
	// a changed group or bootstrap address is checked as CreateSubcloud does.
	UpdateSubcloud(ctx context.Context, name string, fn func(*Subcloud) error) (Subcloud, error)
	// UpdateSubclouds applies fn to each named stored subcloud, all in one
	// transaction, and returns them as stored, by name. Names not in the
	// registry are left out. fn may not change a subcloud's group or
	// bootstrap address; an error from fn changes nothing.
	UpdateSubclouds(ctx context.Context, names []string, fn func(*Subcloud) error) ([]Subcloud, error)
	// DeleteSubcloud removes the subcloud if check, when not nil, accepts
	// it as it is inside the deleting transaction.
	DeleteSubcloud(ctx context.Context, name string, check func(Subcloud) error) error

	SubcloudGroup(ctx context.Context, name string) (SubcloudGroup, error)
	// SubcloudGroups lists by name; filters: SubcloudGroupFilters.
	SubcloudGroups(ctx context.Context, opts rest.ListOptions) ([]SubcloudGroup, string, error)
	CreateSubcloudGroup(ctx context.Context, g SubcloudGroup) error
	// UpdateSubcloudGroup applies fn in one transaction; a new name moves
	// the group's members with it. DefaultGroup keeps its name.
	UpdateSubcloudGroup(ctx context.Context, name string, fn func(*SubcloudGroup) error) (SubcloudGroup, error)
	// DeleteSubcloudGroup removes an empty group other than DefaultGroup.
	DeleteSubcloudGroup(ctx context.Context, name string) error
}

// SubcloudFilters are the filter fields Subclouds accepts.
var SubcloudFilters = []string{"shape", "availability", "management", "status", "deploy_status", "group"}
