package inventorydb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// bmcSecretRow holds a host's BMC access, sealed by the caller (the
// inventory never sees it in clear), and the Redfish certificate pinned on
// first use.
type bmcSecretRow struct {
	HostUUID  string `gorm:"primaryKey;size:36"`
	Sealed    []byte
	Pinned    string `gorm:"size:80"`
	UpdatedAt time.Time
}

func (bmcSecretRow) TableName() string { return "inv_bmc_secrets" }

// ErrNoBMCSecret reports a host without BMC access.
var ErrNoBMCSecret = errors.New("inventorydb: no BMC access for the host")

// SetBMCSecret stores a host's sealed BMC access; a new one forgets the
// pinned certificate.
func (s *Store) SetBMCSecret(ctx context.Context, hostUUID string, sealed []byte) error {
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).
		Create(&bmcSecretRow{HostUUID: hostUUID, Sealed: sealed, UpdatedAt: time.Now().UTC()}).Error
}

// BMCSecret returns a host's sealed BMC access and its pinned certificate.
func (s *Store) BMCSecret(ctx context.Context, hostUUID string) ([]byte, string, error) {
	var r bmcSecretRow
	err := s.db.WithContext(ctx).Where("host_uuid = ?", hostUUID).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, "", fmt.Errorf("%w: %s", ErrNoBMCSecret, hostUUID)
	}
	return r.Sealed, r.Pinned, err
}

// SetBMCPin records the Redfish certificate pinned for a host's BMC.
func (s *Store) SetBMCPin(ctx context.Context, hostUUID, pin string) error {
	return s.db.WithContext(ctx).Model(&bmcSecretRow{}).Where("host_uuid = ?", hostUUID).
		Updates(map[string]any{"pinned": pin, "updated_at": time.Now().UTC()}).Error
}

// DeleteBMCSecret forgets a host's BMC access.
func (s *Store) DeleteBMCSecret(ctx context.Context, hostUUID string) error {
	return s.db.WithContext(ctx).Where("host_uuid = ?", hostUUID).Delete(&bmcSecretRow{}).Error
}
