package osapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/subcloud/imagesync"
)

// Glance v2 at /image. Images are read, and (admins) created with a given
// ID, deleted, and imported with web-download from central only: how
// central's sync keeps its images at the site (docs/openstack.md). Other
// images are made with Petrel's own API (petrel image create), which
// verifies their bytes as they arrive.

// ImageWriter is the site's side of Glance's image writes that touch
// bytes.
type ImageWriter interface {
	// ImportImage has image id take the bytes with checksum sum from
	// central: at once when the site holds them, else by a background
	// transfer over the site's link.
	ImportImage(ctx context.Context, id, sum string) error
	// DeleteImage deletes image id, and its file unless another image
	// shares it; compute.ErrImageInUse while servers use it.
	DeleteImage(ctx context.Context, id string) error
}

const (
	glanceDefaultLimit = 25
	glanceMaxLimit     = 1000
	// glanceTime is how Glance writes times.
	glanceTime = "2006-01-02T15:04:05Z"
)

func (o *api) registerImage(srv *rest.Server) {
	d, reader := imageDialect, o.auth.Require(auth.Reader)
	srv.HandleDialect(d, "osImageVersions", http.MethodGet, "/image", nil, o.imageVersions(http.StatusMultipleChoices))
	srv.HandleDialect(d, "osImageVersionsSlash", http.MethodGet, "/image/", nil, o.imageVersions(http.StatusMultipleChoices))
	srv.HandleDialect(d, "osImageVersionsList", http.MethodGet, "/image/versions", nil, o.imageVersions(http.StatusOK))
	srv.HandleDialect(d, "osListImages", http.MethodGet, "/image/v2/images", reader, o.listImages)
	srv.HandleDialect(d, "osGetImage", http.MethodGet, "/image/v2/images/{id}", reader, o.getImage)
	admin := o.auth.Require(auth.Admin)
	srv.HandleDialect(d, "osCreateImage", http.MethodPost, "/image/v2/images", admin, o.createImage)
	srv.HandleDialect(d, "osDeleteImage", http.MethodDelete, "/image/v2/images/{id}", admin, o.deleteImage)
	srv.HandleDialect(d, "osImportImage", http.MethodPost, "/image/v2/images/{id}/import", admin, o.importImage)
}

// glanceCreate is the body of Glance's image create.
type glanceCreate struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	DiskFormat      string `json:"disk_format"`
	ContainerFormat string `json:"container_format"`
	Visibility      string `json:"visibility"`
}

// createImage is Glance's image create (admins): a queued image record in
// the caller's project, with the given ID (a UUID; central's images keep
// theirs at every site) or a new one. Its bytes come with an import.
func (o *api) createImage(r *http.Request) (int, any, error) {
	var req glanceCreate
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if err := compute.ValidateName("name", req.Name); err != nil {
		return 0, nil, err
	}
	im := compute.Image{ID: req.ID, Name: req.Name, DiskFormat: compute.DiskFormat(req.DiskFormat),
		Visibility: compute.Visibility(req.Visibility), Project: caller(r.Context()).ProjectName()}
	if !im.DiskFormat.Valid() {
		return 0, nil, errs.Field("disk_format", "must be raw or qcow2")
	}
	if req.ContainerFormat != "" && req.ContainerFormat != "bare" {
		return 0, nil, errs.Field("container_format", "must be bare")
	}
	if im.Visibility == "" {
		im.Visibility = compute.Private
	}
	if !im.Visibility.Valid() {
		return 0, nil, errs.Field("visibility", "must be public or private")
	}
	if err := compute.ValidateProject("owner", im.Project); err != nil {
		return 0, nil, err
	}
	out, err := o.d.Images.CreateImage(r.Context(), im)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, imageView(out), nil
}

func (o *api) imageWrites() (ImageWriter, error) {
	if o.d.ImageWrites == nil {
		return nil, errs.Wrapf(errs.Unavailable, "image imports and deletes are not offered by this site")
	}
	return o.d.ImageWrites, nil
}

