package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/subcloud"
)

// What lab up gives every site that runs VMs, so that a newcomer can boot
// a server at once: the test images petrel-test and petrel-test-v2 (built
// by compute/guestimage from Debian packages, cached) as public raw
// images, and the public flavors below.

// Flavors are the flavors lab up creates at every site that runs VMs.
var Flavors = []subcloud.CreateFlavorRequest{
	{Name: "m1.tiny", VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Public: true},
	{Name: "m1.small", VCPUs: 1, RAMMiB: 256, DiskGiB: 2, Public: true},
	{Name: "m1.medium", VCPUs: 2, RAMMiB: 512, DiskGiB: 4, Public: true},
}

// SeedImage is a local disk image that Seed registers at a site.
type SeedImage struct {
	Name     string
	Path     string
	Format   compute.DiskFormat
	Checksum string // SHA-256, lower-case hex
	Size     int64
}

// NewSeedImage reads the file at path once for its size, SHA-256 and format.
func NewSeedImage(name, path string) (SeedImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return SeedImage{}, err
	}
	defer f.Close()
	head := make([]byte, len(compute.QCOW2Magic))
	n, _ := io.ReadFull(f, head)
	h := sha256.New()
	h.Write(head[:n])
	size, err := io.Copy(h, f)
	if err != nil {
		return SeedImage{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return SeedImage{Name: name, Path: path, Format: compute.DetectFormat(head[:n]),
		Checksum: hex.EncodeToString(h.Sum(nil)), Size: size + int64(n)}, nil
}

// TestImages builds (or finds in cacheDir) every guestimage variant and
// returns them as images named after their variant.
func TestImages(ctx context.Context, cacheDir string) ([]SeedImage, error) {
	var out []SeedImage
	for _, v := range guestimage.Variants {
		path, err := guestimage.Build(ctx, v, cacheDir)
		if err != nil {
			return nil, err
		}
		im, err := NewSeedImage(string(v), path)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, nil
}

// seedWait bounds how long Seed waits for someone else's upload of an
// image it needs (an image in saving); seedLimit bounds seeding at lab up.
const (
	seedWait  = time.Minute
	seedLimit = 2 * time.Minute
)

// Seed makes sure the site api speaks to has every image, public and
// active, and every flavor. It is idempotent: an active image or a flavor
// that exists with the name is left alone. An image that never got its
// bytes gets them now: one queued after a cut upload is uploaded; one
// queued for other bytes, or killed, is created again.
// The images go up in parallel: the site hashes, writes and fsyncs each,
// and one 64 MiB upload does not keep both cores busy.
func Seed(ctx context.Context, api *client.Client, images []SeedImage, flavors []subcloud.CreateFlavorRequest) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, im := range images {
		g.Go(func() error {
			if err := seedImage(gctx, api, im); err != nil {
				return fmt.Errorf("image %s: %w", im.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, f := range flavors {
		// A flavor of that name already there is kept as it is.
		if err := api.Do(ctx, http.MethodPost, "/v1/flavors", nil, f, nil); err != nil && !errors.Is(err, errs.Conflict) {
			return fmt.Errorf("flavor %s: %w", f.Name, err)
		}
	}
	return nil
}

// seedImage brings the site's image named im.Name to active, reading the
// site's record again after each step, since another client may act on
// the same image meanwhile.
func seedImage(ctx context.Context, api *client.Client, im SeedImage) error {
	path := "/v1/images/" + url.PathEscape(im.Name)
	deadline := time.Now().Add(seedWait)
	for last := compute.ImageStatus("absent"); ; {
		if time.Now().After(deadline) {
			return fmt.Errorf("not active after %s; last seen %s", seedWait, last)
		}
		var cur compute.Image
		err := api.Do(ctx, http.MethodGet, path, nil, nil, &cur)
		if errors.Is(err, errs.NotFound) {
			req := subcloud.CreateImageRequest{Name: im.Name, DiskFormat: im.Format, Visibility: compute.Public,
				Checksum: im.Checksum, Size: im.Size}
			err = api.Do(ctx, http.MethodPost, "/v1/images", nil, req, &cur)
			if errors.Is(err, errs.Conflict) {
				continue // created meanwhile: look again
			}
		}
		if err != nil {
			return err
		}
		last = cur.Status
		switch cur.Status {
		case compute.ImageActive:
			return nil
		case compute.ImageQueued:
			if cur.Checksum != im.Checksum || cur.Size != im.Size || cur.DiskFormat != im.Format {
				// The record of other bytes (an older build) that never
				// got them: replace it.
				if err := deleteImage(ctx, api, cur.ID); err != nil {
					return err
				}
				continue
			}
			err := uploadImage(ctx, api, cur.ID, im)
			if errors.Is(err, errs.InvalidTransition) {
				continue // someone else's upload started first
			}
			return err
		case compute.ImageKilled:
			// Storing the bytes failed on the site's side; a killed image
			// can only be deleted.
			if err := deleteImage(ctx, api, cur.ID); err != nil {
				return err
			}
		case compute.ImageSaving:
			// Someone else's upload: wait for it to end, either way.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		default:
			return fmt.Errorf("the site reports status %q", cur.Status)
		}
	}
}

func deleteImage(ctx context.Context, api *client.Client, id string) error {
	err := api.Do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(id), nil, nil, nil)
	if errors.Is(err, errs.NotFound) {
		return nil
	}
	return err
}

func uploadImage(ctx context.Context, api *client.Client, id string, im SeedImage) error {
	f, err := os.Open(im.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	return api.Upload(ctx, http.MethodPut, "/v1/images/"+url.PathEscape(id)+"/file", f, im.Size, nil)
}

// seedSites seeds, in parallel, every site of f that runs VMs (has a
// hypervisor host); they are independent. It returns how many it seeded.
func seedSites(ctx context.Context, f *File, images []SeedImage) (int, error) {
	apis := map[string]*client.Client{}
	for _, s := range f.Sites {
		if !s.runsVMs() {
			continue
		}
		api, err := client.New(client.Config{URL: s.URL, CACert: f.CACert, Token: s.Token})
		if err != nil {
			return 0, err
		}
		apis[s.Name] = api
	}
	ctx, cancel := context.WithTimeout(ctx, seedLimit)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for name, api := range apis {
		g.Go(func() error {
			if err := Seed(ctx, api, images, Flavors); err != nil {
				return fmt.Errorf("lab: seed site %s: %w", name, err)
			}
			return nil
		})
	}
	return len(apis), g.Wait()
}

// runsVMs reports whether the site has a hypervisor host.
func (s SiteEntry) runsVMs() bool {
	for _, h := range s.Hosts {
		if h.LibvirtURI != "" {
			return true
		}
	}
	return false
}

// specsRunVMs reports whether any of the sites will have a hypervisor host.
func specsRunVMs(sites []SiteSpec) bool {
	for i, sp := range sites {
		for _, h := range hostsOf(sp, i) {
			if h.Hypervisor {
				return true
			}
		}
	}
	return false
}
