package central

import (
	"context"
	"errors"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// TestConformanceImageSyncRecords: an image becomes a sync record in the
// transaction that makes it active, and a tombstone in its delete's; a
// failed sync write leaves the image as it was.
func TestConformanceImageSyncRecords(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		syncs, err := OpenSyncStore(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		store, err := computedb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		hook := imageSyncHook(syncs)
		var fail error
		store.OnImageChange(func(tx *gorm.DB, im compute.Image, deleted bool) error {
			if err := hook(tx, im, deleted); err != nil {
				return err
			}
			return fail
		})
		records := func() []SyncRecord {
			recs, _, err := syncs.Since(ctx, syncproto.Images, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			return recs
		}
		im, err := store.CreateImage(ctx, compute.Image{Name: "cirros", DiskFormat: compute.FormatRaw, Visibility: compute.Public,
			Project: "admin", Checksum: strings.Repeat("ab", 32), Size: 42})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
			t.Fatal(err)
		}
		if recs := records(); len(recs) != 0 {
			t.Fatalf("a saving image is a sync record: %+v", recs)
		}
		// The sync write fails: the image stays saving, no record.
		fail = errors.New("injected")
		if _, err := store.TransitionImage(ctx, im.ID, compute.ImageSaving, compute.ImageActive, nil); !errors.Is(err, fail) {
			t.Fatalf("activation with a failing sync write: %v", err)
		}
		if got, _ := store.Image(ctx, im.ID); got.Status != compute.ImageSaving || len(records()) != 0 {
			t.Fatalf("after the failed activation: %s, records %+v; want saving, none", got.Status, records())
		}
		fail = nil
		if _, err := store.TransitionImage(ctx, im.ID, compute.ImageSaving, compute.ImageActive, nil); err != nil {
			t.Fatal(err)
		}
		recs := records()
		if len(recs) != 1 || recs[0].Key != im.ID || recs[0].Deleted {
			t.Fatalf("records after activation: %+v", recs)
		}
		d, err := decodeImageDoc(recs[0])
		if err != nil || d != (imageDoc{ID: im.ID, Name: "cirros", DiskFormat: compute.FormatRaw, Visibility: compute.Public,
			Project: "admin", Checksum: im.Checksum, Size: 42}) {
			t.Errorf("record doc = %+v, %v", d, err)
		}
		if err := store.DeleteImage(ctx, im.ID); err != nil {
			t.Fatal(err)
		}
		if after := records(); len(after) != 1 || !after[0].Deleted || after[0].Version <= recs[0].Version {
			t.Errorf("records after delete: %+v; want a newer tombstone", after)
		}
	})
}
