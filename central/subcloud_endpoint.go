package central

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// registerLifecycle registers the subcloud lifecycle and group routes:
// reads for readers, every change for admins (each change is audited by the
// REST layer).
func (c *Central) registerLifecycle(srv *rest.Server, a *auth.Service) {
	srv.Handle("updateSubcloud", http.MethodPatch, "/v1/subclouds/{name}", a.Require(auth.Admin), c.updateSubcloud)
	srv.Handle("subcloudAction", http.MethodPost, "/v1/subclouds/{name}/action", a.Require(auth.Admin), c.subcloudAction)
	srv.Handle("listSubcloudGroups", http.MethodGet, "/v1/subcloud-groups", a.Require(auth.Reader), c.listSubcloudGroups)
	srv.Handle("createSubcloudGroup", http.MethodPost, "/v1/subcloud-groups", a.Require(auth.Admin), c.createSubcloudGroup)
	srv.Handle("getSubcloudGroup", http.MethodGet, "/v1/subcloud-groups/{name}", a.Require(auth.Reader), c.getSubcloudGroup)
	srv.Handle("updateSubcloudGroup", http.MethodPatch, "/v1/subcloud-groups/{name}", a.Require(auth.Admin), c.updateSubcloudGroup)
	srv.Handle("deleteSubcloudGroup", http.MethodDelete, "/v1/subcloud-groups/{name}", a.Require(auth.Admin), c.deleteSubcloudGroup)
}

// CreateSubcloudRequest is the body of POST /v1/subclouds. A subcloud
// brought up outside Petrel's deploy (as the lab's are) needs only name and
// shape; one Petrel deploys with Ansible also has its bootstrap address and
// values.
type CreateSubcloudRequest struct {
	Name string `json:"name"`
	// Shape may be left out when the bootstrap values give system_mode.
	Shape       inventory.Shape `json:"shape,omitempty"`
	Description string          `json:"description,omitempty"` // default: the values' description
	Location    string          `json:"location,omitempty"`    // default: the values' location
	Group       string          `json:"group,omitempty"`       // default: DefaultGroup
	// BootstrapAddress and BootstrapValues come together: the OAM address
	// of controller-0, and the YAML document of bootstrap values.
	BootstrapAddress string `json:"bootstrap_address,omitempty"`
	BootstrapValues  string `json:"bootstrap_values,omitempty"`
}

func (c *Central) createSubcloud(r *http.Request) (int, any, error) {
	var req CreateSubcloudRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	sc, err := req.subcloud()
	if err != nil {
		return 0, nil, err
	}
	if err := c.Subclouds.CreateSubcloud(r.Context(), sc); err != nil {
		return 0, nil, groupField(err)
	}
	if sc, err = c.Subclouds.Subcloud(r.Context(), sc.Name); err != nil {
		return 0, nil, err
	}
	c.tracker.Add(sc.Name)
	c.stream.Publish("subcloud", sc)
	c.sync.registryChanged()
	return http.StatusCreated, sc, nil
}

// subcloud validates the request and returns the subcloud it registers.
func (req CreateSubcloudRequest) subcloud() (Subcloud, error) {
	if err := inventory.ValidateSiteName("name", req.Name); err != nil {
		return Subcloud{}, err
	}
	if req.Shape != "" && !req.Shape.Valid() {
		return Subcloud{}, errs.Field("shape", "must be simplex, duplex or multi-server")
	}
	sc := Subcloud{Name: req.Name, Shape: req.Shape, Availability: Offline, Management: Unmanaged,
		DeployStatus: DeployNotDeployed, Sync: map[string]SyncStatus{}, Status: StatusOffline,
		Group: req.Group, CreatedAt: time.Now().UTC()}
	switch {
	case req.BootstrapValues != "" && req.BootstrapAddress == "":
		return Subcloud{}, errs.Field("bootstrap_address", "required with bootstrap_values")
	case req.BootstrapAddress != "" && req.BootstrapValues == "":
		return Subcloud{}, errs.Field("bootstrap_values", "required with bootstrap_address")
	case req.BootstrapValues != "":
		addr, err := ParseBootstrapAddress("bootstrap_address", req.BootstrapAddress)
		if err != nil {
			return Subcloud{}, err
		}
		vals, err := ParseBootstrapValues(req.BootstrapValues)
		if err != nil {
			return Subcloud{}, err
		}
		if err := valuesFit(vals, req.Name, req.Shape); err != nil {
			return Subcloud{}, err
		}
		if sc.Shape == "" {
			sc.Shape = inventory.Shape(str(vals["system_mode"]))
		}
		sc.BootstrapAddress, sc.BootstrapValues = addr, vals
		sc.Description, sc.Location = str(vals["description"]), str(vals["location"])
	}
	if sc.Shape == "" {
		return Subcloud{}, errs.Field("shape", "required: give shape, or system_mode in bootstrap_values")
	}
	if req.Description != "" {
		sc.Description = req.Description
	}
	if req.Location != "" {
		sc.Location = req.Location
	}
	if err := validateText(sc.Description, sc.Location); err != nil {
		return Subcloud{}, err
	}
	if sc.Group == "" {
		sc.Group = DefaultGroup
	}
	if err := ValidateGroupName("group", sc.Group); err != nil {
		return Subcloud{}, err
	}
	return sc, nil
}

