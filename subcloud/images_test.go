package subcloud_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// tokenFor creates a user with role and returns a client with its token.
func tokenFor(t *testing.T, s *subcloud.Subcloud, name string, role auth.Role) *client.Client {
	t.Helper()
	ctx := context.Background()
	u, err := s.Shell().Auth.CreateUser(ctx, name, role, name+"-password-1")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Shell().Auth.CreateToken(ctx, auth.Principal{User: u.Name, Role: u.Role}, auth.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return servertest.Client(t, s, tok)
}

// imageDir lists the site's image directory.
func imageDir(t *testing.T, s *subcloud.Subcloud) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Shell().DataDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestImageCreateUploadListDelete(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	op := tokenFor(t, s, "olga", auth.Operator)
	data := bytes.Repeat([]byte("petrel raw disk "), 256*1024) // 4 MiB: beyond the API's usual 1 MiB body cap
	var im compute.Image
	req := subcloud.CreateImageRequest{Name: "petrel-test", DiskFormat: compute.FormatRaw, Visibility: compute.Public,
		Checksum: sha(data), Size: int64(len(data))}
	if err := op.Do(ctx, http.MethodPost, "/v1/images", nil, req, &im); err != nil {
		t.Fatal(err)
	}
	if im.Status != compute.ImageQueued || im.Project != "admin" || im.Visibility != compute.Public {
		t.Fatalf("created %+v", im)
	}
	if err := op.Do(ctx, http.MethodPost, "/v1/images", nil, req, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("duplicate image name = %v; want conflict", err)
	}
	var up compute.Image
	if err := op.Upload(ctx, http.MethodPut, "/v1/images/"+im.ID+"/file", bytes.NewReader(data), int64(len(data)), &up); err != nil {
		t.Fatal(err)
	}
	if up.Status != compute.ImageActive || up.DiskFormat != compute.FormatRaw {
		t.Fatalf("uploaded %+v", up)
	}
	stored, err := os.ReadFile(s.ImageFiles.Path(sha(data)))
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored file: %v", err)
	}
	if err := op.Upload(ctx, http.MethodPut, "/v1/images/"+im.ID+"/file", bytes.NewReader(data), int64(len(data)), nil); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("uploading an active image again = %v; want invalid transition", err)
	}
	// A second image with the same bytes shares the file.
	req.Name = "petrel-test-copy"
	var twin compute.Image
	if err := op.Do(ctx, http.MethodPost, "/v1/images", nil, req, &twin); err != nil {
		t.Fatal(err)
	}
	if err := op.Upload(ctx, http.MethodPut, "/v1/images/petrel-test-copy/file", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	reader := tokenFor(t, s, "rita", auth.Reader)
	var list rest.List[compute.Image]
	if err := reader.Do(ctx, http.MethodGet, "/v1/images", nil, nil, &list); err != nil || len(list.Items) != 2 {
		t.Fatalf("GET /v1/images = %+v, %v", list, err)
	}
	if err := reader.Do(ctx, http.MethodGet, "/v1/images", map[string][]string{"status": {"queued"}}, nil, &list); err != nil || len(list.Items) != 0 {
		t.Errorf("GET /v1/images?status=queued = %d, %v", len(list.Items), err)
	}
	var got compute.Image
	if err := reader.Do(ctx, http.MethodGet, "/v1/images/petrel-test", nil, nil, &got); err != nil || got.ID != im.ID || got.Status != compute.ImageActive {
		t.Errorf("GET /v1/images/petrel-test = %+v, %v", got, err)
	}
	if err := reader.Do(ctx, http.MethodDelete, "/v1/images/petrel-test", nil, nil, nil); !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader deleting an image = %v; want forbidden", err)
	}
	if err := op.Do(ctx, http.MethodDelete, "/v1/images/petrel-test", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if names := imageDir(t, s); len(names) != 1 {
		t.Errorf("after deleting one of two images with the same bytes, the image dir holds %v; want the shared file", names)
	}
	if err := op.Do(ctx, http.MethodDelete, "/v1/images/"+twin.ID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if names := imageDir(t, s); len(names) != 0 {
		t.Errorf("after deleting every image, the image dir holds %v", names)
	}
	if err := op.Do(ctx, http.MethodGet, "/v1/images/petrel-test", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("GET a deleted image = %v; want not found", err)
	}
	// Every change was audited.
	evs, _, err := s.Shell().Events.Events(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"type": "audit"}})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, ev := range evs {
		actions[ev.Action]++
	}
	if actions["createImage"] != 3 || actions["uploadImage"] != 3 || actions["deleteImage"] != 3 {
		t.Errorf("audit actions = %v", actions)
	}
}