// deleteImage is Glance's image delete (admins), by ID only.
func (o *api) deleteImage(r *http.Request) (int, any, error) {
	w, err := o.imageWrites()
	if err != nil {
		return 0, nil, err
	}
	id := rest.Var(r, "id")
	im, err := o.d.Images.Image(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	if im.ID != id {
		return 0, nil, fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
	}
	if err := w.DeleteImage(r.Context(), im.ID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// glanceImport is the body of Glance's interoperable image import.
type glanceImport struct {
	Method *struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	} `json:"method"`
}

// importImage is Glance's image import (admins): method web-download from
// petrel-central:///sync/v1/blobs/<sha256> only — the site fetches from
// central over its own link and never from a URL a caller names.
func (o *api) importImage(r *http.Request) (int, any, error) {
	w, err := o.imageWrites()
	if err != nil {
		return 0, nil, err
	}
	var req glanceImport
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Method == nil || req.Method.Name != "web-download" {
		return 0, nil, errs.Field("method.name", "only web-download is offered")
	}
	sum, err := imagesync.ParseURI(req.Method.URI)
	if err != nil {
		return 0, nil, err
	}
	id := rest.Var(r, "id")
	im, err := o.d.Images.Image(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	if im.ID != id {
		return 0, nil, fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
	}
	if err := w.ImportImage(r.Context(), im.ID, sum); err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, nil, nil
}

// ImageVersion is an entry of Glance's versions document.
type ImageVersion struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Links  []Link `json:"links"`
}

// imageVersions is Glance's versions document: v2 (as 2.16 and 2.0).
func (o *api) imageVersions(status int) rest.Handler {
	return func(r *http.Request) (int, any, error) {
		self := []Link{{Rel: "self", Href: baseURL(r) + "/image/v2/"}}
		return status, map[string][]ImageVersion{"versions": {
			{ID: "v2.16", Status: "CURRENT", Links: self},
			{ID: "v2.0", Status: "SUPPORTED", Links: self},
		}}, nil
	}
}

// imageView is an image as Glance v2 shows it. Petrel keeps a SHA-256,
// not Glance's MD5 checksum: it is the multihash (os_hash_value).
func imageView(im compute.Image) map[string]any {
	return map[string]any{
		"id": im.ID, "name": im.Name, "status": im.Status, "visibility": im.Visibility, "owner": im.Project,
		"protected": false, "os_hidden": false, "checksum": nil, "os_hash_algo": "sha256", "os_hash_value": im.Checksum,
		"size": im.Size, "virtual_size": nil, "min_ram": 0, "min_disk": 0, "disk_format": im.DiskFormat,
		"container_format": "bare", "tags": []string{},
		"created_at": im.CreatedAt.UTC().Format(glanceTime), "updated_at": im.UpdatedAt.UTC().Format(glanceTime),
		"self": "/v2/images/" + im.ID, "file": "/v2/images/" + im.ID + "/file", "schema": "/v2/schemas/image",
	}
}

// listImages lists the images the caller may use (public ones and its
// project's; admins: all), by name. Filters: name, status, visibility
// (public, private, all), owner, disk_format; paging: limit (default 25),
// marker (an image ID), with Glance's "next" link.
func (o *api) listImages(r *http.Request) (int, any, error) {
	ctx := r.Context()
	c, q := caller(ctx), r.URL.Query()
	limit := glanceDefaultLimit
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 0 {
			return 0, nil, errs.Field("limit", "must be a non-negative integer")
		}
		limit = min(n, glanceMaxLimit)
	}
	vis := q.Get("visibility")
	switch vis {
	case "", "all", "public", "private", "shared", "community":
	default:
		return 0, nil, errs.Field("visibility", "must be public, private, shared, community or all")
	}
	opts := page.Options{Limit: rest.MaxLimit, Filters: map[string]string{}}
	for _, f := range []struct{ query, filter string }{{"status", "status"}, {"owner", "project"}, {"disk_format", "disk_format"}} {
		if v := q.Get(f.query); v != "" {
			opts.Filters[f.filter] = v
		}
	}
	if m := q.Get("marker"); m != "" {
		im, err := o.visibleImage(ctx, c, m)
		if err != nil {
			return 0, nil, errs.Field("marker", "marker %s not found", m)
		}
		opts.After = im.Name
	}
	name := q.Get("name")
	var found []compute.Image
	for len(found) <= limit {
		items, next, err := o.d.Images.Images(ctx, opts)
		if err != nil {
			return 0, nil, err
		}
		for _, im := range items {
			switch {
			case !im.VisibleTo(c.ProjectName(), isAdmin(c)),
				name != "" && im.Name != name,
				vis == "public" && im.Visibility != compute.Public,
				vis == "private" && im.Visibility != compute.Private,
				vis == "shared" || vis == "community":
				continue
			}
			found = append(found, im)
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	out := map[string]any{"first": "/v2/images", "schema": "/v2/schemas/images"}
	if len(found) > limit {
		found = found[:limit]
		if limit > 0 {
			nq := r.URL.Query()
			nq.Set("marker", found[limit-1].ID)
			nq.Set("limit", strconv.Itoa(limit))
			out["next"] = "/v2/images?" + nq.Encode()
		}
	}
	views := make([]map[string]any, len(found))
	for i, im := range found {
		views[i] = imageView(im)
	}
	out["images"] = views
	return http.StatusOK, out, nil
}

// getImage shows an image the caller may use, by ID (or name).
func (o *api) getImage(r *http.Request) (int, any, error) {
	im, err := o.visibleImage(r.Context(), caller(r.Context()), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, imageView(im), nil
}
