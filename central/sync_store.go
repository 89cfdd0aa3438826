package central

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// The sync store keeps central's desired state of shared resources as
// versioned records (docs/design-sync-and-central-ha.md §1). One fleet-wide
// counter, dc_sync_meta.head, numbers every change: a write locks the
// counter row, increments it and upserts its record with version = head in
// one transaction, so versions commit in order and a reader that sees head
// H sees every record up to H.

// syncMetaRow is the single row (ID 1) holding the store's lineage and head.
type syncMetaRow struct {
	ID      int    `gorm:"primaryKey;autoIncrement:false"`
	Lineage string `gorm:"size:36;not null"`
	Head    int64  `gorm:"not null"`
}

func (syncMetaRow) TableName() string { return "dc_sync_meta" }

// syncResourceRow is one record: the latest change of (resource, key).
type syncResourceRow struct {
	Resource  string `gorm:"primaryKey;size:32;uniqueIndex:idx_dc_sync_resources_version,priority:1"`
	Key       string `gorm:"primaryKey;size:255"`
	Version   int64  `gorm:"not null;uniqueIndex:idx_dc_sync_resources_version,priority:2"`
	Deleted   bool   `gorm:"not null"`
	Doc       []byte // canonical JSON; nil for a tombstone
	Content   string `gorm:"size:64"` // hex SHA-256 of Doc; "" for a tombstone
	UpdatedAt time.Time
}

func (syncResourceRow) TableName() string { return "dc_sync_resources" }

// syncHorizonRow is the oldest version from which a resource's deltas are
// complete: tombstones at or below it may have been removed.
type syncHorizonRow struct {
	Resource   string `gorm:"primaryKey;size:32"`
	MinVersion int64  `gorm:"not null"`
}

func (syncHorizonRow) TableName() string { return "dc_sync_horizon" }

// syncStatusRow is the persisted sync state of one resource at one site.
type syncStatusRow struct {
	Site     string `gorm:"primaryKey;size:63"`
	Resource string `gorm:"primaryKey;size:32"`
	Acked    int64  `gorm:"not null"`
	Status   string `gorm:"size:16;not null"`
	Since    time.Time
	Reason   string `gorm:"size:255"`
	Pending  int    `gorm:"not null"`
	AuditAt  *time.Time
	Alarmed  bool `gorm:"not null"`
}

func (syncStatusRow) TableName() string { return "dc_sync_status" }

// SyncRecord is one synced record as the store holds it.
type SyncRecord struct {
	Resource  string
	Key       string
	Version   uint64
	Deleted   bool            // a tombstone: sites delete the key
	Doc       json.RawMessage // canonical JSON; nil for a tombstone
	Content   string          // hex SHA-256 of Doc; "" for a tombstone
	UpdatedAt time.Time
}

// SiteSyncState is what central persists about one resource at one site.
// Only transitions are written (design §4).
type SiteSyncState struct {
	Site     string
	Resource string
	Acked    uint64 // a cache of the site's cursor; the site's cursor is the truth
	Status   SyncStatus
	Since    time.Time // when Status was entered
	Reason   string    // why, for out-of-sync
	Pending  int       // keys the site reported pending (images missing bytes)
	AuditAt  time.Time // the last audit; zero if never
	Alarmed  bool      // 280.002 is raised for it
}

// Errors of the sync store.
var (
	// ErrBelowHorizon: deltas from the asked version are incomplete (its
	// tombstones were compacted away); the site needs a snapshot.
	ErrBelowHorizon = errs.New(errs.Conflict, "sync cursor below the horizon")
)

// SyncStore is central's versioned store of synced records, on SQLite or
// PostgreSQL.
type SyncStore struct {
	db      *sqldb.DB
	lineage string
}

