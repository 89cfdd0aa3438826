package faultdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

type alarmRow struct {
	UUID string `gorm:"primaryKey;size:36"` // UUIDv7 of the first raise
	// The unique key's index also serves lookups by site and by (site,
	// alarm ID); no single-column index competes with it in plans.
	Site             string `gorm:"size:63;not null;default:'';uniqueIndex:alarm_site_key,priority:1"`
	AlarmID          string `gorm:"size:16;not null;uniqueIndex:alarm_site_key,priority:2"`
	EntityInstanceID string `gorm:"size:255;not null;uniqueIndex:alarm_site_key,priority:3"`
	Severity         string `gorm:"size:16;index"`
	ReasonText       string
	AlarmType        string `gorm:"size:64"`
	ProbableCause    string `gorm:"size:64"`
	Repair           string
	ServiceAffecting bool
	MgmtAffecting    string `gorm:"size:16"`
	DegradeAffecting string `gorm:"size:16"`
	AckedBy          string `gorm:"size:63"`
	AckedAt          *time.Time
	Timestamp        time.Time
}

func (alarmRow) TableName() string { return "fm_alarms" }

type suppressionRow struct {
	AlarmID   string `gorm:"primaryKey;size:16"`
	UserName  string `gorm:"size:63"`
	CreatedAt time.Time
}

func (suppressionRow) TableName() string { return "fm_suppressions" }

var _ faultmgr.AlarmStore = (*Store)(nil)

func toAlarm(r alarmRow, suppressed bool) faultmgr.Alarm {
	a := faultmgr.Alarm{UUID: r.UUID, AlarmID: r.AlarmID, EntityInstanceID: r.EntityInstanceID,
		Severity: faultmgr.Severity(r.Severity), ReasonText: r.ReasonText, AlarmType: r.AlarmType,
		ProbableCause: r.ProbableCause, ProposedRepairAction: r.Repair, ServiceAffecting: r.ServiceAffecting,
		MgmtAffecting: r.MgmtAffecting, DegradeAffecting: r.DegradeAffecting, Suppressed: suppressed,
		AckedBy: r.AckedBy, Timestamp: r.Timestamp.UTC(), Site: r.Site}
	if r.AckedAt != nil {
		at := r.AckedAt.UTC()
		a.AckedAt = &at
	}
	return a
}

func fromAlarm(a faultmgr.Alarm, at time.Time) alarmRow {
	return alarmRow{UUID: a.UUID, AlarmID: a.AlarmID, EntityInstanceID: a.EntityInstanceID, Severity: string(a.Severity),
		ReasonText: a.ReasonText, AlarmType: a.AlarmType, ProbableCause: a.ProbableCause, Repair: a.ProposedRepairAction,
		ServiceAffecting: a.ServiceAffecting, MgmtAffecting: a.MgmtAffecting, DegradeAffecting: a.DegradeAffecting,
		Timestamp: at, Site: a.Site}
}

// event makes the history entry of a change to alarm a: op's own event if
// it carries one (a site's, applied at central), else a new one.
func (b *batch) event(typ faultmgr.EventType, a faultmgr.Alarm, op faultmgr.Op, at time.Time) {
	var r eventRow
	if op.Event != nil {
		r = fromEvent(*op.Event)
	} else {
		id, _ := uuid.NewV7()
		r = eventRow{UUID: id.String(), Type: string(typ), AlarmID: a.AlarmID, EntityInstanceID: a.EntityInstanceID,
			Severity: string(a.Severity), ReasonText: a.ReasonText, Timestamp: at}
	}
	r.Site, r.AlarmUUID, r.Seq = b.site, a.UUID, b.next()
	b.events = append(b.events, r)
}

func (s *Store) ApplyAlarmOps(ctx context.Context, ops []faultmgr.Op, site string, at time.Time) ([]faultmgr.OpResult, error) {
	var res []faultmgr.OpResult
	err := s.write(ctx, func(tx *gorm.DB, next func() uint64) error {
		var err error
		res, err = s.apply(tx, next, ops, site, at)
		return err
	})
	return res, err
}

