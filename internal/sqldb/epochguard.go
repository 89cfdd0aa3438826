package sqldb

import (
	"fmt"

	"gorm.io/gorm"
)

// EpochGuard fences a deposed writer: an active member of a pair (a site's
// controller, a central) writes only while it holds the pair's epoch.
type EpochGuard struct {
	// Table holds the pair's epoch row (id 1, column epoch); writes to it
	// are not checked against it (taking over writes it).
	Table string
	// Epoch is the epoch this member holds.
	Epoch func() uint64
	// Authority reports whether this member may still write (its runner's
	// view: the term is not over); nil: always.
	Authority func() error
	// Deposed is the error a refused write wraps.
	Deposed error
}

// GuardWrites installs g on db: before every create, update, delete and
// raw statement, the member's authority, and the epoch row read in the
// statement's own session, must both say it holds the epoch; a resumed old
// member fails its first write.
func (db *DB) GuardWrites(g EpochGuard) error {
	check := func(tx *gorm.DB) {
		if tx.Error != nil {
			return
		}
		if g.Authority != nil {
			if err := g.Authority(); err != nil {
				_ = tx.AddError(fmt.Errorf("%w: %v", g.Deposed, err))
				return
			}
		}
		if tx.Statement.Table == g.Table {
			return
		}
		var epoch uint64
		err := tx.Session(&gorm.Session{NewDB: true, SkipHooks: true}).
			Raw("SELECT epoch FROM " + g.Table + " WHERE id = 1").Scan(&epoch).Error
		switch {
		case err != nil:
			_ = tx.AddError(fmt.Errorf("%w: reading the epoch: %v", g.Deposed, err))
		case epoch != g.Epoch():
			_ = tx.AddError(fmt.Errorf("%w: the database is at epoch %d, this member holds %d", g.Deposed, epoch, g.Epoch()))
		}
	}
	cb := db.Callback()
	if err := cb.Create().Before("gorm:create").Register("petrel:epoch_create", check); err != nil {
		return err
	}
	if err := cb.Update().Before("gorm:update").Register("petrel:epoch_update", check); err != nil {
		return err
	}
	if err := cb.Delete().Before("gorm:delete").Register("petrel:epoch_delete", check); err != nil {
		return err
	}
	return cb.Raw().Before("gorm:raw").Register("petrel:epoch_raw", check)
}
