package central

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// Central's flavors are shared resources: defined once here, kept by the
// sync engine (sync.go) at every managed site with the same ID. They live
// only in the sync store, as its "flavors" records; a flavor is immutable
// (as in Nova): a change is a delete and a create.

// FlavorRequest is the body of POST /v1/flavors at central (the same as a
// site's, so `petrel flavor create` works against either).
type FlavorRequest struct {
	Name    string `json:"name"`
	VCPUs   int    `json:"vcpus"`
	RAMMiB  int    `json:"ram_mib"`
	DiskGiB int    `json:"disk_gib"`
	Public  bool   `json:"public,omitempty"`  // default false: the owner project's only
	Project string `json:"project,omitempty"` // default admin
}

// flavorDoc decodes a flavor record of the sync store.
func flavorDoc(rec SyncRecord) (compute.Flavor, error) {
	var f compute.Flavor
	if err := json.Unmarshal(rec.Doc, &f); err != nil {
		return compute.Flavor{}, fmt.Errorf("central: flavor record %s: %w", rec.Key, err)
	}
	return f, nil
}

// flavors returns central's flavors (live records), by name.
func (c *Central) flavors(ctx context.Context) ([]compute.Flavor, error) {
	recs, _, err := c.sync.store.Since(ctx, syncproto.Flavors, 0, 0)
	if err != nil {
		return nil, err
	}
	var out []compute.Flavor
	for _, rec := range recs {
		if rec.Deleted {
			continue
		}
		f, err := flavorDoc(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b compute.Flavor) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// flavor finds one of central's flavors by ID or name.
func (c *Central) flavor(ctx context.Context, ref string) (compute.Flavor, error) {
	fs, err := c.flavors(ctx)
	if err != nil {
		return compute.Flavor{}, err
	}
	for _, f := range fs {
		if f.ID == ref {
			return f, nil
		}
	}
	for _, f := range fs {
		if f.Name == ref {
			return f, nil
		}
	}
	return compute.Flavor{}, fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, ref)
}

func (c *Central) registerFlavors(srv *rest.Server, a *auth.Service) {
	srv.Handle("listFlavors", http.MethodGet, "/v1/flavors", a.Require(auth.Reader), c.listFlavors)
	srv.Handle("createFlavor", http.MethodPost, "/v1/flavors", a.Require(auth.Admin), c.createFlavor)
	srv.Handle("getFlavor", http.MethodGet, "/v1/flavors/{id}", a.Require(auth.Reader), c.getFlavor)
	srv.Handle("deleteFlavor", http.MethodDelete, "/v1/flavors/{id}", a.Require(auth.Admin), c.deleteFlavor)
}

func (c *Central) listFlavors(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r)
	if err != nil {
		return 0, nil, err
	}
	fs, err := c.flavors(r.Context())
	if err != nil {
		return 0, nil, err
	}
	start := 0
	if opts.After != "" {
		start, _ = slices.BinarySearchFunc(fs, opts.After, func(f compute.Flavor, after string) int {
			if f.Name <= after {
				return -1
			}
			return 1
		})
	}
	fs = fs[start:]
	next := ""
	if len(fs) > opts.Limit {
		fs = fs[:opts.Limit]
		next = fs[len(fs)-1].Name
	}
	return http.StatusOK, rest.List[compute.Flavor]{Items: fs, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (c *Central) getFlavor(r *http.Request) (int, any, error) {
	f, err := c.flavor(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, f, nil
}

// createFlavor records a flavor in the sync store; the engine takes it to
// every managed site.
func (c *Central) createFlavor(r *http.Request) (int, any, error) {
	var req FlavorRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	f := compute.Flavor{ID: uuid.NewString(), Name: req.Name, VCPUs: req.VCPUs, RAMMiB: req.RAMMiB, DiskGiB: req.DiskGiB,
		Public: req.Public, Project: req.Project, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if f.Project == "" {
		f.Project = auth.DefaultProject
	}
	if err := f.Validate(); err != nil {
		return 0, nil, err
	}
	doc, err := json.Marshal(f)
	if err != nil {
		return 0, nil, err
	}
	// One writer at a time checks the name and records: names are unique
	// among central's flavors.
	c.flavorMu.Lock()
	defer c.flavorMu.Unlock()
	if _, err := c.flavor(r.Context(), f.Name); err == nil {
		return 0, nil, fmt.Errorf("%w: %s", compute.ErrFlavorExists, f.Name)
	}
	v, err := c.sync.store.Put(r.Context(), syncproto.Flavors, f.ID, doc)
	if err != nil {
		return 0, nil, err
	}
	rest.Annotate(r.Context(), "sync_version", fmt.Sprint(v))
	c.sync.changed()
	return http.StatusCreated, f, nil
}

// deleteFlavor tombstones a flavor; the engine deletes it at every managed
// site (servers keep their copy).
func (c *Central) deleteFlavor(r *http.Request) (int, any, error) {
	c.flavorMu.Lock()
	defer c.flavorMu.Unlock()
	f, err := c.flavor(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	v, err := c.sync.store.Delete(r.Context(), syncproto.Flavors, f.ID)
	if err != nil {
		return 0, nil, err
	}
	rest.Annotate(r.Context(), "sync_version", fmt.Sprint(v))
	c.sync.changed()
	return http.StatusNoContent, nil, nil
}
