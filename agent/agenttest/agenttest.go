// Package agenttest builds fake /proc and /sys trees for agent tests.
package agenttest

import (
	"os"
	"path/filepath"
	"testing"
)

// SysRoot writes a small machine under a temporary root: 2 sockets x 2
// cores x 2 threads, 2 NUMA nodes, 8 GiB, one SSD and one NVMe disk, NICs
// mgmt and cluster, and one GPU.
func SysRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	cpuinfo := ""
	for p := 0; p < 2; p++ {
		for c := 0; c < 2; c++ {
			for th := 0; th < 2; th++ {
				cpuinfo += "processor\t: x\nmodel name\t: Test CPU 9000\nphysical id\t: " + string(rune('0'+p)) +
					"\ncore id\t\t: " + string(rune('0'+c)) + "\n\n"
			}
		}
	}
	Write(t, root, "proc/cpuinfo", cpuinfo)
	Write(t, root, "proc/meminfo", "MemTotal:        8388608 kB\nMemFree: 1 kB\n")
	Write(t, root, "sys/devices/system/node/node0/cpulist", "0-3")
	Write(t, root, "sys/devices/system/node/node1/cpulist", "4-7")
	Write(t, root, "sys/block/sda/size", "937703088")
	Write(t, root, "sys/block/sda/queue/rotational", "0")
	Write(t, root, "sys/block/nvme0n1/size", "1953525168")
	Write(t, root, "sys/block/loop0/size", "100")
	Write(t, root, "sys/class/net/lo/address", "00:00:00:00:00:00")
	Write(t, root, "sys/class/net/mgmt/address", "52:54:00:aa:00:01")
	Write(t, root, "sys/class/net/mgmt/speed", "10000")
	Write(t, root, "sys/class/net/cluster/address", "52:54:00:bb:00:01")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/vendor", "0x10de")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/device", "0x20b5")
	Write(t, root, "sys/bus/pci/devices/0000:3b:00.0/class", "0x030200")
	return root
}

// Write creates root/rel with content.
func Write(t testing.TB, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
