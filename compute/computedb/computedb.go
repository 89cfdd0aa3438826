// Package computedb keeps a site's compute records — images, flavors,
// servers and server groups —
// in its SQL store through gorm. A site holds tens of images and flavors,
// so every read goes to SQL; status changes are compare-and-set in one
// UPDATE, so two uploads to one image never both start. Its gorm models
// never leave the package.
package computedb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

type imageRow struct {
	ID         string    `gorm:"primaryKey;size:36"`
	Name       string    `gorm:"uniqueIndex;size:63;not null"`
	Status     string    `gorm:"size:16;not null;index"`
	DiskFormat string    `gorm:"size:8;not null"`
	Visibility string    `gorm:"size:8;not null"`
	Project    string    `gorm:"size:64;not null"`
	Checksum   string    `gorm:"size:64;not null;index"`
	Size       int64     `gorm:"not null"`
	CreatedAt  time.Time `gorm:"autoCreateTime:false"` // set by the store, at microsecond precision
	UpdatedAt  time.Time `gorm:"autoUpdateTime:false"`
}

func (imageRow) TableName() string { return "compute_images" }

type flavorRow struct {
	ID        string    `gorm:"primaryKey;size:36"`
	Name      string    `gorm:"uniqueIndex;size:63;not null"`
	VCPUs     int       `gorm:"column:vcpus;not null"`
	RAMMiB    int       `gorm:"column:ram_mib;not null"`
	DiskGiB   int       `gorm:"column:disk_gib;not null"`
	Public    bool      `gorm:"not null"`
	Project   string    `gorm:"size:64;not null"`
	CreatedAt time.Time `gorm:"autoCreateTime:false"`
}

func (flavorRow) TableName() string { return "compute_flavors" }

// Store implements compute.ImageStore and compute.FlavorStore.
type Store struct {
	db *sqldb.DB
	// onImage, when set, runs inside the transaction of every image
	// status change and delete (see OnImageChange).
	onImage func(tx *gorm.DB, im compute.Image, deleted bool) error
}

// OnImageChange makes hook run inside the transaction of every image
// status change (with the image as changed) and every delete (with the
// image as it was, deleted true): a hook's writes commit with the change or
// not at all, and its error aborts the change. Central records its synced
// images this way (central/image.go). Set it before the store is shared.
func (s *Store) OnImageChange(hook func(tx *gorm.DB, im compute.Image, deleted bool) error) {
	s.onImage = hook
}

var (
	_ compute.ImageStore  = (*Store)(nil)
	_ compute.FlavorStore = (*Store)(nil)
)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &imageRow{}, &flavorRow{}, &serverRow{}, &groupRow{}); err != nil {
		return nil, fmt.Errorf("computedb: migrate: %w", err)
	}
	return &Store{db: db}, nil
}

func toImage(r imageRow) compute.Image {
	return compute.Image{ID: r.ID, Name: r.Name, Status: compute.ImageStatus(r.Status),
		DiskFormat: compute.DiskFormat(r.DiskFormat), Visibility: compute.Visibility(r.Visibility),
		Project: r.Project, Checksum: r.Checksum, Size: r.Size,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

func fromImage(im compute.Image) imageRow {
	return imageRow{ID: im.ID, Name: im.Name, Status: string(im.Status), DiskFormat: string(im.DiskFormat),
		Visibility: string(im.Visibility), Project: im.Project, Checksum: im.Checksum, Size: im.Size,
		CreatedAt: im.CreatedAt, UpdatedAt: im.UpdatedAt}
}

// now is the store's clock, at the precision both engines keep.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// CreateImage records im in status queued, with im.ID when set (a UUID:
// central's images keep their ID at every site) or a new one.
func (s *Store) CreateImage(ctx context.Context, im compute.Image) (compute.Image, error) {
	if im.ID == "" {
		id, err := uuid.NewRandom()
		if err != nil {
			return compute.Image{}, err
		}
		im.ID = id.String()
	} else if u, err := uuid.Parse(im.ID); err != nil || u.String() != im.ID {
		return compute.Image{}, errs.Field("id", "must be a UUID in lower-case canonical form")
	}
	im.Status = compute.ImageQueued
	im.CreatedAt = now()
	im.UpdatedAt = im.CreatedAt
	row := fromImage(im)
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return compute.Image{}, fmt.Errorf("%w: %s (or ID %s)", compute.ErrImageExists, im.Name, im.ID)
		}
		return compute.Image{}, fmt.Errorf("computedb: create image: %w", err)
	}
	return toImage(row), nil
}

