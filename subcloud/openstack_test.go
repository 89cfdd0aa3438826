package subcloud_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// The site controller serves the OpenStack-compatible API on its own
// listener: gophercloud authenticates with the bootstrap admin's password
// and finds the site's endpoints in region site-sx.
func TestSiteServesOpenStackAPI(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	admin := servertest.Client(t, s, servertest.AdminToken(t, s))
	if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, map[string]any{"name": "m1.tiny", "vcpus": 1, "ram_mib": 128, "disk_gib": 1, "public": true}, nil); err != nil {
		t.Fatal(err)
	}
	pw, err := auth.ReadSecretFile(filepath.Join(s.Shell().DataDir(), server.AdminPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := openstack.NewClient(s.Shell().URL() + "/identity/v3")
	if err != nil {
		t.Fatal(err)
	}
	pc.HTTPClient = *servertest.HTTPClient(t, s)
	err = openstack.Authenticate(ctx, pc, gophercloud.AuthOptions{IdentityEndpoint: s.Shell().URL() + "/identity/v3",
		Username: "admin", Password: pw, DomainName: "Default", TenantName: "admin"})
	if err != nil {
		t.Fatalf("Keystone password auth at the site: %v", err)
	}
	cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "site-sx"})
	if err != nil {
		t.Fatalf("compute endpoint of region site-sx: %v", err)
	}
	pages, err := flavors.ListDetail(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fl, _ := flavors.ExtractFlavors(pages); len(fl) != 1 || fl[0].Name != "m1.tiny" {
		t.Errorf("flavors = %+v", fl)
	}
	// The site's real compute service: no servers yet; no hypervisor
	// host, so a create is refused with Nova's "no valid host" shape and
	// nothing is created.
	spages, err := servers.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatalf("servers.List: %v", err)
	}
	if svs, _ := servers.ExtractServers(spages); len(svs) != 0 {
		t.Errorf("servers = %+v", svs)
	}
	var ue gophercloud.ErrUnexpectedResponseCode
	_, err = servers.Create(ctx, cc, servers.CreateOpts{Name: "vm1", ImageRef: "nope", FlavorRef: "m1.tiny"}, nil).Extract()
	if !errors.As(err, &ue) || ue.Actual != http.StatusBadRequest {
		t.Errorf("servers.Create with an unknown image = %v; want 400", err)
	}
}

// Petrel's own image and flavor API applies the same tenancy: a tenant
// sees public images and flavors and its project's, creates images in its
// project only, and cannot change another project's.
func TestImageAndFlavorTenancy(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	a := s.Shell().Auth
	admin := servertest.Client(t, s, servertest.AdminToken(t, s))
	for _, p := range []string{"tenant-a", "tenant-b"} {
		if _, err := a.CreateProject(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	tenantClient := func(name, project string) *client.Client {
		u, err := a.CreateProjectUser(ctx, name, auth.Operator, project, name+"-password-1")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := a.CreateToken(ctx, auth.Principal{User: u.Name, Role: u.Role, Project: u.Project}, auth.TokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return servertest.Client(t, s, tok)
	}
	ta, tb := tenantClient("alice", "tenant-a"), tenantClient("bob", "tenant-b")
	body := []byte("disk of tenant a")
	var im compute.Image
	if err := ta.Do(ctx, http.MethodPost, "/v1/images", nil, map[string]any{"name": "img-a", "disk_format": "raw",
		"checksum": sha(body), "size": len(body)}, &im); err != nil {
		t.Fatal(err)
	}
	if im.Project != "tenant-a" || im.Visibility != compute.Private {
		t.Errorf("tenant's image = %+v; want a private image of tenant-a", im)
	}
	var ce *client.Error
	if err := tb.Upload(ctx, http.MethodPut, "/v1/images/img-a/file", bytes.NewReader(body), int64(len(body)), nil); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("bob uploads to tenant-a's image = %v; want 404", err)
	}
	if err := ta.Upload(ctx, http.MethodPut, "/v1/images/img-a/file", bytes.NewReader(body), int64(len(body)), nil); err != nil {
		t.Fatal(err)
	}
	if err := tb.Do(ctx, http.MethodPost, "/v1/images", nil, map[string]any{"name": "img-x", "disk_format": "raw",
		"checksum": sha(body), "size": len(body), "project": "tenant-a"}, nil); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("bob creates an image for tenant-a = %v; want 403", err)
	}
	var list rest.List[compute.Image]
	if err := tb.Do(ctx, http.MethodGet, "/v1/images", nil, nil, &list); err != nil || len(list.Items) != 0 {
		t.Errorf("bob lists images = %+v, %v; want none", list.Items, err)
	}
	if err := tb.Do(ctx, http.MethodGet, "/v1/images/img-a", nil, nil, nil); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("bob shows tenant-a's image = %v; want 404", err)
	}
	if err := admin.Do(ctx, http.MethodGet, "/v1/images", nil, nil, &list); err != nil || len(list.Items) != 1 {
		t.Errorf("admin lists images = %+v, %v; want img-a", list.Items, err)
	}
	// A public image of the admin project: everyone sees it, tenants may not delete it.
	pub := []byte("public disk")
	if err := admin.Do(ctx, http.MethodPost, "/v1/images", nil, map[string]any{"name": "pub", "disk_format": "raw",
		"visibility": "public", "checksum": sha(pub), "size": len(pub)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := tb.Do(ctx, http.MethodGet, "/v1/images/pub", nil, nil, nil); err != nil {
		t.Errorf("bob shows a public image: %v", err)
	}
	if err := tb.Do(ctx, http.MethodDelete, "/v1/images/pub", nil, nil, nil); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("bob deletes the admin project's public image = %v; want 403", err)
	}
	for _, f := range []map[string]any{
		{"name": "m1.tiny", "vcpus": 1, "ram_mib": 128, "disk_gib": 1, "public": true},
		{"name": "a.only", "vcpus": 1, "ram_mib": 128, "disk_gib": 1, "project": "tenant-a"},
	} {
		if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, f, nil); err != nil {
			t.Fatal(err)
		}
	}
	var fl rest.List[compute.Flavor]
	if err := tb.Do(ctx, http.MethodGet, "/v1/flavors", nil, nil, &fl); err != nil || len(fl.Items) != 1 || fl.Items[0].Name != "m1.tiny" {
		t.Errorf("bob lists flavors = %+v, %v; want m1.tiny only", fl.Items, err)
	}
	if err := ta.Do(ctx, http.MethodGet, "/v1/flavors/a.only", nil, nil, nil); err != nil {
		t.Errorf("alice shows her project's flavor: %v", err)
	}
	if err := tb.Do(ctx, http.MethodGet, "/v1/flavors/a.only", nil, nil, nil); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("bob shows tenant-a's flavor = %v; want 404", err)
	}
}
