package subcloud_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// TestServerAPIWithoutHypervisors drives the server routes of a site
// that has no hypervisor host (responses checked against the OpenAPI
// document): placement fails with a clear reason and records nothing;
// bad input is 400; readers may not create; groups are created, listed
// and deleted. Real VMs are in cmd/petrel's TestServersInTheLab.
func TestServerAPIWithoutHypervisors(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	op := tokenFor(t, s, "olga", auth.Operator)
	rd := tokenFor(t, s, "rita", auth.Reader)
	if _, err := s.Flavors.CreateFlavor(ctx, compute.Flavor{Name: "m1.tiny", VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Public: true, Project: "admin"}); err != nil {
		t.Fatal(err)
	}
	var hv struct{ Items []compute.HypervisorInfo }
	if err := rd.Do(ctx, http.MethodGet, "/v1/hypervisors", nil, nil, &hv); err != nil || len(hv.Items) != 0 {
		t.Errorf("hypervisors = %+v, %v", hv, err)
	}
	req := compute.CreateServer{Name: "vm1", Image: "nope", Flavor: "m1.tiny"}
	if err := op.Do(ctx, http.MethodPost, "/v1/servers", nil, req, nil); !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "image") {
		t.Errorf("unknown image: %v", err)
	}
	if err := rd.Do(ctx, http.MethodPost, "/v1/servers", nil, req, nil); !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader creating a server: %v", err)
	}
	if err := op.Do(ctx, http.MethodPost, "/v1/servers", nil, map[string]any{"name": "vm1", "image": "x", "flavor": "y", "bogus": 1}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("unknown field: %v", err)
	}
	im := uploadImage(t, s, op, "img")
	req.Image = im.ID
	err := op.Do(ctx, http.MethodPost, "/v1/servers", nil, req, nil)
	if !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "no valid host") || !strings.Contains(err.Error(), "no hypervisor host") {
		t.Errorf("no hypervisor: %v", err)
	}
	var list struct{ Items []compute.Server }
	if err := rd.Do(ctx, http.MethodGet, "/v1/servers", nil, nil, &list); err != nil || len(list.Items) != 0 {
		t.Errorf("servers after a refused create: %+v, %v", list, err)
	}
	if err := rd.Do(ctx, http.MethodGet, "/v1/servers/vm1", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("show missing server: %v", err)
	}
	if err := op.Do(ctx, http.MethodPost, "/v1/servers/vm1/action", nil, compute.ServerAction{Action: "explode"}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("bad action: %v", err)
	}

	var g compute.ServerGroup
	if err := op.Do(ctx, http.MethodPost, "/v1/server-groups", nil, compute.ServerGroup{Name: "ha", Policy: compute.AntiAffinity}, &g); err != nil {
		t.Fatal(err)
	}
	if g.Project != "admin" || len(g.Members) != 0 {
		t.Errorf("group = %+v", g)
	}
	if err := op.Do(ctx, http.MethodPost, "/v1/server-groups", nil, compute.ServerGroup{Name: "ha", Policy: compute.AntiAffinity}, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("duplicate group: %v", err)
	}
	if err := op.Do(ctx, http.MethodPost, "/v1/server-groups", nil, map[string]string{"name": "x", "policy": "soft"}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("bad policy: %v", err)
	}
	var gl struct{ Items []compute.ServerGroup }
	if err := rd.Do(ctx, http.MethodGet, "/v1/server-groups", nil, nil, &gl); err != nil || len(gl.Items) != 1 {
		t.Errorf("groups = %+v, %v", gl, err)
	}
	if err := op.Do(ctx, http.MethodDelete, "/v1/server-groups/ha", nil, nil, nil); err != nil {
		t.Errorf("delete group: %v", err)
	}
}

func TestIsHypervisor(t *testing.T) {
	for _, tc := range []struct {
		shape inventory.Shape
		p     inventory.Personality
		want  bool
	}{
		{inventory.Simplex, inventory.Controller, true},
		{inventory.Duplex, inventory.Controller, true},
		{inventory.MultiServer, inventory.Controller, false},
		{inventory.MultiServer, inventory.Worker, true},
		{inventory.MultiServer, inventory.Storage, false},
		{inventory.MultiServer, inventory.PersonalityNone, false},
	} {
		if got := subcloud.IsHypervisor(tc.shape, inventory.Host{Personality: tc.p}); got != tc.want {
			t.Errorf("IsHypervisor(%s, %s) = %v", tc.shape, tc.p, got)
		}
	}
}

// uploadImage creates and uploads a small raw public image.
func uploadImage(t *testing.T, s *subcloud.Subcloud, c interface {
	Do(ctx context.Context, method, path string, q url.Values, in, out any) error
	Upload(ctx context.Context, method, path string, body io.Reader, size int64, out any) error
}, name string) compute.Image {
	t.Helper()
	ctx := context.Background()
	data := bytes.Repeat([]byte(name), 4096)
	var im compute.Image
	if err := c.Do(ctx, http.MethodPost, "/v1/images", nil, subcloud.CreateImageRequest{Name: name, DiskFormat: compute.FormatRaw,
		Visibility: compute.Public, Checksum: sha(data), Size: int64(len(data))}, &im); err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/"+im.ID+"/file", bytes.NewReader(data), int64(len(data)), &im); err != nil {
		t.Fatal(err)
	}
	return im
}
