package inventory

import (
	"fmt"
	"slices"

	"github.com/petrel-edge/petrel/internal/errs"
)

// ErrInvalidTransition reports a state change the tables below do not allow.
var ErrInvalidTransition = errs.New(errs.InvalidTransition, "invalid state transition")

// adminNext is the administrative (desired) state machine: operators lock
// and unlock.
var adminNext = map[AdminState][]AdminState{
	Locked:   {Unlocked},
	Unlocked: {Locked},
}

// availabilityNext is the availability (observed) state machine, driven by
// what agents report and, later, by host management's heartbeat and BMC.
var availabilityNext = map[Availability][]Availability{
	Offline:   {Online, PowerOff, Failed},
	Online:    {Available, Degraded, InTest, Offline, Failed, PowerOff},
	InTest:    {Available, Online, Offline, Failed},
	Available: {Degraded, Online, Offline, Failed, PowerOff},
	Degraded:  {Available, Online, Offline, Failed, PowerOff},
	Failed:    {Online, Offline, PowerOff},
	PowerOff:  {Offline, Online},
}

// provisioningNext: a discovered host is unprovisioned until an operator
// assigns it a personality.
var provisioningNext = map[ProvisioningState][]ProvisioningState{
	Unprovisioned: {Provisioning, Provisioned},
	Provisioning:  {Provisioned, Unprovisioned},
	Provisioned:   nil,
}

// CanTo reports whether the administrative state may change to next.
func (s AdminState) CanTo(next AdminState) bool { return slices.Contains(adminNext[s], next) }

// CanTo reports whether availability may change to next.
func (a Availability) CanTo(next Availability) bool {
	return slices.Contains(availabilityNext[a], next)
}

// CanTo reports whether provisioning may change to next.
func (p ProvisioningState) CanTo(next ProvisioningState) bool {
	return slices.Contains(provisioningNext[p], next)
}

// SetAdministrative moves h's administrative state, or explains why not.
func (h *Host) SetAdministrative(next AdminState) error {
	if !h.Administrative.CanTo(next) {
		return fmt.Errorf("%w: host %s is %s, cannot become %s", ErrInvalidTransition, h.Name, h.Administrative, next)
	}
	h.Administrative = next
	return nil
}

// SetAvailability moves h's availability; staying put is not a transition
// and always succeeds.
func (h *Host) SetAvailability(next Availability) error {
	if h.Availability == next {
		return nil
	}
	if !h.Availability.CanTo(next) {
		return fmt.Errorf("%w: host %s availability %s cannot become %s", ErrInvalidTransition, h.Name, h.Availability, next)
	}
	h.Availability = next
	return nil
}

// SetProvisioning moves h's provisioning state, or explains why not.
func (h *Host) SetProvisioning(next ProvisioningState) error {
	if h.Provisioning == next {
		return nil
	}
	if !h.Provisioning.CanTo(next) {
		return fmt.Errorf("%w: host %s is %s, cannot become %s", ErrInvalidTransition, h.Name, h.Provisioning, next)
	}
	h.Provisioning = next
	return nil
}
