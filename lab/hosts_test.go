package lab

import (
	"testing"

	"github.com/petrel-edge/petrel/inventory"
)

// TestHypervisorHosts: workers and the all-in-one controllers of simplex
// and duplex sites run VMs (their own libvirtd); multi-server controllers
// and bare hosts do not.
func TestHypervisorHosts(t *testing.T) {
	want := map[string]bool{
		"sx/controller-0": true, "dx/controller-0": true, "dx/controller-1": true,
		"std/controller-0": false, "std/controller-1": false, "std/worker-0": true, "std/worker-1": true,
	}
	sites := []SiteSpec{{Name: "sx", Shape: inventory.Simplex}, {Name: "dx", Shape: inventory.Duplex},
		{Name: "std", Shape: inventory.MultiServer, Workers: 2}}
	n := 0
	for i, sp := range sites {
		for _, h := range hostsOf(sp, i) {
			n++
			if w, ok := want[sp.Name+"/"+h.Name]; !ok || h.Hypervisor != w {
				t.Errorf("%s/%s: hypervisor = %v; want %v (listed: %v)", sp.Name, h.Name, h.Hypervisor, w, ok)
			}
		}
	}
	if n != len(want) {
		t.Errorf("%d hosts; want %d", n, len(want))
	}
	if runsVMs(inventory.MultiServer, inventory.PersonalityNone) {
		t.Error("a bare host runs VMs")
	}
	// Only a lab with a hypervisor host needs the test images.
	if !specsRunVMs(sites) {
		t.Error("specsRunVMs(default lab) = false; want true")
	}
	if noVMs := []SiteSpec{{Name: "std", Shape: inventory.MultiServer}}; specsRunVMs(noVMs) {
		t.Error("specsRunVMs(multi-server without workers) = true; want false")
	}
}
