package central

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// Central's images are shared resources: recorded and uploaded here, with
// the same store and checks as a site's (compute/computedb on central's
// database, compute.ImageFiles in DATA_DIR/images), then kept by the sync
// engine at every managed site with the same ID (sync_images.go). An image
// becomes a sync record when it turns active, in the same transaction as
// that status change; its delete tombstones the record in the delete's
// transaction. Sites fetch the bytes over their link (blobs.go).

// ImageMaxBytes caps an image uploaded to central: 8 GiB, as a site's
// default.
const ImageMaxBytes int64 = 8 << 30

// ImageRequest is the body of POST /v1/images at central (the same as a
// site's, so `petrel image create` works against either).
type ImageRequest struct {
	Name       string             `json:"name"`
	DiskFormat compute.DiskFormat `json:"disk_format"`
	Visibility compute.Visibility `json:"visibility,omitempty"` // default private
	Project    string             `json:"project,omitempty"`    // default admin
	Checksum   string             `json:"checksum"`             // SHA-256, lower-case hex
	Size       int64              `json:"size"`                 // bytes
}

// imageDoc is an image's sync record: what every site must hold.
type imageDoc struct {
	ID         string             `json:"id"`
	Name       string             `json:"name"`
	DiskFormat compute.DiskFormat `json:"disk_format"`
	Visibility compute.Visibility `json:"visibility"`
	Project    string             `json:"project"`
	Checksum   string             `json:"checksum"`
	Size       int64              `json:"size"`
}

func imageDocOf(im compute.Image) imageDoc {
	return imageDoc{ID: im.ID, Name: im.Name, DiskFormat: im.DiskFormat, Visibility: im.Visibility, Project: im.Project,
		Checksum: im.Checksum, Size: im.Size}
}

// decodeImageDoc decodes an image record of the sync store.
func decodeImageDoc(rec SyncRecord) (imageDoc, error) {
	var d imageDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return imageDoc{}, fmt.Errorf("central: image record %s: %w", rec.Key, err)
	}
	return d, nil
}

// centralImages is central's image service.
type centralImages struct {
	store *computedb.Store
	files *compute.ImageFiles
	// mu orders committing an upload's file against deleting the last
	// image that uses it, as at a site.
	mu sync.Mutex
}

// openImages opens central's image records and files, and makes every
// activation and delete write its sync record in the same transaction.
func openImages(ctx context.Context, c *Central, syncs *SyncStore) (*centralImages, error) {
	store, err := computedb.Open(ctx, c.shell.DB)
	if err != nil {
		return nil, err
	}
	store.OnImageChange(imageSyncHook(syncs))
	files, err := compute.OpenImageFiles(filepath.Join(c.cfg.Shell.DataDir, "images"))
	if err != nil {
		return nil, err
	}
	if n, err := store.RequeueSaving(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		c.log.Warn("uploads interrupted by a restart; their images are queued again", "images", n)
	}
	return &centralImages{store: store, files: files}, nil
}

// imageSyncHook writes an image's sync record inside the transaction of
// its change: the record when it turns active, a tombstone when it goes.
func imageSyncHook(syncs *SyncStore) func(tx *gorm.DB, im compute.Image, deleted bool) error {
	return func(tx *gorm.DB, im compute.Image, deleted bool) error {
		switch {
		case deleted:
			return syncs.ChangeHook(tx, syncproto.Images, im.ID, nil, true)
		case im.Status == compute.ImageActive:
			doc, err := json.Marshal(imageDocOf(im))
			if err != nil {
				return err
			}
			return syncs.ChangeHook(tx, syncproto.Images, im.ID, doc, false)
		}
		return nil
	}
}

func (c *Central) registerImages(srv *rest.Server, a *auth.Service) {
	srv.Handle("listImages", http.MethodGet, "/v1/images", a.Require(auth.Reader), c.listImages)
	srv.Handle("createImage", http.MethodPost, "/v1/images", a.Require(auth.Admin), c.createImage)
	srv.Handle("getImage", http.MethodGet, "/v1/images/{id}", a.Require(auth.Reader), c.getImage)
	srv.Handle("deleteImage", http.MethodDelete, "/v1/images/{id}", a.Require(auth.Admin), c.deleteImage)
	// One more byte than the cap is read, to tell "too long" from "exact".
	srv.HandleStream("uploadImage", http.MethodPut, "/v1/images/{id}/file", ImageMaxBytes+1, a.Require(auth.Admin), c.uploadImage)
}

