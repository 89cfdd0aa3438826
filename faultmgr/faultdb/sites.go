package faultdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/faultmgr"
)

// siteCursorRow is how far central has applied a site's event log.
type siteCursorRow struct {
	Site      string `gorm:"primaryKey;size:63"`
	Epoch     string `gorm:"size:36"`
	Seq       uint64
	UpdatedAt time.Time
}

func (siteCursorRow) TableName() string { return "fm_site_cursors" }

// ErrStaleBatch reports records central already applied or that belong to
// another epoch of the site's log.
var ErrStaleBatch = errors.New("faultdb: records out of sequence")

// SiteCursor tells how far central has applied site's log: its epoch and
// last sequence number ("" and 0 for a site never heard from).
func (s *Store) SiteCursor(ctx context.Context, site string) (string, uint64, error) {
	var c siteCursorRow
	err := s.db.WithContext(ctx).Where("site = ?", site).Take(&c).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", 0, nil
	}
	return c.Epoch, c.Seq, err
}

// ResetSite starts site's log over in epoch: the site's alarms held here
// are dropped (the site's new log raises what is active again).
func (s *Store) ResetSite(ctx context.Context, site, epoch string) error {
	return s.write(ctx, func(tx *gorm.DB, _ func() uint64) error {
		if err := tx.Where("site = ?", site).Delete(&alarmRow{}).Error; err != nil {
			return err
		}
		return tx.Clauses(clause.OnConflict{UpdateAll: true}).
			Create(&siteCursorRow{Site: site, Epoch: epoch, Seq: 0, UpdatedAt: time.Now().UTC()}).Error
	})
}

// DeleteSite forgets a site: its alarms and its cursor; its history stays.
func (s *Store) DeleteSite(ctx context.Context, site string) error {
	return s.write(ctx, func(tx *gorm.DB, _ func() uint64) error {
		if err := tx.Where("site = ?", site).Delete(&alarmRow{}).Error; err != nil {
			return err
		}
		return tx.Where("site = ?", site).Delete(&siteCursorRow{}).Error
	})
}

// ApplySite applies records first..last of site's log (epoch), as ops, in
// one transaction with the site's cursor: applied exactly once, in order.
// Records at or below the cursor are skipped; a batch in another epoch is
// refused with ErrStaleBatch.
func (s *Store) ApplySite(ctx context.Context, site, epoch string, recs []faultmgr.Record, ops []faultmgr.Op) (uint64, error) {
	if len(recs) != len(ops) {
		return 0, fmt.Errorf("faultdb: %d records, %d operations", len(recs), len(ops))
	}
	var applied uint64
	err := s.write(ctx, func(tx *gorm.DB, next func() uint64) error {
		var c siteCursorRow
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("site = ?", site).Take(&c).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			c = siteCursorRow{Site: site, Epoch: epoch}
		} else if err != nil {
			return err
		}
		if c.Epoch != epoch {
			return fmt.Errorf("%w: site %s epoch %s, central holds %s", ErrStaleBatch, site, epoch, c.Epoch)
		}
		var todo []faultmgr.Op
		last := c.Seq
		for i, r := range recs {
			if r.Seq <= last {
				continue // applied before: a resend after a lost ack
			}
			todo, last = append(todo, ops[i]), r.Seq
		}
		applied = last
		if len(todo) == 0 {
			return nil
		}
		if _, err := s.apply(tx, next, todo, site, time.Now().UTC()); err != nil {
			return err
		}
		c.Seq, c.UpdatedAt = last, time.Now().UTC()
		return tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&c).Error
	})
	return applied, err
}
