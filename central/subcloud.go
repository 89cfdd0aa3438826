package central

import (
	"context"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// Availability is whether central can see a subcloud.
type Availability string

const (
	Online  Availability = "online"
	Offline Availability = "offline"
)

// Management is whether central manages (syncs, orchestrates) a subcloud.
type Management string

const (
	Managed   Management = "managed"
	Unmanaged Management = "unmanaged"
)

// SyncStatus is the state of one synchronised resource type at a subcloud.
type SyncStatus string

const (
	InSync      SyncStatus = "in-sync"
	OutOfSync   SyncStatus = "out-of-sync"
	SyncUnknown SyncStatus = "unknown"
)

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
	Name            string                `json:"name"`
	Shape           inventory.Shape       `json:"shape"`
	Availability    Availability          `json:"availability"`
	Management      Management            `json:"management"`
	DeployStatus    string                `json:"deploy_status"`
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
)

// SubcloudStore keeps the subcloud registry. Implementations: centraldb.
type SubcloudStore interface {
	Subcloud(ctx context.Context, name string) (Subcloud, error)
	// Subclouds lists by name; filters: shape, availability, management, status.
	Subclouds(ctx context.Context, opts rest.ListOptions) ([]Subcloud, string, error)
	CreateSubcloud(ctx context.Context, s Subcloud) error
	// UpdateSubcloud applies fn to the stored subcloud in one transaction.
	UpdateSubcloud(ctx context.Context, name string, fn func(*Subcloud) error) (Subcloud, error)
	DeleteSubcloud(ctx context.Context, name string) error
}

// SubcloudFilters are the filter fields Subclouds accepts.
var SubcloudFilters = []string{"shape", "availability", "management", "status"}
