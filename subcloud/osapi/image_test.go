package osapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imageimport"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/subcloud/imagesync"
	"github.com/petrel-edge/petrel/subcloud/osapi"
)

// siteImageWrites is a site's image import (the real fetcher) and delete.
type siteImageWrites struct {
	f     *imagesync.Fetcher
	store *computedb.Store
}

func (w siteImageWrites) ImportImage(ctx context.Context, id, sum string) error {
	return w.f.Import(ctx, id, sum)
}

func (w siteImageWrites) DeleteImage(ctx context.Context, id string) error {
	return w.store.DeleteImage(ctx, id)
}

// TestGophercloudImageCreateImportDelete: admins create an image with a
// given ID, import its bytes from central (web-download of a
// petrel-central:// URI, fetched by the site in the background) and delete
// it; any other URI, non-admins and bad fields are refused.
func TestGophercloudImageCreateImportDelete(t *testing.T) {
	data := make([]byte, 300<<10)
	rand.Read(data)
	data[0] = 0
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	var fetched atomic.Int32
	blobs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sync/v1/blobs/"+sum {
			http.NotFound(w, r)
			return
		}
		fetched.Add(1)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(blobs.Close)
	e := newEnvWith(t, false, func(d *osapi.Deps, store *computedb.Store) {
		files, err := compute.OpenImageFiles(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f, err := imagesync.New(imagesync.Config{Images: store, Files: files, Logger: slog.New(slog.DiscardHandler),
			Dial: func(ctx context.Context) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", blobs.Listener.Addr().String())
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); f.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		d.ImageWrites = siteImageWrites{f: f, store: store}
	})
	ctx := context.Background()
	glanceAs := func(user, project string) *gophercloud.ServiceClient {
		p, err := e.passwordAuth(user, project)
		if err != nil {
			t.Fatal(err)
		}
		_, ic, _ := e.clients(p, "")
		return ic
	}
	adm, ops := glanceAs("root", "admin"), glanceAs("ops", "tenant-a")
	const id = "6c1d3f0e-2b9a-4d7e-8f11-0a2b3c4d5e6f"
	public := images.ImageVisibilityPublic
	im, err := images.Create(ctx, adm, images.CreateOpts{ID: id, Name: "central-cirros", DiskFormat: "raw",
		ContainerFormat: "bare", Visibility: &public}).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if im.ID != id || im.Status != images.ImageStatusQueued || im.Owner != "admin" || im.Visibility != public {
		t.Errorf("created %+v", im)
	}
	for name, opts := range map[string]images.CreateOpts{
		"same ID":   {ID: id, Name: "other", DiskFormat: "raw"},
		"same name": {Name: "central-cirros", DiskFormat: "raw"},
	} {
		if _, err := images.Create(ctx, adm, opts).Extract(); statusOf(err) != http.StatusConflict {
			t.Errorf("%s: %v; want 409", name, err)
		}
	}
	for name, opts := range map[string]images.CreateOpts{
		"not a UUID": {ID: "42", Name: "x1", DiskFormat: "raw"},
		"vmdk":       {Name: "x2", DiskFormat: "vmdk"},
		"ovf":        {Name: "x3", DiskFormat: "raw", ContainerFormat: "ovf"},
	} {
		if _, err := images.Create(ctx, adm, opts).Extract(); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%s: %v; want 400", name, err)
		}
	}
	if _, err := images.Create(ctx, ops, images.CreateOpts{Name: "x4", DiskFormat: "raw"}).Extract(); statusOf(err) != http.StatusForbidden {
		t.Errorf("operator creates: %v; want 403", err)
	}

	// Only central's blob URI is imported: no other URL is ever fetched.
	for _, uri := range []string{"http://" + blobs.Listener.Addr().String() + "/sync/v1/blobs/" + sum,
		"http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "petrel-central://elsewhere/sync/v1/blobs/" + sum,
		"petrel-central:///sync/v1/blobs/not-a-sum"} {
		err := imageimport.Create(ctx, adm, id, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: uri}).ExtractErr()
		if statusOf(err) != http.StatusBadRequest {
			t.Errorf("import from %q: %v; want 400", uri, err)
		}
	}
	if err := imageimport.Create(ctx, adm, id, imageimport.CreateOpts{Name: imageimport.GlanceDirectMethod}).ExtractErr(); statusOf(err) != http.StatusBadRequest {
		t.Errorf("glance-direct: %v; want 400", err)
	}
	uri := "petrel-central:///sync/v1/blobs/" + sum
	if err := imageimport.Create(ctx, ops, id, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: uri}).ExtractErr(); statusOf(err) != http.StatusForbidden {
		t.Errorf("operator imports: %v; want 403", err)
	}
	if fetched.Load() != 0 {
		t.Fatalf("refused imports fetched %d times", fetched.Load())
	}
	if err := imageimport.Create(ctx, adm, id, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: uri}).ExtractErr(); err != nil {
		t.Fatalf("import: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		im, err = images.Get(ctx, adm, id).Extract()
		if err == nil && im.Status == images.ImageStatusActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never active: %+v, %v", im, err)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if im.Properties["os_hash_value"] != sum || im.SizeBytes != int64(len(data)) {
		t.Errorf("active image: hash %v, size %d; want %s, %d", im.Properties["os_hash_value"], im.SizeBytes, sum, len(data))
	}
	// Importing again changes nothing and fetches nothing.
	if err := imageimport.Create(ctx, adm, id, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: uri}).ExtractErr(); err != nil {
		t.Errorf("import again: %v", err)
	}
	if fetched.Load() != 1 {
		t.Errorf("fetched %d times; want 1", fetched.Load())
	}

	if err := images.Delete(ctx, ops, id).ExtractErr(); statusOf(err) != http.StatusForbidden {
		t.Errorf("operator deletes: %v; want 403", err)
	}
	if err := images.Delete(ctx, adm, "central-cirros").ExtractErr(); statusOf(err) != http.StatusNotFound {
		t.Errorf("delete by name: %v; want 404 (Glance deletes by ID)", err)
	}
	if err := images.Delete(ctx, adm, id).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := images.Get(ctx, adm, id).Extract(); statusOf(err) != http.StatusNotFound {
		t.Errorf("get after delete: %v; want 404", err)
	}
	if err := images.Delete(ctx, adm, id).ExtractErr(); statusOf(err) != http.StatusNotFound {
		t.Errorf("delete again: %v; want 404", err)
	}
}

// TestGlanceWritesWithoutImporter: a site without an importer refuses
// imports and deletes (503) and changes nothing.
func TestGlanceWritesWithoutImporter(t *testing.T) {
	e := newEnv(t, false)
	p, err := e.passwordAuth("root", "admin")
	if err != nil {
		t.Fatal(err)
	}
	_, ic, _ := e.clients(p, "")
	id := e.images["petrel-test"].ID
	if err := images.Delete(context.Background(), ic, id).ExtractErr(); statusOf(err) != http.StatusServiceUnavailable {
		t.Errorf("delete: %v; want 503", err)
	}
	if _, err := images.Get(context.Background(), ic, id).Extract(); err != nil {
		t.Errorf("the image went: %v", err)
	}
}