// OpenSyncStore migrates the sync tables, creates the lineage at the first
// open, and returns the store kept in db.
func OpenSyncStore(ctx context.Context, db *sqldb.DB) (*SyncStore, error) {
	if err := sqldb.Migrate(ctx, db, &syncMetaRow{}, &syncResourceRow{}, &syncHorizonRow{}, &syncStatusRow{}); err != nil {
		return nil, fmt.Errorf("central: migrate sync store: %w", err)
	}
	g := db.WithContext(ctx)
	err := g.Clauses(clause.OnConflict{DoNothing: true}).
		Create(&syncMetaRow{ID: 1, Lineage: uuid.NewString()}).Error
	if err != nil {
		return nil, fmt.Errorf("central: create sync lineage: %w", err)
	}
	var m syncMetaRow
	if err := g.Where("id = 1").Take(&m).Error; err != nil {
		return nil, fmt.Errorf("central: read sync lineage: %w", err)
	}
	return &SyncStore{db: db, lineage: m.Lineage}, nil
}

// Lineage identifies this store's history; a rebuilt store has another, and
// sites holding the old one get a snapshot.
func (s *SyncStore) Lineage() string { return s.lineage }

// Put records doc as the desired state of resource's key and returns its
// version. doc must be a JSON object; it is stored in canonical form. An
// unchanged document writes nothing and returns the version it has.
func (s *SyncStore) Put(ctx context.Context, resource, key string, doc []byte) (uint64, error) {
	var v uint64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		v, err = s.change(tx, resource, key, doc, false)
		return err
	})
	return v, err
}

// Delete records that resource's key is gone (a tombstone) and returns the
// tombstone's version. A key never recorded, or already deleted, writes
// nothing (version 0, or the tombstone's).
func (s *SyncStore) Delete(ctx context.Context, resource, key string) (uint64, error) {
	var v uint64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		v, err = s.change(tx, resource, key, nil, true)
		return err
	})
	return v, err
}

// ChangeHook records a change inside tx, a transaction the caller opened on
// this store's database, so the caller's row and the sync record commit
// together (design §1, "Sources"). doc is ignored when deleted is true. On
// PostgreSQL tx must be READ COMMITTED (the default). Call it after the
// caller's own writes: it takes the fleet-wide counter lock, which is held
// until tx ends.
func (s *SyncStore) ChangeHook(tx *gorm.DB, resource, key string, doc []byte, deleted bool) error {
	_, err := s.change(tx, resource, key, doc, deleted)
	return err
}

// change validates and writes one change inside tx.
func (s *SyncStore) change(tx *gorm.DB, resource, key string, doc []byte, deleted bool) (uint64, error) {
	if err := syncproto.ValidateResource(resource); err != nil {
		return 0, err
	}
	if err := syncproto.ValidateKey(key); err != nil {
		return 0, err
	}
	var (
		canon   []byte
		content string
	)
	if !deleted {
		c, h, err := syncproto.CanonicalObject(doc)
		if err != nil {
			return 0, err
		}
		canon, content = c, h.String()
	}
	var m syncMetaRow
	if err := s.lockForUpdate(tx).Where("id = 1").Take(&m).Error; err != nil {
		return 0, fmt.Errorf("central: lock sync head: %w", err)
	}
	var cur syncResourceRow
	err := tx.Where("resource = ? AND key = ?", resource, key).Take(&cur).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		if deleted {
			return 0, nil
		}
	case err != nil:
		return 0, fmt.Errorf("central: read sync record %s/%s: %w", resource, key, err)
	case deleted && cur.Deleted, !deleted && !cur.Deleted && cur.Content == content:
		return uint64(cur.Version), nil
	}
	head := m.Head + 1
	if err := tx.Model(&syncMetaRow{}).Where("id = 1").Update("head", head).Error; err != nil {
		return 0, fmt.Errorf("central: bump sync head: %w", err)
	}
	row := syncResourceRow{Resource: resource, Key: key, Version: head, Deleted: deleted, Doc: canon,
		Content: content, UpdatedAt: time.Now().UTC()}
	err = tx.Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "resource"}, {Name: "key"}},
		DoUpdates: clause.AssignmentColumns([]string{"version", "deleted", "doc", "content", "updated_at"}),
	}).Create(&row).Error
	if err != nil {
		return 0, fmt.Errorf("central: write sync record %s/%s: %w", resource, key, err)
	}
	return uint64(head), nil
}

