package inventory_test

import (
	"errors"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
)

// TestTransitionTables walks every (from, to) pair of each state machine.
func TestTransitionTables(t *testing.T) {
	avail := []inventory.Availability{inventory.Available, inventory.Degraded, inventory.Failed, inventory.Offline,
		inventory.Online, inventory.InTest, inventory.PowerOff}
	allowed := map[[2]inventory.Availability]bool{}
	for _, p := range [][2]inventory.Availability{
		{"offline", "online"}, {"offline", "power-off"}, {"offline", "failed"},
		{"online", "available"}, {"online", "degraded"}, {"online", "intest"}, {"online", "offline"}, {"online", "failed"}, {"online", "power-off"},
		{"intest", "available"}, {"intest", "online"}, {"intest", "offline"}, {"intest", "failed"},
		{"available", "degraded"}, {"available", "online"}, {"available", "offline"}, {"available", "failed"}, {"available", "power-off"},
		{"degraded", "available"}, {"degraded", "online"}, {"degraded", "offline"}, {"degraded", "failed"}, {"degraded", "power-off"},
		{"failed", "online"}, {"failed", "offline"}, {"failed", "power-off"},
		{"power-off", "offline"}, {"power-off", "online"},
	} {
		allowed[p] = true
	}
	for _, from := range avail {
		for _, to := range avail {
			h := inventory.Host{Name: "h", Availability: from}
			err := h.SetAvailability(to)
			want := allowed[[2]inventory.Availability{from, to}] || from == to
			if (err == nil) != want {
				t.Errorf("availability %s -> %s: err %v; want allowed=%v", from, to, err, want)
			}
			if err != nil && (!errors.Is(err, inventory.ErrInvalidTransition) || !errors.Is(err, errs.InvalidTransition)) {
				t.Errorf("availability %s -> %s: %v is not an invalid_transition", from, to, err)
			}
		}
	}
	for _, tc := range []struct {
		from, to inventory.AdminState
		ok       bool
	}{{"locked", "unlocked", true}, {"unlocked", "locked", true}, {"locked", "locked", false}, {"unlocked", "unlocked", false}} {
		h := inventory.Host{Administrative: tc.from}
		if err := h.SetAdministrative(tc.to); (err == nil) != tc.ok {
			t.Errorf("administrative %s -> %s: %v", tc.from, tc.to, err)
		}
	}
	h := inventory.Host{Provisioning: inventory.Provisioned}
	if err := h.SetProvisioning(inventory.Unprovisioned); err == nil {
		t.Error("provisioned -> unprovisioned allowed")
	}
}

func TestValidateMachineID(t *testing.T) {
	for id, ok := range map[string]bool{
		"6e0ad5f4-7c1b-4d3e-9a7b-2f1e0c9d8b7a": true,
		"6E0AD5F4-7C1B-4D3E-9A7B-2F1E0C9D8B7A": false, // callers lower-case first
		"00000000-0000-0000-0000-000000000000": false,
		"ffffffff-ffff-ffff-ffff-ffffffffffff": false,
		"not-a-uuid":                           false,
	} {
		if err := inventory.ValidateMachineID("id", id); (err == nil) != ok {
			t.Errorf("ValidateMachineID(%q) = %v; want ok=%v", id, err, ok)
		}
	}
}
