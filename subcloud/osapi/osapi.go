// Package osapi is a site's OpenStack-compatible API: the subset of
// Keystone v3 (identity), Nova v2.1 (compute) and Glance v2 (image) that
// gophercloud v2 and the `openstack` CLI use to authenticate and to list,
// create, show, rebuild and delete servers and list flavors, images,
// hypervisors and availability zones. It is a facade over the site's own
// services: the same data, users, tokens, roles and projects as Petrel's
// API (a Petrel token is an OpenStack token and the other way round).
//
// Routes live under /identity, /compute, /image and /network (an empty
// Neutron: sites have no tenant networks) of the site controller's REST
// server, as rest dialects: their errors take the shape each OpenStack
// service documents. See docs/openstack.md.
package osapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Deps are the site services the API fronts.
type Deps struct {
	// Servers is the site's compute service; nil until it runs: server,
	// hypervisor and limit calls then answer 503, the rest works.
	Servers compute.Servers
	Images  compute.ImageStore  // required
	Flavors compute.FlavorStore // required
	// ImageWrites takes Glance's image imports and deletes; nil: they
	// answer 503 (images are still created, queued, through Images).
	ImageWrites ImageWriter
	// Region is the Keystone region of the site's endpoints; default
	// "RegionOne".
	Region string
}

// DefaultRegion is the region of the catalog's endpoints unless Deps says.
const DefaultRegion = "RegionOne"

// api holds what every handler needs.
type api struct {
	auth *auth.Service
	d    Deps
}

// Register adds the OpenStack-compatible routes to srv. It panics if Deps
// lacks a required service (a programming error).
func Register(srv *rest.Server, a *auth.Service, d Deps) {
	if a == nil || d.Images == nil || d.Flavors == nil {
		panic("osapi: auth, Images and Flavors are required")
	}
	if d.Region == "" {
		d.Region = DefaultRegion
	}
	o := &api{auth: a, d: d}
	o.registerIdentity(srv)
	o.registerCompute(srv)
	o.registerImage(srv)
	o.registerNetwork(srv)
}

// baseURL is the scheme and host the client reached us by: the catalog
// and every link are built from it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// caller returns the principal the guard stored.
func caller(ctx context.Context) auth.Principal {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		panic("osapi: handler reached without a guard")
	}
	return p
}

// isAdmin reports whether the caller sees every project's resources.
func isAdmin(p auth.Principal) bool { return p.Role.Allows(auth.Admin) }

// decodeBody reads a JSON request body into v. Unlike Petrel's own API,
// unknown fields are ignored: OpenStack clients send many we do not use.
func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errs.Wrapf(errs.TooLarge, "request body larger than %d bytes", mbe.Limit)
		}
		return errs.Wrapf(errs.Invalid, "reading the request body failed")
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return errs.Wrapf(errs.Invalid, "the request body is empty; a JSON object is required")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errs.Wrapf(errs.Invalid, "malformed request body: %v", err)
	}
	return nil
}

// refID is the ID at the end of a reference, which OpenStack clients may
// send as a bare ID or as a link ("http://…/images/ID").
func refID(ref string) string {
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// visibleImage finds an image the caller may use: public, its project's,
// or any for admins. Others' private images are not found.
func (o *api) visibleImage(ctx context.Context, p auth.Principal, id string) (compute.Image, error) {
	im, err := o.d.Images.Image(ctx, id)
	if err != nil {
		return compute.Image{}, err
	}
	if !im.VisibleTo(p.ProjectName(), isAdmin(p)) {
		return compute.Image{}, fmt.Errorf("%w: %s", compute.ErrImageNotFound, id)
	}
	return im, nil
}

// visibleFlavor finds a flavor the caller may use: public, its project's,
// or any for admins.
func (o *api) visibleFlavor(ctx context.Context, p auth.Principal, id string) (compute.Flavor, error) {
	f, err := o.d.Flavors.Flavor(ctx, id)
	if err != nil {
		return compute.Flavor{}, err
	}
	if !f.VisibleTo(p.ProjectName(), isAdmin(p)) {
		return compute.Flavor{}, fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, id)
	}
	return f, nil
}