// dbVersion is v as the int64 columns hold it; versions beyond them mean
// "everything".
func dbVersion(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// lockForUpdate locks the rows q reads until the transaction ends, on
// PostgreSQL; SQLite writers are serialised already (BEGIN IMMEDIATE).
func (s *SyncStore) lockForUpdate(q *gorm.DB) *gorm.DB {
	if s.db.Kind == sqldb.Postgres {
		return q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	return q
}

// Head returns the fleet-wide version counter: the version of the latest
// change of any resource.
func (s *SyncStore) Head(ctx context.Context) (uint64, error) {
	var m syncMetaRow
	if err := s.db.WithContext(ctx).Where("id = 1").Take(&m).Error; err != nil {
		return 0, fmt.Errorf("central: read sync head: %w", err)
	}
	return uint64(m.Head), nil
}

// Horizon returns the oldest version from which resource's deltas are
// complete: a site whose cursor is below it needs a snapshot.
func (s *SyncStore) Horizon(ctx context.Context, resource string) (uint64, error) {
	if err := syncproto.ValidateResource(resource); err != nil {
		return 0, err
	}
	var hs []int64
	if err := s.db.WithContext(ctx).Model(&syncHorizonRow{}).Where("resource = ?", resource).
		Pluck("min_version", &hs).Error; err != nil {
		return 0, fmt.Errorf("central: read sync horizon: %w", err)
	}
	if len(hs) == 0 {
		return 0, nil
	}
	return uint64(hs[0]), nil
}

// sinceRow is a record joined with the head and horizon that were current
// when it was read.
type sinceRow struct {
	Head      int64
	Horizon   int64
	Key       sql.NullString
	Version   sql.NullInt64
	Deleted   sql.NullBool
	Doc       []byte
	Content   sql.NullString
	UpdatedAt sql.NullTime
}

// Since returns resource's records with from < version <= head, in version
// order, at most limit of them (limit <= 0: all), and the head they were
// read at. Records, head and horizon come from one statement, so they are
// one snapshot: when fewer than limit records return, they are every change
// of resource up to head; otherwise the last record's version is where the
// next call continues. It fails with ErrBelowHorizon when from is below the
// horizon (tombstones after from may be gone).
func (s *SyncStore) Since(ctx context.Context, resource string, from uint64, limit int) ([]SyncRecord, uint64, error) {
	if err := syncproto.ValidateResource(resource); err != nil {
		return nil, 0, err
	}
	q := `SELECT m.head AS head, COALESCE(h.min_version, 0) AS horizon, r.key AS key, r.version AS version,
	             r.deleted AS deleted, r.doc AS doc, r.content AS content, r.updated_at AS updated_at
	      FROM dc_sync_meta m
	      LEFT JOIN dc_sync_horizon h ON h.resource = ?
	      LEFT JOIN dc_sync_resources r ON r.resource = ? AND r.version > ? AND r.version <= m.head
	      WHERE m.id = 1
	      ORDER BY r.version`
	args := []any{resource, resource, dbVersion(from)}
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	var rows []sinceRow
	if err := s.db.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, 0, fmt.Errorf("central: read sync records: %w", err)
	}
	if len(rows) == 0 {
		return nil, 0, errors.New("central: sync store has no meta row")
	}
	if h := uint64(rows[0].Horizon); from < h {
		return nil, 0, fmt.Errorf("%w: %s from %d, horizon %d", ErrBelowHorizon, resource, from, h)
	}
	head := uint64(rows[0].Head)
	out := make([]SyncRecord, 0, len(rows))
	for _, r := range rows {
		if !r.Key.Valid { // the LEFT JOIN's row when nothing is newer
			continue
		}
		rec := SyncRecord{Resource: resource, Key: r.Key.String, Version: uint64(r.Version.Int64),
			Deleted: r.Deleted.Bool, Content: r.Content.String, UpdatedAt: r.UpdatedAt.Time.UTC()}
		if !rec.Deleted {
			rec.Doc = json.RawMessage(r.Doc)
		}
		out = append(out, rec)
	}
	return out, head, nil
}

// Compact removes resource's tombstones with version < before that were
// written before olderThan, and moves the horizon up to the newest one
// removed. Callers pass before = 1 + the lowest cursor every managed site
// has acknowledged, and olderThan = now minus the retention (7 days). It
// returns how many tombstones went and the horizon.
func (s *SyncStore) Compact(ctx context.Context, resource string, before uint64, olderThan time.Time) (int, uint64, error) {
	if err := syncproto.ValidateResource(resource); err != nil {
		return 0, 0, err
	}
	var (
		removed int
		horizon int64
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var cur []int64
		if err := s.lockForUpdate(tx.Model(&syncHorizonRow{})).Where("resource = ?", resource).
			Pluck("min_version", &cur).Error; err != nil {
			return err
		}
		if len(cur) > 0 {
			horizon = cur[0]
		}
		cond := tx.Where("resource = ? AND deleted = ? AND version < ? AND updated_at < ?",
			resource, true, dbVersion(before), olderThan.UTC())
		var maxV sql.NullInt64
		if err := cond.Model(&syncResourceRow{}).Select("MAX(version)").Scan(&maxV).Error; err != nil {
			return err
		}
		if !maxV.Valid {
			return nil
		}
		// The bound keeps out tombstones committed since the MAX.
		res := tx.Where("resource = ? AND deleted = ? AND version <= ? AND updated_at < ?",
			resource, true, maxV.Int64, olderThan.UTC()).Delete(&syncResourceRow{})
		if res.Error != nil {
			return res.Error
		}
		removed = int(res.RowsAffected)
		if maxV.Int64 <= horizon {
			return nil
		}
		horizon = maxV.Int64
		// Never lower a horizon another compaction raised meanwhile.
		return tx.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "resource"}},
			DoUpdates: clause.Set{{Column: clause.Column{Name: "min_version"}, Value: gorm.Expr(
				"CASE WHEN excluded.min_version > dc_sync_horizon.min_version THEN excluded.min_version ELSE dc_sync_horizon.min_version END")}},
		}).Create(&syncHorizonRow{Resource: resource, MinVersion: horizon}).Error
	})
	if err != nil {
		return 0, 0, fmt.Errorf("central: compact %s: %w", resource, err)
	}
	return removed, uint64(horizon), nil
}