// valuesFit checks bootstrap values against the subcloud they are for: a
// name or system_mode in them must be the subcloud's (shape "" is not yet
// known and fits any).
func valuesFit(vals map[string]any, name string, shape inventory.Shape) error {
	if n, ok := vals["name"]; ok && n != name {
		return errs.Field("bootstrap_values.name", "is %q; the subcloud is %q", n, name)
	}
	if m, ok := vals["system_mode"]; ok && shape != "" && m != string(shape) {
		return errs.Field("bootstrap_values.system_mode", "is %q; the subcloud's shape is %s", m, shape)
	}
	return nil
}

func str(v any) string { s, _ := v.(string); return s }

func validateText(description, location string) error {
	for _, f := range []struct{ name, v string }{{"description", description}, {"location", location}} {
		if len(f.v) > maxText || strings.ContainsAny(f.v, "\r\n\x00") {
			return errs.Field(f.name, "must be one line of at most %d bytes", maxText)
		}
	}
	return nil
}

// groupField turns a missing group into an error naming the request field.
func groupField(err error) error {
	if errors.Is(err, ErrSubcloudGroupNotFound) {
		return errs.Field("group", "%v", err)
	}
	return err
}

// UpdateSubcloudRequest is the body of PATCH /v1/subclouds/{name}; fields
// left out are unchanged.
type UpdateSubcloudRequest struct {
	Description      *string `json:"description,omitempty"`
	Location         *string `json:"location,omitempty"`
	Group            *string `json:"group,omitempty"`
	BootstrapAddress *string `json:"bootstrap_address,omitempty"`
	BootstrapValues  *string `json:"bootstrap_values,omitempty"`
}

func (c *Central) updateSubcloud(r *http.Request) (int, any, error) {
	var req UpdateSubcloudRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req == (UpdateSubcloudRequest{}) {
		return 0, nil, errs.Wrapf(errs.Invalid, "nothing to change: give description, location, group, bootstrap_address or bootstrap_values")
	}
	// Everything that needs no stored state is checked first.
	var addr string
	var vals map[string]any
	var err error
	if req.BootstrapAddress != nil {
		if addr, err = ParseBootstrapAddress("bootstrap_address", *req.BootstrapAddress); err != nil {
			return 0, nil, err
		}
	}
	if req.BootstrapValues != nil {
		if vals, err = ParseBootstrapValues(*req.BootstrapValues); err != nil {
			return 0, nil, err
		}
	}
	if req.Group != nil {
		if err := ValidateGroupName("group", *req.Group); err != nil {
			return 0, nil, err
		}
	}
	name := rest.Var(r, "name")
	sc, err := c.Subclouds.UpdateSubcloud(r.Context(), name, func(sc *Subcloud) error {
		if (req.BootstrapAddress != nil || req.BootstrapValues != nil) && sc.DeployStatus.Transitional() {
			return fmt.Errorf("%w: subcloud %s deploy status is %s; its bootstrap data can change once that step ends",
				ErrSubcloudInUse, sc.Name, sc.DeployStatus)
		}
		if req.BootstrapValues != nil {
			if err := valuesFit(vals, sc.Name, sc.Shape); err != nil {
				return err
			}
			if req.BootstrapAddress == nil && sc.BootstrapAddress == "" {
				return errs.Field("bootstrap_address", "required with bootstrap_values")
			}
			sc.BootstrapValues = vals
		}
		if req.BootstrapAddress != nil {
			if sc.BootstrapValues == nil {
				return errs.Field("bootstrap_values", "required with bootstrap_address")
			}
			sc.BootstrapAddress = addr
		}
		if req.Description != nil {
			sc.Description = *req.Description
		}
		if req.Location != nil {
			sc.Location = *req.Location
		}
		if req.Group != nil {
			sc.Group = *req.Group
		}
		return validateText(sc.Description, sc.Location)
	})
	if err != nil {
		return 0, nil, groupField(err)
	}
	c.stream.Publish("subcloud", sc)
	c.sync.registryChanged()
	return http.StatusOK, sc, nil
}

