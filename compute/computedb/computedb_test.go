package computedb_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func open(t *testing.T, db *sqldb.DB) *computedb.Store {
	t.Helper()
	s, err := computedb.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CheckDurability(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func image(name, sum string) compute.Image {
	return compute.Image{Name: name, DiskFormat: compute.FormatRaw, Visibility: compute.Private,
		Project: compute.DefaultProject, Checksum: sum, Size: 4096}
}

var sumA, sumB = strings.Repeat("a", 64), strings.Repeat("b", 64)

func TestConformanceImages(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := openDB(t)
		s := open(t, db)
		im, err := s.CreateImage(ctx, image("cirros", sumA))
		if err != nil {
			t.Fatal(err)
		}
		if im.ID == "" || im.Status != compute.ImageQueued || im.CreatedAt.IsZero() {
			t.Fatalf("CreateImage = %+v", im)
		}
		if _, err := s.CreateImage(ctx, image("cirros", sumB)); !errors.Is(err, compute.ErrImageExists) || !errors.Is(err, errs.Conflict) {
			t.Errorf("duplicate name = %v; want ErrImageExists (conflict)", err)
		}
		for _, id := range []string{im.ID, "cirros"} {
			got, err := s.Image(ctx, id)
			if err != nil || got != im {
				t.Errorf("Image(%s) = %+v, %v; want %+v", id, got, err, im)
			}
		}
		if _, err := s.Image(ctx, "nope"); !errors.Is(err, errs.NotFound) {
			t.Errorf("Image(nope) = %v", err)
		}
		// The transition table, compare-and-set.
		if _, err := s.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageActive, nil); !errors.Is(err, errs.InvalidTransition) {
			t.Errorf("queued -> active = %v; want invalid transition", err)
		}
		saving, err := s.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil)
		if err != nil || saving.Status != compute.ImageSaving {
			t.Fatalf("queued -> saving = %+v, %v", saving, err)
		}
		if _, err := s.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); !errors.Is(err, errs.InvalidTransition) {
			t.Errorf("a second upload start = %v; want invalid transition", err)
		}
		if n, err := s.ImagesWithChecksum(ctx, sumA, ""); err != nil || n != 1 {
			t.Errorf("ImagesWithChecksum(saving) = %d, %v; want 1", n, err)
		}
		if n, err := s.ImagesWithChecksum(ctx, sumA, im.ID); err != nil || n != 0 {
			t.Errorf("ImagesWithChecksum(except itself) = %d, %v; want 0", n, err)
		}
		if n, err := s.RequeueSaving(ctx); err != nil || n != 1 {
			t.Errorf("RequeueSaving = %d, %v; want 1", n, err)
		}
		if got, _ := s.Image(ctx, im.ID); got.Status != compute.ImageQueued {
			t.Errorf("after RequeueSaving: %s", got.Status)
		}
		if _, err := s.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
			t.Fatal(err)
		}
		active, err := s.TransitionImage(ctx, "cirros", compute.ImageSaving, compute.ImageActive, func(im *compute.Image) {
			im.DiskFormat, im.Name = compute.FormatQCOW2, "renamed-ignored"
		})
		if err != nil || active.Status != compute.ImageActive || active.DiskFormat != compute.FormatQCOW2 || active.Name != "cirros" {
			t.Fatalf("saving -> active = %+v, %v", active, err)
		}
		if got, _ := s.Image(ctx, im.ID); got != active {
			t.Errorf("stored %+v; returned %+v", got, active)
		}
		// Paging and filters.
		for i := range 5 {
			if _, err := s.CreateImage(ctx, image(fmt.Sprintf("img-%d", i), sumB)); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		opts := page.Options{Limit: 2}
		for {
			items, next, err := s.Images(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				names = append(names, it.Name)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		if got := strings.Join(names, ","); got != "cirros,img-0,img-1,img-2,img-3,img-4" {
			t.Errorf("paged names = %s", got)
		}
		items, _, err := s.Images(ctx, page.Options{Limit: 10, Filters: map[string]string{"status": "active"}})
		if err != nil || len(items) != 1 || items[0].Name != "cirros" {
			t.Errorf("status=active = %+v, %v", items, err)
		}
		items, _, err = s.Images(ctx, page.Options{Limit: 10, Filters: map[string]string{"checksum": sumB, "disk_format": "raw"}})
		if err != nil || len(items) != 5 {
			t.Errorf("checksum filter = %d images, %v", len(items), err)
		}
		if err := s.DeleteImage(ctx, im.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteImage(ctx, im.ID); !errors.Is(err, errs.NotFound) {
			t.Errorf("second delete = %v", err)
		}
		// Records survive a reopen.
		s2 := open(t, db)
		if items, _, err := s2.Images(ctx, page.Options{Limit: 100}); err != nil || len(items) != 5 {
			t.Errorf("after reopen: %d images, %v", len(items), err)
		}
	})
}

func TestConformanceFlavors(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		s := open(t, openDB(t))
		f, err := s.CreateFlavor(ctx, compute.Flavor{Name: "m1.small", VCPUs: 1, RAMMiB: 2048, DiskGiB: 20, Public: true, Project: "admin"})
		if err != nil || f.ID == "" || f.CreatedAt.IsZero() {
			t.Fatalf("CreateFlavor = %+v, %v", f, err)
		}
		if _, err := s.CreateFlavor(ctx, compute.Flavor{Name: "m1.small", VCPUs: 2, RAMMiB: 64, DiskGiB: 1, Project: "admin"}); !errors.Is(err, compute.ErrFlavorExists) {
			t.Errorf("duplicate = %v", err)
		}
		for _, id := range []string{f.ID, "m1.small"} {
			if got, err := s.Flavor(ctx, id); err != nil || got != f {
				t.Errorf("Flavor(%s) = %+v, %v; want %+v", id, got, err, f)
			}
		}
		if _, err := s.CreateFlavor(ctx, compute.Flavor{Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80, Project: "p1"}); err != nil {
			t.Fatal(err)
		}
		items, next, err := s.Flavors(ctx, page.Options{Limit: 1})
		if err != nil || len(items) != 1 || items[0].Name != "m1.large" || next == "" {
			t.Fatalf("first page = %+v %q %v", items, next, err)
		}
		items, next, err = s.Flavors(ctx, page.Options{Limit: 1, After: next})
		if err != nil || len(items) != 1 || items[0].Name != "m1.small" || next != "" {
			t.Fatalf("second page = %+v %q %v", items, next, err)
		}
		if err := s.DeleteFlavor(ctx, f.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Flavor(ctx, "m1.small"); !errors.Is(err, compute.ErrFlavorNotFound) {
			t.Errorf("after delete: %v", err)
		}
		if err := s.DeleteFlavor(ctx, f.ID); !errors.Is(err, errs.NotFound) {
			t.Errorf("second delete = %v", err)
		}
	})
}
