package agent

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/inventory"
)

// Discover reads the hardware visible under root ("/" on a real host; a
// fixture tree in tests): CPUs and NUMA nodes, memory, block devices,
// network interfaces with their MACs, PCI devices.
func Discover(root string) (inventory.Hardware, error) {
	var hw inventory.Hardware
	p := func(rel string) string { return filepath.Join(root, rel) }
	if err := readCPU(p("proc/cpuinfo"), &hw); err != nil {
		return hw, err
	}
	nodes, _ := filepath.Glob(p("sys/devices/system/node/node[0-9]*"))
	hw.NUMANodes = max(len(nodes), 1)
	if kb, err := meminfoKB(p("proc/meminfo"), "MemTotal"); err == nil {
		hw.MemoryMiB = kb / 1024
	}
	hw.Disks = readDisks(p("sys/block"))
	hw.NICs = readNICs(p("sys/class/net"))
	if root == "/" {
		for i := range hw.NICs {
			hw.NICs[i].Addresses = interfaceAddrs(hw.NICs[i].Name)
		}
	}
	hw.PCI = readPCI(p("sys/bus/pci/devices"))
	return hw, nil
}

func readCPU(path string, hw *inventory.Hardware) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("agent: cpu: %w", err)
	}
	defer f.Close()
	cores := map[string]bool{}
	var phys, core string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			hw.Threads++
		case "model name":
			if hw.CPUModel == "" {
				hw.CPUModel = v
			}
		case "physical id":
			phys = v
		case "core id":
			core = v
			cores[phys+"/"+core] = true
		}
	}
	hw.Cores = len(cores)
	if hw.Cores == 0 {
		hw.Cores = hw.Threads // virtual machines often omit core ids
	}
	return sc.Err()
}

func meminfoKB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("agent: %s has no %s", path, key)
}

func readDisks(dir string) []inventory.Disk {
	entries, _ := os.ReadDir(dir)
	out := []inventory.Disk{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "dm-") ||
			strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "sr") {
			continue
		}
		sectors := readInt(filepath.Join(dir, name, "size"))
		if sectors == 0 {
			continue
		}
		typ := "ssd"
		switch {
		case strings.HasPrefix(name, "nvme"):
			typ = "nvme"
		case readInt(filepath.Join(dir, name, "queue", "rotational")) == 1:
			typ = "hdd"
		}
		out = append(out, inventory.Disk{Name: name, SizeGiB: sectors * 512 >> 30, Type: typ})
	}
	return out
}

func readNICs(dir string) []inventory.NIC {
	entries, _ := os.ReadDir(dir)
	out := []inventory.NIC{}
	for _, e := range entries {
		name := e.Name()
		if name == "lo" {
			continue
		}
		mac := readString(filepath.Join(dir, name, "address"))
		speed := int(readInt(filepath.Join(dir, name, "speed")))
		out = append(out, inventory.NIC{Name: name, MAC: mac, Speed: max(speed, 0)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// interfaceAddrs lists an interface's IP prefixes, sorted.
func interfaceAddrs(name string) []string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
			out = append(out, ipn.String())
		}
	}
	sort.Strings(out)
	return out
}

func readPCI(dir string) []inventory.PCIDevice {
	entries, _ := os.ReadDir(dir)
	out := []inventory.PCIDevice{}
	for _, e := range entries {
		d := filepath.Join(dir, e.Name())
		out = append(out, inventory.PCIDevice{Address: e.Name(),
			Vendor: strings.TrimPrefix(readString(filepath.Join(d, "vendor")), "0x"),
			Device: strings.TrimPrefix(readString(filepath.Join(d, "device")), "0x"),
			Class:  strings.TrimPrefix(readString(filepath.Join(d, "class")), "0x")})
	}
	return out
}

func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(path string) int64 {
	n, _ := strconv.ParseInt(readString(path), 10, 64)
	return n
}

// Profile is a hardware description laid over what the agent reads: the
// lab gives each host cores, NUMA nodes, memory, disks and PCI devices such
// as GPUs. NICs stay as read (their MACs are real).
type Profile struct {
	CPUModel  string                `json:"cpu_model"`
	Cores     int                   `json:"cores"`
	Threads   int                   `json:"threads"`
	NUMANodes int                   `json:"numa_nodes"`
	MemoryMiB int64                 `json:"memory_mib"`
	Disks     []inventory.Disk      `json:"disks"`
	PCI       []inventory.PCIDevice `json:"pci_devices"`
}

// LoadProfile reads a profile file (YAML, strict).
func LoadProfile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Profile
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("agent: profile %s: %w", path, err)
	}
	return &p, nil
}

// Apply lays the profile over hw and marks it simulated.
func (p *Profile) Apply(hw inventory.Hardware) inventory.Hardware {
	if p == nil {
		return hw
	}
	if p.CPUModel != "" {
		hw.CPUModel = p.CPUModel
	}
	if p.Cores > 0 {
		hw.Cores = p.Cores
	}
	if p.Threads > 0 {
		hw.Threads = p.Threads
	}
	if p.NUMANodes > 0 {
		hw.NUMANodes = p.NUMANodes
	}
	if p.MemoryMiB > 0 {
		hw.MemoryMiB = p.MemoryMiB
	}
	if p.Disks != nil {
		hw.Disks = p.Disks
	}
	if p.PCI != nil {
		hw.PCI = p.PCI
	}
	hw.Simulated = true
	return hw
}
