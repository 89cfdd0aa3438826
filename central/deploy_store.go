package central

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/sqldb"
)

// joinTokenRow is a one-time credential with which a new site gets its link
// certificate (POST /v1/subcloud-join): only its SHA-256 is kept.
type joinTokenRow struct {
	ID        string `gorm:"primaryKey;size:36"`
	Subcloud  string `gorm:"size:63;index;not null"`
	Hash      string `gorm:"size:64;uniqueIndex;not null"`
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
}

func (joinTokenRow) TableName() string { return "dc_join_tokens" }

// deployRow keeps a subcloud's deploy as a JSON document (Deploy).
type deployRow struct {
	Subcloud  string `gorm:"primaryKey;size:63"`
	State     string `gorm:"size:16;index"`
	Doc       []byte `gorm:"not null"`
	UpdatedAt time.Time
}

func (deployRow) TableName() string { return "dc_deploys" }

// deployStore keeps deploys and join tokens in central's database.
type deployStore struct{ db *sqldb.DB }

func openDeployStore(ctx context.Context, db *sqldb.DB) (*deployStore, error) {
	if err := sqldb.Migrate(ctx, db, &joinTokenRow{}, &deployRow{}); err != nil {
		return nil, fmt.Errorf("central: migrate deploys: %w", err)
	}
	return &deployStore{db: db}, nil
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func (s *deployStore) createJoinToken(ctx context.Context, r joinTokenRow) error {
	return s.db.WithContext(ctx).Create(&r).Error
}

// joinToken finds a token by its value (ErrJoinTokenInvalid if unknown).
func (s *deployStore) joinToken(ctx context.Context, tok string) (joinTokenRow, error) {
	var r joinTokenRow
	err := s.db.WithContext(ctx).Where("hash = ?", hashToken(tok)).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, ErrJoinTokenInvalid
	}
	return r, err
}

// useJoinToken marks an unused, unexpired token used; false if another
// caller used it first or it expired meanwhile.
func (s *deployStore) useJoinToken(ctx context.Context, id string, now time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&joinTokenRow{}).Where("id = ? AND used_at IS NULL AND expires_at > ?", id, now).
		Update("used_at", now)
	return res.RowsAffected == 1, res.Error
}

// unuseJoinToken gives a token back when the join it was used for failed
// after all, so that nothing is left half-registered.
func (s *deployStore) unuseJoinToken(ctx context.Context, id string) error {
	return s.db.WithContext(ctx).Model(&joinTokenRow{}).Where("id = ?", id).Update("used_at", nil).Error
}

// deploy reads a subcloud's deploy (ErrDeployNotFound if it has none).
func (s *deployStore) deploy(ctx context.Context, subcloud string) (Deploy, error) {
	var r deployRow
	err := s.db.WithContext(ctx).Where("subcloud = ?", subcloud).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Deploy{}, fmt.Errorf("%w: %s", ErrDeployNotFound, subcloud)
	}
	if err != nil {
		return Deploy{}, err
	}
	var d Deploy
	if err := json.Unmarshal(r.Doc, &d); err != nil {
		return Deploy{}, fmt.Errorf("central: deploy of %s: %w", subcloud, err)
	}
	return d, nil
}

// putDeploy writes d (the whole record: each step is persisted as it ends).
func (s *deployStore) putDeploy(ctx context.Context, d Deploy) error {
	doc, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).
		Create(&deployRow{Subcloud: d.Subcloud, State: string(d.State), Doc: doc, UpdatedAt: d.UpdatedAt}).Error
}

// forget drops a deleted subcloud's deploy and join tokens in one
// transaction, so neither is taken for a later subcloud of that name.
func (s *deployStore) forget(ctx context.Context, subcloud string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("subcloud = ?", subcloud).Delete(&joinTokenRow{}).Error; err != nil {
			return err
		}
		return tx.Where("subcloud = ?", subcloud).Delete(&deployRow{}).Error
	})
}

// runningDeploys lists the deploys that were running: after a restart
// they resume.
func (s *deployStore) runningDeploys(ctx context.Context) ([]Deploy, error) {
	var rows []deployRow
	if err := s.db.WithContext(ctx).Where("state = ?", string(DeployRunning)).Order("subcloud").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]Deploy, 0, len(rows))
	for _, r := range rows {
		var d Deploy
		if err := json.Unmarshal(r.Doc, &d); err != nil {
			return nil, fmt.Errorf("central: deploy of %s: %w", r.Subcloud, err)
		}
		out = append(out, d)
	}
	return out, nil
}
