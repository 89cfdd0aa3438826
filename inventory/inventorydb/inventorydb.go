// Package inventorydb keeps a site's hosts in a SQL store through gorm.
//
// The site controller is the only writer of its site's store, and a site
// holds at most a few hundred hosts that the API, the dashboard and every
// control loop read constantly. So the Store keeps a write-through copy in
// memory: Open loads it, every write commits to SQL first and updates memory
// only after the commit, and reads never touch SQL. Its gorm models never
// leave the package.
package inventorydb

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
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
	Doc            []byte `gorm:"not null"` // the whole host as JSON; columns above are for ad-hoc queries
	Rev            uint64 `gorm:"not null"`
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

func (hostRow) TableName() string { return "inv_hosts" }

// Store implements inventory.Store.
type Store struct {
	db *sqldb.DB

	wmu sync.Mutex // serialises writers so memory follows commit order

	mu     sync.RWMutex
	byUUID map[string]inventory.Host
	byName map[string]string // name -> uuid
	names  []string          // sorted
}

var _ inventory.Store = (*Store)(nil)

// Open migrates the schema, loads every host and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &hostRow{}, &joinTokenRow{}, &hostCertRow{}, &bmcSecretRow{}); err != nil {
		return nil, fmt.Errorf("inventorydb: migrate: %w", err)
	}
	s := &Store{db: db, byUUID: map[string]inventory.Host{}, byName: map[string]string{}}
	var rows []hostRow
	if err := db.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("inventorydb: load: %w", err)
	}
	for _, r := range rows {
		h, err := fromRow(r)
		if err != nil {
			return nil, err
		}
		s.remember(h)
	}
	return s, nil
}

func fromRow(r hostRow) (inventory.Host, error) {
	var h inventory.Host
	if err := json.Unmarshal(r.Doc, &h); err != nil {
		return h, fmt.Errorf("inventorydb: host %s: %w", r.UUID, err)
	}
	h.Rev, h.CreatedAt, h.UpdatedAt = r.Rev, r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return h, nil
}

func toRow(h inventory.Host) (hostRow, error) {
	doc, err := json.Marshal(h)
	if err != nil {
		return hostRow{}, err
	}
	return hostRow{UUID: h.UUID, Name: h.Name, Personality: string(h.Personality),
		Provisioning: string(h.Provisioning), Administrative: string(h.Administrative),
		Operational: string(h.Operational), Availability: string(h.Availability),
		Doc: doc, Rev: h.Rev, CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt}, nil
}

// remember puts h in memory. The caller holds wmu (or is Open).
func (s *Store) remember(h inventory.Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byUUID[h.UUID]; ok && old.Name != h.Name {
		s.dropName(old.Name)
	}
	if _, ok := s.byName[h.Name]; !ok {
		i, _ := slices.BinarySearch(s.names, h.Name)
		s.names = slices.Insert(s.names, i, h.Name)
	}
	s.byUUID[h.UUID] = h.Clone()
	s.byName[h.Name] = h.UUID
}

func (s *Store) dropName(name string) {
	if i, ok := slices.BinarySearch(s.names, name); ok {
		s.names = slices.Delete(s.names, i, i+1)
	}
	delete(s.byName, name)
}

// lookup finds a host by UUID or name. The caller holds mu.
func (s *Store) lookup(id string) (inventory.Host, bool) {
	if h, ok := s.byUUID[id]; ok {
		return h, true
	}
	if u, ok := s.byName[id]; ok {
		return s.byUUID[u], true
	}
	return inventory.Host{}, false
}

func (s *Store) Host(_ context.Context, id string) (inventory.Host, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.lookup(id)
	if !ok {
		return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostNotFound, id)
	}
	return h.Clone(), nil
}

func (s *Store) Hosts(_ context.Context, opts rest.ListOptions) ([]inventory.Host, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	start := 0
	if opts.After != "" {
		start, _ = slices.BinarySearch(s.names, opts.After)
		if start < len(s.names) && s.names[start] == opts.After {
			start++
		}
	}
	out := make([]inventory.Host, 0, min(opts.Limit, len(s.names)))
	for _, name := range s.names[start:] {
		h := s.byUUID[s.byName[name]]
		if !matches(h, opts.Filters) {
			continue
		}
		if len(out) == opts.Limit {
			return out, out[len(out)-1].Name, nil
		}
		out = append(out, h.Clone())
	}
	return out, "", nil
}

func matches(h inventory.Host, filters map[string]string) bool {
	for k, v := range filters {
		if h.Field(k) != v {
			return false
		}
	}
	return true
}

func (s *Store) PutHost(ctx context.Context, h inventory.Host, ifRev uint64) (inventory.Host, error) {
	if err := h.Validate(); err != nil {
		return inventory.Host{}, err
	}
	h = h.Clone()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := time.Now().UTC()
	s.mu.RLock()
	cur, exists := s.byUUID[h.UUID]
	otherUUID, nameTaken := s.byName[h.Name]
	s.mu.RUnlock()
	if nameTaken && otherUUID != h.UUID {
		return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
	}
	if ifRev == 0 {
		if exists {
			return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostExists, h.UUID)
		}
		h.Rev, h.CreatedAt, h.UpdatedAt = 1, now, now
		row, err := toRow(h)
		if err != nil {
			return inventory.Host{}, err
		}
		if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
			if sqldb.IsUniqueViolation(err) {
				return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
			}
			return inventory.Host{}, err
		}
	} else {
		if !exists {
			return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostNotFound, h.UUID)
		}
		if cur.Rev != ifRev {
			return inventory.Host{}, fmt.Errorf("%w: %s (revision %d, now %d)", inventory.ErrStale, h.Name, ifRev, cur.Rev)
		}
		h.Rev, h.CreatedAt, h.UpdatedAt = ifRev+1, cur.CreatedAt, now
		row, err := toRow(h)
		if err != nil {
			return inventory.Host{}, err
		}
		res := s.db.WithContext(ctx).Model(&hostRow{}).Where("uuid = ? AND rev = ?", h.UUID, ifRev).Updates(map[string]any{
			"name": row.Name, "personality": row.Personality, "provisioning": row.Provisioning,
			"administrative": row.Administrative, "operational": row.Operational,
			"availability": row.Availability, "doc": row.Doc, "rev": row.Rev, "updated_at": now,
		})
		if res.Error != nil {
			if sqldb.IsUniqueViolation(res.Error) {
				return inventory.Host{}, fmt.Errorf("%w: %s", inventory.ErrHostExists, h.Name)
			}
			return inventory.Host{}, res.Error
		}
		if res.RowsAffected == 0 {
			// Memory and SQL disagree: someone else wrote the store.
			return inventory.Host{}, fmt.Errorf("%w: %s changed in the store behind this process", inventory.ErrStale, h.Name)
		}
	}
	s.remember(h) // only after the commit
	return h.Clone(), nil
}

func (s *Store) DeleteHost(ctx context.Context, id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	h, ok := s.lookup(id)
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", inventory.ErrHostNotFound, id)
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("uuid = ?", h.UUID).Delete(&hostRow{}).Error; err != nil {
			return err
		}
		// A deleted host's certificate stops working at once.
		return tx.Model(&hostCertRow{}).Where("machine_id = ? AND revoked_at IS NULL", h.UUID).
			Update("revoked_at", time.Now().UTC()).Error
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.byUUID, h.UUID)
	s.dropName(h.Name)
	s.mu.Unlock()
	return nil
}