// A corrupt or truncated upload is refused with 400; nothing is stored and
// the image waits, queued, for a good upload.
func TestImageBadUploadsStoreNothing(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	c := servertest.Client(t, s, servertest.AdminToken(t, s))
	data := bytes.Repeat([]byte{0xab, 0xcd}, 64*1024)
	qcow := append([]byte(compute.QCOW2Magic), data...)
	var im compute.Image
	if err := c.Do(ctx, http.MethodPost, "/v1/images", nil, subcloud.CreateImageRequest{Name: "disk", DiskFormat: compute.FormatRaw,
		Checksum: sha(data), Size: int64(len(data))}, &im); err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte(nil), data...)
	corrupt[1000] ^= 0xff
	path := "/v1/images/" + im.ID + "/file"
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
	}{
		{"corrupt", bytes.NewReader(corrupt), int64(len(corrupt))},
		{"truncated", bytes.NewReader(data[:len(data)/2]), int64(len(data) / 2)},
		{"truncated, chunked", io.MultiReader(bytes.NewReader(data[:len(data)/2])), -1},
		{"longer, chunked", io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte("x"))), -1},
		{"empty", bytes.NewReader(nil), 0},
	} {
		err := c.Upload(ctx, http.MethodPut, path, tc.body, tc.size, nil)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest {
			t.Errorf("%s upload = %v; want 400", tc.name, err)
		}
		if names := imageDir(t, s); len(names) != 0 {
			t.Errorf("%s upload left %v in the image dir", tc.name, names)
		}
		var got compute.Image
		if err := c.Do(ctx, http.MethodGet, path[:len(path)-len("/file")], nil, nil, &got); err != nil || got.Status != compute.ImageQueued {
			t.Errorf("after a %s upload the image is %q (%v); want queued", tc.name, got.Status, err)
		}
	}
	// The bytes of another format are refused too.
	var q compute.Image
	if err := c.Do(ctx, http.MethodPost, "/v1/images", nil, subcloud.CreateImageRequest{Name: "not-raw", DiskFormat: compute.FormatRaw,
		Checksum: sha(qcow), Size: int64(len(qcow))}, &q); err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/not-raw/file", bytes.NewReader(qcow), int64(len(qcow)), nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("qcow2 bytes for a raw image = %v; want invalid argument", err)
	}
	if names := imageDir(t, s); len(names) != 0 {
		t.Errorf("a wrong-format upload left %v", names)
	}
	// A good upload after the bad ones succeeds.
	if err := c.Upload(ctx, http.MethodPut, path, bytes.NewReader(data), int64(len(data)), &im); err != nil || im.Status != compute.ImageActive {
		t.Fatalf("good upload = %+v, %v", im, err)
	}
	if names := imageDir(t, s); len(names) != 1 || names[0] != sha(data) {
		t.Errorf("image dir = %v", names)
	}
}

func TestImageUploadCap(t *testing.T) {
	shell := servertest.Shell(t)
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: "simplex", Shell: shell, ImageMaxBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	ctx := context.Background()
	c := servertest.Client(t, s, servertest.AdminToken(t, s))
	big := make([]byte, 1001)
	err = c.Do(ctx, http.MethodPost, "/v1/images", nil, subcloud.CreateImageRequest{Name: "big", DiskFormat: compute.FormatRaw,
		Checksum: sha(big), Size: 1001}, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Field != "size" {
		t.Errorf("image over the cap = %v; want a size error", err)
	}
	var im compute.Image
	if err := c.Do(ctx, http.MethodPost, "/v1/images", nil, subcloud.CreateImageRequest{Name: "small", DiskFormat: compute.FormatRaw,
		Checksum: sha(big[:1000]), Size: 1000}, &im); err != nil {
		t.Fatal(err)
	}
	// Streamed past the cap: cut off at the cap, refused, nothing stored.
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/small/file", io.MultiReader(bytes.NewReader(make([]byte, 5000))), -1, nil); err == nil {
		t.Error("an upload past the cap succeeded")
	}
	if names := imageDir(t, s); len(names) != 0 {
		t.Errorf("image dir = %v", names)
	}
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/small/file", bytes.NewReader(big[:1000]), 1000, nil); err != nil {
		t.Errorf("upload at the cap = %v", err)
	}
}

func TestImageBadInput(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	c := servertest.Client(t, s, servertest.AdminToken(t, s))
	good := subcloud.CreateImageRequest{Name: "ok", DiskFormat: compute.FormatRaw, Checksum: sha([]byte("x")), Size: 1}
	for _, tc := range []struct {
		field string
		edit  func(*subcloud.CreateImageRequest)
	}{
		{"name", func(r *subcloud.CreateImageRequest) { r.Name = "" }},
		{"name", func(r *subcloud.CreateImageRequest) { r.Name = "has space" }},
		{"disk_format", func(r *subcloud.CreateImageRequest) { r.DiskFormat = "vmdk" }},
		{"disk_format", func(r *subcloud.CreateImageRequest) { r.DiskFormat = "" }},
		{"visibility", func(r *subcloud.CreateImageRequest) { r.Visibility = "shared" }},
		{"checksum", func(r *subcloud.CreateImageRequest) { r.Checksum = "" }},
		{"checksum", func(r *subcloud.CreateImageRequest) { r.Checksum = "ABC" }},
		{"size", func(r *subcloud.CreateImageRequest) { r.Size = 0 }},
		{"project", func(r *subcloud.CreateImageRequest) { r.Project = "a/b" }},
	} {
		req := good
		tc.edit(&req)
		err := c.Do(ctx, http.MethodPost, "/v1/images", nil, req, nil)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Field != tc.field {
			t.Errorf("create %+v = %v; want 400 naming %s", req, err, tc.field)
		}
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/images", map[string][]string{"colour": {"red"}}, nil, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("unknown filter = %v", err)
	}
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/nope/file", bytes.NewReader([]byte("x")), 1, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("upload to an unknown image = %v", err)
	}
}

