// Package strategydb keeps a site's orchestration strategies
// (strategy.Strategy, one per type) in its SQL store through gorm. Every
// change is a compare-and-swap on the strategy's revision, so the
// executor's step updates and an operator's abort never overwrite each
// other. Its gorm models never leave the package.
package strategydb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

type strategyRow struct {
	Type      string `gorm:"primaryKey;size:32"`
	State     string `gorm:"size:16;not null"`
	Rev       uint64 `gorm:"not null"`
	Doc       []byte `gorm:"not null"` // the strategy as JSON
	CreatedAt time.Time
	UpdatedAt time.Time
}

func (strategyRow) TableName() string { return "sw_strategies" }

// Store keeps strategies.
type Store struct{ db *sqldb.DB }

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &strategyRow{}); err != nil {
		return nil, fmt.Errorf("strategydb: migrate: %w", err)
	}
	return &Store{db: db}, nil
}

func toRow(s strategy.Strategy) (strategyRow, error) {
	doc, err := json.Marshal(s)
	if err != nil {
		return strategyRow{}, err
	}
	return strategyRow{Type: string(s.Type), State: string(s.State), Rev: s.Rev, Doc: doc, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}, nil
}

func fromRow(row strategyRow) (strategy.Strategy, error) {
	var s strategy.Strategy
	if err := json.Unmarshal(row.Doc, &s); err != nil {
		return s, fmt.Errorf("strategydb: strategy %s: %w", row.Type, err)
	}
	s.Rev = row.Rev
	s.CreatedAt, s.UpdatedAt = row.CreatedAt.UTC(), row.UpdatedAt.UTC()
	if s.Stages == nil {
		s.Stages = []strategy.Stage{}
	}
	return s, nil
}

// Strategy returns the strategy of type t.
func (s *Store) Strategy(ctx context.Context, t strategy.Type) (strategy.Strategy, error) {
	var row strategyRow
	err := s.db.WithContext(ctx).Where("type = ?", string(t)).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return strategy.Strategy{}, strategy.ErrNotFound
	}
	if err != nil {
		return strategy.Strategy{}, fmt.Errorf("strategydb: strategy: %w", err)
	}
	return fromRow(row)
}

// Create stores a new strategy; one of its type must not exist.
func (s *Store) Create(ctx context.Context, st strategy.Strategy) (strategy.Strategy, error) {
	if !st.Type.Valid() || !st.State.Valid() {
		return strategy.Strategy{}, fmt.Errorf("strategydb: create: type %q state %q", st.Type, st.State)
	}
	st.Rev = 1
	now := time.Now().UTC().Truncate(time.Microsecond)
	if st.CreatedAt.IsZero() {
		st.CreatedAt = now
	}
	st.CreatedAt = st.CreatedAt.Truncate(time.Microsecond)
	st.UpdatedAt = st.CreatedAt
	row, err := toRow(st)
	if err != nil {
		return st, err
	}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return strategy.Strategy{}, strategy.ErrExists
		}
		return strategy.Strategy{}, fmt.Errorf("strategydb: create: %w", err)
	}
	return fromRow(row)
}

// errRace: another writer changed the strategy between read and write.
var errRace = errors.New("strategydb: concurrent update")

// Update changes a strategy: fn sees the stored strategy and changes it
// (an error aborts). The write is conditional on the revision read, and
// retried on a concurrent change.
func (s *Store) Update(ctx context.Context, t strategy.Type, fn func(*strategy.Strategy) error) (strategy.Strategy, error) {
	for {
		cur, err := s.Strategy(ctx, t)
		if err != nil {
			return cur, err
		}
		rev := cur.Rev
		if err := fn(&cur); err != nil {
			return cur, err
		}
		if !cur.State.Valid() {
			return cur, fmt.Errorf("strategydb: strategy %s: unknown state %q", t, cur.State)
		}
		cur.Type, cur.Rev = t, rev+1
		cur.UpdatedAt = time.Now().UTC().Truncate(time.Microsecond)
		row, err := toRow(cur)
		if err != nil {
			return cur, err
		}
		res := s.db.WithContext(ctx).Model(&strategyRow{}).Where("type = ? AND rev = ?", string(t), rev).
			Updates(map[string]any{"state": row.State, "rev": row.Rev, "doc": row.Doc, "updated_at": cur.UpdatedAt})
		if res.Error != nil {
			return cur, fmt.Errorf("strategydb: update: %w", res.Error)
		}
		if res.RowsAffected == 1 {
			return cur, nil
		}
		if err := ctx.Err(); err != nil {
			return cur, err
		}
		// errRace: read again and let fn decide on the new state.
	}
}

// Delete drops the strategy of type t; fn (may be nil) vets it first.
func (s *Store) Delete(ctx context.Context, t strategy.Type, fn func(strategy.Strategy) error) error {
	cur, err := s.Strategy(ctx, t)
	if err != nil {
		return err
	}
	if fn != nil {
		if err := fn(cur); err != nil {
			return err
		}
	}
	res := s.db.WithContext(ctx).Where("type = ? AND rev = ?", string(t), cur.Rev).Delete(&strategyRow{})
	if res.Error != nil {
		return fmt.Errorf("strategydb: delete: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: the strategy changed while being deleted; try again", errRace)
	}
	return nil
}
