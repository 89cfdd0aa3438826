package central

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
)

// syncSite is a site's API as the sync engine's syncers use it: one
// interface per synced resource.
type syncSite interface {
	flavorSite
	userSite
	imageSite
}

// flavorSite is what the flavor syncer needs of a site: Nova's flavors.
type flavorSite interface {
	// Flavors lists every flavor the site holds (every project's).
	Flavors(ctx context.Context) ([]compute.Flavor, error)
	// CreateFlavor creates f with its ID; compute.ErrFlavorExists when
	// its name or ID is taken.
	CreateFlavor(ctx context.Context, f compute.Flavor) error
	// DeleteFlavor deletes flavor id; compute.ErrFlavorNotFound if none.
	DeleteFlavor(ctx context.Context, id string) error
}

// SyncUser is the name central's sync engine acts as at sites: their
// audit records show it.
const SyncUser = "central-sync"

// relaySites reaches sites through their dial-home links: gophercloud
// over the relay's transport, each request carrying a fresh assertion
// signed by central (role admin; the project of the record it writes).
type relaySites struct {
	c      *Central
	client *http.Client
}

func newRelaySites(c *Central) *relaySites {
	return &relaySites{c: c, client: &http.Client{Transport: &assertingTransport{c: c, base: c.relayTransport()},
		Timeout: 30 * time.Second}}
}

func (r *relaySites) site(name string) syncSite {
	if r.c.links.get(name) == nil {
		return nil
	}
	return &relaySite{r: r, name: name}
}

// projectKey carries the project a sync request acts in.
type projectKey struct{}

// assertingTransport signs each relayed request as SyncUser (or the user
// its context names: FleetUser).
type assertingTransport struct {
	c    *Central
	base http.RoundTripper
}

func (t *assertingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	site, ok := cutRelayHost(req.URL.Hostname())
	if !ok {
		return nil, errs.Wrapf(errs.Invalid, "not a relay address: %s", req.URL.Host)
	}
	project, _ := req.Context().Value(projectKey{}).(string)
	user, _ := req.Context().Value(userKey{}).(string)
	if user == "" {
		user = SyncUser
	}
	p := auth.Principal{User: user, Role: auth.Admin, Project: project}
	id := uuid.NewString()
	a, err := t.c.signer.Sign(p, site, req.Method, req.URL.EscapedPath(), id, 30*time.Second)
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set(auth.AssertionHeader, a)
	req.Header.Set("X-Request-Id", id)
	return t.base.RoundTrip(req)
}

// relaySite is one site's API through the relay.
type relaySite struct {
	r    *relaySites
	name string
}

// compute is a Nova client for the site.
func (s *relaySite) compute() *gophercloud.ServiceClient {
	pc := &gophercloud.ProviderClient{HTTPClient: *s.r.client, UserAgent: gophercloud.UserAgent{}}
	pc.UserAgent.Prepend("petrel-central-sync")
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: "http://" + relayHost(s.name) + "/compute/v2.1/",
		Type: "compute", Microversion: "2.37"}
}

// statusOf is the HTTP status of a gophercloud error (0 if none).
func statusOf(err error) int {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return ue.Actual
	}
	return 0
}

// siteErr maps a site's answer to the engine's errors: 409 and 404 to
// want (when given), the rest stays transient.
func siteErr(site string, err error, want map[int]error) error {
	if err == nil {
		return nil
	}
	if e, ok := want[statusOf(err)]; ok {
		return e
	}
	return errs.Wrapf(errs.Unavailable, "site %s: %v", site, err)
}

func (s *relaySite) Flavors(ctx context.Context) ([]compute.Flavor, error) {
	pages, err := flavors.ListDetail(s.compute(), flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		return nil, siteErr(s.name, err, nil)
	}
	fs, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, fmt.Errorf("site %s: flavors: %w", s.name, err)
	}
	out := make([]compute.Flavor, len(fs))
	for i, f := range fs {
		out[i] = compute.Flavor{ID: f.ID, Name: f.Name, VCPUs: f.VCPUs, RAMMiB: f.RAM, DiskGiB: f.Disk, Public: f.IsPublic}
	}
	return out, nil
}

