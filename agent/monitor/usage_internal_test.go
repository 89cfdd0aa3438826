package monitor

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestStatfsUsage checks df's arithmetic: blocks reserved for root are
// neither used nor available.
func TestStatfsUsage(t *testing.T) {
	// 1000 blocks of 4 KiB: 300 free, of which 250 available (50 reserved).
	st := unix.Statfs_t{Bsize: 4096, Frsize: 4096, Blocks: 1000, Bfree: 300, Bavail: 250}
	f := statfsUsage("software-root", "/srv", st)
	if f.UsedBytes != 700*4096 || f.SizeBytes != 950*4096 {
		t.Fatalf("statfsUsage() = %+v; want used 700 blocks of 950", f)
	}
	if p, _ := f.Percent(); p < 73.68 || p > 73.69 {
		t.Errorf("Percent() = %g; want 73.68 (df rounds it up to 74%%)", p)
	}
	// Frsize 0 (old kernels): Bsize is the unit.
	if f := statfsUsage("r", "/", unix.Statfs_t{Bsize: 512, Blocks: 10, Bfree: 10, Bavail: 10}); f.UsedBytes != 0 || f.SizeBytes != 5120 {
		t.Errorf("statfsUsage(empty, Frsize 0) = %+v; want 0 used of 5120", f)
	}
}

func TestCountCPUList(t *testing.T) {
	for in, want := range map[string]int{"0": 1, "0-3": 4, "0-1,4-5": 4, "0-3,8,10-11": 7, "": 0} {
		if got, err := countCPUList(in); err != nil || got != want {
			t.Errorf("countCPUList(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"a", "3-1", "0-x"} {
		if _, err := countCPUList(bad); err == nil {
			t.Errorf("countCPUList(%q) succeeded", bad)
		}
	}
}