func (s *Store) findImage(db *gorm.DB, id string) (imageRow, error) {
	var rows []imageRow
	q := db.Where("name = ?", id)
	if _, err := uuid.Parse(id); err == nil {
		q = db.Where("id = ? OR name = ?", id, id)
	}
	if err := q.Order("id").Limit(2).Find(&rows).Error; err != nil {
		return imageRow{}, fmt.Errorf("computedb: image: %w", err)
	}
	for _, r := range rows { // an ID beats a name
		if r.ID == id {
			return r, nil
		}
	}
	if len(rows) == 0 {
		return imageRow{}, fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
	}
	return rows[0], nil
}

// Image finds an image by ID or name.
func (s *Store) Image(ctx context.Context, id string) (compute.Image, error) {
	r, err := s.findImage(s.db.WithContext(ctx), id)
	if err != nil {
		return compute.Image{}, err
	}
	return toImage(r), nil
}

// Images lists images ordered by name.
func (s *Store) Images(ctx context.Context, opts page.Options) ([]compute.Image, string, error) {
	q := s.db.WithContext(ctx).Model(&imageRow{})
	for k, v := range opts.Filters {
		switch k {
		case "status", "disk_format", "visibility", "project", "checksum":
			q = q.Where(k+" = ?", v)
		default:
			return nil, "", errs.Field(k, "unknown filter")
		}
	}
	var rows []imageRow
	if err := sqldb.Page(q, "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("computedb: images: %w", err)
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r imageRow) string { return r.Name })
	out := make([]compute.Image, len(rows))
	for i, r := range rows {
		out[i] = toImage(r)
	}
	return out, next, nil
}

// TransitionImage moves an image between statuses, compare-and-set.
func (s *Store) TransitionImage(ctx context.Context, id string, from, to compute.ImageStatus, set func(*compute.Image)) (compute.Image, error) {
	var out compute.Image
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		r, err := s.findImage(tx, id)
		if err != nil {
			return err
		}
		im := toImage(r)
		if im.Status != from {
			return fmt.Errorf("%w: image %s is %s, not %s", compute.ErrImageTransition, im.Name, im.Status, from)
		}
		if err := im.CheckTransition(to); err != nil {
			return err
		}
		keep := im
		if set != nil {
			set(&im)
		}
		im.ID, im.Name, im.CreatedAt = keep.ID, keep.Name, keep.CreatedAt // not for set to change
		im.Status, im.UpdatedAt = to, now()
		nr := fromImage(im)
		res := tx.Model(&imageRow{}).Where("id = ? AND status = ?", r.ID, string(from)).
			Select("status", "disk_format", "visibility", "project", "checksum", "size", "updated_at").Updates(&nr)
		if res.Error != nil {
			return fmt.Errorf("computedb: image transition: %w", res.Error)
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: image %s changed meanwhile", compute.ErrImageTransition, im.Name)
		}
		if s.onImage != nil {
			if err := s.onImage(tx, im, false); err != nil {
				return err
			}
		}
		out = im
		return nil
	})
	return out, err
}

// DeleteImage removes an image's record.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []imageRow
		if err := tx.Where("id = ?", id).Limit(1).Find(&rows).Error; err != nil {
			return fmt.Errorf("computedb: delete image: %w", err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
		}
		res := tx.Where("id = ?", id).Delete(&imageRow{})
		if res.Error != nil {
			return fmt.Errorf("computedb: delete image: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
		}
		if s.onImage != nil {
			return s.onImage(tx, toImage(rows[0]), true)
		}
		return nil
	})
}

