package central

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// subcloudRow keeps a subcloud as a JSON document plus the columns lists
// filter on. The group and bootstrap address columns are authoritative (a
// group rename moves members without rewriting their documents; the unique
// index refuses a second subcloud on one address).
type subcloudRow struct {
	Name         string `gorm:"primaryKey;size:63"`
	Shape        string `gorm:"size:16;index"`
	Availability string `gorm:"size:16;index"`
	Management   string `gorm:"size:16"`
	Status       string `gorm:"size:16;index"`
	DeployStatus string `gorm:"size:24;index"`
	GroupName    string `gorm:"size:63;index;not null;default:Default"`
	// BootstrapAddress is NULL for a subcloud without one (NULLs never
	// collide in a unique index).
	BootstrapAddress *string `gorm:"size:64;uniqueIndex"`
	Doc              []byte  `gorm:"not null"`
	CreatedAt        time.Time
}

func (subcloudRow) TableName() string { return "dc_subclouds" }

// groupRow is a subcloud group.
type groupRow struct {
	Name        string `gorm:"primaryKey;size:63"`
	Description string `gorm:"size:255"`
	ApplyType   string `gorm:"size:16;index"`
	MaxParallel int
	CreatedAt   time.Time
}

func (groupRow) TableName() string { return "dc_subcloud_groups" }

// subcloudColumns maps list filters to columns.
var subcloudColumns = map[string]string{"shape": "shape", "availability": "availability", "management": "management",
	"status": "status", "deploy_status": "deploy_status", "group": "group_name"}

// sqlStore implements SubcloudStore on SQLite or PostgreSQL.
type sqlStore struct{ db *sqldb.DB }

var _ SubcloudStore = (*sqlStore)(nil)

// OpenSubcloudStore migrates the schema, makes sure DefaultGroup exists,
// and returns the subcloud registry kept in db.
func OpenSubcloudStore(ctx context.Context, db *sqldb.DB) (SubcloudStore, error) {
	if err := sqldb.Migrate(ctx, db, &subcloudRow{}, &groupRow{}); err != nil {
		return nil, fmt.Errorf("central: migrate: %w", err)
	}
	s := &sqlStore{db: db}
	def := defaultGroup()
	err := db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&groupRow{Name: def.Name,
		Description: def.Description, ApplyType: string(def.UpdateApplyType), MaxParallel: def.MaxParallelSubclouds,
		CreatedAt: time.Now().UTC()}).Error
	if err != nil {
		return nil, fmt.Errorf("central: default subcloud group: %w", err)
	}
	if err := s.backfillDeployStatus(ctx); err != nil {
		return nil, fmt.Errorf("central: deploy status column: %w", err)
	}
	return s, nil
}

// backfillDeployStatus fills the deploy_status column of rows written
// before it existed, from their documents.
func (s *sqlStore) backfillDeployStatus(ctx context.Context) error {
	var rows []subcloudRow
	if err := s.db.WithContext(ctx).Where("deploy_status = '' OR deploy_status IS NULL").Find(&rows).Error; err != nil {
		return err
	}
	for _, r := range rows {
		sc, err := fromRow(r)
		if err != nil {
			return err
		}
		if sc.DeployStatus == "" {
			sc.DeployStatus = DeployNotDeployed
		}
		if err := s.db.WithContext(ctx).Model(&subcloudRow{}).Where("name = ?", r.Name).
			Update("deploy_status", string(sc.DeployStatus)).Error; err != nil {
			return err
		}
	}
	return nil
}

func fromRow(r subcloudRow) (Subcloud, error) {
	var s Subcloud
	if err := json.Unmarshal(r.Doc, &s); err != nil {
		return s, fmt.Errorf("central: subcloud %s: %w", r.Name, err)
	}
	s.CreatedAt = r.CreatedAt.UTC()
	s.Group = r.GroupName
	if s.Group == "" {
		s.Group = DefaultGroup
	}
	s.BootstrapAddress = ""
	if r.BootstrapAddress != nil {
		s.BootstrapAddress = *r.BootstrapAddress
	}
	if s.DeployStatus == "" {
		s.DeployStatus = DeployNotDeployed
	}
	return s, nil
}

