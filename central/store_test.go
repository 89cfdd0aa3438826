package central_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
)

// eachRegistry runs fn on each database with the registry as the
// database store and as its in-memory copy (CacheSubclouds): reopen opens
// it on db again.
func eachRegistry(t *testing.T, fn func(t *testing.T, db *sqldb.DB, reopen func(*testing.T) central.SubcloudStore)) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		for _, cached := range []bool{false, true} {
			name := "database"
			if cached {
				name = "cached"
			}
			t.Run(name, func(t *testing.T) {
				db := open(t)
				fn(t, db, func(t *testing.T) central.SubcloudStore {
					st, err := central.OpenSubcloudStore(context.Background(), db)
					if err == nil && cached {
						st, err = central.CacheSubclouds(context.Background(), st)
					}
					if err != nil {
						t.Fatal(err)
					}
					return st
				})
			})
		}
	})
}

// sameAsDatabase checks that st lists what a fresh read of db holds,
// page by page and by each filter value seen.
func sameAsDatabase(t *testing.T, db *sqldb.DB, st central.SubcloudStore) {
	t.Helper()
	ctx := context.Background()
	fresh, err := central.OpenSubcloudStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	list := func(s central.SubcloudStore, filters map[string]string) []string {
		var out []string
		opts := rest.ListOptions{Limit: 2, Filters: filters}
		for {
			scs, next, err := s.Subclouds(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, sc := range scs {
				b, _ := json.Marshal(sc)
				out = append(out, string(b))
			}
			if next == "" {
				return out
			}
			opts.After = next
		}
	}
	want := list(fresh, nil)
	if got := list(st, nil); !slices.Equal(got, want) {
		t.Errorf("the store lists\n%v\nthe database holds\n%v", got, want)
	}
	for _, f := range central.SubcloudFilters {
		for _, v := range []string{"simplex", "duplex", "online", "offline", "managed", "unmanaged", "not-deployed", "Default", "east", "north"} {
			if got, want := list(st, map[string]string{f: v}), list(fresh, map[string]string{f: v}); !slices.Equal(got, want) {
				t.Errorf("%s=%s: the store lists %d, the database %d", f, v, len(got), len(want))
			}
		}
	}
}

func TestConformanceSubcloudStore(t *testing.T) {
	eachRegistry(t, func(t *testing.T, db *sqldb.DB, reopen func(*testing.T) central.SubcloudStore) {
		ctx := context.Background()
		st := reopen(t)
		for _, sc := range []central.Subcloud{
			{Name: "site-b", Shape: inventory.Duplex, Availability: central.Online, Management: central.Managed, Status: central.StatusOK, BootstrapAddress: "10.1.0.2",
				Sync: map[string]central.SyncStatus{"images": central.InSync}},
			{Name: "site-a", Shape: inventory.Simplex, Availability: central.Offline, Management: central.Unmanaged, Status: central.StatusOffline},
		} {
			if err := st.CreateSubcloud(ctx, sc); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-a"}); !errors.Is(err, central.ErrSubcloudExists) {
			t.Errorf("CreateSubcloud(duplicate) = %v; want ErrSubcloudExists", err)
		}
		got, err := st.Subcloud(ctx, "site-b")
		if err != nil || got.Shape != inventory.Duplex || got.Sync["images"] != central.InSync || got.CreatedAt.IsZero() {
			t.Errorf("Subcloud(site-b) = %+v, %v", got, err)
		}
		all, next, _ := st.Subclouds(ctx, rest.ListOptions{Limit: 1})
		if len(all) != 1 || all[0].Name != "site-a" || next != "site-a" {
			t.Errorf("Subclouds(limit 1) = %v next %q", all, next)
		}
		offline, _, _ := st.Subclouds(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"status": "offline"}})
		if len(offline) != 1 || offline[0].Name != "site-a" {
			t.Errorf("Subclouds(status=offline) = %v", offline)
		}
		// A batch: both written in one transaction, an unknown name left
		// out, duplicates once; an error from fn or a moved group changes
		// nothing.
		now := time.Now().UTC().Truncate(time.Millisecond)
		batch, err := st.UpdateSubclouds(ctx, []string{"site-b", "nowhere", "site-a", "site-b"}, func(sc *central.Subcloud) error {
			sc.Availability, sc.LastSeen = central.Online, &now
			sc.Status = central.StatusOf(sc.Availability, sc.AlarmSummary)
			return nil
		})
		if err != nil || len(batch) != 2 || batch[0].Name != "site-a" || batch[1].Name != "site-b" || batch[0].Availability != central.Online {
			t.Errorf("UpdateSubclouds = %+v, %v; want site-a and site-b online", batch, err)
		}
		if got, _ := st.Subcloud(ctx, "site-a"); got.Availability != central.Online || got.LastSeen == nil || !got.LastSeen.Equal(now) || got.Management != central.Unmanaged {
			t.Errorf("site-a after UpdateSubclouds: %+v", got)
		}
		boom := errors.New("boom")
		if _, err := st.UpdateSubclouds(ctx, []string{"site-a", "site-b"}, func(sc *central.Subcloud) error {
			if sc.Name == "site-b" {
				return boom
			}
			sc.Availability = central.Offline
			return nil
		}); !errors.Is(err, boom) {
			t.Errorf("UpdateSubclouds(fn fails) = %v; want its error", err)
		}
		if _, err := st.UpdateSubclouds(ctx, []string{"site-a"}, func(sc *central.Subcloud) error { sc.Group = "elsewhere"; return nil }); err == nil {
			t.Error("UpdateSubclouds moved a subcloud to another group")
		}
		if got, _ := st.Subcloud(ctx, "site-a"); got.Availability != central.Online || got.Group != central.DefaultGroup {
			t.Errorf("site-a after failed batches: %+v; want unchanged", got)
		}
		sameAsDatabase(t, db, st)
		if err := st.DeleteSubcloud(ctx, "site-a", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Subcloud(ctx, "site-a"); !errors.Is(err, central.ErrSubcloudNotFound) {
			t.Errorf("Subcloud(deleted) = %v; want ErrSubcloudNotFound", err)
		}
		sameAsDatabase(t, db, st)
		// What a caller does with a subcloud it read does not reach the store.
		got, _ = st.Subcloud(ctx, "site-b")
		got.Sync["images"] = central.OutOfSync
		if again, _ := st.Subcloud(ctx, "site-b"); again.Sync["images"] != central.InSync {
			t.Errorf("changing a read subcloud changed the store's: %v", again.Sync)
		}
	})
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		a    central.Availability
		s    central.AlarmSummary
		want central.Status
	}{
		{central.Offline, central.AlarmSummary{}, central.StatusOffline},
		{central.Online, central.AlarmSummary{Critical: 1, Major: 3}, central.StatusCritical},
		{central.Online, central.AlarmSummary{Minor: 1}, central.StatusDegraded},
		{central.Online, central.AlarmSummary{Warning: 9}, central.StatusOK},
	} {
		if got := central.StatusOf(tc.a, tc.s); got != tc.want {
			t.Errorf("StatusOf(%s, %+v) = %s; want %s", tc.a, tc.s, got, tc.want)
		}
	}
}
