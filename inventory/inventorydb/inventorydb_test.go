package inventorydb_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/inventory/inventorydb"
)

func host(i int, p inventory.Personality) inventory.Host {
	return inventory.Host{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("host-%02d", i),
		Personality: p, Subfunctions: []string{string(p)}, Provisioning: inventory.Provisioned,
		Administrative: inventory.Locked, Operational: inventory.Disabled, Availability: inventory.Online,
		Inventory: inventory.Hardware{Cores: 4, NICs: []inventory.NIC{{Name: "mgmt0", MAC: "52:54:00:00:00:01"}}}}
}

func TestConformanceHostStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		st, err := inventorydb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Host(ctx, "nope"); !errors.Is(err, inventory.ErrHostNotFound) || !errors.Is(err, errs.NotFound) {
			t.Errorf("Host(missing) = %v; want ErrHostNotFound", err)
		}
		for i := range 5 {
			p := inventory.Worker
			if i < 2 {
				p = inventory.Controller
			}
			h, err := st.PutHost(ctx, host(i, p), 0)
			if err != nil {
				t.Fatal(err)
			}
			if h.Rev != 1 || h.CreatedAt.IsZero() {
				t.Errorf("created host rev %d created %v; want rev 1 and a time", h.Rev, h.CreatedAt)
			}
		}
		// Creating twice, or a second host with a taken name, conflicts.
		if _, err := st.PutHost(ctx, host(1, inventory.Worker), 0); !errors.Is(err, inventory.ErrHostExists) {
			t.Errorf("PutHost(existing uuid, rev 0) = %v; want ErrHostExists", err)
		}
		dup := host(9, inventory.Worker)
		dup.Name = "host-01"
		if _, err := st.PutHost(ctx, dup, 0); !errors.Is(err, inventory.ErrHostExists) {
			t.Errorf("PutHost(taken name) = %v; want ErrHostExists", err)
		}
		// Invalid hosts never reach the store.
		bad := host(10, "router")
		if _, err := st.PutHost(ctx, bad, 0); !errors.Is(err, errs.Invalid) {
			t.Errorf("PutHost(invalid personality) = %v; want invalid", err)
		}
		// Optimistic concurrency.
		h, _ := st.Host(ctx, "host-03")
		h.Administrative = inventory.Unlocked
		h2, err := st.PutHost(ctx, h, h.Rev)
		if err != nil || h2.Rev != 2 {
			t.Fatalf("PutHost(update) = rev %d, %v; want rev 2", h2.Rev, err)
		}
		if _, err := st.PutHost(ctx, h, 1); !errors.Is(err, inventory.ErrStale) || !errors.Is(err, errs.Conflict) {
			t.Errorf("PutHost(stale rev) = %v; want ErrStale", err)
		}
		// Lookup by UUID and by name; returned hosts do not alias the store.
		byUUID, _ := st.Host(ctx, h.UUID)
		byUUID.Inventory.NICs[0].MAC = "changed"
		byName, _ := st.Host(ctx, "host-03")
		if byName.Administrative != inventory.Unlocked || byName.Inventory.NICs[0].MAC != "52:54:00:00:00:01" {
			t.Errorf("Host(name) = %+v; want the updated host, unaffected by callers' edits", byName)
		}
		// Paging and filters.
		page, next, _ := st.Hosts(ctx, rest.ListOptions{Limit: 2})
		if len(page) != 2 || page[0].Name != "host-00" || next != "host-01" {
			t.Errorf("Hosts(limit 2) = %d hosts next %q", len(page), next)
		}
		workers, _, _ := st.Hosts(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"personality": "worker"}})
		unlocked, _, _ := st.Hosts(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"administrative": "unlocked", "personality": "worker"}})
		if len(workers) != 3 || len(unlocked) != 1 || unlocked[0].Name != "host-03" {
			t.Errorf("filters: %d workers, %d unlocked workers; want 3 and host-03", len(workers), len(unlocked))
		}
		// Rename, delete, and reopen: memory and SQL agree.
		h2.Name = "renamed"
		if _, err := st.PutHost(ctx, h2, h2.Rev); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Host(ctx, "host-03"); !errors.Is(err, inventory.ErrHostNotFound) {
			t.Errorf("old name after rename = %v; want not found", err)
		}
		if err := st.DeleteHost(ctx, "host-00"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteHost(ctx, "host-00"); !errors.Is(err, inventory.ErrHostNotFound) {
			t.Errorf("DeleteHost twice = %v; want not found", err)
		}
		st2, err := inventorydb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		all1, _, _ := st.Hosts(ctx, rest.ListOptions{Limit: 100})
		all2, _, _ := st2.Hosts(ctx, rest.ListOptions{Limit: 100})
		if fmt.Sprint(names(all1)) != fmt.Sprint(names(all2)) || len(all2) != 4 {
			t.Errorf("after reopen: %v; before: %v", names(all2), names(all1))
		}
		if r, _ := st2.Host(ctx, "renamed"); r.Rev != 3 || r.Inventory.Cores != 4 {
			t.Errorf("reopened host = rev %d cores %d; want rev 3, 4 cores", r.Rev, r.Inventory.Cores)
		}
	})
}

func TestConcurrentUpdatesOneWins(t *testing.T) {
	ctx := context.Background()
	st, err := inventorydb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	h, err := st.PutHost(ctx, host(1, inventory.Worker), 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.PutHost(ctx, h, h.Rev)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, inventory.ErrStale):
				conflicts++
			default:
				t.Errorf("PutHost = %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Errorf("8 writers at one revision: %d won, %d conflicted; want 1 and 7", wins, conflicts)
	}
}

func names(hs []inventory.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}