// validateSite checks a site name as the status table keys it.
func validateSite(site string) error {
	if site == "" || len(site) > 63 || !utf8.ValidString(site) {
		return errs.Field("site", "must be 1-63 bytes of UTF-8")
	}
	return nil
}

// SiteSyncStates returns the persisted sync state of every resource at
// site, ordered by resource; none if nothing was recorded.
func (s *SyncStore) SiteSyncStates(ctx context.Context, site string) ([]SiteSyncState, error) {
	if err := validateSite(site); err != nil {
		return nil, err
	}
	var rows []syncStatusRow
	if err := s.db.WithContext(ctx).Where("site = ?", site).Order("resource").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("central: read sync status of %s: %w", site, err)
	}
	out := make([]SiteSyncState, len(rows))
	for i, r := range rows {
		out[i] = stateOf(r)
	}
	return out, nil
}

// AllSiteSyncStates returns the persisted sync state of every site, by
// site and resource: the engine reads it once at start (one query, not
// one per site).
func (s *SyncStore) AllSiteSyncStates(ctx context.Context) ([]SiteSyncState, error) {
	var rows []syncStatusRow
	if err := s.db.WithContext(ctx).Order("site").Order("resource").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("central: read sync status: %w", err)
	}
	out := make([]SiteSyncState, len(rows))
	for i, r := range rows {
		out[i] = stateOf(r)
	}
	return out, nil
}

