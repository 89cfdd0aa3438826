package subcloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/subcloud/imagesync"
)

// DefaultImageMaxBytes caps an image's size unless the configuration says
// otherwise: 8 GiB.
const DefaultImageMaxBytes int64 = 8 << 30

// CreateImageRequest is the body of POST /v1/images: the record of an
// image whose bytes follow with PUT /v1/images/{id}/file.
type CreateImageRequest struct {
	Name       string             `json:"name"`
	DiskFormat compute.DiskFormat `json:"disk_format"`
	Visibility compute.Visibility `json:"visibility,omitempty"` // default private
	Project    string             `json:"project,omitempty"`    // default the caller's; another needs admin
	Checksum   string             `json:"checksum"`             // SHA-256, lower-case hex
	Size       int64              `json:"size"`                 // bytes
}

// CreateFlavorRequest is the body of POST /v1/flavors.
type CreateFlavorRequest struct {
	Name    string `json:"name"`
	VCPUs   int    `json:"vcpus"`
	RAMMiB  int    `json:"ram_mib"`
	DiskGiB int    `json:"disk_gib"`
	Public  bool   `json:"public,omitempty"`  // default false: the owner project's only
	Project string `json:"project,omitempty"` // default the caller's (admin)
}

// images is the site's image service: records in SQL, bytes in
// DATA_DIR/images.
type images struct {
	store    *computedb.Store
	files    *compute.ImageFiles
	maxBytes int64
	// mu orders committing an upload's file against deleting the last
	// image that uses a file, so a file in use is never removed.
	mu sync.Mutex
	// inUse says whether servers use an image; deleting one in use is
	// refused with a conflict. Nil until servers exist.
	inUse func(ctx context.Context, im compute.Image) (bool, error)
	// fetcher takes central's images' bytes over the link (Glance's
	// import).
	fetcher *imagesync.Fetcher
}

// imageWrites is the site's side of Glance's image import and delete.
type imageWrites struct{ s *Subcloud }

func (w imageWrites) ImportImage(ctx context.Context, id, sum string) error {
	if w.s.cfg.Central == nil {
		return errs.Wrapf(errs.Unavailable, "this site has no link to central to import from")
	}
	return w.s.images.fetcher.Import(ctx, id, sum)
}

func (w imageWrites) DeleteImage(ctx context.Context, id string) error {
	im, err := w.s.Images.Image(ctx, id)
	if err != nil {
		return err
	}
	return w.s.removeImage(ctx, im)
}

// dialCentral opens a stream to central on the site's link.
func (s *Subcloud) dialCentral(ctx context.Context) (net.Conn, error) {
	sess := s.homeSess.Load()
	if sess == nil {
		return nil, errs.Wrapf(errs.Unavailable, "the site is not linked to central")
	}
	return sess.Open()
}

func (s *Subcloud) openImages(ctx context.Context) error {
	store, err := computedb.Open(ctx, s.shell.DB)
	if err != nil {
		return err
	}
	files, err := compute.OpenImageFiles(filepath.Join(s.cfg.Shell.DataDir, "images"))
	if err != nil {
		return err
	}
	// An upload cut off by a restart left only a temporary file, which
	// OpenImageFiles removed: its image waits for a new upload.
	n, err := store.RequeueSaving(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Warn("uploads interrupted by a restart; their images are queued again", "images", n)
	}
	max := s.cfg.ImageMaxBytes
	if max <= 0 {
		max = DefaultImageMaxBytes
	}
	s.images = &images{store: store, files: files, maxBytes: max}
	s.Images, s.Flavors, s.ImageFiles = store, store, files
	if s.images.fetcher, err = imagesync.New(imagesync.Config{Images: store, Files: files, Dial: s.dialCentral,
		Commit: &s.images.mu, Audit: s.shell.RecordAudit, Logger: s.log.With("component", "imagesync"), MaxBytes: max}); err != nil {
		return err
	}
	return s.openServers(store)
}

