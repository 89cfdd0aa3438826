package compute

import (
	"fmt"
	"slices"
	"strings"
)

// Candidate is a hypervisor host as the scheduler weighs it.
type Candidate struct {
	Host string
	// Down, if not "", says why the host takes no new servers (locked,
	// failed, its hypervisor does not answer, ...).
	Down      string
	VCPUs     int
	MemoryMiB int64
	DiskGiB   int64
}

// Weigher orders the hosts that pass the filters.
type Weigher string

// Weighers.
const (
	Spread Weigher = "spread" // most free memory first: fewer servers share a host's failure
	Pack   Weigher = "pack"   // least free memory first: keep hosts empty
)

// SchedulerConfig sets the scheduler's overcommit and reservations.
type SchedulerConfig struct {
	// CPURatio, RAMRatio and DiskRatio are the allocation ratios: a host
	// takes servers with up to ratio × its capacity in total. Defaults
	// (Nova's): 16, 1.0 (memory is not overcommitted), 1.0.
	CPURatio  float64 `json:"cpu_allocation_ratio"`
	RAMRatio  float64 `json:"ram_allocation_ratio"`
	DiskRatio float64 `json:"disk_allocation_ratio"`
	// ReservedMemoryMiB is kept for the host itself; default 512.
	ReservedMemoryMiB int64 `json:"reserved_host_memory_mib"`
	// Weigher is spread (default) or pack.
	Weigher Weigher `json:"weigher"`
}

// WithDefaults fills zero fields.
func (c SchedulerConfig) WithDefaults() SchedulerConfig {
	if c.CPURatio <= 0 {
		c.CPURatio = 16
	}
	if c.RAMRatio <= 0 {
		c.RAMRatio = 1
	}
	if c.DiskRatio <= 0 {
		c.DiskRatio = 1
	}
	if c.ReservedMemoryMiB == 0 {
		c.ReservedMemoryMiB = 512
	}
	if c.Weigher == "" {
		c.Weigher = Spread
	}
	return c
}

// Validate checks the configuration.
func (c SchedulerConfig) Validate() error {
	if c.Weigher != "" && c.Weigher != Spread && c.Weigher != Pack {
		return fmt.Errorf("scheduler: weigher %q is not spread or pack", c.Weigher)
	}
	if c.CPURatio < 0 || c.RAMRatio < 0 || c.DiskRatio < 0 || c.ReservedMemoryMiB < 0 {
		return fmt.Errorf("scheduler: ratios and reservations must not be negative")
	}
	return nil
}

// Usage is what a host's servers claim.
type Usage struct {
	VCPUs     int
	MemoryMiB int64
	DiskGiB   int64
	Servers   int
}

// Usages sums the claims of servers per host. Every server that is not
// deleted claims its flavor on its host, whatever its status (a stopped
// or failed server may start again there), and on the destination of a
// live migration in progress.
func Usages(servers []Server) map[string]Usage {
	out := map[string]Usage{}
	for _, sv := range servers {
		if sv.Host == "" || sv.Status == ServerDeleted {
			continue
		}
		claim := func(host string) {
			u := out[host]
			u.VCPUs += sv.Flavor.VCPUs
			u.MemoryMiB += int64(sv.Flavor.RAMMiB)
			u.DiskGiB += int64(sv.Flavor.DiskGiB)
			u.Servers++
			out[host] = u
		}
		claim(sv.Host)
		// A server migrating claims its destination too, until the
		// migration ends.
		if sv.Migration.Active() && sv.Migration.Dest != sv.Host {
			claim(sv.Migration.Dest)
		}
	}
	return out
}

// ScheduleRequest is what is being placed.
type ScheduleRequest struct {
	Flavor ServerFlavor
	// Host, if set, is the only host considered (the filters still apply).
	Host string
	// Group, if set, is the server group the server joins; its members'
	// hosts are read from servers.
	Group *ServerGroup
}

// Schedule picks a host for req among hosts, given the servers already
// placed: filters (the host is up, has the vCPUs, memory and disk under
// the allocation ratios, and keeps the group's policy), then the
// weigher; ties go to the host name. When no host passes it returns
// ErrNoValidHost with every host's reason.
func Schedule(cfg SchedulerConfig, req ScheduleRequest, hosts []Candidate, servers []Server) (string, error) {
	cfg = cfg.WithDefaults()
	use := Usages(servers)
	groupHosts := map[string]bool{}
	if req.Group != nil {
		for _, sv := range servers {
			if sv.Group == req.Group.ID && sv.Host != "" {
				groupHosts[sv.Host] = true
			}
		}
	}
	type fit struct {
		host string
		free int64
	}
	var fits []fit
	var why []string
	f := req.Flavor
	for _, h := range hosts {
		if req.Host != "" && h.Host != req.Host {
			continue
		}
		u := use[h.Host]
		memCap := int64(float64(h.MemoryMiB-cfg.ReservedMemoryMiB) * cfg.RAMRatio)
		cpuCap := int(float64(h.VCPUs) * cfg.CPURatio)
		diskCap := int64(float64(h.DiskGiB) * cfg.DiskRatio)
		var reason string
		switch {
		case h.Down != "":
			reason = h.Down
		case u.MemoryMiB+int64(f.RAMMiB) > memCap:
			reason = fmt.Sprintf("needs %d MiB of memory, %d of %d free", f.RAMMiB, max(memCap-u.MemoryMiB, 0), memCap)
		case u.VCPUs+f.VCPUs > cpuCap:
			reason = fmt.Sprintf("needs %d vCPUs, %d of %d free", f.VCPUs, max(cpuCap-u.VCPUs, 0), cpuCap)
		case u.DiskGiB+int64(f.DiskGiB) > diskCap:
			reason = fmt.Sprintf("needs %d GiB of disk, %d of %d free", f.DiskGiB, max(diskCap-u.DiskGiB, 0), diskCap)
		case req.Group != nil && req.Group.Policy == AntiAffinity && groupHosts[h.Host]:
			reason = fmt.Sprintf("holds a member of anti-affinity group %s", req.Group.Name)
		case req.Group != nil && req.Group.Policy == Affinity && len(groupHosts) > 0 && !groupHosts[h.Host]:
			reason = fmt.Sprintf("is not the host of affinity group %s", req.Group.Name)
		}
		if reason != "" {
			why = append(why, h.Host+": "+reason)
			continue
		}
		fits = append(fits, fit{h.Host, memCap - u.MemoryMiB - int64(f.RAMMiB)})
	}
	if len(fits) == 0 {
		switch {
		case req.Host != "" && len(why) == 0:
			why = append(why, fmt.Sprintf("%s is not a hypervisor host of this site", req.Host))
		case len(why) == 0:
			why = append(why, "the site has no hypervisor host")
		}
		return "", fmt.Errorf("%w for flavor %s (%d vCPUs, %d MiB, %d GiB): %s", ErrNoValidHost,
			f.Name, f.VCPUs, f.RAMMiB, f.DiskGiB, strings.Join(why, "; "))
	}
	slices.SortFunc(fits, func(a, b fit) int {
		if a.free != b.free {
			if (cfg.Weigher == Pack) == (a.free < b.free) {
				return -1
			}
			return 1
		}
		return strings.Compare(a.host, b.host)
	})
	return fits[0].host, nil
}
