package computedb_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func TestConformanceServers(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		s := open(t, openDB(t))
		mk := func(name, project string) compute.Server {
			t.Helper()
			sv, err := s.CreateServer(ctx, compute.Server{ID: uuid.NewString(), Name: name, Project: project,
				Status: compute.ServerBuilding, Task: compute.TaskSpawning, Host: "compute-0", Image: uuid.NewString(),
				ImageName: "img", Flavor: compute.ServerFlavor{ID: "f1", Name: "small", VCPUs: 1, RAMMiB: 128, DiskGiB: 1}})
			if err != nil {
				t.Fatal(err)
			}
			return sv
		}
		a := mk("vm-a", "admin")
		if a.Rev != 1 {
			t.Errorf("rev = %d", a.Rev)
		}
		mk("vm-a", "p1") // names are unique per project
		if _, err := s.CreateServer(ctx, compute.Server{ID: uuid.NewString(), Name: "vm-a", Project: "admin", Status: compute.ServerBuilding}); !errors.Is(err, compute.ErrServerExists) {
			t.Errorf("duplicate name: %v", err)
		}
		for i := range 5 {
			mk(fmt.Sprintf("vm-%d", i), "admin")
		}
		// By name: ambiguous across projects, unique within one.
		if _, err := s.Server(ctx, "vm-a", ""); !errors.Is(err, errs.Invalid) {
			t.Errorf("ambiguous name: %v", err)
		}
		got, err := s.Server(ctx, "vm-a", "admin")
		if err != nil || got.ID != a.ID || got.Flavor.RAMMiB != 128 {
			t.Errorf("by name: %+v, %v", got, err)
		}
		if _, err := s.Server(ctx, a.ID, "p1"); !errors.Is(err, compute.ErrServerNotFound) {
			t.Errorf("another project's server by ID: %v", err)
		}
		// Compare-and-set on the revision, and the state machine.
		a.Status, a.Task = compute.ServerActive, compute.TaskNone
		up, err := s.UpdateServer(ctx, a)
		if err != nil || up.Rev != 2 {
			t.Fatalf("update: %+v, %v", up, err)
		}
		if _, err := s.UpdateServer(ctx, a); !errors.Is(err, errs.Conflict) {
			t.Errorf("stale update: %v", err)
		}
		up.Status = compute.ServerBuilding
		if _, err := s.UpdateServer(ctx, up); !errors.Is(err, compute.ErrServerState) {
			t.Errorf("active -> building: %v", err)
		}
		// Pages in name order, filtered.
		var names []string
		opts := page.Options{Limit: 3, Filters: map[string]string{"project": "admin"}}
		for {
			svs, next, err := s.Servers(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, sv := range svs {
				names = append(names, sv.Name)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		if fmt.Sprint(names) != "[vm-0 vm-1 vm-2 vm-3 vm-4 vm-a]" {
			t.Errorf("paged names = %v", names)
		}
		if _, _, err := s.Servers(ctx, page.Options{Limit: 3, Filters: map[string]string{"bogus": "x"}}); err == nil {
			t.Error("unknown filter accepted")
		}
		// Groups: members are the servers naming them.
		g, err := s.CreateServerGroup(ctx, compute.ServerGroup{Name: "ha", Policy: compute.AntiAffinity, Project: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		up.Status, up.Group = compute.ServerActive, g.ID
		if _, err := s.UpdateServer(ctx, up); err != nil {
			t.Fatal(err)
		}
		if g, _ = s.ServerGroup(ctx, "ha", "admin"); len(g.Members) != 1 || g.Members[0] != a.ID {
			t.Errorf("members = %v", g.Members)
		}
		if err := s.DeleteServerGroup(ctx, g.ID); !errors.Is(err, compute.ErrServerGroupInUse) {
			t.Errorf("delete group in use: %v", err)
		}
		if err := s.DeleteServer(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteServerGroup(ctx, g.ID); err != nil {
			t.Errorf("delete empty group: %v", err)
		}
		if n, err := s.ServersUsingImage(ctx, a.Image); err != nil || n != 0 {
			t.Errorf("servers using a deleted server's image: %d, %v", n, err)
		}
	})
}
