package osapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Nova v2.1 at /compute/v2.1: servers, flavors, hypervisors, availability
// zones and limits.

const (
	// zoneName is the site's one availability zone: Nova's default name,
	// so clients that name it work unchanged.
	zoneName = "nova"
	// novaTime is how Nova writes created and updated.
	novaTime = "2006-01-02T15:04:05Z"
	// novaUsageTime is how Nova writes launched_at.
	novaUsageTime = "2006-01-02T15:04:05.000000"
	// maxListLimit is Nova's default osapi_max_limit.
	maxListLimit = 1000
)

func (o *api) registerCompute(srv *rest.Server) {
	d, a := novaDialect, o.auth
	reader, operator, admin := a.Require(auth.Reader), a.Require(auth.Operator), a.Require(auth.Admin)
	srv.HandleDialect(d, "osComputeVersions", http.MethodGet, "/compute", nil, o.computeVersions)
	srv.HandleDialect(d, "osComputeVersionsSlash", http.MethodGet, "/compute/", nil, o.computeVersions)
	srv.HandleDialect(d, "osComputeV21", http.MethodGet, "/compute/v2.1", nil, o.computeV21)
	srv.HandleDialect(d, "osComputeV21Slash", http.MethodGet, "/compute/v2.1/", nil, o.computeV21)
	const p = "/compute/v2.1"
	// detail before {id}: the router takes the first match.
	srv.HandleDialect(d, "osListServersDetail", http.MethodGet, p+"/servers/detail", reader, versioned(o.listServers(true)))
	srv.HandleDialect(d, "osListServers", http.MethodGet, p+"/servers", reader, versioned(o.listServers(false)))
	srv.HandleDialect(d, "osCreateServer", http.MethodPost, p+"/servers", operator, versioned(o.createServer))
	srv.HandleDialect(d, "osGetServer", http.MethodGet, p+"/servers/{id}", reader, versioned(o.getServer))
	srv.HandleDialect(d, "osDeleteServer", http.MethodDelete, p+"/servers/{id}", operator, versioned(o.deleteServer))
	srv.HandleDialect(d, "osServerAction", http.MethodPost, p+"/servers/{id}/action", operator, versioned(o.serverAction))
	srv.HandleDialect(d, "osListFlavorsDetail", http.MethodGet, p+"/flavors/detail", reader, versioned(o.listFlavors(true)))
	srv.HandleDialect(d, "osListFlavors", http.MethodGet, p+"/flavors", reader, versioned(o.listFlavors(false)))
	srv.HandleDialect(d, "osCreateFlavor", http.MethodPost, p+"/flavors", admin, versioned(o.createFlavor))
	srv.HandleDialect(d, "osGetFlavor", http.MethodGet, p+"/flavors/{id}", reader, versioned(o.getFlavor))
	srv.HandleDialect(d, "osDeleteFlavor", http.MethodDelete, p+"/flavors/{id}", admin, versioned(o.deleteFlavor))
	srv.HandleDialect(d, "osFlavorExtraSpecs", http.MethodGet, p+"/flavors/{id}/os-extra_specs", reader, versioned(o.flavorExtraSpecs))
	srv.HandleDialect(d, "osListHypervisorsDetail", http.MethodGet, p+"/os-hypervisors/detail", reader, versioned(o.listHypervisors(true)))
	srv.HandleDialect(d, "osListHypervisors", http.MethodGet, p+"/os-hypervisors", reader, versioned(o.listHypervisors(false)))
	srv.HandleDialect(d, "osGetHypervisor", http.MethodGet, p+"/os-hypervisors/{id}", reader, versioned(o.getHypervisor))
	srv.HandleDialect(d, "osHypervisorUptime", http.MethodGet, p+"/os-hypervisors/{id}/uptime", reader, versioned(o.hypervisorUptime))
	srv.HandleDialect(d, "osListAggregates", http.MethodGet, p+"/os-aggregates", reader, versioned(o.listAggregates))
	srv.HandleDialect(d, "osListZones", http.MethodGet, p+"/os-availability-zone", reader, versioned(o.listZones(false)))
	srv.HandleDialect(d, "osListZonesDetail", http.MethodGet, p+"/os-availability-zone/detail", reader, versioned(o.listZones(true)))
	srv.HandleDialect(d, "osLimits", http.MethodGet, p+"/limits", reader, versioned(o.limits))
}

