package central

import (
	"regexp"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// DefaultGroup is the subcloud group every subcloud belongs to unless it is
// put in another. It always exists: it cannot be deleted or renamed.
const DefaultGroup = "Default"

// ApplyType is how an update (patch) is applied across a group's subclouds.
type ApplyType string

const (
	ApplySerial   ApplyType = "serial"
	ApplyParallel ApplyType = "parallel"
)

// Valid reports whether t is a known apply type.
func (t ApplyType) Valid() bool { return t == ApplySerial || t == ApplyParallel }

// Bounds of SubcloudGroup.MaxParallelSubclouds.
const (
	MinParallelSubclouds = 1
	MaxParallelSubclouds = 500
)

// SubcloudGroup is a set of subclouds that fleet orchestration updates
// together: serially, or up to MaxParallelSubclouds at a time. JSON keys are
// the API contract (StarlingX names).
type SubcloudGroup struct {
	Name                 string    `json:"name"`
	Description          string    `json:"description"`
	UpdateApplyType      ApplyType `json:"update_apply_type"`
	MaxParallelSubclouds int       `json:"max_parallel_subclouds"`
	Subclouds            int       `json:"subclouds"` // members, counted when read
	CreatedAt            time.Time `json:"created_at"`
}

// Errors about subcloud groups.
var (
	ErrSubcloudGroupNotFound = errs.New(errs.NotFound, "subcloud group not found")
	ErrSubcloudGroupExists   = errs.New(errs.Conflict, "subcloud group already exists")
	// ErrSubcloudGroupInUse: the group has members, or is DefaultGroup.
	ErrSubcloudGroupInUse = errs.New(errs.Conflict, "subcloud group in use")
)

// SubcloudGroupFilters are the filter fields SubcloudGroups accepts.
var SubcloudGroupFilters = []string{"update_apply_type"}

// Group names keep StarlingX's "Default", so upper case is allowed.
var groupName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]{0,62}$`)

// ValidateGroupName checks a group name given in field.
func ValidateGroupName(field, name string) error {
	if !groupName.MatchString(name) {
		return errs.Field(field, "must be 1-63 characters: a letter, then letters, digits, '.', '_' or '-'")
	}
	return nil
}

// maxText bounds free-text fields (description, location).
const maxText = 255

// Validate checks g as it would be stored.
func (g SubcloudGroup) Validate() error {
	if err := ValidateGroupName("name", g.Name); err != nil {
		return err
	}
	if len(g.Description) > maxText {
		return errs.Field("description", "at most %d bytes", maxText)
	}
	if !g.UpdateApplyType.Valid() {
		return errs.Field("update_apply_type", "must be serial or parallel")
	}
	if g.MaxParallelSubclouds < MinParallelSubclouds || g.MaxParallelSubclouds > MaxParallelSubclouds {
		return errs.Field("max_parallel_subclouds", "must be from %d to %d", MinParallelSubclouds, MaxParallelSubclouds)
	}
	return nil
}

// defaultGroup is DefaultGroup as first created (StarlingX's defaults).
func defaultGroup() SubcloudGroup {
	return SubcloudGroup{Name: DefaultGroup, Description: "Default subcloud group",
		UpdateApplyType: ApplyParallel, MaxParallelSubclouds: 2}
}
