package subcloud

import (
	"context"
	"errors"
	"fmt"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/servicemgr"
)

// HAConfig makes this site controller the active member of its site's
// controller pair (docs/ha.md). The pair's runner (subcloud/ctlha) builds
// a Subcloud when its controller becomes active and cancels it when the
// controller steps down.
type HAConfig struct {
	// Controller is this controller's host name (controller-0, ...).
	Controller string
	// Epoch reports the pair's epoch this controller holds. It replaces
	// the controller's start counter in every command to agents, so
	// agents refuse a deposed active's commands.
	Epoch func() uint64
	// Authority reports whether this controller still holds Epoch and may
	// write. It is checked before every write statement, in the write's
	// transaction, together with the database's own epoch row: a resumed
	// old active fails its first write.
	Authority func() error
	// Swact moves activity to the peer controller (host action swact).
	Swact func(ctx context.Context, force bool) error
	// Pair reports the controller pair as a service group (1+1), listed
	// first by GET /v1/service-groups.
	Pair func() servicemgr.Group
	// Ledger is the service ledger when the site's epochs live in its
	// replicated database (duplex); nil: etcd.
	Ledger servicemgr.Ledger
}

// EpochTable is the pair's epoch row in the site's database (one row,
// id 1), written by the runner when it takes over.
const EpochTable = "petrel_ha_epoch"

// ErrDeposed is a write refused because this controller no longer holds
// the pair's epoch.
var ErrDeposed = errs.New(errs.NotLeader, "this controller is no longer the site's active controller")

// guardWrites checks, before every write statement, that this controller
// still holds the pair's epoch: the runner's authority, and the epoch row
// read in the statement's own transaction.
func (s *Subcloud) guardWrites() error {
	ha := s.cfg.HA
	return s.shell.DB.GuardWrites(sqldb.EpochGuard{Table: EpochTable, Epoch: ha.Epoch, Authority: ha.Authority, Deposed: ErrDeposed})
}

// controllerPair is the pair as the first service group.
func (s *Subcloud) controllerPair() []servicemgr.Group {
	if s.cfg.HA == nil || s.cfg.HA.Pair == nil {
		return nil
	}
	return []servicemgr.Group{s.cfg.HA.Pair()}
}

// swact moves activity to the standby controller: h must be this,
// active, controller.
func (s *Subcloud) swact(ctx context.Context, h inventory.Host, force bool) error {
	if h.Personality != inventory.Controller {
		return fmt.Errorf("%w: host %s is not a controller", inventory.ErrInvalidTransition, h.Name)
	}
	if s.cfg.HA == nil || s.cfg.HA.Swact == nil {
		return fmt.Errorf("%w: site %s has one controller: there is nothing to swact to", inventory.ErrInvalidTransition, s.cfg.Site)
	}
	if h.Name != s.cfg.HA.Controller {
		return fmt.Errorf("%w: %s is the standby controller; swact the active one (%s)", inventory.ErrInvalidTransition, h.Name, s.cfg.HA.Controller)
	}
	return s.cfg.HA.Swact(ctx, force)
}

// activeController refuses to lock the active controller of a pair: swact
// first (as StarlingX).
func (s *Subcloud) activeController(h inventory.Host) error {
	if s.cfg.HA != nil && h.Name == s.cfg.HA.Controller {
		return fmt.Errorf("%w: %s is the active controller: swact first (petrel host swact %s)", inventory.ErrInvalidTransition, h.Name, h.Name)
	}
	return nil
}

// swactStatus maps a refused swact to the API: a standby that cannot take
// over is a conflict.
func swactStatus(err error) error {
	if err == nil || errors.Is(err, inventory.ErrInvalidTransition) {
		return err
	}
	return errs.Wrapf(errs.Conflict, "%v", err)
}

// controllerEpoch is the epoch commands to agents carry.
func (s *Subcloud) controllerEpoch() uint64 {
	if s.cfg.HA != nil {
		return s.cfg.HA.Epoch()
	}
	return s.epoch
}
