// Package servicemgr/servicedb keeps a site's service group specs in its
// SQL store through gorm. Where each group's members run, and their
// epochs, live in etcd (servicemgr.Ledger), not here. Its gorm models
// never leave the package.
package servicedb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/servicemgr"
)

type groupRow struct {
	Name      string    `gorm:"primaryKey;size:63"`
	Spec      string    `gorm:"type:text;not null"` // JSON of servicemgr.Spec
	Source    string    `gorm:"size:8;not null"`    // api or config
	CreatedAt time.Time `gorm:"autoCreateTime:false"`
	UpdatedAt time.Time `gorm:"autoUpdateTime:false"`
}

func (groupRow) TableName() string { return "service_groups" }

// Store implements servicemgr.Specs.
type Store struct{ db *sqldb.DB }

var _ servicemgr.Specs = (*Store)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &groupRow{}); err != nil {
		return nil, fmt.Errorf("servicedb: migrate: %w", err)
	}
	return &Store{db: db}, nil
}

func toRecord(r groupRow) (servicemgr.Record, error) {
	var s servicemgr.Spec
	if err := json.Unmarshal([]byte(r.Spec), &s); err != nil {
		return servicemgr.Record{}, fmt.Errorf("servicedb: group %s: %w", r.Name, err)
	}
	return servicemgr.Record{Spec: s, Source: r.Source, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}, nil
}

// Groups lists every group by name.
func (s *Store) Groups(ctx context.Context) ([]servicemgr.Record, error) {
	var rows []groupRow
	if err := s.db.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("servicedb: groups: %w", err)
	}
	out := make([]servicemgr.Record, 0, len(rows))
	for _, r := range rows {
		rec, err := toRecord(r)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// Put creates a group, or replaces its spec (keeping its creation time);
// with create set, an existing group is a conflict.
func (s *Store) Put(ctx context.Context, rec servicemgr.Record, create bool) (servicemgr.Record, error) {
	b, err := json.Marshal(rec.Spec)
	if err != nil {
		return servicemgr.Record{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	row := groupRow{Name: rec.Spec.Name, Spec: string(b), Source: rec.Source, CreatedAt: now, UpdatedAt: now}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var old groupRow
		switch err := tx.Where("name = ?", row.Name).Take(&old).Error; {
		case err == nil:
			if create {
				return errs.Wrapf(errs.Conflict, "service group %q exists", row.Name)
			}
			row.CreatedAt = old.CreatedAt
			return tx.Model(&groupRow{}).Where("name = ?", row.Name).
				Updates(map[string]any{"spec": row.Spec, "source": row.Source, "updated_at": row.UpdatedAt}).Error
		case errors.Is(err, gorm.ErrRecordNotFound):
			return tx.Create(&row).Error
		default:
			return err
		}
	})
	if err != nil {
		if errors.Is(err, errs.Conflict) {
			return servicemgr.Record{}, err
		}
		if sqldb.IsUniqueViolation(err) {
			return servicemgr.Record{}, errs.Wrapf(errs.Conflict, "service group %q exists", row.Name)
		}
		return servicemgr.Record{}, fmt.Errorf("servicedb: put %s: %w", row.Name, err)
	}
	return toRecord(row)
}

// Delete removes a group.
func (s *Store) Delete(ctx context.Context, name string) error {
	res := s.db.WithContext(ctx).Where("name = ?", name).Delete(&groupRow{})
	if res.Error != nil {
		return fmt.Errorf("servicedb: delete %s: %w", name, res.Error)
	}
	if res.RowsAffected == 0 {
		return errs.Wrapf(errs.NotFound, "service group %q not found", name)
	}
	return nil
}
