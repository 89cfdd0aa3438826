package subcloud

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/servicemgr"
)

// ServiceGroupsFile is the site configuration's file of declared service
// groups: {"service_groups": [Spec, ...]} in YAML.
type ServiceGroupsFile struct {
	ServiceGroups []servicemgr.Spec `json:"service_groups"`
}

// readServiceGroups reads the declared groups; "" declares none.
func readServiceGroups(path string) ([]servicemgr.Spec, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: service_groups: %w", err)
	}
	var f ServiceGroupsFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("config: service_groups %s: %w", path, err)
	}
	// Everything but the hosts (they may not have joined yet): names,
	// models, dependencies and their cycles, addresses.
	if _, err := servicemgr.Check(f.ServiceGroups, func(string) bool { return true }); err != nil {
		return nil, fmt.Errorf("config: service_groups %s: %w", path, err)
	}
	return f.ServiceGroups, nil
}

// serviceHosts reads the inventory for service management.
type serviceHosts struct{ s *Subcloud }

func (h serviceHosts) ServiceHosts(ctx context.Context) ([]servicemgr.HostInfo, error) {
	var out []servicemgr.HostInfo
	opts := page.Options{Limit: 500}
	for {
		hosts, next, err := h.s.Hosts.Hosts(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, x := range hosts {
			silent := x.Heartbeat.Mgmt == "lost" && (x.Heartbeat.Cluster == "lost" || x.Heartbeat.Cluster == "")
			out = append(out, servicemgr.HostInfo{UUID: x.UUID, Name: x.Name, Locked: x.Administrative == inventory.Locked,
				Available: x.Availability == inventory.Available || x.Availability == inventory.Degraded,
				Healthy:   x.Availability == inventory.Available, Silent: silent, BootID: x.BootID})
		}
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

// newServices builds the service group manager over ledger.
func (s *Subcloud) newServices(ledger servicemgr.Ledger, specs servicemgr.Specs) error {
	m, err := servicemgr.New(servicemgr.Config{Specs: specs, Ledger: ledger, Hosts: serviceHosts{s},
		Alarms: s.shell.Alarms, Logger: s.log.With("component", "servicemgr")})
	if err != nil {
		return err
	}
	s.services = m
	return nil
}

// holdsActive and hostDown connect host management to service management.
func (s *Subcloud) holdsActive(hostID string) bool {
	if s.services == nil {
		return false
	}
	return s.services.HoldsActive(hostID)
}

func (s *Subcloud) hostDown(hostID, reason string) {
	if s.services != nil {
		s.services.HostDown(hostID, reason)
	}
}

func (s *Subcloud) registerServices(srv *rest.Server, a *auth.Service) {
	srv.Handle("listServiceGroups", http.MethodGet, "/v1/service-groups", a.Require(auth.Reader), s.listServiceGroups)
	srv.Handle("getServiceGroup", http.MethodGet, "/v1/service-groups/{name}", a.Require(auth.Reader), s.getServiceGroup)
	// A group's actions run as root on its hosts: admin only.
	srv.Handle("createServiceGroup", http.MethodPost, "/v1/service-groups", a.Require(auth.Admin), s.createServiceGroup)
	srv.Handle("deleteServiceGroup", http.MethodDelete, "/v1/service-groups/{name}", a.Require(auth.Admin), s.deleteServiceGroup)
	srv.Handle("agentServices", http.MethodGet, "/v1/agents/{uuid}/services", s.agentGuard, s.agentServices)
	srv.Handle("agentServicesStatus", http.MethodPut, "/v1/agents/{uuid}/services/status", s.agentGuard, s.agentServicesStatus)
}

// notThePair refuses to create or delete a group named as the controller
// pair: the pair's runner keeps it.
func (s *Subcloud) notThePair(name string) error {
	for _, p := range s.controllerPair() {
		if p.Name == name {
			return errs.Wrapf(errs.Conflict, "service group %q is the site's controller pair: it is not created or deleted through the API", name)
		}
	}
	return nil
}

func (s *Subcloud) servicesOn() error {
	if s.services == nil {
		return errs.New(errs.Unavailable, "service management is not running at this site")
	}
	return nil
}

func (s *Subcloud) listServiceGroups(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	gs, err := s.services.Groups(r.Context())
	if err != nil {
		return 0, nil, err
	}
	items := append(s.controllerPair(), gs...)
	if items == nil {
		items = []servicemgr.Group{}
	}
	return http.StatusOK, rest.List[servicemgr.Group]{Items: items}, nil
}

func (s *Subcloud) getServiceGroup(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	for _, p := range s.controllerPair() {
		if p.Name == rest.Var(r, "name") {
			return http.StatusOK, p, nil
		}
	}
	g, err := s.services.Group(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, g, nil
}

func (s *Subcloud) createServiceGroup(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	var spec servicemgr.Spec
	if err := rest.DecodeJSON(r, &spec); err != nil {
		return 0, nil, err
	}
	if err := s.notThePair(spec.Name); err != nil {
		return 0, nil, err
	}
	g, err := s.services.Create(r.Context(), spec, "api")
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, g, nil
}

func (s *Subcloud) deleteServiceGroup(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	if err := s.notThePair(rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	if err := s.services.Delete(r.Context(), rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// agentServices answers an agent's long-poll for its members.
func (s *Subcloud) agentServices(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	id := r.Context().Value(agentKey{}).(string)
	q := r.URL.Query()
	var version uint64
	wait := q.Has("version")
	if wait {
		v, err := strconv.ParseUint(q.Get("version"), 10, 64)
		if err != nil {
			return 0, nil, errs.Field("version", "want a number")
		}
		version = v
	}
	timeout := 25 * time.Second
	if w := q.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 || d > time.Minute {
			return 0, nil, errs.Field("wait", "want a duration up to 60s")
		}
		timeout = d
	}
	out, err := s.services.Desired(r.Context(), id, q.Get("boot_id"), version, wait, timeout)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out, nil
}

func (s *Subcloud) agentServicesStatus(r *http.Request) (int, any, error) {
	if err := s.servicesOn(); err != nil {
		return 0, nil, err
	}
	id := r.Context().Value(agentKey{}).(string)
	var st servicemgr.AgentStatus
	if err := rest.DecodeJSON(r, &st); err != nil {
		return 0, nil, err
	}
	if err := s.services.Report(id, st); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