func (s *Subcloud) registerCompute(srv *rest.Server, a *auth.Service) {
	srv.Handle("listImages", http.MethodGet, "/v1/images", a.Require(auth.Reader), s.listImages)
	srv.Handle("createImage", http.MethodPost, "/v1/images", a.Require(auth.Operator), s.createImage)
	srv.Handle("getImage", http.MethodGet, "/v1/images/{id}", a.Require(auth.Reader), s.getImage)
	srv.Handle("deleteImage", http.MethodDelete, "/v1/images/{id}", a.Require(auth.Operator), s.deleteImage)
	// One more byte than the cap is read, to tell "too long" from "exact".
	srv.HandleStream("uploadImage", http.MethodPut, "/v1/images/{id}/file", s.images.maxBytes+1, a.Require(auth.Operator), s.uploadImage)
	srv.Handle("listFlavors", http.MethodGet, "/v1/flavors", a.Require(auth.Reader), s.listFlavors)
	srv.Handle("createFlavor", http.MethodPost, "/v1/flavors", a.Require(auth.Admin), s.createFlavor)
	srv.Handle("getFlavor", http.MethodGet, "/v1/flavors/{id}", a.Require(auth.Reader), s.getFlavor)
	srv.Handle("deleteFlavor", http.MethodDelete, "/v1/flavors/{id}", a.Require(auth.Admin), s.deleteFlavor)
}

// tenant is the caller's project, and whether it sees every project's
// resources (the admin role).
func tenant(ctx context.Context) (string, bool) {
	p, _ := auth.PrincipalFrom(ctx)
	return p.ProjectName(), p.Role.Allows(auth.Admin)
}

// listImages lists the images the caller may use: public ones and its
// project's (admins: all). A page may hold fewer than limit items.
func (s *Subcloud) listImages(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, compute.ImageFilters...)
	if err != nil {
		return 0, nil, err
	}
	items, next, err := s.Images.Images(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	project, admin := tenant(r.Context())
	visible := items[:0]
	for _, im := range items {
		if im.VisibleTo(project, admin) {
			visible = append(visible, im)
		}
	}
	return http.StatusOK, rest.List[compute.Image]{Items: visible, NextPageToken: rest.EncodePageToken(next)}, nil
}

// image finds an image the caller may see; others' private images are
// not found.
func (s *Subcloud) image(ctx context.Context, id string) (compute.Image, error) {
	im, err := s.Images.Image(ctx, id)
	if err != nil {
		return compute.Image{}, err
	}
	if project, admin := tenant(ctx); !im.VisibleTo(project, admin) {
		return compute.Image{}, fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
	}
	return im, nil
}

// ownImage finds an image the caller may change: its project's (admins:
// any).
func (s *Subcloud) ownImage(ctx context.Context, id string) (compute.Image, error) {
	im, err := s.image(ctx, id)
	if err != nil {
		return compute.Image{}, err
	}
	if project, admin := tenant(ctx); !admin && im.Project != project {
		return compute.Image{}, errs.Wrapf(errs.Forbidden, "image %s belongs to project %s; only an admin may change it", im.Name, im.Project)
	}
	return im, nil
}

