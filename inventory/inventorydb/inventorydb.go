// Package inventorydb keeps a site's hosts in a SQL store through gorm.
// Its gorm models never leave the package.
package inventorydb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
)

type hostRow struct {
	UUID           string `gorm:"primaryKey;size:36"`
	Name           string `gorm:"uniqueIndex;size:63;not null"`
	Personality    string `gorm:"size:16;index"`
	Provisioning   string `gorm:"size:16"`
	Administrative string `gorm:"size:16"`
	Operational    string `gorm:"size:16"`
	Availability   string `gorm:"size:16"`
	Doc            []byte `gorm:"not null"` // the whole host as JSON; columns above are for filtering
	Rev            uint64 `gorm:"not null"`
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

func (hostRow) TableName() string { return "inv_hosts" }

// Store implements inventory.Store.
type Store struct{ db *sqldb.DB }

var _ inventory.Store = (*Store)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := db.WithContext(ctx).AutoMigrate(&hostRow{}); err != nil {
		return nil, fmt.Errorf("inventorydb: migrate: %w", err)
	}
	return &Store{db: db}, nil
}

func fromRow(r hostRow) (inventory.Host, error) {
	var h inventory.Host
	if err := json.Unmarshal(r.Doc, &h); err != nil {
		return h, fmt.Errorf("inventorydb: host %s: %w", r.UUID, err)
	}
	h.Rev, h.CreatedAt, h.UpdatedAt = r.Rev, r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return h, nil
}

func (s *Store) find(tx *gorm.DB, id string) (hostRow, error) {
	var r hostRow
	err := tx.Where("uuid = ? OR name = ?", id, id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, fmt.Errorf("%w: %s", inventory.ErrHostNotFound, id)
	}
	return r, err
}

func (s *Store) Host(ctx context.Context, id string) (inventory.Host, error) {
	r, err := s.find(s.db.WithContext(ctx), id)
	if err != nil {
		return inventory.Host{}, err
	}
	return fromRow(r)
}

func (s *Store) PutHost(ctx context.Context, h inventory.Host, ifRev uint64) (inventory.Host, error) {
	if err := h.Validate(); err != nil {
		return inventory.Host{}, err
	}
	now := time.Now().UTC()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if ifRev == 0 {
			h.Rev, h.CreatedAt, h.UpdatedAt = 1, now, now
			doc, err := json.Marshal(h)
			if err != nil {
				return err
			}
			err = tx.Create(&hostRow{UUID: h.UUID, Name: h.Name, Personality: string(h.Personality),
				Provisioning: string(h.Provisioning), Administrative: string(h.Administrative),
				Operational: string(h.Operational), Availability: string(h.Availability),
				Doc: doc, Rev: 1, CreatedAt: now, UpdatedAt: now}).Error
			if err != nil && sqldb.IsUniqueViolation(err) {
				return fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
			}
			return err
		}
		h.Rev, h.UpdatedAt = ifRev+1, now
		doc, err := json.Marshal(h)
		if err != nil {
			return err
		}
		res := tx.Model(&hostRow{}).Where("uuid = ? AND rev = ?", h.UUID, ifRev).Updates(map[string]any{
			"name": h.Name, "personality": string(h.Personality), "provisioning": string(h.Provisioning),
			"administrative": string(h.Administrative), "operational": string(h.Operational),
			"availability": string(h.Availability), "doc": doc, "rev": ifRev + 1, "updated_at": now,
		})
		if res.Error != nil {
			if sqldb.IsUniqueViolation(res.Error) {
				return fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
			}
			return res.Error
		}
		if res.RowsAffected == 0 {
			if _, err := s.find(tx, h.UUID); err != nil {
				return err
			}
			return fmt.Errorf("%w: %s (revision %d)", inventory.ErrStale, h.Name, ifRev)
		}
		var r hostRow
		if err := tx.Where("uuid = ?", h.UUID).Take(&r).Error; err != nil {
			return err
		}
		h.CreatedAt = r.CreatedAt
		return nil
	})
	if err != nil {
		return inventory.Host{}, err
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return h, nil
}

func (s *Store) Hosts(ctx context.Context, opts rest.ListOptions) ([]inventory.Host, string, error) {
	q := s.db.WithContext(ctx).Model(&hostRow{})
	for _, f := range inventory.HostFilters {
		if v, ok := opts.Filters[f]; ok {
			q = q.Where(f+" = ?", v)
		}
	}
	var rows []hostRow
	if err := sqldb.Page(q, "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r hostRow) string { return r.Name })
	out := make([]inventory.Host, 0, len(rows))
	for _, r := range rows {
		h, err := fromRow(r)
		if err != nil {
			return nil, "", err
		}
		out = append(out, h)
	}
	return out, next, nil
}

func (s *Store) DeleteHost(ctx context.Context, id string) error {
	res := s.db.WithContext(ctx).Where("uuid = ? OR name = ?", id, id).Delete(&hostRow{})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", inventory.ErrHostNotFound, id)
	}
	return nil
}
