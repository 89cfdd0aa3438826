// Package sqlledger records service group placements in the site's SQL
// store (servicemgr.Ledger), for duplex sites whose epochs live in the
// database replicated between their two controllers instead of in etcd.
//
// The rules are etcdledger's: every commit is one transaction that checks
// the group's epoch is the one planned from and bumps it; an active slot
// is a row naming its host, and it changes hands only when the holder is
// demoted or removed from the group in that same commit, or released
// (Release: its host confirmed fenced or dead). Unlike an etcd lease, a
// slot never expires by itself: a holder nobody releases keeps it.
//
// Tables (migrated by Open; gorm models never leave the package):
//
//	service_ledger_groups  group, epoch, placement (JSON of servicemgr.Placement)
//	service_ledger_slots   group, slot, host: the active slots and their holders
package sqlledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/servicemgr"
)

type groupRow struct {
	Group     string `gorm:"column:group_name;primaryKey;size:63"`
	Epoch     uint64 `gorm:"not null"`
	Placement string `gorm:"type:text;not null"`
}

func (groupRow) TableName() string { return "service_ledger_groups" }

type slotRow struct {
	Group string `gorm:"column:group_name;primaryKey;size:63"`
	Slot  int    `gorm:"primaryKey;autoIncrement:false"`
	Host  string `gorm:"size:63;not null;index"`
}

func (slotRow) TableName() string { return "service_ledger_slots" }

// Guard runs inside every write transaction before anything is written;
// an error aborts the transaction. A duplex controller checks there that
// the term it leads under is still the one recorded (its fencing token),
// and returns coord.ErrNotLeader if not, so a deposed controller writes
// nothing. tx is the transaction, on the ledger's engine.
type Guard func(ctx context.Context, tx *sqldb.DB) error

// Config configures a Ledger.
type Config struct {
	DB    *sqldb.DB
	Guard Guard // optional: nil writes without a leadership check
}

// Ledger implements servicemgr.Ledger on SQLite or PostgreSQL.
type Ledger struct{ cfg Config }

var _ servicemgr.Ledger = (*Ledger)(nil)

// Open migrates the schema and returns the ledger.
func Open(ctx context.Context, cfg Config) (*Ledger, error) {
	if cfg.DB == nil {
		return nil, errors.New("sqlledger: DB is required")
	}
	if err := sqldb.Migrate(ctx, cfg.DB, &groupRow{}, &slotRow{}); err != nil {
		return nil, fmt.Errorf("sqlledger: migrate: %w", err)
	}
	return &Ledger{cfg: cfg}, nil
}

// Load reads a group's placement (epoch 0 and no members if none).
func (l *Ledger) Load(ctx context.Context, group string) (servicemgr.Placement, error) {
	var r groupRow
	err := l.cfg.DB.WithContext(ctx).Where("group_name = ?", group).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return servicemgr.Placement{Members: map[string]servicemgr.Assigned{}}, nil
	}
	if err != nil {
		return servicemgr.Placement{}, fmt.Errorf("sqlledger: load %s: %w", group, err)
	}
	return decode(r)
}

func decode(r groupRow) (servicemgr.Placement, error) {
	var p servicemgr.Placement
	if err := json.Unmarshal([]byte(r.Placement), &p); err != nil {
		return servicemgr.Placement{}, fmt.Errorf("sqlledger: placement of %s: %w", r.Group, err)
	}
	if p.Members == nil {
		p.Members = map[string]servicemgr.Assigned{}
	}
	p.Epoch = r.Epoch
	return p, nil
}