// toRow is sc as stored; Doc carries everything, the columns what lists
// filter on and what must be unique.
func toRow(sc Subcloud) (subcloudRow, error) {
	doc, err := json.Marshal(sc)
	if err != nil {
		return subcloudRow{}, err
	}
	r := subcloudRow{Name: sc.Name, Shape: string(sc.Shape), Availability: string(sc.Availability),
		Management: string(sc.Management), Status: string(sc.Status), DeployStatus: string(sc.DeployStatus),
		GroupName: sc.Group, Doc: doc, CreatedAt: sc.CreatedAt}
	if sc.BootstrapAddress != "" {
		a := sc.BootstrapAddress
		r.BootstrapAddress = &a
	}
	return r, nil
}

// applyRow applies fn to the subcloud stored in r; moved reports a changed
// group or bootstrap address (checked as CreateSubcloud does). The name,
// the key, never changes.
func applyRow(r subcloudRow, fn func(*Subcloud) error) (sc Subcloud, moved bool, err error) {
	if sc, err = fromRow(r); err != nil {
		return sc, false, err
	}
	before := sc
	if err := fn(&sc); err != nil {
		return sc, false, err
	}
	sc.Name = r.Name
	if sc.Group == "" {
		sc.Group = DefaultGroup
	}
	return sc, sc.Group != before.Group || sc.BootstrapAddress != before.BootstrapAddress, nil
}

// lockForUpdate locks the rows q reads until the transaction ends, on
// PostgreSQL; SQLite writers are serialised already (BEGIN IMMEDIATE).
func (s *sqlStore) lockForUpdate(q *gorm.DB) *gorm.DB {
	if s.db.Kind == sqldb.Postgres {
		return q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	return q
}

// checkPlacement checks, inside tx, that sc's group exists (locking it
// against a concurrent delete) and that no other subcloud has its bootstrap
// address.
func (s *sqlStore) checkPlacement(tx *gorm.DB, sc Subcloud) error {
	var g groupRow
	err := s.lockForUpdate(tx).Where("name = ?", sc.Group).Take(&g).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%w: %s", ErrSubcloudGroupNotFound, sc.Group)
	}
	if err != nil {
		return err
	}
	if sc.BootstrapAddress == "" {
		return nil
	}
	var other []string
	if err := tx.Model(&subcloudRow{}).Where("bootstrap_address = ? AND name <> ?", sc.BootstrapAddress, sc.Name).
		Limit(1).Pluck("name", &other).Error; err != nil {
		return err
	}
	if len(other) > 0 {
		return fmt.Errorf("%w: %s is subcloud %s's", ErrBootstrapAddressInUse, sc.BootstrapAddress, other[0])
	}
	return nil
}

// uniqueViolation names which unique key a failed write of sc hit: a race
// the checks inside the transaction could not see.
func (s *sqlStore) uniqueViolation(ctx context.Context, sc Subcloud) error {
	var n int64
	if err := s.db.WithContext(ctx).Model(&subcloudRow{}).Where("name = ?", sc.Name).Count(&n).Error; err == nil && n > 0 {
		return fmt.Errorf("%w: %s", ErrSubcloudExists, sc.Name)
	}
	return fmt.Errorf("%w: %s", ErrBootstrapAddressInUse, sc.BootstrapAddress)
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
			q = q.Where(subcloudColumns[f]+" = ?", v)
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
	if sc.Group == "" {
		sc.Group = DefaultGroup
	}
	if sc.DeployStatus == "" {
		sc.DeployStatus = DeployNotDeployed
	}
	row, err := toRow(sc)
	if err != nil {
		return err
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&subcloudRow{}).Where("name = ?", sc.Name).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %s", ErrSubcloudExists, sc.Name)
		}
		if err := s.checkPlacement(tx, sc); err != nil {
			return err
		}
		return tx.Create(&row).Error
	})
	if err != nil && sqldb.IsUniqueViolation(err) {
		return s.uniqueViolation(ctx, sc)
	}
	return err
}

