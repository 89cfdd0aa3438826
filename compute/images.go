package compute

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// Image is a bootable disk stored at a site, addressed by the SHA-256 of
// its bytes (DATA_DIR/images/<checksum>). Several images may share one
// file.
type Image struct {
	ID         string      `json:"id"` // UUID
	Name       string      `json:"name"`
	Status     ImageStatus `json:"status"`
	DiskFormat DiskFormat  `json:"disk_format"`
	Visibility Visibility  `json:"visibility"`
	Project    string      `json:"project"`  // the owner project
	Checksum   string      `json:"checksum"` // SHA-256 of the bytes, lower-case hex
	Size       int64       `json:"size"`     // bytes
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

// ImageStatus is an image's place in its life cycle (Glance's names).
type ImageStatus string

// Image statuses.
const (
	ImageQueued ImageStatus = "queued" // recorded, no bytes yet (or a failed upload was discarded)
	ImageSaving ImageStatus = "saving" // an upload is streaming in
	ImageActive ImageStatus = "active" // the bytes are stored and verified
	ImageKilled ImageStatus = "killed" // storing the bytes failed on the site's side; only delete remains
	// ImageDeleted is where every image ends; its record is removed, so
	// no API answer shows it.
	ImageDeleted ImageStatus = "deleted"
)

// imageNext is the image state machine. A rejected upload (bad checksum,
// truncated, too large, wrong format) goes back from saving to queued so
// the owner can upload again, as current Glance does; a failure to store
// verified bytes (disk full, I/O error) kills the image.
var imageNext = map[ImageStatus][]ImageStatus{
	ImageQueued: {ImageSaving, ImageDeleted},
	ImageSaving: {ImageActive, ImageQueued, ImageKilled},
	ImageActive: {ImageDeleted},
	ImageKilled: {ImageDeleted},
}

// Valid reports whether s is a known status.
func (s ImageStatus) Valid() bool { _, ok := imageNext[s]; return ok || s == ImageDeleted }

// CanTo reports whether an image may move from s to next.
func (s ImageStatus) CanTo(next ImageStatus) bool { return slices.Contains(imageNext[s], next) }

// DiskFormat is the format of an image's bytes.
type DiskFormat string

// Disk formats.
const (
	FormatRaw   DiskFormat = "raw"
	FormatQCOW2 DiskFormat = "qcow2"
)

// Valid reports whether f is a known format.
func (f DiskFormat) Valid() bool { return f == FormatRaw || f == FormatQCOW2 }

// QCOW2Magic starts every qcow2 file.
const QCOW2Magic = "QFI\xfb"

// DetectFormat tells qcow2 from raw by the first bytes of a file (at
// least 4 of them; fewer is raw).
func DetectFormat(head []byte) DiskFormat {
	if len(head) >= 4 && string(head[:4]) == QCOW2Magic {
		return FormatQCOW2
	}
	return FormatRaw
}

// Visibility says who may use an image or flavor.
type Visibility string

// Visibilities.
const (
	Public  Visibility = "public"  // every project
	Private Visibility = "private" // its owner project (and admins)
)

// Valid reports whether v is a known visibility.
func (v Visibility) Valid() bool { return v == Public || v == Private }

// ImageFilters are the filters GET /v1/images accepts.
var ImageFilters = []string{"status", "disk_format", "visibility", "project", "checksum"}

// Errors of images and flavors.
var (
	ErrImageNotFound    = errs.New(errs.NotFound, "image not found")
	ErrImageExists      = errs.New(errs.Conflict, "an image with that name exists")
	ErrImageInUse       = errs.New(errs.Conflict, "image in use")
	ErrImageTransition  = errs.New(errs.InvalidTransition, "invalid image state transition")
	ErrFlavorNotFound   = errs.New(errs.NotFound, "flavor not found")
	ErrFlavorExists     = errs.New(errs.Conflict, "a flavor with that name or ID exists")
	ErrChecksumMismatch = errs.New(errs.Invalid, "the uploaded bytes do not match the image's checksum")
	ErrSizeMismatch     = errs.New(errs.Invalid, "the uploaded bytes are not the image's size")
	ErrFormatMismatch   = errs.New(errs.Invalid, "the uploaded bytes are not in the image's disk format")
	ErrImageTooLarge    = errs.New(errs.TooLarge, "image larger than the site accepts")
)

// DefaultProject owns what is created without naming a project (Keystone's
// admin project).
const DefaultProject = "admin"

var (
	resourceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	projectName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	sha256Hex    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateName checks an image or flavor name: 1–63 characters, letters,
// digits, '.', '_' and '-', starting with a letter or digit.
func ValidateName(field, name string) error {
	if !resourceName.MatchString(name) {
		return errs.Field(field, "must be 1-63 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
	}
	return nil
}

// ValidateProject checks a project name.
func ValidateProject(field, p string) error {
	if !projectName.MatchString(p) {
		return errs.Field(field, "must be 1-64 characters of letters, digits, '.', '_' and '-'")
	}
	return nil
}

// ValidateChecksum checks a SHA-256 in lower-case hex.
func ValidateChecksum(field, sum string) error {
	if !sha256Hex.MatchString(sum) {
		return errs.Field(field, "must be a SHA-256 as 64 lower-case hex digits")
	}
	return nil
}

// Validate checks a new image record's fields; maxSize caps its size.
func (im Image) Validate(maxSize int64) error {
	if err := ValidateName("name", im.Name); err != nil {
		return err
	}
	if !im.DiskFormat.Valid() {
		return errs.Field("disk_format", "must be raw or qcow2")
	}
	if !im.Visibility.Valid() {
		return errs.Field("visibility", "must be public or private")
	}
	if err := ValidateProject("project", im.Project); err != nil {
		return err
	}
	if err := ValidateChecksum("checksum", im.Checksum); err != nil {
		return err
	}
	if im.Size < 1 || im.Size > maxSize {
		return errs.Field("size", "must be from 1 to %d bytes", maxSize)
	}
	return nil
}

// ImageStore keeps a site's image records (not their bytes).
type ImageStore interface {
	// CreateImage records a new image; ErrImageExists if its name is taken.
	CreateImage(ctx context.Context, im Image) (Image, error)
	// Image finds an image by ID or name.
	Image(ctx context.Context, id string) (Image, error)
	// Images lists images by name, after opts.After, filtered by ImageFilters.
	Images(ctx context.Context, opts page.Options) ([]Image, string, error)
	// TransitionImage moves image id from status from to status to,
	// atomically (ErrImageTransition if it is not in from, or the table
	// forbids the move), applying set (which may be nil) to the record.
	TransitionImage(ctx context.Context, id string, from, to ImageStatus, set func(*Image)) (Image, error)
	// DeleteImage removes image id's record.
	DeleteImage(ctx context.Context, id string) error
	// ImagesWithChecksum counts the images, other than except, whose bytes
	// have this checksum and may be stored (saving or active).
	ImagesWithChecksum(ctx context.Context, sum, except string) (int, error)
	// RequeueSaving puts every saving image back to queued (at start: an
	// upload cut off by a restart left no file behind).
	RequeueSaving(ctx context.Context) (int, error)
}

// Flavor is a virtual hardware template for servers.
type Flavor struct {
	ID        string    `json:"id"` // UUID
	Name      string    `json:"name"`
	VCPUs     int       `json:"vcpus"`
	RAMMiB    int       `json:"ram_mib"`
	DiskGiB   int       `json:"disk_gib"`
	Public    bool      `json:"public"`
	Project   string    `json:"project"` // the owner project; matters when not public
	CreatedAt time.Time `json:"created_at"`
}

// Flavor limits.
const (
	MinVCPUs, MaxVCPUs     = 1, 64
	MinRAMMiB, MaxRAMMiB   = 64, 1048576
	MinDiskGiB, MaxDiskGiB = 1, 10000
)

// Validate checks a new flavor's fields.
func (f Flavor) Validate() error {
	if err := ValidateName("name", f.Name); err != nil {
		return err
	}
	if f.VCPUs < MinVCPUs || f.VCPUs > MaxVCPUs {
		return errs.Field("vcpus", "must be from %d to %d", MinVCPUs, MaxVCPUs)
	}
	if f.RAMMiB < MinRAMMiB || f.RAMMiB > MaxRAMMiB {
		return errs.Field("ram_mib", "must be from %d to %d", MinRAMMiB, MaxRAMMiB)
	}
	if f.DiskGiB < MinDiskGiB || f.DiskGiB > MaxDiskGiB {
		return errs.Field("disk_gib", "must be from %d to %d", MinDiskGiB, MaxDiskGiB)
	}
	return ValidateProject("project", f.Project)
}

// FlavorStore keeps a site's flavors.
type FlavorStore interface {
	// CreateFlavor records a new flavor, with f.ID if set (a UUID);
	// ErrFlavorExists if its name or ID is taken.
	CreateFlavor(ctx context.Context, f Flavor) (Flavor, error)
	// Flavor finds a flavor by ID or name.
	Flavor(ctx context.Context, id string) (Flavor, error)
	// Flavors lists flavors by name, after opts.After.
	Flavors(ctx context.Context, opts page.Options) ([]Flavor, string, error)
	// DeleteFlavor removes flavor id.
	DeleteFlavor(ctx context.Context, id string) error
}

// transitionError explains a refused image transition.
func transitionError(name string, from, to ImageStatus) error {
	return fmt.Errorf("%w: image %s is %s, cannot become %s", ErrImageTransition, name, from, to)
}

// CheckTransition returns nil if the image may move from its status to next.
func (im Image) CheckTransition(next ImageStatus) error {
	if !im.Status.CanTo(next) {
		return transitionError(im.Name, im.Status, next)
	}
	return nil
}
