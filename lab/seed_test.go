package lab_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/subcloud"
)

// seedImages writes two small raw disks standing in for the guest images.
func seedImages(t *testing.T) []lab.SeedImage {
	t.Helper()
	var out []lab.SeedImage
	for i, name := range []string{"petrel-test", "petrel-test-v2"} {
		path := filepath.Join(t.TempDir(), name+".raw")
		if err := os.WriteFile(path, bytes.Repeat([]byte{byte('a' + i)}, 1<<20+i), 0o600); err != nil {
			t.Fatal(err)
		}
		im, err := lab.NewSeedImage(name, path)
		if err != nil {
			t.Fatal(err)
		}
		if im.Format != compute.FormatRaw || im.Size != 1<<20+int64(i) || len(im.Checksum) != 64 {
			t.Fatalf("NewSeedImage(%s) = %+v", name, im)
		}
		out = append(out, im)
	}
	return out
}

// siteAPI starts a site controller in the test and returns an admin client.
func siteAPI(t *testing.T) *client.Client {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	return servertest.Client(t, s, servertest.AdminToken(t, s))
}

func imagesAt(t *testing.T, api *client.Client) map[string]compute.Image {
	t.Helper()
	var list rest.List[compute.Image]
	if err := api.Do(context.Background(), http.MethodGet, "/v1/images", nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]compute.Image{}
	for _, im := range list.Items {
		out[im.Name] = im
	}
	return out
}

func flavorsAt(t *testing.T, api *client.Client) map[string]compute.Flavor {
	t.Helper()
	var list rest.List[compute.Flavor]
	if err := api.Do(context.Background(), http.MethodGet, "/v1/flavors", nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]compute.Flavor{}
	for _, f := range list.Items {
		out[f.Name] = f
	}
	return out
}

// Seed gives a fresh site every image (public, active, with the file's
// bytes) and every flavor; a second Seed changes nothing.
func TestSeedFreshSiteAndAgain(t *testing.T) {
	ctx := context.Background()
	api := siteAPI(t)
	images := seedImages(t)
	if err := lab.Seed(ctx, api, images, lab.Flavors); err != nil {
		t.Fatalf("Seed = %v", err)
	}
	got := imagesAt(t, api)
	for _, want := range images {
		im := got[want.Name]
		if im.Status != compute.ImageActive || im.Visibility != compute.Public || im.DiskFormat != compute.FormatRaw ||
			im.Checksum != want.Checksum || im.Size != want.Size {
			t.Errorf("image %s = %+v; want active, public, raw, checksum %s", want.Name, im, want.Checksum)
		}
	}
	if len(got) != len(images) {
		t.Errorf("images at the site: %d; want %d", len(got), len(images))
	}
	flavors := flavorsAt(t, api)
	for _, want := range lab.Flavors {
		f := flavors[want.Name]
		if f.VCPUs != want.VCPUs || f.RAMMiB != want.RAMMiB || f.DiskGiB != want.DiskGiB || !f.Public {
			t.Errorf("flavor %s = %+v; want %+v", want.Name, f, want)
		}
	}
	if tiny := flavors["m1.tiny"]; tiny.VCPUs != 1 || tiny.RAMMiB != 128 || tiny.DiskGiB != 1 {
		t.Errorf("m1.tiny = %+v; want 1 vCPU, 128 MiB, 1 GiB", tiny)
	}

	// Again (a restarted site, a second lab up): nothing changes.
	if err := lab.Seed(ctx, api, images, lab.Flavors); err != nil {
		t.Fatalf("Seed again = %v", err)
	}
	again := imagesAt(t, api)
	for name, im := range got {
		if a := again[name]; a.ID != im.ID || !a.UpdatedAt.Equal(im.UpdatedAt) {
			t.Errorf("image %s after a second Seed = %+v; want unchanged %+v", name, a, im)
		}
	}
	for name, f := range flavors {
		if a := flavorsAt(t, api)[name]; a.ID != f.ID {
			t.Errorf("flavor %s after a second Seed = %+v; want unchanged %+v", name, a, f)
		}
	}
}