func (s *sqlStore) UpdateSubcloud(ctx context.Context, name string, fn func(*Subcloud) error) (Subcloud, error) {
	var out Subcloud
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r subcloudRow
		err := s.lockForUpdate(tx).Where("name = ?", name).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
		}
		if err != nil {
			return err
		}
		sc, moved, err := applyRow(r, fn)
		if err != nil {
			return err
		}
		if moved {
			if err := s.checkPlacement(tx, sc); err != nil {
				return err
			}
		}
		row, err := toRow(sc)
		if err != nil {
			return err
		}
		out = sc
		return tx.Model(&subcloudRow{}).Where("name = ?", name).Updates(map[string]any{
			"shape": row.Shape, "availability": row.Availability, "management": row.Management,
			"status": row.Status, "deploy_status": row.DeployStatus, "group_name": row.GroupName,
			"bootstrap_address": row.BootstrapAddress, "doc": row.Doc}).Error
	})
	if err != nil && sqldb.IsUniqueViolation(err) {
		return out, s.uniqueViolation(ctx, Subcloud{BootstrapAddress: out.BootstrapAddress})
	}
	return out, err
}

// updateBatch bounds the names one statement of UpdateSubclouds reads
// (SQLite binds at most 32,766 parameters).
const updateBatch = 1000

// upsertBatch bounds the rows of one statement of UpdateSubclouds' writes
// (10 columns a row; PostgreSQL binds at most 65,535 parameters).
const upsertBatch = 500

func (s *sqlStore) UpdateSubclouds(ctx context.Context, names []string, fn func(*Subcloud) error) ([]Subcloud, error) {
	names = slices.Clone(names)
	slices.Sort(names) // one lock order for every writer
	names = slices.Compact(names)
	out := make([]Subcloud, 0, len(names))
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out = out[:0]
		for chunk := range slices.Chunk(names, updateBatch) {
			var rows []subcloudRow
			if err := s.lockForUpdate(tx).Where("name IN ?", chunk).Order("name").Find(&rows).Error; err != nil {
				return err
			}
			updated := make([]subcloudRow, 0, len(rows))
			for _, r := range rows {
				sc, moved, err := applyRow(r, fn)
				if err != nil {
					return err
				}
				if moved {
					return fmt.Errorf("subcloud %s: a batch update may not move it to another group or address", sc.Name)
				}
				row, err := toRow(sc)
				if err != nil {
					return err
				}
				row.CreatedAt = r.CreatedAt
				updated = append(updated, row)
				out = append(out, sc)
			}
			if len(updated) == 0 {
				continue
			}
			// The rows exist and are locked: a multi-row upsert updates
			// them in a few statements, not one per row.
			if err := tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}},
				DoUpdates: clause.AssignmentColumns([]string{"shape", "availability", "management", "status", "deploy_status", "doc"}),
			}).CreateInBatches(&updated, upsertBatch).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *sqlStore) DeleteSubcloud(ctx context.Context, name string, check func(Subcloud) error) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r subcloudRow
		err := s.lockForUpdate(tx).Where("name = ?", name).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
		}
		if err != nil {
			return err
		}
		if check != nil {
			sc, err := fromRow(r)
			if err != nil {
				return err
			}
			if err := check(sc); err != nil {
				return err
			}
		}
		return tx.Where("name = ?", name).Delete(&subcloudRow{}).Error
	})
}

func groupFromRow(r groupRow, members int) SubcloudGroup {
	return SubcloudGroup{Name: r.Name, Description: r.Description, UpdateApplyType: ApplyType(r.ApplyType),
		MaxParallelSubclouds: r.MaxParallel, Subclouds: members, CreatedAt: r.CreatedAt.UTC()}
}

// memberCounts counts the subclouds of each named group.
func memberCounts(q *gorm.DB, names []string) (map[string]int, error) {
	var counts []struct {
		GroupName string
		N         int
	}
	if err := q.Model(&subcloudRow{}).Select("group_name, count(*) AS n").Where("group_name IN ?", names).
		Group("group_name").Scan(&counts).Error; err != nil {
		return nil, err
	}
	m := make(map[string]int, len(counts))
	for _, c := range counts {
		m[c.GroupName] = c.N
	}
	return m, nil
}

