package subcloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// UpdateHostRequest is the body of PATCH /v1/hosts/{id} (StarlingX's
// host-update): assign a discovered host its personality and name.
type UpdateHostRequest struct {
	Personality  *inventory.Personality `json:"personality,omitempty"`
	Hostname     *string                `json:"hostname,omitempty"`
	Subfunctions []string               `json:"subfunctions,omitempty"`
}

// subfunctionsFor is what a personality runs at a site of a given shape:
// the controllers of simplex and duplex sites are all-in-one.
func subfunctionsFor(p inventory.Personality, shape inventory.Shape) []string {
	switch {
	case p == inventory.Controller && shape != inventory.MultiServer:
		return []string{"controller", "worker"}
	case p == inventory.PersonalityNone:
		return []string{}
	}
	return []string{string(p)}
}

var validSubfunctions = map[string]bool{"controller": true, "worker": true, "storage": true}

func (s *Subcloud) updateHost(r *http.Request) (int, any, error) {
	var req UpdateHostRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Personality == nil && req.Hostname == nil && req.Subfunctions == nil {
		return 0, nil, errs.Wrapf(errs.Invalid, "nothing to change: give personality, hostname or subfunctions")
	}
	if req.Personality != nil && (*req.Personality == inventory.PersonalityNone || !req.Personality.Valid()) {
		return 0, nil, errs.Field("personality", "must be controller, worker or storage")
	}
	if req.Hostname != nil {
		if err := inventory.ValidateHostName("hostname", *req.Hostname); err != nil {
			return 0, nil, err
		}
	}
	for _, sf := range req.Subfunctions {
		if !validSubfunctions[sf] {
			return 0, nil, errs.Field("subfunctions", "unknown subfunction %q (controller, worker, storage)", sf)
		}
	}
	first, err := s.Hosts.Host(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	// Under the host's lock: a rename, a delete and the agent's reports
	// (which raise alarms on the host's name) never interleave.
	unlock, err := s.hostLocks.lock(r.Context(), first.UUID)
	if err != nil {
		return 0, nil, err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		h, err := s.Hosts.Host(r.Context(), first.UUID)
		if err != nil {
			return 0, nil, err
		}
		if h.Administrative != inventory.Locked {
			return 0, nil, fmt.Errorf("%w: lock host %s before changing its personality or name", inventory.ErrInvalidTransition, h.Name)
		}
		if req.Personality != nil {
			if h.Personality != inventory.PersonalityNone && h.Personality != *req.Personality {
				return 0, nil, fmt.Errorf("%w: host %s is already a %s; delete it and let it join again to change its personality",
					inventory.ErrInvalidTransition, h.Name, h.Personality)
			}
			h.Personality = *req.Personality
			h.Subfunctions = subfunctionsFor(h.Personality, s.cfg.Shape)
			if err := h.SetProvisioning(inventory.Provisioned); err != nil {
				return 0, nil, err
			}
		}
		if req.Subfunctions != nil {
			if h.Personality == inventory.PersonalityNone {
				return 0, nil, errs.Field("subfunctions", "assign a personality first")
			}
			h.Subfunctions = req.Subfunctions
		}
		if h.Personality == inventory.PersonalityNone {
			return 0, nil, errs.Field("personality", "is required to provision host %s", h.Name)
		}
		oldName := h.Name
		if req.Hostname != nil {
			h.Name = *req.Hostname
		}
		out, err := s.Hosts.PutHost(r.Context(), h, h.Rev)
		if errors.Is(err, inventory.ErrStale) && attempt < 3 {
			continue // an agent report landed meanwhile; re-apply on the new revision
		}
		if err != nil {
			return 0, nil, err
		}
		if out.Name != oldName {
			// The agent's resource alarms move to the new name at once,
			// not at its next report.
			if err := s.moveResourceAlarmsLocked(r.Context(), out.UUID, oldName); err != nil {
				s.log.Error("host renamed; moving its resource alarms failed", "host", out.Name, "from", oldName, "err", err)
				return 0, nil, fmt.Errorf("host %s renamed from %s, but moving its resource alarms failed: %w", out.Name, oldName, err)
			}
		}
		return http.StatusOK, out.WithUptime(time.Now()), nil
	}
}

func (s *Subcloud) deleteHost(r *http.Request) (int, any, error) {
	first, err := s.Hosts.Host(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	// Under the host's lock, so that no report of its agent raises an
	// alarm for it after its alarms are cleared, and no rename changes the
	// name whose alarms are cleared.
	unlock, err := s.hostLocks.lock(r.Context(), first.UUID)
	if err != nil {
		return 0, nil, err
	}
	defer unlock()
	h, err := s.Hosts.Host(r.Context(), first.UUID)
	if err != nil {
		return 0, nil, err
	}
	if h.Administrative != inventory.Locked {
		return 0, nil, fmt.Errorf("%w: lock host %s before deleting it", inventory.ErrInvalidTransition, h.Name)
	}
	if err := s.Hosts.DeleteHost(r.Context(), h.UUID); err != nil {
		return 0, nil, err
	}
	s.log.Info("host deleted; its certificate is revoked", "host", h.Name, "machine_id", h.UUID)
	s.maint.forget(h.UUID)
	n, err := s.shell.Alarms.ClearEntity(r.Context(), "host="+h.Name)
	if err != nil {
		s.log.Error("host deleted; clearing its alarms failed", "host", h.Name, "err", err)
		return 0, nil, fmt.Errorf("host %s deleted, but clearing its alarms failed: %w", h.Name, err)
	}
	if n > 0 {
		s.log.Info("alarms of the deleted host cleared", "host", h.Name, "cleared", n)
	}
	return http.StatusNoContent, nil, nil
}

// moveResourceAlarmsLocked re-applies the resource alarms of host uuid,
// renamed from oldName, on its current name; the host's lock is held.
func (s *Subcloud) moveResourceAlarmsLocked(ctx context.Context, uuid, oldName string) error {
	h, err := s.Hosts.Host(ctx, uuid)
	if err != nil {
		return err
	}
	return s.applyResourceAlarms(ctx, h, oldName)
}
