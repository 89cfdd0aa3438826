package central

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imageimport"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// BlobURI is the import URI of the bytes with checksum sum: the site
// fetches them from central over its own link (docs/openstack.md).
func BlobURI(sum string) string { return "petrel-central:///sync/v1/blobs/" + sum }

// imageSite is what the image syncer needs of a site: Glance's images.
type imageSite interface {
	// Images lists every image the site holds (every project's).
	Images(ctx context.Context) ([]compute.Image, error)
	// Image shows image id; compute.ErrImageNotFound if none.
	Image(ctx context.Context, id string) (compute.Image, error)
	// CreateImage records d's image, queued, with its ID;
	// compute.ErrImageExists when its name or ID is taken.
	CreateImage(ctx context.Context, d imageDoc) error
	// ImportImage has the site fetch the bytes with checksum sum for
	// image id from central (Glance's web-download import).
	ImportImage(ctx context.Context, id, sum string) error
	// DeleteImage deletes image id; compute.ErrImageNotFound if none,
	// compute.ErrImageInUse if servers use it.
	DeleteImage(ctx context.Context, id string) error
}

// glance is a Glance client for the site.
func (s *relaySite) glance() *gophercloud.ServiceClient {
	c := s.compute()
	c.Endpoint, c.Type, c.Microversion = "http://"+relayHost(s.name)+"/image/v2/", "image", ""
	return c
}

func imageOf(im images.Image) compute.Image {
	sum, _ := im.Properties["os_hash_value"].(string)
	return compute.Image{ID: im.ID, Name: im.Name, Status: compute.ImageStatus(im.Status),
		DiskFormat: compute.DiskFormat(im.DiskFormat), Visibility: compute.Visibility(im.Visibility), Project: im.Owner,
		Checksum: sum, Size: im.SizeBytes, CreatedAt: im.CreatedAt, UpdatedAt: im.UpdatedAt}
}

func (s *relaySite) Images(ctx context.Context) ([]compute.Image, error) {
	pages, err := images.List(s.glance(), images.ListOpts{Limit: 1000}).AllPages(ctx)
	if err != nil {
		return nil, siteErr(s.name, err, nil)
	}
	ims, err := images.ExtractImages(pages)
	if err != nil {
		return nil, fmt.Errorf("site %s: images: %w", s.name, err)
	}
	out := make([]compute.Image, len(ims))
	for i, im := range ims {
		out[i] = imageOf(im)
	}
	return out, nil
}

func (s *relaySite) Image(ctx context.Context, id string) (compute.Image, error) {
	im, err := images.Get(ctx, s.glance(), id).Extract()
	if err != nil {
		return compute.Image{}, siteErr(s.name, err, map[int]error{http.StatusNotFound: fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)})
	}
	return imageOf(*im), nil
}

func (s *relaySite) CreateImage(ctx context.Context, d imageDoc) error {
	vis := images.ImageVisibility(d.Visibility)
	ctx = context.WithValue(ctx, projectKey{}, d.Project)
	_, err := images.Create(ctx, s.glance(), images.CreateOpts{ID: d.ID, Name: d.Name, Visibility: &vis,
		ContainerFormat: "bare", DiskFormat: string(d.DiskFormat)}).Extract()
	return siteErr(s.name, err, map[int]error{http.StatusConflict: fmt.Errorf("%w: %s", compute.ErrImageExists, d.Name)})
}

func (s *relaySite) ImportImage(ctx context.Context, id, sum string) error {
	err := imageimport.Create(ctx, s.glance(), id, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: BlobURI(sum)}).ExtractErr()
	return siteErr(s.name, err, map[int]error{http.StatusNotFound: fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)})
}

func (s *relaySite) DeleteImage(ctx context.Context, id string) error {
	err := images.Delete(ctx, s.glance(), id).ExtractErr()
	return siteErr(s.name, err, map[int]error{
		http.StatusNotFound: fmt.Errorf("%w: %s", compute.ErrImageNotFound, id),
		http.StatusConflict: fmt.Errorf("%w: %s: %v", compute.ErrImageInUse, id, err),
	})
}

