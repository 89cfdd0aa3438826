package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/petrel-edge/petrel/compute"
)

// Stats reads a domain's run state, vCPUs, memory and the CPU time it has
// used (DomainGetInfo), and the resident memory of its QEMU when it runs
// (DomainMemoryStats' rss: no balloon driver is needed for it).
func (d *Driver) Stats(ctx context.Context, id string) (compute.DomainStats, error) {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return compute.DomainStats{}, err
	}
	st, maxMem, mem, vcpus, cpuTime, err := d.l.DomainGetInfo(dom)
	if err != nil {
		return compute.DomainStats{}, fmt.Errorf("libvirt: stats %s: %w", id, err)
	}
	out := compute.DomainStats{State: stateOf(golibvirt.DomainState(st)), VCPUs: int(vcpus),
		MaxMemoryMiB: int64(maxMem / 1024), MemoryMiB: int64(mem / 1024), CPUTimeNs: cpuTime}
	if out.State == compute.StateRunning {
		if ms, err := d.l.DomainMemoryStats(dom, uint32(golibvirt.DomainMemoryStatNr), 0); err == nil {
			for _, m := range ms {
				if golibvirt.DomainMemoryStatTags(m.Tag) == golibvirt.DomainMemoryStatRss {
					out.RSSMiB = int64(m.Val / 1024)
				}
			}
		}
	}
	return out, nil
}