func (s *sqlStore) SubcloudGroup(ctx context.Context, name string) (SubcloudGroup, error) {
	var r groupRow
	err := s.db.WithContext(ctx).Where("name = ?", name).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return SubcloudGroup{}, fmt.Errorf("%w: %s", ErrSubcloudGroupNotFound, name)
	}
	if err != nil {
		return SubcloudGroup{}, err
	}
	n, err := memberCounts(s.db.WithContext(ctx), []string{name})
	if err != nil {
		return SubcloudGroup{}, err
	}
	return groupFromRow(r, n[name]), nil
}

func (s *sqlStore) SubcloudGroups(ctx context.Context, opts rest.ListOptions) ([]SubcloudGroup, string, error) {
	q := s.db.WithContext(ctx).Model(&groupRow{})
	if v, ok := opts.Filters["update_apply_type"]; ok {
		q = q.Where("apply_type = ?", v)
	}
	var rows []groupRow
	if err := sqldb.Page(q, "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r groupRow) string { return r.Name })
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Name
	}
	out := make([]SubcloudGroup, 0, len(rows))
	if len(rows) == 0 {
		return out, next, nil
	}
	counts, err := memberCounts(s.db.WithContext(ctx), names)
	if err != nil {
		return nil, "", err
	}
	for _, r := range rows {
		out = append(out, groupFromRow(r, counts[r.Name]))
	}
	return out, next, nil
}

func (s *sqlStore) CreateSubcloudGroup(ctx context.Context, g SubcloudGroup) error {
	if g.CreatedAt.IsZero() {
		g.CreatedAt = time.Now().UTC()
	}
	err := s.db.WithContext(ctx).Create(&groupRow{Name: g.Name, Description: g.Description,
		ApplyType: string(g.UpdateApplyType), MaxParallel: g.MaxParallelSubclouds, CreatedAt: g.CreatedAt}).Error
	if err != nil && sqldb.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %s", ErrSubcloudGroupExists, g.Name)
	}
	return err
}

func (s *sqlStore) UpdateSubcloudGroup(ctx context.Context, name string, fn func(*SubcloudGroup) error) (SubcloudGroup, error) {
	var out SubcloudGroup
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r groupRow
		err := s.lockForUpdate(tx).Where("name = ?", name).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", ErrSubcloudGroupNotFound, name)
		}
		if err != nil {
			return err
		}
		g := groupFromRow(r, 0)
		if err := fn(&g); err != nil {
			return err
		}
		if g.Name != name {
			if name == DefaultGroup {
				return fmt.Errorf("%w: the %s group cannot be renamed", ErrSubcloudGroupInUse, DefaultGroup)
			}
			var n int64
			if err := tx.Model(&groupRow{}).Where("name = ?", g.Name).Count(&n).Error; err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: %s", ErrSubcloudGroupExists, g.Name)
			}
		}
		if err := tx.Model(&groupRow{}).Where("name = ?", name).Updates(map[string]any{"name": g.Name,
			"description": g.Description, "apply_type": string(g.UpdateApplyType), "max_parallel": g.MaxParallelSubclouds}).Error; err != nil {
			return err
		}
		if g.Name != name {
			if err := tx.Model(&subcloudRow{}).Where("group_name = ?", name).Update("group_name", g.Name).Error; err != nil {
				return err
			}
		}
		counts, err := memberCounts(tx, []string{g.Name})
		if err != nil {
			return err
		}
		g.Subclouds = counts[g.Name]
		out = g
		return nil
	})
	if err != nil && sqldb.IsUniqueViolation(err) {
		return out, fmt.Errorf("%w: %s", ErrSubcloudGroupExists, out.Name)
	}
	return out, err
}

func (s *sqlStore) DeleteSubcloudGroup(ctx context.Context, name string) error {
	if name == DefaultGroup {
		return fmt.Errorf("%w: the %s group cannot be deleted", ErrSubcloudGroupInUse, DefaultGroup)
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r groupRow
		err := s.lockForUpdate(tx).Where("name = ?", name).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", ErrSubcloudGroupNotFound, name)
		}
		if err != nil {
			return err
		}
		var n int64
		if err := tx.Model(&subcloudRow{}).Where("group_name = ?", name).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: subcloud group %s has %d subclouds; move them to another group first", ErrSubcloudGroupInUse, name, n)
		}
		return tx.Where("name = ?", name).Delete(&groupRow{}).Error
	})
}