func (c *Central) listImages(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, compute.ImageFilters...)
	if err != nil {
		return 0, nil, err
	}
	items, next, err := c.images.store.Images(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[compute.Image]{Items: items, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (c *Central) getImage(r *http.Request) (int, any, error) {
	im, err := c.images.store.Image(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, im, nil
}

// createImage records an image, queued; it syncs once its bytes are in.
func (c *Central) createImage(r *http.Request) (int, any, error) {
	var req ImageRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	im := compute.Image{Name: req.Name, DiskFormat: req.DiskFormat, Visibility: req.Visibility, Project: req.Project,
		Checksum: req.Checksum, Size: req.Size}
	if im.Visibility == "" {
		im.Visibility = compute.Private
	}
	if im.Project == "" {
		im.Project = auth.DefaultProject
	}
	if err := im.Validate(ImageMaxBytes); err != nil {
		return 0, nil, err
	}
	out, err := c.images.store.CreateImage(r.Context(), im)
	if err != nil {
		return 0, nil, err
	}
	c.log.Info("image created", "image", out.Name, "id", out.ID, "size", out.Size, "checksum", out.Checksum)
	return http.StatusCreated, out, nil
}

// uploadImage streams an image's bytes in, verifying size, checksum and
// format as they arrive (compute.ImageFiles.Stage); only verified bytes
// are kept. The image turns active, and so becomes a sync record, in one
// transaction.
func (c *Central) uploadImage(r *http.Request) (int, any, error) {
	ctx := r.Context()
	im, err := c.images.store.Image(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if r.ContentLength >= 0 && r.ContentLength != im.Size {
		return 0, nil, fmt.Errorf("%w: the request carries %d bytes; image %s is %d bytes", compute.ErrSizeMismatch, r.ContentLength, im.Name, im.Size)
	}
	if _, err := c.images.store.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
		return 0, nil, err
	}
	bg := context.WithoutCancel(ctx)
	fail := func(cause error) (int, any, error) {
		to := compute.ImageQueued
		if !errors.Is(cause, errs.Invalid) {
			to = compute.ImageKilled
		}
		if _, err := c.images.store.TransitionImage(bg, im.ID, compute.ImageSaving, to, nil); err != nil {
			c.log.Error("image upload failed; leaving saving failed too", "image", im.Name, "err", err)
		}
		c.log.Warn("image upload rejected", "image", im.Name, "status", to, "err", cause)
		return 0, nil, cause
	}
	up, err := c.images.files.Stage(r.Body, im)
	if err != nil {
		return fail(err)
	}
	c.images.mu.Lock()
	defer c.images.mu.Unlock()
	if err := up.Commit(); err != nil {
		return fail(err)
	}
	out, err := c.images.store.TransitionImage(bg, im.ID, compute.ImageSaving, compute.ImageActive, func(x *compute.Image) {
		x.DiskFormat = up.Format
	})
	if err != nil {
		return fail(err)
	}
	c.sync.changed()
	c.log.Info("image stored; syncing it to the managed sites", "image", out.Name, "id", out.ID, "size", out.Size)
	return http.StatusOK, out, nil
}

// deleteImage deletes an image and tombstones its sync record; the engine
// deletes it at every managed site (a site whose servers use it keeps it,
// reported out-of-sync). Its file goes unless another image shares it.
func (c *Central) deleteImage(r *http.Request) (int, any, error) {
	ctx := r.Context()
	im, err := c.images.store.Image(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	c.images.mu.Lock()
	defer c.images.mu.Unlock()
	if im, err = c.images.store.Image(ctx, im.ID); err != nil {
		return 0, nil, err
	}
	if err := im.CheckTransition(compute.ImageDeleted); err != nil {
		return 0, nil, err
	}
	if err := c.images.store.DeleteImage(ctx, im.ID); err != nil {
		return 0, nil, err
	}
	c.sync.changed()
	others, err := c.images.store.ImagesWithChecksum(ctx, im.Checksum, im.ID)
	if err != nil {
		return 0, nil, fmt.Errorf("image %s deleted, but checking whether its file is shared failed: %w", im.Name, err)
	}
	if others == 0 {
		if err := c.images.files.Remove(im.Checksum); err != nil {
			return 0, nil, fmt.Errorf("image %s deleted, but removing its file failed: %w", im.Name, err)
		}
	}
	c.log.Info("image deleted", "image", im.Name, "id", im.ID, "file_kept", others > 0)
	return http.StatusNoContent, nil, nil
}