// ComputeVersion describes Nova v2.1 and its microversion range.
type ComputeVersion struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Version    string      `json:"version"`
	MinVersion string      `json:"min_version"`
	Updated    string      `json:"updated"`
	Links      []Link      `json:"links"`
	MediaTypes []MediaType `json:"media-types,omitempty"`
}

func computeVersionOf(r *http.Request) ComputeVersion {
	return ComputeVersion{ID: "v2.1", Status: "CURRENT", Version: maxVersion.String(), MinVersion: minVersion.String(),
		Updated: "2013-07-23T11:33:21Z", Links: []Link{{Rel: "self", Href: baseURL(r) + "/compute/v2.1/"}},
		MediaTypes: []MediaType{{Base: "application/json", Type: "application/vnd.openstack.compute+json;version=2.1"}}}
}

func (o *api) computeVersions(r *http.Request) (int, any, error) {
	return http.StatusOK, map[string][]ComputeVersion{"versions": {computeVersionOf(r)}}, nil
}

func (o *api) computeV21(r *http.Request) (int, any, error) {
	return http.StatusOK, map[string]ComputeVersion{"version": computeVersionOf(r)}, nil
}

// errNoCompute: the site's compute service is not running (yet).
var errNoCompute = errs.New(errs.Unavailable, "the site's compute service is not running")

func (o *api) servers() (compute.Servers, error) {
	if o.d.Servers == nil {
		return nil, errNoCompute
	}
	return o.d.Servers, nil
}

// server finds a server the caller may see; others' are not found.
func (o *api) server(ctx context.Context, id string) (compute.Server, error) {
	svc, err := o.servers()
	if err != nil {
		return compute.Server{}, err
	}
	sv, err := svc.Server(ctx, id)
	if err != nil {
		return compute.Server{}, err
	}
	if c := caller(ctx); !sv.VisibleTo(c.ProjectName(), isAdmin(c)) {
		return compute.Server{}, fmt.Errorf("%w: %s", compute.ErrServerNotFound, id)
	}
	return sv, nil
}

// novaStatus is the server's Nova status: its status, or the task in
// progress where Nova shows one.
func novaStatus(sv compute.Server) string {
	switch sv.Status {
	case compute.ServerActive, compute.ServerShutoff:
		switch sv.Task {
		case compute.TaskRebuilding:
			return "REBUILD"
		case compute.TaskRebooting:
			return "REBOOT"
		case compute.TaskMigrating:
			return "MIGRATING"
		}
		if sv.Status == compute.ServerActive {
			return "ACTIVE"
		}
		return "SHUTOFF"
	case compute.ServerBuilding:
		return "BUILD"
	case compute.ServerMigrating:
		return "MIGRATING"
	case compute.ServerError:
		if sv.Task == compute.TaskRebuilding {
			return "REBUILD"
		}
		return "ERROR"
	case compute.ServerDeleted:
		return "DELETED"
	}
	return "UNKNOWN"
}

// vmState is Nova's vm_state for a server status.
func vmState(s compute.ServerStatus) string {
	switch s {
	case compute.ServerBuilding:
		return "building"
	case compute.ServerActive, compute.ServerMigrating:
		return "active"
	case compute.ServerShutoff:
		return "stopped"
	case compute.ServerError:
		return "error"
	case compute.ServerDeleted:
		return "deleted"
	}
	return string(s)
}

// Nova's power states (nova.compute.power_state).
const (
	powerNoState   = 0
	powerRunning   = 1
	powerPaused    = 3
	powerShutdown  = 4
	powerCrashed   = 6
	powerSuspended = 7
)

func powerState(s compute.State) int {
	switch s {
	case compute.StateRunning, compute.StateBlocked:
		return powerRunning
	case compute.StatePaused:
		return powerPaused
	case compute.StateShuttingDown, compute.StateShutoff:
		return powerShutdown
	case compute.StateCrashed:
		return powerCrashed
	case compute.StateSuspended:
		return powerSuspended
	}
	return powerNoState
}

// hostID is Nova's opaque hostId: the same for a project's servers on one
// host, different across projects.
func hostID(project, host string) string {
	if host == "" {
		return ""
	}
	sum := sha256.Sum224([]byte(project + host))
	return hex.EncodeToString(sum[:])
}

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func links(base, kind, id string) []Link {
	return []Link{{Rel: "self", Href: base + "/compute/v2.1/" + kind + "/" + id}, {Rel: "bookmark", Href: base + "/compute/" + kind + "/" + id}}
}

