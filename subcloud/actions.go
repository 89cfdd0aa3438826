package subcloud

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/petrel-edge/petrel/hostmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// HostActionRequest is the body of POST /v1/hosts/{id}/action.
type HostActionRequest struct {
	Action string `json:"action"` // lock | force-lock | unlock | power-on | power-off | reset | reboot | swact
	// Force: swact to a standby that is not synchronous (data-loss risk,
	// docs/ha.md).
	Force bool `json:"force,omitempty"`
}

var hostActions = map[string]bool{"lock": true, "force-lock": true, "unlock": true, "power-on": true,
	"power-off": true, "reset": true, "reboot": true, "swact": true}

func (s *Subcloud) hostAction(r *http.Request) (int, any, error) {
	var req HostActionRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if !hostActions[req.Action] {
		return 0, nil, errs.Field("action", "must be lock, force-lock, unlock, power-on, power-off, reset, reboot or swact")
	}
	status, h, err := s.doHostAction(r.Context(), rest.Var(r, "id"), req)
	if err != nil {
		return 0, nil, err
	}
	return status, h.WithUptime(time.Now()), nil
}

// doHostAction carries out a host action for the API and for patch
// orchestration (swpatch/strategy), with the same checks.
func (s *Subcloud) doHostAction(ctx context.Context, id string, req HostActionRequest) (int, inventory.Host, error) {
	first, err := s.Hosts.Host(ctx, id)
	if err != nil {
		return 0, first, err
	}
	if req.Action == "swact" {
		// Not under the host's lock: this controller stops serving.
		if err := swactStatus(s.swact(ctx, first, req.Force)); err != nil {
			return 0, first, err
		}
		return http.StatusAccepted, first, nil
	}
	// One action per host at a time, checked against the host as it is
	// under the lock; locks site-wide one at a time, so two controllers
	// cannot both pass the last-controller rule.
	if req.Action == "lock" || req.Action == "force-lock" {
		s.lockMu.Lock()
		defer s.lockMu.Unlock()
	}
	unlock, err := s.hostLocks.lock(ctx, first.UUID)
	if err != nil {
		return 0, first, err
	}
	defer unlock()
	h, err := s.Hosts.Host(ctx, first.UUID)
	if err != nil {
		return 0, h, err
	}
	switch req.Action {
	case "lock", "force-lock":
		if h.Administrative == inventory.Locked {
			return 0, h, fmt.Errorf("%w: host %s is already locked", inventory.ErrInvalidTransition, h.Name)
		}
		if err := s.activeController(h); err != nil {
			return 0, h, err
		}
		if req.Action == "lock" {
			if err := s.lastController(ctx, h); err != nil {
				return 0, h, err
			}
			if s.services != nil {
				if err := s.services.CanLock(h.UUID); err != nil {
					return 0, h, err
				}
			}
			// A hypervisor host is emptied first: every running server
			// is live-migrated away (the lock fails, naming the servers
			// that could not move, and the host stays unlocked); nothing
			// new lands on it until it is locked. The evacuation goes on
			// if the caller goes away. force-lock skips it.
			if IsHypervisor(s.cfg.Shape, h) {
				ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Minute)
				defer cancel()
				release, err := s.servers.Evacuate(ectx, h.Name)
				defer release()
				if err != nil {
					return 0, h, fmt.Errorf("cannot lock %s: %w (force-lock locks without moving them)", h.Name, err)
				}
			}
		}
		h, err = s.setAdmin(ctx, h.UUID, inventory.Locked)
	case "unlock":
		if h.Administrative == inventory.Unlocked {
			return 0, h, fmt.Errorf("%w: host %s is already unlocked", inventory.ErrInvalidTransition, h.Name)
		}
		if h.Personality == inventory.PersonalityNone {
			return 0, h, fmt.Errorf("%w: assign host %s a personality before unlocking it", inventory.ErrInvalidTransition, h.Name)
		}
		if h.Availability == inventory.PowerOff {
			return 0, h, fmt.Errorf("%w: host %s is powered off: power it on (petrel host power-on) before unlocking it",
				inventory.ErrInvalidTransition, h.Name)
		}
		h, err = s.setAdmin(ctx, h.UUID, inventory.Unlocked)
		if err == nil && h.Software != nil && h.Software.NextSlot != "" {
			// As in StarlingX, the unlock of a host with installed
			// software boots it: into the slot its install marked.
			c := s.queueCommand(h.UUID, "reboot")
			s.log.Info("unlock reboots the host into its new software", "host", h.Name, "slot", h.Software.NextSlot, "command", c.ID)
		}
	case "reboot":
		// Graceful: through the host's agent (at its next poll).
		if h.Administrative != inventory.Locked {
			return 0, h, fmt.Errorf("%w: lock host %s before rebooting it", inventory.ErrInvalidTransition, h.Name)
		}
		c := s.queueCommand(h.UUID, "reboot")
		s.log.Info("reboot requested through the agent", "host", h.Name, "command", c.ID)
	default: // BMC actions
		if h.Administrative != inventory.Locked {
			return 0, h, fmt.Errorf("%w: lock host %s before %s", inventory.ErrInvalidTransition, h.Name, req.Action)
		}
		b := s.bmcFor(h.UUID)
		if b == nil {
			return 0, h, errs.Field("action", "host %s has no BMC: set one with petrel host bmc set", h.Name)
		}
		call := map[string]func(context.Context) error{"power-on": b.PowerOn, "power-off": b.PowerOff,
			"reset": b.Reset}[req.Action]
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := call(cctx); err != nil {
			return 0, h, errs.Wrapf(errs.Unavailable, "the BMC of %s: %v", h.Name, err)
		}
		if s.maint != nil {
			switch req.Action {
			case "power-off":
				s.maint.runner.Event(h.UUID, hostmgr.Event{Kind: hostmgr.EvPowerOff})
			case "power-on":
				s.maint.runner.Event(h.UUID, hostmgr.Event{Kind: hostmgr.EvPowerOn})
			}
		}
	}
	if err != nil {
		return 0, h, err
	}
	return http.StatusOK, h, nil
}

// lastController refuses to lock the only enabled controller of the site.
func (s *Subcloud) lastController(ctx context.Context, h inventory.Host) error {
	if h.Personality != inventory.Controller {
		return nil
	}
	hosts, _, err := s.Hosts.Hosts(ctx, rest.ListOptions{Limit: rest.MaxLimit,
		Filters: map[string]string{"personality": string(inventory.Controller)}})
	if err != nil {
		return err
	}
	for _, o := range hosts {
		if o.UUID != h.UUID && o.Administrative == inventory.Unlocked && o.Operational == inventory.Enabled {
			return nil
		}
	}
	return fmt.Errorf("%w: host %s is the site's only enabled controller; use force-lock to lock it anyway",
		inventory.ErrInvalidTransition, h.Name)
}

func (s *Subcloud) setAdmin(ctx context.Context, id string, next inventory.AdminState) (inventory.Host, error) {
	out, err := hostUpdater{s}.UpdateHost(ctx, id, func(h *inventory.Host) error { return h.SetAdministrative(next) })
	if err != nil {
		return out, err
	}
	if next == inventory.Locked {
		s.shell.Alarms.Raise(ctx, "200.001", "host="+out.Name, nil)
	} else {
		s.shell.Alarms.Clear(ctx, "200.001", "host="+out.Name)
	}
	if s.maint != nil {
		kind := hostmgr.EvUnlock
		if next == inventory.Locked {
			kind = hostmgr.EvLock
		}
		s.maint.runner.Event(id, hostmgr.Event{Kind: kind})
	}
	return out, nil
}