// ImagesWithChecksum counts saving and active images with these bytes.
func (s *Store) ImagesWithChecksum(ctx context.Context, sum, except string) (int, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&imageRow{}).
		Where("checksum = ? AND id <> ? AND status IN ?", sum, except, []string{string(compute.ImageSaving), string(compute.ImageActive)}).
		Count(&n).Error
	if err != nil {
		return 0, fmt.Errorf("computedb: images by checksum: %w", err)
	}
	return int(n), nil
}

// RequeueSaving puts saving images back to queued.
func (s *Store) RequeueSaving(ctx context.Context) (int, error) {
	// A look first: with nothing to requeue, opening writes nothing (a
	// controller pair opens the store on a standby while it takes over).
	var n int64
	if err := s.db.WithContext(ctx).Model(&imageRow{}).Where("status = ?", string(compute.ImageSaving)).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("computedb: requeue images: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	res := s.db.WithContext(ctx).Model(&imageRow{}).Where("status = ?", string(compute.ImageSaving)).
		Updates(map[string]any{"status": string(compute.ImageQueued), "updated_at": now()})
	if res.Error != nil {
		return 0, fmt.Errorf("computedb: requeue images: %w", res.Error)
	}
	return int(res.RowsAffected), nil
}

func toFlavor(r flavorRow) compute.Flavor {
	return compute.Flavor{ID: r.ID, Name: r.Name, VCPUs: r.VCPUs, RAMMiB: r.RAMMiB, DiskGiB: r.DiskGiB,
		Public: r.Public, Project: r.Project, CreatedAt: r.CreatedAt.UTC()}
}

// CreateFlavor records f, with f.ID when set (a UUID: central's flavors
// keep their ID at every site) or a new one.
func (s *Store) CreateFlavor(ctx context.Context, f compute.Flavor) (compute.Flavor, error) {
	id := f.ID
	if id == "" {
		u, err := uuid.NewRandom()
		if err != nil {
			return compute.Flavor{}, err
		}
		id = u.String()
	} else if _, err := uuid.Parse(id); err != nil {
		return compute.Flavor{}, errs.Field("id", "must be a UUID")
	}
	row := flavorRow{ID: id, Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAMMiB, DiskGiB: f.DiskGiB,
		Public: f.Public, Project: f.Project, CreatedAt: now()}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return compute.Flavor{}, fmt.Errorf("%w: %s (or ID %s)", compute.ErrFlavorExists, f.Name, id)
		}
		return compute.Flavor{}, fmt.Errorf("computedb: create flavor: %w", err)
	}
	return toFlavor(row), nil
}

// Flavor finds a flavor by ID or name.
func (s *Store) Flavor(ctx context.Context, id string) (compute.Flavor, error) {
	var rows []flavorRow
	db := s.db.WithContext(ctx)
	q := db.Where("name = ?", id)
	if _, err := uuid.Parse(id); err == nil {
		q = db.Where("id = ? OR name = ?", id, id)
	}
	if err := q.Order("id").Limit(2).Find(&rows).Error; err != nil {
		return compute.Flavor{}, fmt.Errorf("computedb: flavor: %w", err)
	}
	for _, r := range rows {
		if r.ID == id {
			return toFlavor(r), nil
		}
	}
	if len(rows) == 0 {
		return compute.Flavor{}, fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, id)
	}
	return toFlavor(rows[0]), nil
}

// Flavors lists flavors ordered by name.
func (s *Store) Flavors(ctx context.Context, opts page.Options) ([]compute.Flavor, string, error) {
	if len(opts.Filters) > 0 {
		return nil, "", errors.New("computedb: flavors take no filters")
	}
	var rows []flavorRow
	if err := sqldb.Page(s.db.WithContext(ctx).Model(&flavorRow{}), "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("computedb: flavors: %w", err)
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r flavorRow) string { return r.Name })
	out := make([]compute.Flavor, len(rows))
	for i, r := range rows {
		out[i] = toFlavor(r)
	}
	return out, next, nil
}

// DeleteFlavor removes a flavor.
func (s *Store) DeleteFlavor(ctx context.Context, id string) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&flavorRow{})
	if res.Error != nil {
		return fmt.Errorf("computedb: delete flavor: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, id)
	}
	return nil
}