// SubcloudActionRequest is the body of POST /v1/subclouds/{name}/action.
type SubcloudActionRequest struct {
	Action string `json:"action"` // manage | unmanage
}

func (c *Central) subcloudAction(r *http.Request) (int, any, error) {
	var req SubcloudActionRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	var next Management
	switch req.Action {
	case "manage":
		next = Managed
	case "unmanage":
		next = Unmanaged
	default:
		return 0, nil, errs.Field("action", "must be manage or unmanage")
	}
	sc, err := c.Subclouds.UpdateSubcloud(r.Context(), rest.Var(r, "name"), func(sc *Subcloud) error {
		return sc.SetManagement(next)
	})
	if err != nil {
		return 0, nil, err
	}
	c.stream.Publish("subcloud", sc)
	c.sync.registryChanged()
	return http.StatusOK, sc, nil
}

// SubcloudGroupRequest is the body of POST /v1/subcloud-groups and of
// PATCH /v1/subcloud-groups/{name}; on PATCH, fields left out are
// unchanged, and name renames the group.
type SubcloudGroupRequest struct {
	Name                 *string    `json:"name,omitempty"`
	Description          *string    `json:"description,omitempty"`
	UpdateApplyType      *ApplyType `json:"update_apply_type,omitempty"`
	MaxParallelSubclouds *int       `json:"max_parallel_subclouds,omitempty"`
}

// apply sets the request's fields on g.
func (req SubcloudGroupRequest) apply(g *SubcloudGroup) {
	if req.Name != nil {
		g.Name = *req.Name
	}
	if req.Description != nil {
		g.Description = *req.Description
	}
	if req.UpdateApplyType != nil {
		g.UpdateApplyType = *req.UpdateApplyType
	}
	if req.MaxParallelSubclouds != nil {
		g.MaxParallelSubclouds = *req.MaxParallelSubclouds
	}
}

func (c *Central) createSubcloudGroup(r *http.Request) (int, any, error) {
	var req SubcloudGroupRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Name == nil {
		return 0, nil, errs.Field("name", "required")
	}
	g := SubcloudGroup{UpdateApplyType: ApplySerial, MaxParallelSubclouds: 2}
	req.apply(&g)
	if err := g.Validate(); err != nil {
		return 0, nil, err
	}
	if err := c.Subclouds.CreateSubcloudGroup(r.Context(), g); err != nil {
		return 0, nil, err
	}
	g, err := c.Subclouds.SubcloudGroup(r.Context(), g.Name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, g, nil
}

func (c *Central) listSubcloudGroups(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, SubcloudGroupFilters...)
	if err != nil {
		return 0, nil, err
	}
	gs, next, err := c.Subclouds.SubcloudGroups(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[SubcloudGroup]{Items: gs, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (c *Central) getSubcloudGroup(r *http.Request) (int, any, error) {
	g, err := c.Subclouds.SubcloudGroup(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, g, nil
}

func (c *Central) updateSubcloudGroup(r *http.Request) (int, any, error) {
	var req SubcloudGroupRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req == (SubcloudGroupRequest{}) {
		return 0, nil, errs.Wrapf(errs.Invalid, "nothing to change: give name, description, update_apply_type or max_parallel_subclouds")
	}
	g, err := c.Subclouds.UpdateSubcloudGroup(r.Context(), rest.Var(r, "name"), func(g *SubcloudGroup) error {
		req.apply(g)
		return g.Validate()
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, g, nil
}

func (c *Central) deleteSubcloudGroup(r *http.Request) (int, any, error) {
	if err := c.Subclouds.DeleteSubcloudGroup(r.Context(), rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