// apply applies ops to site's alarms within tx.
func (s *Store) apply(tx *gorm.DB, next func() uint64, ops []faultmgr.Op, site string, at time.Time) ([]faultmgr.OpResult, error) {
	res := make([]faultmgr.OpResult, len(ops))
	b := &batch{tx: tx, kind: s.db.Kind, site: site, next: next, cur: map[alarmKey]*alarmRow{}, keys: 100}
	if s.db.Kind == sqldb.Postgres {
		// PostgreSQL pays per round trip, not per bound parameter.
		b.keys = 1000
	}
	if err := b.load(ops); err != nil {
		return nil, err
	}
	for i, op := range ops {
		when := at
		if op.Event != nil {
			when = op.Event.Timestamp.UTC()
		}
		switch op.Kind {
		case faultmgr.OpRaise:
			k := alarmKey{op.Alarm.AlarmID, op.Alarm.EntityInstanceID}
			cur := b.cur[k]
			switch {
			case cur == nil:
				row := fromAlarm(op.Alarm, when)
				row.Site = site
				if row.UUID == "" {
					id, _ := uuid.NewV7()
					row.UUID = id.String()
				}
				b.cur[k], b.inserts = &row, append(b.inserts, &row)
				res[i] = faultmgr.OpResult{Alarm: toAlarm(row, false), Changed: true}
				b.event(faultmgr.EventSet, res[i].Alarm, op, when)
			case cur.Severity == string(op.Alarm.Severity) && cur.ReasonText == op.Alarm.ReasonText:
				res[i] = faultmgr.OpResult{Alarm: toAlarm(*cur, false)} // idempotent: nothing changes
				if op.Event != nil {
					b.event(faultmgr.EventSet, res[i].Alarm, op, when)
				}
			default:
				cur.Severity, cur.ReasonText, cur.Timestamp = string(op.Alarm.Severity), op.Alarm.ReasonText, when
				b.updated[cur.UUID] = cur
				res[i] = faultmgr.OpResult{Alarm: toAlarm(*cur, false), Changed: true}
				b.event(faultmgr.EventSet, res[i].Alarm, op, when)
			}
		case faultmgr.OpClear:
			k := alarmKey{op.Alarm.AlarmID, op.Alarm.EntityInstanceID}
			cur := b.cur[k]
			if cur == nil {
				if op.Event != nil {
					b.event(faultmgr.EventClear, op.Alarm, op, when)
				}
				continue // clearing an absent alarm is a no-op
			}
			a := toAlarm(*cur, false)
			b.remove(k, cur)
			res[i] = faultmgr.OpResult{Alarm: a, Changed: true}
			b.event(faultmgr.EventClear, a, op, when)
		case faultmgr.OpClearPrefix:
			if err := b.flush(); err != nil { // the prefix query must see this batch's inserts
				return nil, err
			}
			var rows []alarmRow
			// The entity itself and its sub-entities (host=worker-1 and
			// host=worker-1.process=sm), not host=worker-10.
			if err := tx.Where("site = ? AND (entity_instance_id = ? OR entity_instance_id LIKE ? ESCAPE '\\')", site,
				op.Prefix, likePrefix(op.Prefix+".")).Find(&rows).Error; err != nil {
				return nil, err
			}
			for _, r := range rows {
				k := alarmKey{r.AlarmID, r.EntityInstanceID}
				if cur := b.cur[k]; cur != nil {
					r = *cur
				}
				b.remove(k, &r)
				b.event(faultmgr.EventClear, toAlarm(r, false), faultmgr.Op{}, when)
			}
			res[i] = faultmgr.OpResult{Changed: len(rows) > 0, Cleared: len(rows)}
		case faultmgr.OpLog:
			if op.Event == nil {
				return nil, fmt.Errorf("faultdb: a log operation needs its event")
			}
			b.event(op.Event.Type, faultmgr.Alarm{}, op, when)
			res[i] = faultmgr.OpResult{Changed: true}
		default:
			return nil, fmt.Errorf("faultdb: unknown alarm operation %d", op.Kind)
		}
	}
	return res, b.flush()
}

type alarmKey struct{ id, entity string }

