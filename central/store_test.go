package central_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
)

func TestConformanceSubcloudStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		st, err := central.OpenSubcloudStore(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range []central.Subcloud{
			{Name: "site-b", Shape: inventory.Duplex, Availability: central.Online, Management: central.Managed, Status: central.StatusOK,
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
		if err := st.DeleteSubcloud(ctx, "site-a", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Subcloud(ctx, "site-a"); !errors.Is(err, central.ErrSubcloudNotFound) {
			t.Errorf("Subcloud(deleted) = %v; want ErrSubcloudNotFound", err)
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
