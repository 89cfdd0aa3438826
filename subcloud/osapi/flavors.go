package osapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/rest"
)

// flavorView is a flavor as microversion v shows it; brief is the list
// view (id, name, links).
func flavorView(r *http.Request, v microversion, f compute.Flavor, brief bool) map[string]any {
	m := map[string]any{"id": f.ID, "name": f.Name, "links": links(baseURL(r), "flavors", f.ID)}
	if v.atLeast(55) {
		m["description"] = nil
	}
	if brief {
		return m
	}
	m["vcpus"] = f.VCPUs
	m["ram"] = f.RAMMiB
	m["disk"] = f.DiskGiB
	m["OS-FLV-EXT-DATA:ephemeral"] = 0
	m["OS-FLV-DISABLED:disabled"] = false
	m["os-flavor-access:is_public"] = f.Public
	m["swap"] = "" // Nova's "no swap" before 2.75
	m["rxtx_factor"] = 1.0
	return m
}

// flavorAccess is which flavors a list shows: Nova's is_public filter.
type flavorAccess int

const (
	publicAndOwn flavorAccess = iota // is_public=true (the default): public, and the caller's project's
	privateOnly                      // is_public=false (admins): every non-public flavor
	allFlavors                       // is_public=None (admins): every flavor
)

func parseIsPublic(q url.Values, admin bool) (flavorAccess, error) {
	if !q.Has("is_public") || !admin {
		return publicAndOwn, nil
	}
	switch strings.ToLower(q.Get("is_public")) {
	case "none":
		return allFlavors, nil
	case "1", "t", "true", "on", "y", "yes":
		return publicAndOwn, nil
	case "0", "f", "false", "off", "n", "no":
		return privateOnly, nil
	}
	return 0, errs.Field("is_public", "must be a boolean or None, not %q", q.Get("is_public"))
}

func (a flavorAccess) shows(f compute.Flavor, project string) bool {
	switch a {
	case privateOnly:
		return !f.Public
	case allFlavors:
		return true
	}
	return f.Public || f.Project == project
}

