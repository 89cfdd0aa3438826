// Package patchdb keeps a site's patch records (swpatch.Record, with the
// signed manifest and signature as uploaded) in its SQL store through
// gorm. A site holds tens of patches; every read goes to SQL. Its gorm
// models never leave the package.
package patchdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/swpatch"
)

type patchRow struct {
	ID        string `gorm:"primaryKey;size:64"`
	Version   string `gorm:"size:128;not null"`
	State     string `gorm:"size:16;not null;index"`
	Doc       []byte `gorm:"not null"` // the record as JSON
	Manifest  []byte `gorm:"not null"` // as signed
	Signature []byte `gorm:"not null"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

func (patchRow) TableName() string { return "sw_patches" }

// archiveChunk is a piece of a patch's archive. Archives live in the
// database too, so a controller pair's standby has them when it takes
// over (its data directory has only what was uploaded to it).
type archiveChunk struct {
	ID   string `gorm:"primaryKey;size:64"`
	Seq  int    `gorm:"primaryKey;autoIncrement:false"`
	Data []byte `gorm:"not null"`
}

func (archiveChunk) TableName() string { return "sw_patch_archive_chunks" }

// archiveChunkSize is the size of an archive's pieces.
const archiveChunkSize = 1 << 20

// Store keeps patch records.
type Store struct{ db *sqldb.DB }

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &patchRow{}, &archiveChunk{}); err != nil {
		return nil, fmt.Errorf("patchdb: migrate: %w", err)
	}
	return &Store{db: db}, nil
}

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func toRow(r swpatch.Record) (patchRow, error) {
	doc, err := json.Marshal(r)
	if err != nil {
		return patchRow{}, err
	}
	return patchRow{ID: r.ID, Version: r.Version, State: string(r.State), Doc: doc, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}, nil
}

func fromRow(row patchRow) (swpatch.Record, error) {
	var r swpatch.Record
	if err := json.Unmarshal(row.Doc, &r); err != nil {
		return r, fmt.Errorf("patchdb: patch %s: %w", row.ID, err)
	}
	r.CreatedAt, r.UpdatedAt = row.CreatedAt.UTC(), row.UpdatedAt.UTC()
	if r.Hosts == nil {
		r.Hosts = map[string]swpatch.HostState{}
	}
	if r.Requires == nil {
		r.Requires = []string{}
	}
	return r, nil
}

// Create records a verified patch in state available.
func (s *Store) Create(ctx context.Context, r swpatch.Record, manifest, sig []byte) (swpatch.Record, error) {
	if len(manifest) == 0 || len(sig) == 0 {
		return swpatch.Record{}, errs.Wrapf(errs.Invalid, "patchdb: patch %s without its manifest or signature", r.ID)
	}
	r.State = swpatch.Available
	r.CreatedAt = now()
	r.UpdatedAt = r.CreatedAt
	if r.Hosts == nil {
		r.Hosts = map[string]swpatch.HostState{}
	}
	row, err := toRow(r)
	if err != nil {
		return r, err
	}
	row.Manifest, row.Signature = manifest, sig
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return swpatch.Record{}, fmt.Errorf("%w: %s", swpatch.ErrPatchExists, r.ID)
		}
		return swpatch.Record{}, fmt.Errorf("patchdb: create: %w", err)
	}
	return fromRow(row)
}

// Patch returns a patch's record.
func (s *Store) Patch(ctx context.Context, id string) (swpatch.Record, error) {
	var row patchRow
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return swpatch.Record{}, fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
	}
	if err != nil {
		return swpatch.Record{}, fmt.Errorf("patchdb: patch: %w", err)
	}
	return fromRow(row)
}

// Manifest returns a patch's manifest and signature as uploaded.
func (s *Store) Manifest(ctx context.Context, id string) (manifest, sig []byte, err error) {
	var row patchRow
	err = s.db.WithContext(ctx).Select("id", "manifest", "signature").Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, nil, fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
	}
	return row.Manifest, row.Signature, err
}

// Patches lists every patch, by ID.
func (s *Store) Patches(ctx context.Context) ([]swpatch.Record, error) {
	var rows []patchRow
	if err := s.db.WithContext(ctx).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("patchdb: list: %w", err)
	}
	out := make([]swpatch.Record, 0, len(rows))
	for _, row := range rows {
		r, err := fromRow(row)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Update changes a patch in one transaction: fn sees the stored record
// and changes it (an error aborts); the ID cannot change.
func (s *Store) Update(ctx context.Context, id string, fn func(*swpatch.Record) error) (swpatch.Record, error) {
	var out swpatch.Record
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row patchRow
		err := tx.Where("id = ?", id).Take(&row).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
		}
		if err != nil {
			return err
		}
		r, err := fromRow(row)
		if err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		if !r.State.Valid() {
			return fmt.Errorf("patchdb: patch %s: unknown state %q", id, r.State)
		}
		r.ID, r.UpdatedAt = id, now()
		nr, err := toRow(r)
		if err != nil {
			return err
		}
		if err := tx.Model(&patchRow{}).Where("id = ?", id).Updates(map[string]any{
			"state": nr.State, "doc": nr.Doc, "updated_at": r.UpdatedAt}).Error; err != nil {
			return err
		}
		out = r
		return nil
	})
	return out, err
}

// Delete removes a patch's record; fn (may be nil) vets it first, inside
// the transaction.
func (s *Store) Delete(ctx context.Context, id string, fn func(swpatch.Record) error) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row patchRow
		err := tx.Where("id = ?", id).Take(&row).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
		}
		if err != nil {
			return err
		}
		r, err := fromRow(row)
		if err != nil {
			return err
		}
		if fn != nil {
			if err := fn(r); err != nil {
				return err
			}
		}
		if err := tx.Where("id = ?", id).Delete(&archiveChunk{}).Error; err != nil {
			return err
		}
		return tx.Where("id = ?", id).Delete(&patchRow{}).Error
	})
}

// PutArchive stores a patch's archive (replacing any stored), in pieces,
// in one transaction.
func (s *Store) PutArchive(ctx context.Context, id string, r io.Reader) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ?", id).Delete(&archiveChunk{}).Error; err != nil {
			return err
		}
		buf := make([]byte, archiveChunkSize)
		for seq := 0; ; seq++ {
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				if err := tx.Create(&archiveChunk{ID: id, Seq: seq, Data: slices.Clone(buf[:n])}).Error; err != nil {
					return fmt.Errorf("patchdb: archive %s: %w", id, err)
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
}

// ReadArchive writes a patch's stored archive to w, a piece at a time.
func (s *Store) ReadArchive(ctx context.Context, id string, w io.Writer) (int64, error) {
	var total int64
	for seq := 0; ; seq++ {
		var c archiveChunk
		err := s.db.WithContext(ctx).Where("id = ? AND seq = ?", id, seq).Take(&c).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			if seq == 0 {
				return 0, fmt.Errorf("%w: no archive stored for %s", swpatch.ErrPatchNotFound, id)
			}
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("patchdb: archive %s: %w", id, err)
		}
		n, err := w.Write(c.Data)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}