func TestFlavors(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	admin := servertest.Client(t, s, servertest.AdminToken(t, s))
	op := tokenFor(t, s, "olga", auth.Operator)
	small := subcloud.CreateFlavorRequest{Name: "m1.small", VCPUs: 1, RAMMiB: 512, DiskGiB: 1, Public: true}
	err := op.Do(ctx, http.MethodPost, "/v1/flavors", nil, small, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("operator creating a flavor = %v; want 403", err)
	}
	var f compute.Flavor
	if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, small, &f); err != nil {
		t.Fatal(err)
	}
	if f.ID == "" || f.Name != "m1.small" || !f.Public || f.Project != "admin" || f.RAMMiB != 512 {
		t.Errorf("created %+v", f)
	}
	if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, small, nil); !errors.As(err, &ce) || ce.Status != http.StatusConflict {
		t.Errorf("duplicate flavor = %v; want 409", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*subcloud.CreateFlavorRequest)
	}{
		{"name", func(r *subcloud.CreateFlavorRequest) { r.Name = "" }},
		{"vcpus", func(r *subcloud.CreateFlavorRequest) { r.VCPUs = 0 }},
		{"vcpus", func(r *subcloud.CreateFlavorRequest) { r.VCPUs = 65 }},
		{"ram_mib", func(r *subcloud.CreateFlavorRequest) { r.RAMMiB = 63 }},
		{"ram_mib", func(r *subcloud.CreateFlavorRequest) { r.RAMMiB = 1048577 }},
		{"disk_gib", func(r *subcloud.CreateFlavorRequest) { r.DiskGiB = 0 }},
		{"disk_gib", func(r *subcloud.CreateFlavorRequest) { r.DiskGiB = 10001 }},
	} {
		req := small
		req.Name = "m1.other"
		tc.edit(&req)
		err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, req, nil)
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Field != tc.field {
			t.Errorf("create %+v = %v; want 400 naming %s", req, err, tc.field)
		}
	}
	if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, map[string]any{"name": "x", "vcpus": "two"}, nil); !errors.As(err, &ce) || ce.Status != http.StatusBadRequest {
		t.Errorf("vcpus as a string = %v; want 400", err)
	}
	if err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, subcloud.CreateFlavorRequest{Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80}, nil); err != nil {
		t.Fatal(err)
	}
	var list rest.List[compute.Flavor]
	if err := op.Do(ctx, http.MethodGet, "/v1/flavors", nil, nil, &list); err != nil || len(list.Items) != 2 || list.Items[0].Name != "m1.large" {
		t.Fatalf("GET /v1/flavors = %+v, %v", list, err)
	}
	var got compute.Flavor
	if err := op.Do(ctx, http.MethodGet, "/v1/flavors/"+f.ID, nil, nil, &got); err != nil || got != f {
		t.Errorf("GET flavor = %+v, %v; want %+v", got, err, f)
	}
	if err := op.Do(ctx, http.MethodDelete, "/v1/flavors/m1.small", nil, nil, nil); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("operator deleting a flavor = %v; want 403", err)
	}
	if err := admin.Do(ctx, http.MethodDelete, "/v1/flavors/m1.small", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := op.Do(ctx, http.MethodGet, "/v1/flavors/m1.small", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("GET deleted flavor = %v", err)
	}
}

// An upload cut off by a restart leaves a temporary file and an image in
// saving; the next start removes the file and queues the image again.
func TestImageUploadInterruptedByRestart(t *testing.T) {
	ctx := context.Background()
	shell := servertest.Shell(t)
	s1, err := subcloud.New(ctx, subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: shell})
	if err != nil {
		t.Fatal(err)
	}
	im, err := s1.Images.CreateImage(ctx, compute.Image{Name: "cut", DiskFormat: compute.FormatRaw, Visibility: compute.Private,
		Project: "admin", Checksum: sha([]byte("x")), Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Images.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s1.ImageFiles.Dir, ".upload-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	s1.Shell().Close()

	s2, err := subcloud.New(ctx, subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: shell})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s2)
	if names := imageDir(t, s2); len(names) != 0 {
		t.Errorf("after the restart the image dir holds %v", names)
	}
	c := servertest.Client(t, s2, servertest.AdminToken(t, s2))
	var got compute.Image
	if err := c.Do(ctx, http.MethodGet, "/v1/images/cut", nil, nil, &got); err != nil || got.Status != compute.ImageQueued {
		t.Fatalf("after the restart: %+v, %v; want queued", got, err)
	}
	if err := c.Upload(ctx, http.MethodPut, "/v1/images/cut/file", bytes.NewReader([]byte("x")), 1, &got); err != nil || got.Status != compute.ImageActive {
		t.Errorf("upload after the restart = %+v, %v", got, err)
	}
}
