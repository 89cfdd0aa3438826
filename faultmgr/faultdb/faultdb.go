// Package faultdb keeps fault-management records (the event history) in a
// SQL store through gorm. Its gorm models never leave the package.
package faultdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

type eventRow struct {
	UUID             string `gorm:"primaryKey;size:36"` // UUIDv7: ordered by time
	Seq              uint64 `gorm:"uniqueIndex"`        // commit order (see seqlog)
	AlarmUUID        string `gorm:"size:36"`
	Type             string `gorm:"size:8;not null;index"`
	AlarmID          string `gorm:"size:16;index"`
	EntityInstanceID string `gorm:"size:255"`
	Severity         string `gorm:"size:16"`
	ReasonText       string
	UserName         string `gorm:"size:63"`
	Role             string `gorm:"size:16"`
	Action           string `gorm:"size:64"`
	Target           string
	Result           string `gorm:"size:64"`
	RequestID        string `gorm:"size:64"`
	Timestamp        time.Time
	Site             string `gorm:"size:63"`
}

func (eventRow) TableName() string { return "fm_events" }

// Store implements faultmgr.EventStore, faultmgr.AlarmStore and
// faultmgr.Log.
type Store struct {
	db  *sqldb.DB
	log seqlog

	// PostgreSQL statistics: events since the last ANALYZE, the events
	// counted at it, and whether one is running.
	grown, analyzedAt atomic.Uint64
	analyzing         atomic.Bool
}

var _ faultmgr.EventStore = (*Store)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	m := db.WithContext(ctx).Migrator()
	// Indexes of earlier versions: the key without a site (before sites'
	// alarms were kept at central) and single-column indexes the unique
	// key covers.
	for _, idx := range []string{"alarm_key", "idx_fm_alarms_site", "idx_fm_alarms_alarm_id"} {
		if m.HasTable(&alarmRow{}) && m.HasIndex(&alarmRow{}, idx) {
			if err := m.DropIndex(&alarmRow{}, idx); err != nil {
				return nil, fmt.Errorf("faultdb: migrate: %w", err)
			}
		}
	}
	if err := sqldb.Migrate(ctx, db, &eventRow{}, &alarmRow{}, &suppressionRow{}, &metaRow{},
		&siteCursorRow{}); err != nil {
		return nil, fmt.Errorf("faultdb: migrate: %w", err)
	}
	if err := migrateWebhooks(ctx, db); err != nil {
		return nil, err
	}
	s := &Store{db: db}
	if err := s.openLog(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func fromEvent(e faultmgr.Event) eventRow {
	return eventRow{
		UUID: e.UUID, Type: string(e.Type), AlarmID: e.AlarmID, EntityInstanceID: e.EntityInstanceID,
		Severity: e.Severity, ReasonText: e.ReasonText, UserName: e.User, Role: e.Role, Action: e.Action,
		Target: e.Target, Result: e.Result, RequestID: e.RequestID, Timestamp: e.Timestamp.UTC(), Site: e.Site,
	}
}

func (s *Store) AppendEvent(ctx context.Context, e faultmgr.Event) error {
	return s.write(ctx, func(tx *gorm.DB, next func() uint64) error {
		r := fromEvent(e)
		r.Seq = next()
		return tx.Create(&r).Error
	})
}

func (s *Store) Events(ctx context.Context, opts rest.ListOptions) ([]faultmgr.Event, string, error) {
	q := s.db.WithContext(ctx).Model(&eventRow{})
	for field, col := range map[string]string{"type": "type", "alarm_id": "alarm_id", "user": "user_name"} {
		if v, ok := opts.Filters[field]; ok {
			q = q.Where(col+" = ?", v)
		}
	}
	if v, ok := opts.Filters["entity_instance_id"]; ok {
		q = q.Where("entity_instance_id LIKE ? ESCAPE '\\'", likePrefix(v))
	}
	for field, op := range map[string]string{"since": ">=", "until": "<"} {
		if v, ok := opts.Filters[field]; ok {
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, "", errs.Field(field, "must be an RFC 3339 time, e.g. 2026-11-25T10:00:00Z")
			}
			q = q.Where("timestamp "+op+" ?", at.UTC())
		}
	}
	if opts.After != "" {
		q = q.Where("uuid < ?", opts.After) // newest first
	}
	var rows []eventRow
	if err := q.Order("uuid DESC").Limit(opts.Limit + 1).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r eventRow) string { return r.UUID })
	out := make([]faultmgr.Event, len(rows))
	for i, r := range rows {
		out[i] = toEvent(r)
	}
	return out, next, nil
}

func toEvent(r eventRow) faultmgr.Event {
	return faultmgr.Event{UUID: r.UUID, Type: faultmgr.EventType(r.Type), AlarmID: r.AlarmID,
		EntityInstanceID: r.EntityInstanceID, Severity: r.Severity, ReasonText: r.ReasonText, User: r.UserName,
		Role: r.Role, Action: r.Action, Target: r.Target, Result: r.Result, RequestID: r.RequestID,
		Timestamp: r.Timestamp.UTC(), Site: r.Site}
}

func (s *Store) Event(ctx context.Context, id string) (faultmgr.Event, error) {
	var r eventRow
	err := s.db.WithContext(ctx).Where("uuid = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return faultmgr.Event{}, fmt.Errorf("%w: %s", faultmgr.ErrEventNotFound, id)
	}
	if err != nil {
		return faultmgr.Event{}, err
	}
	return toEvent(r), nil
}

// likePrefix makes a LIKE pattern matching values that start with p.
func likePrefix(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(p) + "%"
}