// serverView is a server as microversion v shows it; brief is the list
// view (id, name, links).
func serverView(r *http.Request, v microversion, sv compute.Server, brief bool) map[string]any {
	base := baseURL(r)
	m := map[string]any{"id": sv.ID, "name": sv.Name, "links": links(base, "servers", sv.ID)}
	if brief {
		return m
	}
	status := novaStatus(sv)
	m["status"] = status
	m["tenant_id"] = sv.Project
	m["user_id"] = "" // Petrel records no creator per server
	m["metadata"] = map[string]string{}
	m["hostId"] = hostID(sv.Project, sv.Host)
	m["image"] = map[string]any{"id": sv.Image, "links": []Link{{Rel: "bookmark", Href: base + "/compute/images/" + sv.Image}}}
	if v.atLeast(47) {
		m["flavor"] = map[string]any{"original_name": sv.Flavor.Name, "vcpus": sv.Flavor.VCPUs, "ram": sv.Flavor.RAMMiB,
			"disk": sv.Flavor.DiskGiB, "ephemeral": 0, "swap": 0, "extra_specs": map[string]string{}}
	} else {
		m["flavor"] = map[string]any{"id": sv.Flavor.ID, "links": []Link{{Rel: "bookmark", Href: base + "/compute/flavors/" + sv.Flavor.ID}}}
	}
	m["created"] = sv.CreatedAt.UTC().Format(novaTime)
	m["updated"] = sv.UpdatedAt.UTC().Format(novaTime)
	m["addresses"] = map[string]any{} // Petrel sites have no tenant networks
	m["accessIPv4"], m["accessIPv6"] = "", ""
	m["OS-DCF:diskConfig"] = "MANUAL"
	m["OS-EXT-AZ:availability_zone"] = zoneName
	m["config_drive"] = ""
	m["key_name"] = nil
	m["security_groups"] = []any{}
	m["os-extended-volumes:volumes_attached"] = []any{}
	var launched any
	if sv.LaunchedAt != nil {
		launched = sv.LaunchedAt.UTC().Format(novaUsageTime)
	}
	m["OS-SRV-USG:launched_at"], m["OS-SRV-USG:terminated_at"] = launched, nil
	m["OS-EXT-SRV-ATTR:host"] = orNil(sv.Host)
	m["OS-EXT-SRV-ATTR:hypervisor_hostname"] = orNil(sv.Host)
	m["OS-EXT-SRV-ATTR:instance_name"] = sv.Name
	m["OS-EXT-STS:vm_state"] = vmState(sv.Status)
	m["OS-EXT-STS:task_state"] = orNil(string(sv.Task))
	m["OS-EXT-STS:power_state"] = powerState(sv.Power)
	switch status {
	case "BUILD", "REBUILD", "MIGRATING":
		m["progress"] = 0
	}
	if sv.Status == compute.ServerError && sv.Fault != "" {
		m["fault"] = map[string]any{"code": 500, "message": sv.Fault, "created": sv.UpdatedAt.UTC().Format(novaTime)}
	}
	if v.atLeast(3) {
		m["OS-EXT-SRV-ATTR:hostname"] = sv.Name
		m["OS-EXT-SRV-ATTR:reservation_id"] = ""
		m["OS-EXT-SRV-ATTR:launch_index"] = 0
		m["OS-EXT-SRV-ATTR:kernel_id"] = ""
		m["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
		m["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
		m["OS-EXT-SRV-ATTR:user_data"] = nil
	}
	if v.atLeast(9) {
		m["locked"] = false
	}
	if v.atLeast(19) {
		m["description"] = nil
	}
	if v.atLeast(26) {
		m["tags"] = []string{}
	}
	return m
}

// allTenants reads the all_tenants query parameter as Nova does: present
// and empty, or a true value, means every project's.
func allTenants(q url.Values) (bool, error) {
	if !q.Has("all_tenants") {
		return false, nil
	}
	switch strings.ToLower(q.Get("all_tenants")) {
	case "", "1", "t", "true", "on", "y", "yes":
		return true, nil
	case "0", "f", "false", "off", "n", "no":
		return false, nil
	}
	return false, errs.Field("all_tenants", "must be a boolean, not %q", q.Get("all_tenants"))
}

var novaStatuses = []string{"ACTIVE", "BUILD", "SHUTOFF", "ERROR", "REBOOT", "REBUILD", "MIGRATING", "DELETED"}

// listLimit reads ?limit: Nova's default and cap are 1000.
func listLimit(q url.Values) (int, error) {
	if !q.Has("limit") {
		return maxListLimit, nil
	}
	n, err := strconv.Atoi(q.Get("limit"))
	if err != nil || n < 0 {
		return 0, errs.Field("limit", "must be a non-negative integer")
	}
	return min(n, maxListLimit), nil
}

// nextLink is the link to the page after marker, keeping the query.
func nextLink(r *http.Request, marker string, limit int) string {
	q := r.URL.Query()
	q.Set("marker", marker)
	q.Set("limit", strconv.Itoa(limit))
	return baseURL(r) + r.URL.Path + "?" + q.Encode()
}

// listServers lists the caller's project's servers — every project's for
// an admin asking all_tenants — by name, with Nova's filters (name as a
// regular expression, status, host, image, flavor, project_id) and paging
// (limit, marker: a server ID).
func (o *api) listServers(detail bool) novaHandler {
	return func(r *http.Request, v microversion) (int, any, error) {
		ctx := r.Context()
		svc, err := o.servers()
		if err != nil {
			return 0, nil, err
		}
		c, q := caller(ctx), r.URL.Query()
		all, err := allTenants(q)
		if err != nil {
			return 0, nil, err
		}
		if all && !isAdmin(c) {
			return 0, nil, errs.Wrapf(errs.Forbidden, "only an admin may list all projects' servers (all_tenants)")
		}
		filters := map[string]string{}
		switch {
		case !all:
			filters["project"] = c.ProjectName()
		case q.Get("project_id") != "":
			filters["project"] = q.Get("project_id")
		case q.Get("tenant_id") != "":
			filters["project"] = q.Get("tenant_id")
		}
		if h := q.Get("host"); h != "" {
			filters["host"] = h
		}
		var nameRE *regexp.Regexp
		if n := q.Get("name"); n != "" {
			if nameRE, err = regexp.Compile(n); err != nil {
				nameRE = regexp.MustCompile(regexp.QuoteMeta(n))
			}
		}
		status := strings.ToUpper(q.Get("status"))
		if status != "" && !slices.Contains(novaStatuses, status) {
			if v.atLeast(38) {
				return 0, nil, errs.Field("status", "invalid status value %q", q.Get("status"))
			}
			status = "-" // matches nothing, as Nova before 2.38
		}
		image, flavor := refID(q.Get("image")), refID(q.Get("flavor"))
		limit, err := listLimit(q)
		if err != nil {
			return 0, nil, err
		}
		if limit == 0 {
			return http.StatusOK, map[string]any{"servers": []any{}}, nil
		}
		opts := page.Options{Limit: rest.MaxLimit, Filters: filters}
		if m := q.Get("marker"); m != "" {
			ms, err := o.server(ctx, m)
			if err != nil {
				return 0, nil, errs.Field("marker", "marker [%s] not found", m)
			}
			opts.After = ms.Name
		}
		var found []compute.Server
		for len(found) <= limit {
			items, next, err := svc.ListServers(ctx, opts)
			if err != nil {
				return 0, nil, err
			}
			for _, sv := range items {
				switch {
				case !sv.VisibleTo(c.ProjectName(), isAdmin(c)),
					nameRE != nil && !nameRE.MatchString(sv.Name),
					status != "" && novaStatus(sv) != status,
					image != "" && sv.Image != image,
					flavor != "" && sv.Flavor.ID != flavor:
					continue
				}
				found = append(found, sv)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		out := map[string]any{}
		if len(found) > limit {
			found = found[:limit]
			out["servers_links"] = []Link{{Rel: "next", Href: nextLink(r, found[limit-1].ID, limit)}}
		}
		views := make([]map[string]any, len(found))
		for i, sv := range found {
			views[i] = serverView(r, v, sv, !detail)
		}
		out["servers"] = views
		return http.StatusOK, out, nil
	}
}

func (o *api) getServer(r *http.Request, v microversion) (int, any, error) {
	sv, err := o.server(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"server": serverView(r, v, sv, false)}, nil
}

// CreateServerRequest is the body of POST /servers, as far as Petrel reads
// it; other fields are ignored.
type CreateServerRequest struct {
	Server *struct {
		Name             string          `json:"name"`
		ImageRef         string          `json:"imageRef"`
		FlavorRef        string          `json:"flavorRef"`
		Networks         json.RawMessage `json:"networks,omitempty"`
		AvailabilityZone string          `json:"availability_zone,omitempty"`
		MinCount         *int            `json:"min_count,omitempty"`
		MaxCount         *int            `json:"max_count,omitempty"`
	} `json:"server"`
	SchedulerHints *struct {
		Group string `json:"group,omitempty"`
	} `json:"os:scheduler_hints,omitempty"`
	SchedulerHintsOld *struct {
		Group string `json:"group,omitempty"`
	} `json:"OS-SCH-HNT:scheduler_hints,omitempty"`
}

// errNoNetworks explains a request for tenant networks.
var errNoNetworks = errs.Field("networks", `Petrel sites have no tenant networks: send "networks": "none" (microversion 2.37 or later), or none at all before 2.37`)

// checkNetworks applies Nova's rules for networks to a site without
// tenant networks: from 2.37 "none" is required; before, a list (empty).
func checkNetworks(v microversion, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		if v.atLeast(37) {
			return errs.Field("networks", `is required from microversion 2.37; send "networks": "none"`)
		}
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch {
		case !v.atLeast(37):
			return errs.Field("networks", "must be a list before microversion 2.37, not %q", s)
		case s == "none":
			return nil
		case s == "auto":
			return errNoNetworks
		}
		return errs.Field("networks", `must be "none", "auto" or a list, not %q`, s)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return errs.Field("networks", "must be a list")
	}
	if len(list) > 0 {
		return errNoNetworks
	}
	return nil
}

// createServer places a server in the caller's project (202). The image
// and flavor must be ones the caller may use; the site's one zone is
// "nova", and an admin may name a host as "nova:HOST".
func (o *api) createServer(r *http.Request, v microversion) (int, any, error) {
	ctx := r.Context()
	svc, err := o.servers()
	if err != nil {
		return 0, nil, err
	}
	var req CreateServerRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	s := req.Server
	if s == nil {
		return 0, nil, errs.Field("server", "is required")
	}
	if err := checkNetworks(v, s.Networks); err != nil {
		return 0, nil, err
	}
	switch {
	case s.Name == "":
		return 0, nil, errs.Field("name", "is required")
	case s.ImageRef == "":
		return 0, nil, errs.Field("imageRef", "is required (Petrel boots servers from images only)")
	case s.FlavorRef == "":
		return 0, nil, errs.Field("flavorRef", "is required")
	case (s.MinCount != nil && *s.MinCount != 1) || (s.MaxCount != nil && *s.MaxCount != 1):
		return 0, nil, errs.Field("min_count", "Petrel creates one server per request")
	}
	c := caller(ctx)
	cr := compute.CreateServer{Name: s.Name, Project: c.ProjectName()}
	if z := s.AvailabilityZone; z != "" {
		zone, host, _ := strings.Cut(z, ":")
		if zone != zoneName && zone != "" {
			return 0, nil, errs.Field("availability_zone", "the site's only zone is %q", zoneName)
		}
		if host != "" && !isAdmin(c) {
			return 0, nil, errs.Wrapf(errs.Forbidden, "only an admin may place a server on a host")
		}
		cr.Host = host
	}
	for _, h := range []*struct {
		Group string `json:"group,omitempty"`
	}{req.SchedulerHints, req.SchedulerHintsOld} {
		if h != nil && h.Group != "" {
			cr.Group = h.Group
		}
	}
	im, err := o.visibleImage(ctx, c, refID(s.ImageRef))
	if err != nil {
		return 0, nil, errs.Field("imageRef", "Image %s could not be found.", s.ImageRef)
	}
	if im.Status != compute.ImageActive {
		return 0, nil, errs.Field("imageRef", "Image %s is not active.", s.ImageRef)
	}
	f, err := o.visibleFlavor(ctx, c, refID(s.FlavorRef))
	if err != nil {
		return 0, nil, errs.Field("flavorRef", "Flavor %s could not be found.", s.FlavorRef)
	}
	cr.Image, cr.Flavor = im.ID, f.ID
	sv, err := svc.CreateServer(ctx, cr)
	if err != nil {
		return 0, nil, err
	}
	base := baseURL(r)
	rest.SetHeader(ctx, "Location", base+"/compute/v2.1/servers/"+sv.ID)
	return http.StatusAccepted, map[string]any{"server": map[string]any{"id": sv.ID, "links": links(base, "servers", sv.ID),
		"OS-DCF:diskConfig": "MANUAL", "security_groups": []map[string]string{{"name": "default"}}}}, nil
}

func (o *api) deleteServer(r *http.Request, _ microversion) (int, any, error) {
	ctx := r.Context()
	sv, err := o.server(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if err := o.d.Servers.DeleteServer(ctx, sv.ID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// RebootRequest is the reboot action's body.
type RebootRequest struct {
	Type string `json:"type"` // SOFT or HARD
}

// RebuildRequest is the rebuild action's body, as far as Petrel reads it.
type RebuildRequest struct {
	ImageRef string `json:"imageRef"`
	Name     string `json:"name,omitempty"`
}

// serverAction starts os-start, os-stop, reboot, rebuild or
// os-migrateLive (202; rebuild answers with the server).
func (o *api) serverAction(r *http.Request, v microversion) (int, any, error) {
	ctx := r.Context()
	var body map[string]json.RawMessage
	if err := decodeBody(r, &body); err != nil {
		return 0, nil, err
	}
	if len(body) != 1 {
		return 0, nil, errs.Wrapf(errs.Invalid, "an action body names exactly one action")
	}
	sv, err := o.server(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	var name string
	var raw json.RawMessage
	for k, v := range body {
		name, raw = k, v
	}
	var act compute.ServerAction
	switch name {
	case "os-start":
		act.Action = compute.ActionStart
	case "os-stop":
		act.Action = compute.ActionStop
	case "reboot":
		var rb RebootRequest
		if err := json.Unmarshal(raw, &rb); err != nil {
			return 0, nil, errs.Field("reboot", "must be an object")
		}
		switch strings.ToUpper(rb.Type) {
		case "SOFT":
		case "HARD":
			act.Hard = true
		default:
			return 0, nil, errs.Field("type", "must be SOFT or HARD, not %q", rb.Type)
		}
		act.Action = compute.ActionReboot
	case "rebuild":
		var rb RebuildRequest
		if err := json.Unmarshal(raw, &rb); err != nil {
			return 0, nil, errs.Field("rebuild", "must be an object")
		}
		if rb.Name != "" && rb.Name != sv.Name {
			return 0, nil, errs.Field("name", "Petrel does not rename servers on rebuild")
		}
		if rb.ImageRef == "" {
			return 0, nil, errs.Field("imageRef", "is required")
		}
		im, err := o.visibleImage(ctx, caller(ctx), refID(rb.ImageRef))
		if err != nil {
			return 0, nil, errs.Field("imageRef", "Image %s could not be found.", rb.ImageRef)
		}
		if im.Status != compute.ImageActive {
			return 0, nil, errs.Field("imageRef", "Image %s is not active.", rb.ImageRef)
		}
		act.Action, act.Image = compute.ActionRebuild, im.ID
	case "os-migrateLive":
		// {"host": name or null, "block_migration": bool|"auto", ...}:
		// Petrel's migration is always a live block migration of the
		// instance's overlay (hosts share no storage), so
		// block_migration and disk_over_commit are accepted as given.
		var ml struct {
			Host *string `json:"host"`
		}
		if err := json.Unmarshal(raw, &ml); err != nil {
			return 0, nil, errs.Field("os-migrateLive", "must be an object")
		}
		act.Action = compute.ActionMigrate
		if ml.Host != nil {
			act.Host = *ml.Host
		}
	default:
		return 0, nil, errs.Wrapf(errs.Invalid, "action %s is not supported (supported: os-start, os-stop, reboot, rebuild, os-migrateLive)", name)
	}
	out, err := o.d.Servers.Act(ctx, sv.ID, act)
	if err != nil {
		return 0, nil, err
	}
	if act.Action == compute.ActionRebuild {
		return http.StatusAccepted, map[string]any{"server": serverView(r, v, out, false)}, nil
	}
	return http.StatusAccepted, nil, nil
}