// write runs fn in one transaction behind the guard.
func (l *Ledger) write(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return l.cfg.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if l.cfg.Guard != nil {
			if err := l.cfg.Guard(ctx, &sqldb.DB{DB: tx, Kind: l.cfg.DB.Kind}); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// Commit records next with epoch prevEpoch+1 in one transaction; see the
// package comment.
func (l *Ledger) Commit(ctx context.Context, group string, prevEpoch uint64, next servicemgr.Placement) (uint64, error) {
	slots := map[int]string{}
	for h, m := range next.Members {
		if m.Role != servicemgr.RoleActive {
			continue
		}
		if o, ok := slots[m.Slot]; ok {
			return 0, fmt.Errorf("sqlledger: commit %s: %s and %s both active in slot %d", group, o, h, m.Slot)
		}
		slots[m.Slot] = h
	}
	epoch := prevEpoch + 1
	err := l.write(ctx, func(tx *gorm.DB) error {
		// The group's row, locked on PostgreSQL until the commit: a
		// concurrent commit waits, then finds the epoch moved. SQLite
		// writers are serialised already (BEGIN IMMEDIATE).
		q := tx
		if l.cfg.DB.Kind == sqldb.Postgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		var cur groupRow
		exists := true
		switch err := q.Where("group_name = ?", group).Take(&cur).Error; {
		case errors.Is(err, gorm.ErrRecordNotFound):
			exists = false
		case err != nil:
			return err
		}
		if cur.Epoch != prevEpoch {
			return fmt.Errorf("%w: %s is at %d, not %d", servicemgr.ErrStale, group, cur.Epoch, prevEpoch)
		}
		next.Epoch = epoch
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		prev := servicemgr.Placement{Members: map[string]servicemgr.Assigned{}}
		if exists {
			if prev, err = decode(cur); err != nil {
				return err
			}
			res := tx.Model(&groupRow{}).Where("group_name = ? AND epoch = ?", group, prevEpoch).
				Updates(map[string]any{"epoch": epoch, "placement": string(b)})
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected != 1 {
				return fmt.Errorf("%w: %s changed during the commit", servicemgr.ErrStale, group)
			}
		} else if err := tx.Create(&groupRow{Group: group, Epoch: epoch, Placement: string(b)}).Error; err != nil {
			// Written first, so concurrent creators of a group queue on
			// its key (the loser fails as stale) before touching slots.
			return err
		}
		return l.moveSlots(tx, group, prev, next)
	})
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			// Another commit created the group's row or took a slot first.
			return 0, fmt.Errorf("%w: %s changed during the commit (%v)", servicemgr.ErrStale, group, err)
		}
		if errors.Is(err, servicemgr.ErrStale) || errors.Is(err, servicemgr.ErrSlotHeld) {
			return 0, err
		}
		return 0, fmt.Errorf("sqlledger: commit %s: %w", group, err)
	}
	return epoch, nil
}

// moveSlots makes the group's slot rows those of next's actives. A held
// slot is given up only by a holder demoted to standby or removed from the
// group (it was a member of prev) in this commit.
func (l *Ledger) moveSlots(tx *gorm.DB, group string, prev, next servicemgr.Placement) error {
	var rows []slotRow
	if err := tx.Where("group_name = ?", group).Order("slot").Find(&rows).Error; err != nil {
		return err
	}
	held := map[int]string{}
	var free []int
	for _, r := range rows {
		if m, ok := next.Members[r.Host]; ok && m.Role == servicemgr.RoleActive && m.Slot == r.Slot {
			held[r.Slot] = r.Host // keeps it
			continue
		}
		nm, stays := next.Members[r.Host]
		_, was := prev.Members[r.Host]
		demoted := (stays && nm.Role == servicemgr.RoleStandby) || (!stays && was)
		if !demoted {
			return fmt.Errorf("%w: slot %d of %s is %s's", servicemgr.ErrSlotHeld, r.Slot, group, r.Host)
		}
		free = append(free, r.Slot)
	}
	if len(free) > 0 {
		if err := tx.Where("group_name = ? AND slot IN ?", group, free).Delete(&slotRow{}).Error; err != nil {
			return err
		}
	}
	var add []slotRow
	for h, m := range next.Members {
		if m.Role == servicemgr.RoleActive && held[m.Slot] != h {
			add = append(add, slotRow{Group: group, Slot: m.Slot, Host: h})
		}
	}
	slices.SortFunc(add, func(a, b slotRow) int { return a.Slot - b.Slot })
	for _, r := range add {
		if err := tx.Create(&r).Error; err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes a group's records.
func (l *Ledger) Remove(ctx context.Context, group string) error {
	err := l.write(ctx, func(tx *gorm.DB) error {
		if err := tx.Where("group_name = ?", group).Delete(&slotRow{}).Error; err != nil {
			return err
		}
		return tx.Where("group_name = ?", group).Delete(&groupRow{}).Error
	})
	if err != nil {
		return fmt.Errorf("sqlledger: remove %s: %w", group, err)
	}
	return nil
}

// Release frees every slot host holds, in every group, at once (the host
// is confirmed fenced or dead).
func (l *Ledger) Release(ctx context.Context, host string) error {
	err := l.write(ctx, func(tx *gorm.DB) error {
		return tx.Where("host = ?", host).Delete(&slotRow{}).Error
	})
	if err != nil {
		return fmt.Errorf("sqlledger: release %s: %w", host, err)
	}
	return nil
}
