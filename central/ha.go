package central

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// HAConfig makes this central the active one of a 1+1 pair (docs/central.md,
// "Central 1+1"): two central processes share one PostgreSQL database and
// elect their leader through etcd; the leader builds and runs Central, the
// other waits. The term's epoch (its election key's etcd revision, which
// only grows) goes to the database's epoch row when the leader takes over,
// and every write checks it: a deposed leader that resumes fails its first
// write.
type HAConfig struct {
	// Name is this central's name in the election (central-0, ...).
	Name string
	// Epoch is this term's epoch.
	Epoch uint64
	// Authority reports whether the term still holds (nil) or is over.
	Authority func() error
}

// EpochTable is the pair's epoch row (id 1) in central's database.
const EpochTable = "dc_central_epoch"

// ErrDeposed is a write refused because this central no longer leads.
var ErrDeposed = errs.New(errs.NotLeader, "this central is no longer the active one")

// epochRow is the pair's epoch and who took it.
type epochRow struct {
	ID     int    `gorm:"primaryKey;autoIncrement:false"`
	Epoch  int64  `gorm:"not null"`
	Holder string `gorm:"size:63;not null"`
	At     time.Time
}

func (epochRow) TableName() string { return EpochTable }

// takeEpoch records ha's epoch in db, refusing if the database already
// holds a newer one (this term is over), and then fences every write
// on it.
func takeEpoch(ctx context.Context, db *sqldb.DB, ha *HAConfig) error {
	if ha.Name == "" || ha.Epoch == 0 {
		return errors.New("central: HA needs a name and an epoch")
	}
	if err := sqldb.Migrate(ctx, db, &epochRow{}); err != nil {
		return fmt.Errorf("central: migrate %s: %w", EpochTable, err)
	}
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx
		if db.Kind == sqldb.Postgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		var cur epochRow
		err := q.Where("id = 1").Take(&cur).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
		case err != nil:
			return err
		case uint64(cur.Epoch) > ha.Epoch:
			return fmt.Errorf("%w: the database is at epoch %d (%s), this term is %d", ErrDeposed, cur.Epoch, cur.Holder, ha.Epoch)
		}
		return tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}},
			DoUpdates: clause.AssignmentColumns([]string{"epoch", "holder", "at"})}).
			Create(&epochRow{ID: 1, Epoch: int64(ha.Epoch), Holder: ha.Name, At: time.Now().UTC()}).Error
	})
	if err != nil {
		return err
	}
	return db.GuardWrites(sqldb.EpochGuard{Table: EpochTable, Epoch: func() uint64 { return ha.Epoch },
		Authority: ha.Authority, Deposed: ErrDeposed})
}

// HAFileConfig is the `ha` section of central's configuration file: this
// central is one of a 1+1 pair.
type HAFileConfig struct {
	// Name of this central in the election; required, unique in the pair.
	Name string `json:"name"`
	// SessionTTL is how long the leader's etcd session outlives its last
	// renewal (a Go duration, whole seconds; default 2s): the failover
	// time after the leader dies.
	SessionTTL string `json:"session_ttl"`
	// Etcd is the pair's etcd cluster (three members: one beside each
	// central, one arbiter).
	Etcd struct {
		Endpoints []string `json:"endpoints"`
		CertFile  string   `json:"cert_file"`
		KeyFile   string   `json:"key_file"`
		CAFile    string   `json:"ca_file"`
	} `json:"etcd"`
}

// ElectionPrefix is the pair's election in etcd.
const ElectionPrefix = "/petrel/central/leader"

// PairLeadership is what RunPair needs of the election.
type PairLeadership interface {
	RunWhileLeader(ctx context.Context, fn func(ctx context.Context, g coord.Guard) error) error
	Guard() (coord.Guard, bool)
}

// RunPair runs this central as one of a 1+1 pair until ctx ends: it
// campaigns; as leader it takes the term's epoch, builds Central (which
// binds the API and site listeners) and runs it; when the term ends it
// stops Central (releasing the listeners) and campaigns again. started,
// when not nil, is told of each Central built.
func RunPair(ctx context.Context, cfg Config, name string, lead PairLeadership, started func(*Central)) error {
	log := cfg.Shell.Logger
	return lead.RunWhileLeader(ctx, func(ctx context.Context, g coord.Guard) error {
		start := time.Now()
		c := cfg
		c.HA = &HAConfig{Name: name, Epoch: uint64(g.Rev), Authority: func() error {
			if cur, ok := lead.Guard(); !ok || cur.Rev != g.Rev {
				return errors.New("this central's term ended")
			}
			return nil
		}}
		cen, err := New(ctx, c)
		if err != nil {
			return fmt.Errorf("taking over: %w", err)
		}
		log.Info("took over: this central is active", "name", name, "epoch", g.Rev, "took", time.Since(start).Round(time.Millisecond))
		if started != nil {
			started(cen)
		}
		err = cen.Run(ctx)
		log.Info("stepped down: this central is standby", "name", name, "epoch", g.Rev, "err", err)
		return err
	})
}