// batch applies a group commit's changes set-wise: one lookup for all keys,
// multi-row inserts, deletes by UUID set, events in bulk.
type batch struct {
	tx      *gorm.DB
	kind    sqldb.Kind
	site    string
	next    func() uint64
	cur     map[alarmKey]*alarmRow // state as of the op being applied
	inserts []*alarmRow            // new rows not yet written
	updated map[string]*alarmRow   // stored rows whose severity/reason changed
	deletes []string               // stored rows to delete
	events  []eventRow
	keys    int // keys per lookup query
}

// load reads the stored alarms of every key the batch names: per alarm ID
// (a batch has few), its entities in chunks — a lookup both engines answer
// from the unique (alarm_id, entity_instance_id) index.
func (b *batch) load(ops []faultmgr.Op) error {
	b.updated = map[string]*alarmRow{}
	entities := map[string][]string{} // alarm ID -> entities
	seen := map[alarmKey]bool{}
	for _, op := range ops {
		k := alarmKey{op.Alarm.AlarmID, op.Alarm.EntityInstanceID}
		if (op.Kind == faultmgr.OpRaise || op.Kind == faultmgr.OpClear) && !seen[k] {
			seen[k] = true
			entities[k.id] = append(entities[k.id], k.entity)
		}
	}
	for id, ents := range entities {
		for len(ents) > 0 {
			n := min(len(ents), b.keys)
			var rows []alarmRow
			if err := b.tx.Where("site = ? AND alarm_id = ? AND entity_instance_id IN ?", b.site, id, ents[:n]).Find(&rows).Error; err != nil {
				return err
			}
			for i := range rows {
				b.cur[alarmKey{rows[i].AlarmID, rows[i].EntityInstanceID}] = &rows[i]
			}
			ents = ents[n:]
		}
	}
	return nil
}

// remove forgets a row: unwritten inserts are dropped, stored rows deleted.
func (b *batch) remove(k alarmKey, r *alarmRow) {
	delete(b.cur, k)
	delete(b.updated, r.UUID)
	for i, ins := range b.inserts {
		if ins.UUID == r.UUID {
			b.inserts = append(b.inserts[:i], b.inserts[i+1:]...)
			return
		}
	}
	b.deletes = append(b.deletes, r.UUID)
}

// flush writes what the batch has decided so far.
func (b *batch) flush() error {
	if len(b.deletes) > 0 {
		if err := b.tx.Where("uuid IN ?", b.deletes).Delete(&alarmRow{}).Error; err != nil {
			return err
		}
		b.deletes = nil
	}
	for _, r := range b.updated {
		if err := b.tx.Model(&alarmRow{}).Where("uuid = ?", r.UUID).Updates(map[string]any{
			"severity": r.Severity, "reason_text": r.ReasonText, "timestamp": r.Timestamp}).Error; err != nil {
			return err
		}
	}
	clear(b.updated)
	if len(b.inserts) > 0 {
		if err := bulkInsert(b.tx, b.kind, "fm_alarms", alarmColumns, "", b.inserts, bulkChunk); err != nil {
			return err
		}
		b.inserts = nil
	}
	if len(b.events) > 0 {
		evs := make([]*eventRow, len(b.events))
		for i := range b.events {
			evs[i] = &b.events[i]
		}
		// A site's event central already holds (a site deleted and added
		// again resends its log) is skipped, not an error for the batch.
		if err := bulkInsert(b.tx, b.kind, "fm_events", eventColumns, "uuid", evs, bulkChunk); err != nil {
			return err
		}
		b.events = nil
	}
	return nil
}

// bulkChunk is the number of rows per bulk INSERT.
const bulkChunk = 1000

