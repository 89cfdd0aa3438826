package osapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
)

// TestGophercloudFlavorCreateDelete: admins create flavors with a given ID
// (how central's sync keeps one ID fleet-wide) and delete them; duplicates,
// non-admins and unsupported fields are refused and change nothing.
func TestGophercloudFlavorCreateDelete(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	adm := e.computeAs("root", "admin", "2.37")
	ops := e.computeAs("ops", "tenant-a", "2.37")
	const id = "0b8f6f52-1c43-4c55-9d8e-0a5b7c3d2e10"
	disk, public := 5, true
	f, err := flavors.Create(ctx, adm, flavors.CreateOpts{ID: id, Name: "c1.central", RAM: 512, VCPUs: 2, Disk: &disk, IsPublic: &public}).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if f.ID != id || f.Name != "c1.central" || f.RAM != 512 || f.VCPUs != 2 || f.Disk != 5 || !f.IsPublic {
		t.Errorf("created %+v", f)
	}
	if got, err := flavors.Get(ctx, ops, id).Extract(); err != nil || got.Name != "c1.central" {
		t.Errorf("get as operator = %+v, %v", got, err)
	}
	for name, opts := range map[string]flavors.CreateOpts{
		"same ID":   {ID: id, Name: "other", RAM: 512, VCPUs: 1, Disk: &disk},
		"same name": {Name: "c1.central", RAM: 512, VCPUs: 1, Disk: &disk},
	} {
		if _, err := flavors.Create(ctx, adm, opts).Extract(); statusOf(err) != http.StatusConflict {
			t.Errorf("%s: %v; want 409", name, err)
		}
	}
	bad := map[string]flavors.CreateOpts{
		"not a UUID": {ID: "42", Name: "x1", RAM: 512, VCPUs: 1, Disk: &disk},
		"swap":       {Name: "x2", RAM: 512, VCPUs: 1, Disk: &disk, Swap: ptr(512)},
		"no vcpus":   {Name: "x3", RAM: 512, VCPUs: 0, Disk: &disk},
		"ephemeral":  {Name: "x4", RAM: 512, VCPUs: 1, Disk: &disk, Ephemeral: ptr(1)},
	}
	for name, opts := range bad {
		if _, err := flavors.Create(ctx, adm, opts).Extract(); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%s: %v; want 400", name, err)
		}
	}
	if _, err := flavors.Create(ctx, ops, flavors.CreateOpts{Name: "x5", RAM: 512, VCPUs: 1, Disk: &disk}).Extract(); statusOf(err) != http.StatusForbidden {
		t.Errorf("operator creates: %v; want 403", err)
	}
	if err := flavors.Delete(ctx, ops, id).ExtractErr(); statusOf(err) != http.StatusForbidden {
		t.Errorf("operator deletes: %v; want 403", err)
	}
	pages, err := flavors.ListDetail(adm, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fl, _ := flavors.ExtractFlavors(pages); flavorNames(fl) != "a.private,b.private,c1.central,m1.small,m1.tiny" {
		t.Errorf("after the refusals: %s", flavorNames(fl))
	}
	if err := flavors.Delete(ctx, adm, "c1.central").ExtractErr(); statusOf(err) != http.StatusNotFound {
		t.Errorf("delete by name: %v; want 404 (Nova deletes by ID)", err)
	}
	if err := flavors.Delete(ctx, adm, id).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := flavors.Get(ctx, adm, id).Extract(); statusOf(err) != http.StatusNotFound {
		t.Errorf("get after delete: %v; want 404", err)
	}
	if err := flavors.Delete(ctx, adm, id).ExtractErr(); statusOf(err) != http.StatusNotFound {
		t.Errorf("delete again: %v; want 404", err)
	}
}

func ptr[T any](v T) *T { return &v }
