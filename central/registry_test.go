package central

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
)

// TestRegistryJSONIsTheEncoding: the pre-encoded documents the API sends
// are byte for byte what encoding the subclouds would give, page by page
// and filtered, and follow every write.
func TestRegistryJSONIsTheEncoding(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSubcloudStore(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	st, err := CacheSubclouds(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	reg := st.(*cachedRegistry)
	for i := range 7 {
		sc := Subcloud{Name: fmt.Sprintf("site-%d", i), Shape: inventory.Simplex, Description: `quote " and <tag>`}
		if i%2 == 0 {
			sc.Shape = inventory.Duplex
		}
		if err := st.CreateSubcloud(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	if _, err := st.UpdateSubclouds(ctx, []string{"site-1", "site-4"}, func(sc *Subcloud) error {
		sc.Availability, sc.LastSeen, sc.Sync = Online, &now, map[string]SyncStatus{"flavors": InSync, "images": OutOfSync}
		sc.Hosts = HostCounts{Total: 3, ByAvailability: map[string]int{"available": 2, "failed": 1}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, filters := range []map[string]string{nil, {"shape": "duplex"}, {"availability": "online"}, {"shape": "none"}} {
		opts := rest.ListOptions{Limit: 2, Filters: filters}
		for page := 0; ; page++ {
			scs, next, err := st.Subclouds(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(rest.List[Subcloud]{Items: scs, NextPageToken: rest.EncodePageToken(next)})
			got, err := reg.subcloudsJSON(opts)
			if err != nil || string(got) != string(want)+"\n" {
				t.Fatalf("%v page %d: subcloudsJSON = %s, %v; want %s", filters, page, got, err, want)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
	}
	for _, name := range []string{"site-1", "site-2"} {
		sc, _ := st.Subcloud(ctx, name)
		want, _ := json.Marshal(sc)
		if got, err := reg.subcloudJSON(name); err != nil || string(got) != string(want) {
			t.Errorf("subcloudJSON(%s) = %s, %v; want %s", name, got, err, want)
		}
	}
	if _, err := reg.subcloudJSON("nowhere"); err == nil {
		t.Error("subcloudJSON(nowhere) found something")
	}
}