func (s *relaySite) CreateFlavor(ctx context.Context, f compute.Flavor) error {
	disk, public := f.DiskGiB, f.Public
	ctx = context.WithValue(ctx, projectKey{}, f.Project)
	_, err := flavors.Create(ctx, s.compute(), flavors.CreateOpts{ID: f.ID, Name: f.Name, RAM: f.RAMMiB, VCPUs: f.VCPUs,
		Disk: &disk, IsPublic: &public}).Extract()
	return siteErr(s.name, err, map[int]error{http.StatusConflict: fmt.Errorf("%w: %s", compute.ErrFlavorExists, f.Name)})
}

func (s *relaySite) DeleteFlavor(ctx context.Context, id string) error {
	err := flavors.Delete(ctx, s.compute(), id).ExtractErr()
	return siteErr(s.name, err, map[int]error{http.StatusNotFound: fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, id)})
}

// flavorSyncer keeps central's flavors at a site. A site's own flavors
// (IDs central never made) are left alone; one that holds a central
// flavor's name is a conflict, reported and not overwritten.
type flavorSyncer struct{}

func (flavorSyncer) resource() string { return "flavors" }

// sameFlavor: what a site shows of a flavor matches the desired one (the
// site's listing does not show a private flavor's project).
func sameFlavor(a, b compute.Flavor) bool {
	return a.ID == b.ID && a.Name == b.Name && a.VCPUs == b.VCPUs && a.RAMMiB == b.RAMMiB && a.DiskGiB == b.DiskGiB &&
		a.Public == b.Public
}

func (flavorSyncer) apply(ctx context.Context, s syncSite, rec SyncRecord) error {
	if rec.Deleted {
		if err := s.DeleteFlavor(ctx, rec.Key); err != nil && !errors.Is(err, compute.ErrFlavorNotFound) {
			return err
		}
		return nil
	}
	var want compute.Flavor
	if err := json.Unmarshal(rec.Doc, &want); err != nil {
		return fmt.Errorf("flavor record %s: %w", rec.Key, err)
	}
	err := s.CreateFlavor(ctx, want)
	if err == nil || !errors.Is(err, compute.ErrFlavorExists) {
		return err
	}
	// Taken: by this very flavor (applied before), by an older copy of
	// it, or by a site-local flavor of the same name.
	have, err := s.Flavors(ctx)
	if err != nil {
		return err
	}
	for _, f := range have {
		if f.ID == want.ID {
			if sameFlavor(f, want) {
				return nil
			}
			if err := s.DeleteFlavor(ctx, f.ID); err != nil && !errors.Is(err, compute.ErrFlavorNotFound) {
				return err
			}
			return s.CreateFlavor(ctx, want)
		}
	}
	return fmt.Errorf("%w: flavor %s", errSyncConflict, want.Name)
}

func (flavorSyncer) audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	have, err := s.Flavors(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]compute.Flavor, len(have))
	for _, f := range have {
		byID[f.ID] = f
	}
	var repairs []SyncRecord
	for _, rec := range desired {
		f, held := byID[rec.Key]
		if rec.Deleted {
			if held {
				repairs = append(repairs, rec)
			}
			continue
		}
		var want compute.Flavor
		if err := json.Unmarshal(rec.Doc, &want); err != nil {
			return nil, fmt.Errorf("flavor record %s: %w", rec.Key, err)
		}
		if !held || !sameFlavor(f, want) {
			repairs = append(repairs, rec)
		}
	}
	return repairs, nil
}

// cutRelayHost returns the site a relay host name names.
func cutRelayHost(host string) (string, bool) {
	site, ok := strings.CutSuffix(host, ".site.petrel")
	return site, ok && site != ""
}
