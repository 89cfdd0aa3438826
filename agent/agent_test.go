package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/inventory"
)

func TestDiscover(t *testing.T) {
	hw, err := agent.Discover(agenttest.SysRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if hw.CPUModel != "Test CPU 9000" || hw.Threads != 8 || hw.Cores != 4 || hw.NUMANodes != 2 || hw.MemoryMiB != 8192 {
		t.Errorf("CPU/memory = %+v; want Test CPU 9000, 8 threads, 4 cores, 2 NUMA nodes, 8192 MiB", hw)
	}
	if len(hw.Disks) != 2 || hw.Disks[0].Name != "nvme0n1" || hw.Disks[0].Type != "nvme" || hw.Disks[1].SizeGiB != 447 || hw.Disks[1].Type != "ssd" {
		t.Errorf("disks = %+v; want nvme0n1 (nvme) and sda (447 GiB ssd), no loop device", hw.Disks)
	}
	if len(hw.NICs) != 2 || hw.NICs[1].Name != "mgmt" || hw.NICs[1].MAC != "52:54:00:aa:00:01" || hw.NICs[1].Speed != 10000 {
		t.Errorf("NICs = %+v; want cluster and mgmt with MACs, no lo", hw.NICs)
	}
	if len(hw.PCI) != 1 || hw.PCI[0].Vendor != "10de" || hw.PCI[0].Class != "030200" {
		t.Errorf("PCI = %+v", hw.PCI)
	}
	if hw.Simulated {
		t.Error("read hardware is marked simulated")
	}
}

func TestProfileOverlay(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte("cores: 64\nnuma_nodes: 4\nmemory_mib: 524288\npci_devices:\n- {address: '0000:af:00.0', vendor: '10de', device: '2330', class: '0302'}\n"), 0o644)
	p, err := agent.LoadProfile(filepath.Join(dir, "p.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hw, _ := agent.Discover(agenttest.SysRoot(t))
	hw = p.Apply(hw)
	if hw.Cores != 64 || hw.NUMANodes != 4 || hw.MemoryMiB != 524288 || len(hw.PCI) != 1 || hw.PCI[0].Device != "2330" || !hw.Simulated {
		t.Errorf("overlay = %+v", hw)
	}
	if len(hw.NICs) != 2 || hw.CPUModel != "Test CPU 9000" {
		t.Error("overlay replaced what the profile does not name")
	}
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("cores: 4\ngpus: 2\n"), 0o644)
	if _, err := agent.LoadProfile(filepath.Join(dir, "bad.yaml")); err == nil {
		t.Error("a profile with an unknown key loaded")
	}
}

func TestMachineID(t *testing.T) {
	dir := t.TempDir()
	dmi := filepath.Join(dir, "product_uuid")
	os.WriteFile(dmi, []byte("4C4C4544-0042-3510-8051-B4C04F4B3132\n"), 0o444)
	state := filepath.Join(dir, "state")
	if id, err := agent.MachineID(state, dmi); err != nil || id != "4c4c4544-0042-3510-8051-b4c04f4b3132" {
		t.Errorf("MachineID with DMI = %q, %v; want the DMI UUID in lower case", id, err)
	}
	// Placeholder DMI UUIDs are not identities: a generated one is kept instead.
	os.WriteFile(dmi, []byte("00000000-0000-0000-0000-000000000000\n"), 0o444)
	id1, err := agent.MachineID(state, dmi)
	if err != nil || inventory.ValidateMachineID("id", id1) != nil {
		t.Fatalf("MachineID with a zero DMI UUID = %q, %v", id1, err)
	}
	if id2, _ := agent.MachineID(state, dmi); id2 != id1 {
		t.Errorf("generated machine id not kept: %s then %s", id1, id2)
	}
	if fi, _ := os.Stat(filepath.Join(state, "machine-id")); fi.Mode().Perm() != 0o600 {
		t.Errorf("machine-id mode %o; want 600", fi.Mode().Perm())
	}
}

// TestRealPlatformCannotBeBuiltHere proves that no test can construct the
// platform that acts on the real machine.
func TestRealPlatformCannotBeBuiltHere(t *testing.T) {
	p, err := agent.NewHostPlatform()
	if !errors.Is(err, agent.ErrRealPlatformRefused) || p != nil {
		t.Fatalf("NewHostPlatform() under go test = %v, %v; want ErrRealPlatformRefused", p, err)
	}
	var zero agent.HostPlatform
	if err := zero.Reboot(t.Context()); !errors.Is(err, agent.ErrRealPlatformRefused) {
		t.Fatalf("a zero HostPlatform's Reboot = %v; want ErrRealPlatformRefused", err)
	}
}

func TestLabPlatformStaysInItsRoot(t *testing.T) {
	root := t.TempDir()
	p, err := agent.NewLabPlatform(root, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Path("sw/a/bin/petrel"); err != nil {
		t.Errorf("Path(inside) = %v", err)
	}
	for _, bad := range []string{"../x", "sw/../../etc/passwd", "/../../etc"} {
		if got, err := p.Path(bad); err == nil {
			t.Errorf("Path(%q) = %s; want refused", bad, got)
		}
	}
	if err := p.Reboot(t.Context()); err == nil {
		t.Error("Reboot without a chassis succeeded")
	}
}