// allFlavorsOf reads every flavor of the site, by name.
func (o *api) allFlavorsOf(ctx context.Context) ([]compute.Flavor, error) {
	var out []compute.Flavor
	opts := page.Options{Limit: rest.MaxLimit}
	for {
		items, next, err := o.d.Flavors.Flavors(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

func intParam(q url.Values, name string) (int, error) {
	if !q.Has(name) {
		return 0, nil
	}
	n, err := strconv.Atoi(q.Get(name))
	if err != nil || n < 0 {
		return 0, errs.Field(name, "must be a non-negative integer")
	}
	return n, nil
}

// listFlavors lists the flavors the caller may use (public ones and its
// project's), by name; admins may ask is_public=false or None. Filters:
// minRam, minDisk; paging: limit, marker (a flavor ID).
func (o *api) listFlavors(detail bool) novaHandler {
	return func(r *http.Request, v microversion) (int, any, error) {
		ctx := r.Context()
		c, q := caller(ctx), r.URL.Query()
		access, err := parseIsPublic(q, isAdmin(c))
		if err != nil {
			return 0, nil, err
		}
		minRAM, err := intParam(q, "minRam")
		if err != nil {
			return 0, nil, err
		}
		minDisk, err := intParam(q, "minDisk")
		if err != nil {
			return 0, nil, err
		}
		limit, err := listLimit(q)
		if err != nil {
			return 0, nil, err
		}
		all, err := o.allFlavorsOf(ctx)
		if err != nil {
			return 0, nil, err
		}
		marker, seenMarker := q.Get("marker"), q.Get("marker") == ""
		var found []compute.Flavor
		for _, f := range all {
			if !seenMarker {
				seenMarker = f.ID == marker
				continue
			}
			if access.shows(f, c.ProjectName()) && f.RAMMiB >= minRAM && f.DiskGiB >= minDisk {
				found = append(found, f)
			}
		}
		if !seenMarker {
			return 0, nil, errs.Field("marker", "marker [%s] not found", marker)
		}
		out := map[string]any{}
		if len(found) > limit {
			found = found[:limit]
			if limit > 0 {
				out["flavors_links"] = []Link{{Rel: "next", Href: nextLink(r, found[limit-1].ID, limit)}}
			}
		}
		views := make([]map[string]any, len(found))
		for i, f := range found {
			views[i] = flavorView(r, v, f, !detail)
		}
		out["flavors"] = views
		return http.StatusOK, out, nil
	}
}

// getFlavor shows a flavor the caller may use, by ID (or name).
func (o *api) getFlavor(r *http.Request, v microversion) (int, any, error) {
	f, err := o.visibleFlavor(r.Context(), caller(r.Context()), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"flavor": flavorView(r, v, f, false)}, nil
}

// flavorExtraSpecs: Petrel flavors have none.
func (o *api) flavorExtraSpecs(r *http.Request, _ microversion) (int, any, error) {
	if _, err := o.visibleFlavor(r.Context(), caller(r.Context()), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]map[string]string{"extra_specs": {}}, nil
}

// limits reports the caller's project's usage; Petrel sets no quotas (-1).
func (o *api) limits(r *http.Request, _ microversion) (int, any, error) {
	ctx := r.Context()
	svc, err := o.servers()
	if err != nil {
		return 0, nil, err
	}
	c := caller(ctx)
	project := c.ProjectName()
	if p := r.URL.Query().Get("tenant_id"); p != "" && isAdmin(c) {
		project = p
	}
	instances, cores, ram := 0, 0, 0
	opts := page.Options{Limit: rest.MaxLimit, Filters: map[string]string{"project": project}}
	for {
		items, next, err := svc.ListServers(ctx, opts)
		if err != nil {
			return 0, nil, err
		}
		for _, sv := range items {
			if sv.Project == project {
				instances, cores, ram = instances+1, cores+sv.Flavor.VCPUs, ram+sv.Flavor.RAMMiB
			}
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	groups := 0
	if gs, err := svc.ListServerGroups(ctx); err == nil {
		for _, g := range gs {
			if g.Project == project {
				groups++
			}
		}
	}
	absolute := map[string]int{
		"maxTotalInstances": -1, "maxTotalCores": -1, "maxTotalRAMSize": -1, "maxServerMeta": 128,
		"maxImageMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240, "maxTotalKeypairs": -1,
		"maxSecurityGroups": -1, "maxSecurityGroupRules": -1, "maxServerGroups": -1, "maxServerGroupMembers": -1,
		"maxTotalFloatingIps": -1, "totalInstancesUsed": instances, "totalCoresUsed": cores, "totalRAMUsed": ram,
		"totalServerGroupsUsed": groups, "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0,
	}
	return http.StatusOK, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": absolute}}, nil
}

// novaFlavorRequest is the body of Nova's create flavor.
type novaFlavorRequest struct {
	Flavor *struct {
		Name      string   `json:"name"`
		ID        *string  `json:"id"` // null or absent: a new UUID
		RAM       *int     `json:"ram"`
		VCPUs     *int     `json:"vcpus"`
		Disk      *int     `json:"disk"`
		Ephemeral int      `json:"OS-FLV-EXT-DATA:ephemeral"`
		Swap      any      `json:"swap"` // 0 or "" (Nova's "no swap")
		IsPublic  *bool    `json:"os-flavor-access:is_public"`
		RXTX      *float64 `json:"rxtx_factor"`
	} `json:"flavor"`
}

// createFlavor is Nova's create flavor (admins): a flavor with the given
// ID (a UUID; central's flavors keep theirs at every site) or a new one.
// Petrel flavors have no ephemeral disk or swap.
func (o *api) createFlavor(r *http.Request, v microversion) (int, any, error) {
	var req novaFlavorRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	b := req.Flavor
	if b == nil {
		return 0, nil, errs.Field("flavor", "is required")
	}
	if b.RAM == nil || b.VCPUs == nil || b.Disk == nil {
		return 0, nil, errs.Field("flavor", "name, ram, vcpus and disk are required")
	}
	if b.Ephemeral != 0 {
		return 0, nil, errs.Field("OS-FLV-EXT-DATA:ephemeral", "Petrel flavors have no ephemeral disk: must be 0")
	}
	switch sw := b.Swap.(type) {
	case nil, string:
		if sw != nil && sw != "" && sw != "0" {
			return 0, nil, errs.Field("swap", "Petrel flavors have no swap: must be 0")
		}
	case float64:
		if sw != 0 {
			return 0, nil, errs.Field("swap", "Petrel flavors have no swap: must be 0")
		}
	default:
		return 0, nil, errs.Field("swap", "must be a number")
	}
	f := compute.Flavor{Name: b.Name, VCPUs: *b.VCPUs, RAMMiB: *b.RAM, DiskGiB: *b.Disk, Public: true,
		Project: caller(r.Context()).ProjectName()}
	if b.IsPublic != nil {
		f.Public = *b.IsPublic
	}
	if b.ID != nil {
		f.ID = *b.ID
	}
	if err := f.Validate(); err != nil {
		return 0, nil, err
	}
	out, err := o.d.Flavors.CreateFlavor(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"flavor": flavorView(r, v, out, false)}, nil
}

// deleteFlavor is Nova's delete flavor (admins). Servers keep their copy.
func (o *api) deleteFlavor(r *http.Request, _ microversion) (int, any, error) {
	f, err := o.d.Flavors.Flavor(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if f.ID != rest.Var(r, "id") { // Nova deletes by ID only
		return 0, nil, fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, rest.Var(r, "id"))
	}
	if err := o.d.Flavors.DeleteFlavor(r.Context(), f.ID); err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, nil, nil
}
