package sqldb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// schemaRow records a set of models already migrated, by fingerprint.
type schemaRow struct {
	Fingerprint string `gorm:"primaryKey;size:64"`
	MigratedAt  time.Time
}

func (schemaRow) TableName() string { return "petrel_schema" }

// Migrate brings the tables of models up to date (gorm's AutoMigrate),
// unless this very set of model definitions was migrated before: then it
// does nothing. A controller taking over starts its stores in
// milliseconds instead of the second AutoMigrate's catalogue queries cost
// on PostgreSQL.
func Migrate(ctx context.Context, db *DB, models ...any) error {
	fp := fingerprint(models)
	g := db.WithContext(ctx)
	if g.Migrator().HasTable(&schemaRow{}) {
		var n int64
		if err := g.Model(&schemaRow{}).Where("fingerprint = ?", fp).Count(&n).Error; err == nil && n > 0 {
			return nil
		}
	} else if err := g.AutoMigrate(&schemaRow{}); err != nil {
		return err
	}
	if err := g.AutoMigrate(models...); err != nil {
		return err
	}
	return g.Where("fingerprint = ?", fp).FirstOrCreate(&schemaRow{Fingerprint: fp, MigratedAt: time.Now().UTC()}).Error
}

// fingerprint hashes the models' definitions: type names, fields, types
// and tags (embedded structs included), and table names.
func fingerprint(models []any) string {
	h := sha256.New()
	for _, m := range models {
		t := reflect.TypeOf(m)
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if tn, ok := m.(interface{ TableName() string }); ok {
			fmt.Fprintf(h, "table %s\n", tn.TableName())
		}
		writeType(h, t, map[reflect.Type]bool{})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeType(w interface{ Write([]byte) (int, error) }, t reflect.Type, seen map[reflect.Type]bool) {
	fmt.Fprintf(w, "type %s.%s %s\n", t.PkgPath(), t.Name(), t.Kind())
	if t.Kind() != reflect.Struct || seen[t] {
		return
	}
	seen[t] = true
	for i := range t.NumField() {
		f := t.Field(i)
		fmt.Fprintf(w, "field %s %s %q\n", f.Name, f.Type.String(), string(f.Tag))
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if f.Anonymous || (ft.Kind() == reflect.Struct && !strings.HasPrefix(ft.PkgPath(), "time")) {
			writeType(w, ft, seen)
		}
	}
}