func (s *Subcloud) getImage(r *http.Request) (int, any, error) {
	im, err := s.image(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, im, nil
}

func (s *Subcloud) createImage(r *http.Request) (int, any, error) {
	var req CreateImageRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	im := compute.Image{Name: req.Name, DiskFormat: req.DiskFormat, Visibility: req.Visibility,
		Project: req.Project, Checksum: req.Checksum, Size: req.Size}
	if im.Visibility == "" {
		im.Visibility = compute.Private
	}
	project, admin := tenant(r.Context())
	if im.Project == "" {
		im.Project = project
	}
	if err := im.Validate(s.images.maxBytes); err != nil {
		return 0, nil, err
	}
	if !admin && im.Project != project {
		return 0, nil, errs.Wrapf(errs.Forbidden, "only an admin may create images for another project than %s", project)
	}
	out, err := s.Images.CreateImage(r.Context(), im)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("image created", "image", out.Name, "id", out.ID, "size", out.Size, "checksum", out.Checksum)
	return http.StatusCreated, out, nil
}

// uploadImage streams an image's bytes into a temporary file, verifying
// size, checksum and format as they arrive; only verified bytes are
// renamed into place. A rejected upload leaves nothing and puts the
// image back to queued; a failure to store verified bytes kills it.
func (s *Subcloud) uploadImage(r *http.Request) (int, any, error) {
	ctx := r.Context()
	im, err := s.ownImage(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if r.ContentLength >= 0 && r.ContentLength != im.Size {
		return 0, nil, fmt.Errorf("%w: the request carries %d bytes; image %s is %d bytes", compute.ErrSizeMismatch, r.ContentLength, im.Name, im.Size)
	}
	if _, err := s.Images.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
		return 0, nil, err
	}
	// Whatever happens to the caller, the image leaves saving.
	bg := context.WithoutCancel(ctx)
	fail := func(cause error) (int, any, error) {
		to := compute.ImageQueued
		if !errors.Is(cause, errs.Invalid) {
			to = compute.ImageKilled
		}
		if _, err := s.Images.TransitionImage(bg, im.ID, compute.ImageSaving, to, nil); err != nil {
			s.log.Error("image upload failed; leaving saving failed too", "image", im.Name, "err", err)
		}
		s.log.Warn("image upload rejected", "image", im.Name, "status", to, "err", cause)
		return 0, nil, cause
	}
	up, err := s.images.files.Stage(r.Body, im)
	if err != nil {
		return fail(err)
	}
	s.images.mu.Lock()
	defer s.images.mu.Unlock()
	if err := up.Commit(); err != nil {
		return fail(err)
	}
	out, err := s.Images.TransitionImage(bg, im.ID, compute.ImageSaving, compute.ImageActive, func(x *compute.Image) {
		x.DiskFormat = up.Format
	})
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("image stored", "image", out.Name, "id", out.ID, "format", out.DiskFormat, "size", out.Size)
	return http.StatusOK, out, nil
}

func (s *Subcloud) deleteImage(r *http.Request) (int, any, error) {
	ctx := r.Context()
	im, err := s.ownImage(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if err := s.removeImage(ctx, im); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// removeImage deletes image im, and its file unless another image shares
// it; refused while servers use it or bytes are coming in.
func (s *Subcloud) removeImage(ctx context.Context, im compute.Image) error {
	if err := im.CheckTransition(compute.ImageDeleted); err != nil {
		return err
	}
	if s.images.inUse != nil {
		used, err := s.images.inUse(ctx, im)
		if err != nil {
			return err
		}
		if used {
			return fmt.Errorf("%w: servers use image %s; delete or rebuild them first", compute.ErrImageInUse, im.Name)
		}
	}
	s.images.mu.Lock()
	defer s.images.mu.Unlock()
	// Re-read under the lock: an upload may have started meanwhile.
	im, err := s.Images.Image(ctx, im.ID)
	if err != nil {
		return err
	}
	if err := im.CheckTransition(compute.ImageDeleted); err != nil {
		return err
	}
	if err := s.Images.DeleteImage(ctx, im.ID); err != nil {
		return err
	}
	others, err := s.Images.ImagesWithChecksum(ctx, im.Checksum, im.ID)
	if err != nil {
		return fmt.Errorf("image %s deleted, but checking whether its file is shared failed: %w", im.Name, err)
	}
	if others == 0 && im.Checksum != "" { // an image created through Glance has none until its import
		if err := s.images.files.Remove(im.Checksum); err != nil {
			return fmt.Errorf("image %s deleted, but removing its file failed: %w", im.Name, err)
		}
	}
	s.log.Info("image deleted", "image", im.Name, "id", im.ID, "file_kept", others > 0)
	return nil
}

// listFlavors lists the flavors the caller may use: public ones and its
// project's (admins: all).
func (s *Subcloud) listFlavors(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r)
	if err != nil {
		return 0, nil, err
	}
	items, next, err := s.Flavors.Flavors(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	project, admin := tenant(r.Context())
	visible := items[:0]
	for _, f := range items {
		if f.VisibleTo(project, admin) {
			visible = append(visible, f)
		}
	}
	return http.StatusOK, rest.List[compute.Flavor]{Items: visible, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Subcloud) getFlavor(r *http.Request) (int, any, error) {
	f, err := s.Flavors.Flavor(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if project, admin := tenant(r.Context()); !f.VisibleTo(project, admin) {
		return 0, nil, fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, rest.Var(r, "id"))
	}
	return http.StatusOK, f, nil
}

func (s *Subcloud) createFlavor(r *http.Request) (int, any, error) {
	var req CreateFlavorRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	f := compute.Flavor{Name: req.Name, VCPUs: req.VCPUs, RAMMiB: req.RAMMiB, DiskGiB: req.DiskGiB,
		Public: req.Public, Project: req.Project}
	if f.Project == "" {
		f.Project, _ = tenant(r.Context())
	}
	if err := f.Validate(); err != nil {
		return 0, nil, err
	}
	out, err := s.Flavors.CreateFlavor(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, out, nil
}

func (s *Subcloud) deleteFlavor(r *http.Request) (int, any, error) {
	f, err := s.Flavors.Flavor(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	// Servers keep a copy of their flavor (as Nova does), so a flavor in
	// use may be deleted.
	if err := s.Flavors.DeleteFlavor(r.Context(), f.ID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
