package central

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

type subcloudRow struct {
	Name         string `gorm:"primaryKey;size:63"`
	Shape        string `gorm:"size:16;index"`
	Availability string `gorm:"size:16;index"`
	Management   string `gorm:"size:16"`
	Status       string `gorm:"size:16;index"`
	Doc          []byte `gorm:"not null"`
	CreatedAt    time.Time
}

func (subcloudRow) TableName() string { return "dc_subclouds" }

// sqlStore implements SubcloudStore on SQLite or PostgreSQL.
type sqlStore struct{ db *sqldb.DB }

var _ SubcloudStore = (*sqlStore)(nil)

// OpenSubcloudStore migrates the schema and returns the subcloud registry
// kept in db.
func OpenSubcloudStore(ctx context.Context, db *sqldb.DB) (SubcloudStore, error) {
	if err := sqldb.Migrate(ctx, db, &subcloudRow{}); err != nil {
		return nil, fmt.Errorf("central: migrate: %w", err)
	}
	return &sqlStore{db: db}, nil
}

func fromRow(r subcloudRow) (Subcloud, error) {
	var s Subcloud
	if err := json.Unmarshal(r.Doc, &s); err != nil {
		return s, fmt.Errorf("central: subcloud %s: %w", r.Name, err)
	}
	s.CreatedAt = r.CreatedAt.UTC()
	return s, nil
}

func (s *sqlStore) Subcloud(ctx context.Context, name string) (Subcloud, error) {
	var r subcloudRow
	err := s.db.WithContext(ctx).Where("name = ?", name).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Subcloud{}, fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
	}
	if err != nil {
		return Subcloud{}, err
	}
	return fromRow(r)
}

func (s *sqlStore) Subclouds(ctx context.Context, opts rest.ListOptions) ([]Subcloud, string, error) {
	q := s.db.WithContext(ctx).Model(&subcloudRow{})
	for _, f := range SubcloudFilters {
		if v, ok := opts.Filters[f]; ok {
			q = q.Where(f+" = ?", v)
		}
	}
	var rows []subcloudRow
	if err := sqldb.Page(q, "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r subcloudRow) string { return r.Name })
	out := make([]Subcloud, 0, len(rows))
	for _, r := range rows {
		sc, err := fromRow(r)
		if err != nil {
			return nil, "", err
		}
		out = append(out, sc)
	}
	return out, next, nil
}

func (s *sqlStore) CreateSubcloud(ctx context.Context, sc Subcloud) error {
	if sc.CreatedAt.IsZero() {
		sc.CreatedAt = time.Now().UTC()
	}
	doc, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	err = s.db.WithContext(ctx).Create(&subcloudRow{Name: sc.Name, Shape: string(sc.Shape),
		Availability: string(sc.Availability), Management: string(sc.Management), Status: string(sc.Status),
		Doc: doc, CreatedAt: sc.CreatedAt}).Error
	if err != nil && sqldb.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %s", ErrSubcloudExists, sc.Name)
	}
	return err
}

func (s *sqlStore) UpdateSubcloud(ctx context.Context, name string, fn func(*Subcloud) error) (Subcloud, error) {
	var out Subcloud
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r subcloudRow
		q := tx
		if s.db.Kind == sqldb.Postgres { // SQLite writers are serialised already (BEGIN IMMEDIATE)
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		err := q.Where("name = ?", name).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
		}
		if err != nil {
			return err
		}
		sc, err := fromRow(r)
		if err != nil {
			return err
		}
		if err := fn(&sc); err != nil {
			return err
		}
		sc.Name = name // the key never changes
		doc, err := json.Marshal(sc)
		if err != nil {
			return err
		}
		out = sc
		return tx.Model(&subcloudRow{}).Where("name = ?", name).Updates(map[string]any{
			"shape": string(sc.Shape), "availability": string(sc.Availability), "management": string(sc.Management),
			"status": string(sc.Status), "doc": doc}).Error
	})
	return out, err
}

func (s *sqlStore) DeleteSubcloud(ctx context.Context, name string) error {
	res := s.db.WithContext(ctx).Where("name = ?", name).Delete(&subcloudRow{})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
	}
	return nil
}
