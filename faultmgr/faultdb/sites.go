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

// SiteBatch is records of one site's log (epoch) with the operations that
// apply them (faultmgr.SiteOps).
type SiteBatch struct {
	Site, Epoch string
	// Reset starts the site's log over in Epoch before the records, as
	// ResetSite does: a link of a new or restored site, combined with
	// others' batches into one commit.
	Reset   bool
	Records []faultmgr.Record
	Ops     []faultmgr.Op
}

// SiteResult is how far central holds a batch's site log after applying
// it, or why the batch was refused.
type SiteResult struct {
	Applied uint64
	// Missing counts records absent between the cursor and the batch, or
	// within it (the site trimmed them before they were shipped); GapFrom
	// is the first of them.
	Missing, GapFrom uint64
	Err              error
}

// ApplySite applies records of site's log (epoch), as ops, in one
// transaction with the site's cursor: applied exactly once, in order.
// Records at or below the cursor are skipped; a batch in another epoch is
// refused with ErrStaleBatch.
func (s *Store) ApplySite(ctx context.Context, site, epoch string, recs []faultmgr.Record, ops []faultmgr.Op) (uint64, error) {
	res, err := s.ApplySites(ctx, []SiteBatch{{Site: site, Epoch: epoch, Records: recs, Ops: ops}})
	if err != nil {
		return 0, err
	}
	return res[0].Applied, res[0].Err
}

// ApplySites applies batches of several sites in one transaction (central
// combines what its links deliver at once: one commit for many sites). A
// batch refused on its own (another epoch) fails alone; an error of the
// store fails them all. Two batches of one site apply in order.
func (s *Store) ApplySites(ctx context.Context, batches []SiteBatch) ([]SiteResult, error) {
	res := make([]SiteResult, len(batches))
	for i, b := range batches {
		if len(b.Records) != len(b.Ops) {
			return nil, fmt.Errorf("faultdb: %s: %d records, %d operations", b.Site, len(b.Records), len(b.Ops))
		}
		res[i] = SiteResult{}
	}
	err := s.write(ctx, func(tx *gorm.DB, next func() uint64) error {
		// Set-based where it can be (a reconnect storm brings hundreds of
		// sites into one transaction): one read of every cursor, one delete
		// for the sites whose first batch here is a reset, one upsert of the
		// cursors at the end.
		var sites, resetFirst []string
		first := map[string]bool{}
		for _, b := range batches {
			if !first[b.Site] {
				first[b.Site] = true
				sites = append(sites, b.Site)
				if b.Reset {
					resetFirst = append(resetFirst, b.Site)
				}
			}
		}
		cursors := make(map[string]*siteCursorRow, len(sites))
		for _, chunk := range chunks(sites, 500) {
			var rows []siteCursorRow
			if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("site IN ?", chunk).Find(&rows).Error; err != nil {
				return err
			}
			for i := range rows {
				cursors[rows[i].Site] = &rows[i]
			}
		}
		for _, chunk := range chunks(resetFirst, 500) {
			if err := tx.Where("site IN ?", chunk).Delete(&alarmRow{}).Error; err != nil {
				return err
			}
		}
		dirty := map[string]bool{}
		touched := map[string]bool{}
		for i, b := range batches {
			if b.Reset {
				if touched[b.Site] { // not its first batch here: delete now
					if err := tx.Where("site = ?", b.Site).Delete(&alarmRow{}).Error; err != nil {
						return err
					}
				}
				cursors[b.Site] = &siteCursorRow{Site: b.Site, Epoch: b.Epoch, UpdatedAt: time.Now().UTC()}
				dirty[b.Site] = true
			}
			touched[b.Site] = true
			c := cursors[b.Site]
			if c == nil {
				// No cursor: the site was deleted (or never linked); a
				// straggling batch must not bring its alarms back.
				c = &siteCursorRow{Site: b.Site, Epoch: "\x00deleted"}
				cursors[b.Site] = c
			}
			if c.Epoch != b.Epoch {
				res[i].Err = fmt.Errorf("%w: site %s epoch %s, central holds %s", ErrStaleBatch, b.Site, b.Epoch, c.Epoch)
				continue
			}
			var todo []faultmgr.Op
			last := c.Seq
			for j, r := range b.Records {
				if r.Seq <= last {
					continue // applied before: a resend after a lost ack
				}
				if r.Seq != last+1 {
					if res[i].Missing == 0 {
						res[i].GapFrom = last + 1
					}
					res[i].Missing += r.Seq - last - 1
				}
				todo, last = append(todo, b.Ops[j]), r.Seq
			}
			res[i].Applied = last
			if len(todo) == 0 {
				continue
			}
			if _, err := s.apply(tx, next, todo, b.Site, time.Now().UTC()); err != nil {
				return err
			}
			c.Seq, c.UpdatedAt, dirty[b.Site] = last, time.Now().UTC(), true
		}
		var up []siteCursorRow
		for _, site := range sites {
			if dirty[site] {
				up = append(up, *cursors[site])
			}
		}
		for _, chunk := range chunks(up, 500) {
			if err := tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&chunk).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// chunks splits s into slices of at most n (bound parameters per statement).
func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}