// syncRefusal is a record the site cannot take, with the site's reason:
// an errSyncConflict.
type syncRefusal struct{ why string }

func (e syncRefusal) Error() string        { return e.why }
func (e syncRefusal) Is(target error) bool { return target == errSyncConflict }

// imageSyncer keeps central's images at a site with their IDs: the
// record through Glance's create, the bytes through Glance's import, which
// the site fetches over its link once (none if it holds them). A site's
// own images are left alone; one holding a central image's name is a
// conflict.
type imageSyncer struct{}

func (imageSyncer) resource() string { return syncproto.Images }

// holds reports whether a site's image is the desired one, complete.
func holds(have compute.Image, want imageDoc) bool {
	return have.Status == compute.ImageActive && have.Checksum == want.Checksum && have.Name == want.Name &&
		have.Visibility == want.Visibility && have.DiskFormat == want.DiskFormat
}

func (imageSyncer) apply(ctx context.Context, s syncSite, rec SyncRecord) error {
	if rec.Deleted {
		err := s.DeleteImage(ctx, rec.Key)
		switch {
		case err == nil, errors.Is(err, compute.ErrImageNotFound):
			return nil
		case errors.Is(err, compute.ErrImageInUse):
			return syncRefusal{fmt.Sprintf("image %s is in use at the site: %v", rec.Key, err)}
		}
		return err
	}
	want, err := decodeImageDoc(rec)
	if err != nil {
		return err
	}
	have, err := s.Image(ctx, want.ID)
	switch {
	case errors.Is(err, compute.ErrImageNotFound):
		if err := s.CreateImage(ctx, want); errors.Is(err, compute.ErrImageExists) {
			return syncRefusal{fmt.Sprintf("the site holds an image of its own named %s", want.Name)}
		} else if err != nil {
			return err
		}
		have = compute.Image{ID: want.ID, Status: compute.ImageQueued}
	case err != nil:
		return err
	}
	switch {
	case holds(have, want):
		return nil
	case have.Status == compute.ImageSaving && have.Checksum == want.Checksum:
		return errSyncPending // its bytes are on their way
	case have.Status == compute.ImageQueued && (have.Checksum == "" || have.Checksum == want.Checksum) &&
		have.Name == want.Name && have.Visibility == want.Visibility && have.DiskFormat == want.DiskFormat:
	default:
		// An older copy (other bytes or fields), or a killed one: again.
		if err := s.DeleteImage(ctx, want.ID); err != nil && !errors.Is(err, compute.ErrImageNotFound) {
			if errors.Is(err, compute.ErrImageInUse) {
				return syncRefusal{fmt.Sprintf("image %s differs at the site, which cannot replace it: %v", want.Name, err)}
			}
			return err
		}
		if err := s.CreateImage(ctx, want); errors.Is(err, compute.ErrImageExists) {
			return syncRefusal{fmt.Sprintf("the site holds an image of its own named %s", want.Name)}
		} else if err != nil {
			return err
		}
	}
	if err := s.ImportImage(ctx, want.ID, want.Checksum); err != nil {
		return err
	}
	// A site holding the bytes already makes it active at once.
	if have, err = s.Image(ctx, want.ID); err == nil && holds(have, want) {
		return nil
	}
	return errSyncPending
}

func (imageSyncer) audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	have, err := s.Images(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]compute.Image, len(have))
	for _, im := range have {
		byID[im.ID] = im
	}
	var repairs []SyncRecord
	for _, rec := range desired {
		im, held := byID[rec.Key]
		if rec.Deleted {
			if held {
				repairs = append(repairs, rec)
			}
			continue
		}
		want, err := decodeImageDoc(rec)
		if err != nil {
			return nil, err
		}
		if !held || !holds(im, want) {
			repairs = append(repairs, rec)
		}
	}
	return repairs, nil
}