func (s *Store) suppressed(ctx context.Context) (map[string]bool, error) {
	ids, err := s.Suppressions(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m, nil
}

func (s *Store) Alarms(ctx context.Context, opts page.Options) ([]faultmgr.Alarm, string, error) {
	q := s.db.WithContext(ctx).Model(&alarmRow{})
	for _, f := range []string{"severity", "alarm_id", "site"} {
		if v, ok := opts.Filters[f]; ok {
			q = q.Where(f+" = ?", v)
		}
	}
	if v, ok := opts.Filters["entity_instance_id"]; ok {
		q = q.Where("entity_instance_id LIKE ? ESCAPE '\\'", likePrefix(v))
	}
	if v, ok := opts.Filters["mgmt_affecting"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, "", errs.Field("mgmt_affecting", "must be true or false")
		}
		if b {
			q = q.Where("mgmt_affecting <> ?", "none")
		} else {
			q = q.Where("mgmt_affecting = ?", "none")
		}
	}
	if v, ok := opts.Filters["suppressed"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, "", errs.Field("suppressed", "must be true or false")
		}
		sub := s.db.Model(&suppressionRow{}).Select("alarm_id")
		if b {
			q = q.Where("alarm_id IN (?)", sub)
		} else {
			q = q.Where("alarm_id NOT IN (?)", sub)
		}
	}
	if opts.After != "" {
		q = q.Where("uuid < ?", opts.After) // newest first
	}
	var rows []alarmRow
	if err := q.Order("uuid DESC").Limit(opts.Limit + 1).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r alarmRow) string { return r.UUID })
	sup, err := s.suppressed(ctx)
	if err != nil {
		return nil, "", err
	}
	out := make([]faultmgr.Alarm, len(rows))
	for i, r := range rows {
		out[i] = toAlarm(r, sup[r.AlarmID])
	}
	return out, next, nil
}

func (s *Store) Alarm(ctx context.Context, id string) (faultmgr.Alarm, error) {
	var r alarmRow
	err := s.db.WithContext(ctx).Where("uuid = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return faultmgr.Alarm{}, fmt.Errorf("%w: %s", faultmgr.ErrAlarmNotFound, id)
	}
	if err != nil {
		return faultmgr.Alarm{}, err
	}
	sup, err := s.suppressed(ctx)
	if err != nil {
		return faultmgr.Alarm{}, err
	}
	return toAlarm(r, sup[r.AlarmID]), nil
}

func (s *Store) Ack(ctx context.Context, id, user string, at time.Time) (faultmgr.Alarm, error) {
	res := s.db.WithContext(ctx).Model(&alarmRow{}).Where("uuid = ?", id).Updates(map[string]any{"acked_by": user, "acked_at": at})
	if res.Error != nil {
		return faultmgr.Alarm{}, res.Error
	}
	if res.RowsAffected == 0 {
		return faultmgr.Alarm{}, fmt.Errorf("%w: %s", faultmgr.ErrAlarmNotFound, id)
	}
	return s.Alarm(ctx, id)
}

func (s *Store) Summary(ctx context.Context) (faultmgr.Summary, error) {
	var rows []struct {
		Severity string
		N        int
	}
	err := s.db.WithContext(ctx).Model(&alarmRow{}).Select("severity, count(*) as n").
		Where("alarm_id NOT IN (?)", s.db.Model(&suppressionRow{}).Select("alarm_id")).
		Group("severity").Scan(&rows).Error
	var sum faultmgr.Summary
	for _, r := range rows {
		switch faultmgr.Severity(r.Severity) {
		case faultmgr.Critical:
			sum.Critical = r.N
		case faultmgr.Major:
			sum.Major = r.N
		case faultmgr.Minor:
			sum.Minor = r.N
		case faultmgr.Warning:
			sum.Warning = r.N
		}
	}
	return sum, err
}

func (s *Store) SetSuppressed(ctx context.Context, alarmID string, on bool, user string, at time.Time) error {
	db := s.db.WithContext(ctx)
	if !on {
		return db.Delete(&suppressionRow{}, "alarm_id = ?", alarmID).Error
	}
	err := db.Create(&suppressionRow{AlarmID: alarmID, UserName: user, CreatedAt: at}).Error
	if err != nil && sqldb.IsUniqueViolation(err) {
		return nil // suppressing twice is a no-op
	}
	return err
}

func (s *Store) Suppressions(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.db.WithContext(ctx).Model(&suppressionRow{}).Order("alarm_id").Pluck("alarm_id", &ids).Error
	return ids, err
}