func stateOf(r syncStatusRow) SiteSyncState {
	st := SiteSyncState{Site: r.Site, Resource: r.Resource, Acked: uint64(r.Acked), Status: SyncStatus(r.Status),
		Since: r.Since.UTC(), Reason: r.Reason, Pending: r.Pending, Alarmed: r.Alarmed}
	if r.AuditAt != nil {
		st.AuditAt = r.AuditAt.UTC()
	}
	return st
}

// SetSiteSyncState records one site's sync state of one resource.
func (s *SyncStore) SetSiteSyncState(ctx context.Context, st SiteSyncState) error {
	return s.SetSiteSyncStates(ctx, []SiteSyncState{st})
}

// siteSyncBatch bounds the rows of one upsert statement (PostgreSQL binds
// at most 65,535 parameters; a row takes 8).
const siteSyncBatch = 500

// SetSiteSyncStates records sites' sync states, all in one transaction
// (the sync engine's sweep writes thousands at once). One invalid state
// fails them all, and nothing is written. A site and resource named twice
// keeps the last.
func (s *SyncStore) SetSiteSyncStates(ctx context.Context, sts []SiteSyncState) error {
	rows := make([]syncStatusRow, 0, len(sts))
	at := map[[2]string]int{}
	for _, st := range sts {
		if err := validateSite(st.Site); err != nil {
			return err
		}
		if err := syncproto.ValidateResource(st.Resource); err != nil {
			return err
		}
		if !st.Status.Valid() {
			return errs.Field("status", "%q is not one of %s, %s, %s", st.Status, InSync, OutOfSync, SyncUnknown)
		}
		if len(st.Reason) > maxText {
			return errs.Field("reason", "at most %d bytes", maxText)
		}
		if st.Pending < 0 {
			return errs.Field("pending", "must not be negative")
		}
		row := syncStatusRow{Site: st.Site, Resource: st.Resource, Acked: int64(st.Acked), Status: string(st.Status),
			Since: st.Since.UTC(), Reason: st.Reason, Pending: st.Pending, Alarmed: st.Alarmed}
		if !st.AuditAt.IsZero() {
			a := st.AuditAt.UTC()
			row.AuditAt = &a
		}
		// One statement may not upsert a row twice (PostgreSQL refuses).
		key := [2]string{st.Site, st.Resource}
		if i, ok := at[key]; ok {
			rows[i] = row
			continue
		}
		at[key] = len(rows)
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "site"}, {Name: "resource"}},
			DoUpdates: clause.AssignmentColumns([]string{"acked", "status", "since", "reason", "pending", "audit_at", "alarmed"}),
		}).CreateInBatches(&rows, siteSyncBatch).Error
	})
	if err != nil {
		if len(rows) == 1 {
			return fmt.Errorf("central: write sync status of %s/%s: %w", rows[0].Site, rows[0].Resource, err)
		}
		return fmt.Errorf("central: write sync status of %d sites' resources: %w", len(rows), err)
	}
	return nil
}

// DeleteSiteSyncStates forgets site's sync state (the subcloud was deleted).
func (s *SyncStore) DeleteSiteSyncStates(ctx context.Context, site string) error {
	if err := validateSite(site); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Where("site = ?", site).Delete(&syncStatusRow{}).Error; err != nil {
		return fmt.Errorf("central: delete sync status of %s: %w", site, err)
	}
	return nil
}

// Heads returns each resource's newest version (resources with no record
// are absent).
func (s *SyncStore) Heads(ctx context.Context) (map[string]uint64, error) {
	var rows []struct {
		Resource string
		Head     int64
	}
	if err := s.db.WithContext(ctx).Raw(`SELECT resource, MAX(version) AS head FROM dc_sync_resources GROUP BY resource`).
		Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("central: read sync heads: %w", err)
	}
	out := make(map[string]uint64, len(rows))
	for _, r := range rows {
		out[r.Resource] = uint64(r.Head)
	}
	return out, nil
}
