package inventorydb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
)

type joinTokenRow struct {
	ID          string `gorm:"primaryKey;size:36"`
	SecretHash  string `gorm:"uniqueIndex;size:64;not null"`
	Description string `gorm:"size:200"`
	CreatedBy   string `gorm:"size:63"`
	CreatedAt   time.Time
	ExpiresAt   time.Time
	UsedAt      *time.Time
	UsedBy      string `gorm:"size:36"`
}

func (joinTokenRow) TableName() string { return "inv_join_tokens" }

type hostCertRow struct {
	MachineID string `gorm:"primaryKey;size:36"`
	Serial    string `gorm:"size:64;not null"`
	IssuedAt  time.Time
	RevokedAt *time.Time
}

func (hostCertRow) TableName() string { return "inv_host_certs" }

var _ inventory.Enrollment = (*Store)(nil)

func toJoinToken(r joinTokenRow) inventory.JoinToken {
	t := inventory.JoinToken{ID: r.ID, Description: r.Description, CreatedBy: r.CreatedBy,
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC(), UsedBy: r.UsedBy}
	if r.UsedAt != nil {
		u := r.UsedAt.UTC()
		t.UsedAt = &u
	}
	return t
}

func (s *Store) CreateJoinToken(ctx context.Context, t inventory.JoinToken, hash string) error {
	return s.db.WithContext(ctx).Create(&joinTokenRow{ID: t.ID, SecretHash: hash, Description: t.Description,
		CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}).Error
}

func (s *Store) JoinTokens(ctx context.Context, opts rest.ListOptions) ([]inventory.JoinToken, string, error) {
	var rows []joinTokenRow
	if err := sqldb.Page(s.db.WithContext(ctx).Model(&joinTokenRow{}), "id", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r joinTokenRow) string { return r.ID })
	out := make([]inventory.JoinToken, len(rows))
	for i, r := range rows {
		out[i] = toJoinToken(r)
	}
	return out, next, nil
}

func (s *Store) DeleteJoinToken(ctx context.Context, id string) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&joinTokenRow{})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", inventory.ErrJoinTokenMissing, id)
	}
	return nil
}

func (s *Store) Enroll(ctx context.Context, hash string, now time.Time, h inventory.Host, cert inventory.HostCert) (inventory.Host, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	existing, known := s.byUUID[h.UUID]
	s.mu.RUnlock()
	if known {
		h = existing // a machine that joins again keeps its record
	} else {
		if err := h.Validate(); err != nil {
			return inventory.Host{}, err
		}
		h.Rev, h.CreatedAt, h.UpdatedAt = 1, now, now
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Unused, or used by this same machine (it retries when the answer
		// to its join was lost), and not expired.
		res := tx.Model(&joinTokenRow{}).
			Where("secret_hash = ? AND (used_at IS NULL OR used_by = ?) AND expires_at > ?", hash, h.UUID, now).
			Updates(map[string]any{"used_at": now, "used_by": h.UUID})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return inventory.ErrJoinRefused
		}
		if !known {
			row, err := toRow(h)
			if err != nil {
				return err
			}
			if err := tx.Create(&row).Error; err != nil {
				if sqldb.IsUniqueViolation(err) {
					return fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
				}
				return err
			}
		}
		// One current certificate per machine: the new one replaces (and so
		// revokes) any earlier one.
		if err := tx.Where("machine_id = ?", h.UUID).Delete(&hostCertRow{}).Error; err != nil {
			return err
		}
		return tx.Create(&hostCertRow{MachineID: h.UUID, Serial: cert.Serial, IssuedAt: cert.IssuedAt}).Error
	})
	if err != nil {
		return inventory.Host{}, err
	}
	s.remember(h)
	return h.Clone(), nil
}

func (s *Store) HostCert(ctx context.Context, machineID string) (inventory.HostCert, error) {
	var r hostCertRow
	err := s.db.WithContext(ctx).Where("machine_id = ?", machineID).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return inventory.HostCert{}, fmt.Errorf("%w: %s", inventory.ErrHostNotFound, machineID)
	}
	if err != nil {
		return inventory.HostCert{}, err
	}
	c := inventory.HostCert{MachineID: r.MachineID, Serial: r.Serial, IssuedAt: r.IssuedAt.UTC()}
	if r.RevokedAt != nil {
		at := r.RevokedAt.UTC()
		c.RevokedAt = &at
	}
	return c, nil
}