// What a site already has is left alone, except an image without its
// bytes: the one queued after a cut upload is uploaded (same record), a
// queued record of other bytes is replaced.
func TestSeedSiteWithLeftovers(t *testing.T) {
	ctx := context.Background()
	api := siteAPI(t)
	images := seedImages(t)
	v1, v2 := images[0], images[1]

	// petrel-test: its upload was cut after half the bytes.
	var cut compute.Image
	req := subcloud.CreateImageRequest{Name: v1.Name, DiskFormat: v1.Format, Visibility: compute.Public, Checksum: v1.Checksum, Size: v1.Size}
	if err := api.Do(ctx, http.MethodPost, "/v1/images", nil, req, &cut); err != nil {
		t.Fatal(err)
	}
	half := bytes.NewReader(bytes.Repeat([]byte{'a'}, int(v1.Size/2)))
	if err := api.Upload(ctx, http.MethodPut, "/v1/images/"+cut.ID+"/file", half, v1.Size, nil); err == nil {
		t.Fatal("a cut upload succeeded")
	}
	// The client gives up before the site has put the image back to queued.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		im := imagesAt(t, api)[v1.Name]
		if im.Status == compute.ImageQueued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a cut upload %s is %s; want queued", v1.Name, im.Status)
		}
	}
	// petrel-test-v2: a record of an older build's bytes, never uploaded.
	old := subcloud.CreateImageRequest{Name: v2.Name, DiskFormat: compute.FormatRaw, Checksum: v1.Checksum, Size: v1.Size}
	var stale compute.Image
	if err := api.Do(ctx, http.MethodPost, "/v1/images", nil, old, &stale); err != nil {
		t.Fatal(err)
	}
	// An operator's own m1.small stays as it is.
	mine := subcloud.CreateFlavorRequest{Name: "m1.small", VCPUs: 4, RAMMiB: 4096, DiskGiB: 40}
	var small compute.Flavor
	if err := api.Do(ctx, http.MethodPost, "/v1/flavors", nil, mine, &small); err != nil {
		t.Fatal(err)
	}

	if err := lab.Seed(ctx, api, images, lab.Flavors); err != nil {
		t.Fatalf("Seed = %v", err)
	}
	got := imagesAt(t, api)
	if im := got[v1.Name]; im.ID != cut.ID || im.Status != compute.ImageActive || im.Checksum != v1.Checksum {
		t.Errorf("%s after Seed = %+v; want the cut upload's record %s, active", v1.Name, im, cut.ID)
	}
	if im := got[v2.Name]; im.ID == stale.ID || im.Status != compute.ImageActive || im.Checksum != v2.Checksum || im.Visibility != compute.Public {
		t.Errorf("%s after Seed = %+v; want a new public active record with checksum %s", v2.Name, im, v2.Checksum)
	}
	flavors := flavorsAt(t, api)
	if f := flavors["m1.small"]; f.ID != small.ID || f.VCPUs != 4 || f.Public {
		t.Errorf("m1.small after Seed = %+v; want the operator's %+v", f, small)
	}
	if _, ok := flavors["m1.tiny"]; !ok {
		t.Error("m1.tiny missing after Seed")
	}
}

// A lab whose sites run VMs does not come up without its test images:
// a failed build fails Up at once, naming them, and leaves nothing.
func TestUpFailsWithoutTestImages(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PETREL_GUEST_CACHE", filepath.Join(notADir, "cache"))
	dir := filepath.Join(t.TempDir(), "lab")
	_, err := lab.Up(context.Background(), lab.Config{Dir: dir, Sites: []lab.SiteSpec{{Name: "site-v", Shape: inventory.Simplex}}})
	if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), "petrel-test") {
		t.Fatalf("Up with an unusable image cache = %v; want an error about the test images (ENOTDIR)", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Up left %s behind (%v)", dir, err)
	}
}
