package faultdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// metaRow holds the store's own facts: its log's epoch, and how far
// central has acknowledged it.
type metaRow struct {
	Key   string `gorm:"primaryKey;size:32"`
	Value string `gorm:"size:255"`
}

func (metaRow) TableName() string { return "fm_meta" }

const (
	metaEpoch   = "epoch"
	metaShipped = "shipped" // the last sequence number central acknowledged
)

// seqlog numbers events in commit order. Every transaction that appends
// events holds mu from the first number it hands out until it has
// committed, so a reader that sees number n has seen every number below it.
type seqlog struct {
	mu   sync.Mutex // held across event-writing transactions
	last uint64     // guarded by mu

	wmu   sync.Mutex // guards watch and seen
	watch chan struct{}
	seen  uint64
	epoch string
}

// write runs fn in one transaction with next handing out sequence numbers;
// they are kept only if the transaction commits.
func (s *Store) write(ctx context.Context, fn func(tx *gorm.DB, next func() uint64) error) error {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	n := s.log.last
	next := func() uint64 { n++; return n }
	if err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return fn(tx, next) }); err != nil {
		// A failed COMMIT may still have committed: take the numbers from
		// the store, so none is handed out twice.
		var stored *uint64
		if rerr := s.db.Model(&eventRow{}).Select("MAX(seq)").Scan(&stored).Error; rerr == nil && stored != nil && *stored > s.log.last {
			s.log.last = *stored
			s.log.wmu.Lock()
			s.log.seen = *stored
			close(s.log.watch)
			s.log.watch = make(chan struct{})
			s.log.wmu.Unlock()
		}
		return err
	}
	if n != s.log.last {
		s.analyzeIfGrown(n - s.log.last)
		s.log.last = n
		s.log.wmu.Lock()
		s.log.seen = n
		close(s.log.watch)
		s.log.watch = make(chan struct{})
		s.log.wmu.Unlock()
	}
	return nil
}

// openLog reads the last sequence number and the epoch, creating one for a
// new store.
func (s *Store) openLog(ctx context.Context) error {
	db := s.db.WithContext(ctx)
	var last *uint64
	if err := db.Model(&eventRow{}).Select("MAX(seq)").Scan(&last).Error; err != nil {
		return fmt.Errorf("faultdb: last sequence: %w", err)
	}
	if last != nil {
		s.log.last = *last
	}
	// A look first: opening the store writes only for a new store (a
	// controller pair opens it on a standby while it takes over).
	var m metaRow
	err := db.Where("key = ?", metaEpoch).Take(&m).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		id, _ := uuid.NewRandom()
		if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&metaRow{Key: metaEpoch, Value: id.String()}).Error; err != nil {
			return fmt.Errorf("faultdb: epoch: %w", err)
		}
		err = db.Where("key = ?", metaEpoch).Take(&m).Error
	}
	if err != nil {
		return fmt.Errorf("faultdb: epoch: %w", err)
	}
	s.log.epoch, s.log.seen, s.log.watch = m.Value, s.log.last, make(chan struct{})
	return nil
}

var _ faultmgr.Log = (*Store)(nil)

func (s *Store) Watch() (uint64, <-chan struct{}) {
	s.log.wmu.Lock()
	defer s.log.wmu.Unlock()
	return s.log.seen, s.log.watch
}

func (s *Store) Epoch() string { return s.log.epoch }

func (s *Store) After(ctx context.Context, after uint64, limit int) ([]faultmgr.Record, error) {
	var rows []eventRow
	if err := s.db.WithContext(ctx).Where("seq > ?", after).Order("seq").Limit(limit).Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]faultmgr.Record, len(rows))
	for i, r := range rows {
		out[i] = faultmgr.Record{Seq: r.Seq, Event: toEvent(r), AlarmUUID: r.AlarmUUID}
	}
	return out, nil
}

// Shipped is the last sequence number central acknowledged (0: none).
func (s *Store) Shipped(ctx context.Context) (uint64, error) {
	var m metaRow
	err := s.db.WithContext(ctx).Where("key = ?", metaShipped).Take(&m).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	_, err = fmt.Sscan(m.Value, &n)
	return n, err
}

// SetShipped records that central acknowledged the log up to seq.
func (s *Store) SetShipped(ctx context.Context, seq uint64) error {
	return s.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).
		Create(&metaRow{Key: metaShipped, Value: fmt.Sprint(seq)}).Error
}

// TrimPolicy bounds the history.
type TrimPolicy struct {
	MaxEvents int           // keep at most this many events (0: no bound)
	MaxAge    time.Duration // drop events older than this (0: no bound)
	// Floor protects events a reader still needs (those with Seq > Floor)
	// from the bounds above, up to HardMax events, beyond which the oldest
	// go regardless.
	Floor   uint64
	HardMax int
	Now     time.Time
}

// trimChunk bounds one delete, so writers queue behind it briefly.
const trimChunk = 5000

// Trim deletes history beyond the policy's bounds and returns how many
// events went.
func (s *Store) Trim(ctx context.Context, p TrimPolicy) (int, error) {
	s.log.mu.Lock()
	last := s.log.last
	s.log.mu.Unlock()
	var cut uint64 // delete seq <= cut
	if p.MaxEvents > 0 && last > uint64(p.MaxEvents) {
		cut = last - uint64(p.MaxEvents)
	}
	if p.MaxAge > 0 {
		var old *uint64
		if err := s.db.WithContext(ctx).Model(&eventRow{}).Select("MAX(seq)").
			Where("timestamp < ?", p.Now.Add(-p.MaxAge)).Scan(&old).Error; err != nil {
			return 0, err
		}
		if old != nil && *old > cut {
			cut = *old
		}
	}
	cut = min(cut, p.Floor)
	if p.HardMax > 0 && last > uint64(p.HardMax) {
		cut = max(cut, last-uint64(p.HardMax))
	}
	// The newest event always stays: the numbering restarts from it after
	// a restart, and a reader's position must never be handed out again.
	if last == 0 {
		return 0, nil
	}
	cut = min(cut, last-1)
	var first *uint64
	if err := s.db.WithContext(ctx).Model(&eventRow{}).Select("MIN(seq)").Scan(&first).Error; err != nil || first == nil {
		return 0, err
	}
	total := 0
	for lo := *first; lo <= cut; lo += trimChunk {
		res := s.db.WithContext(ctx).Where("seq >= ? AND seq <= ?", lo, min(cut, lo+trimChunk-1)).Delete(&eventRow{})
		if res.Error != nil {
			return total, res.Error
		}
		total += int(res.RowsAffected)
	}
	return total, nil
}

// analyzeIfGrown refreshes PostgreSQL's statistics of the alarm and event
// tables once they have grown by a tenth (at least 5,000 events) since the
// last time: a storm fills them faster than autovacuum's minute, and plans
// made on an "empty" table scan it whole for every batch's key lookup.
func (s *Store) analyzeIfGrown(events uint64) {
	if s.db.Kind != sqldb.Postgres {
		return
	}
	grown := s.grown.Add(events)
	if grown < max(5000, s.analyzedAt.Load()/10) || !s.analyzing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.analyzing.Store(false)
		s.grown.Store(0)
		s.analyzedAt.Add(grown)
		_ = s.db.Exec("ANALYZE fm_alarms, fm_events").Error
	}()
}
