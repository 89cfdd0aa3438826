package servicedb_test

import (
	"context"
	"errors"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/servicedb"
)

func TestConformanceGroups(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := openDB(t)
		s, err := servicedb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CheckDurability(ctx); err != nil {
			t.Fatal(err)
		}
		spec := servicemgr.Spec{Name: "demo", Model: "2+1", Hosts: []string{"a", "b", "c"},
			Actions: servicemgr.Actions{Start: []string{"petrel", "demo-service"}}}
		rec, err := s.Put(ctx, servicemgr.Record{Spec: spec, Source: "api"}, true)
		if err != nil || rec.CreatedAt.IsZero() {
			t.Fatalf("Put = %+v, %v", rec, err)
		}
		if _, err := s.Put(ctx, servicemgr.Record{Spec: spec, Source: "api"}, true); !errors.Is(err, errs.Conflict) {
			t.Errorf("second create = %v; want conflict", err)
		}
		spec.Model = "1+1"
		if _, err := s.Put(ctx, servicemgr.Record{Spec: spec, Source: "config"}, false); err != nil {
			t.Fatal(err)
		}
		got, err := s.Groups(ctx)
		if err != nil || len(got) != 1 || got[0].Spec.Model != "1+1" || got[0].Source != "config" || !got[0].CreatedAt.Equal(rec.CreatedAt) {
			t.Fatalf("Groups = %+v, %v; want the replaced spec with its creation time", got, err)
		}
		if err := s.Delete(ctx, "demo"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "demo"); !errors.Is(err, errs.NotFound) {
			t.Errorf("second delete = %v; want not found", err)
		}
	})
}
