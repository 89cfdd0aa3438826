package osapi

import (
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// hypervisorNS derives hypervisors' UUIDs (microversion 2.53 and later)
// from their host names, so they are stable without being stored.
var hypervisorNS = uuid.NewSHA1(uuid.NameSpaceOID, []byte("petrel/os-hypervisors"))

// hypervisorID is a hypervisor's ID at microversion v: a UUID from 2.53,
// an integer before; both derived from the host name.
func hypervisorID(v microversion, host string) any {
	if v.atLeast(53) {
		return uuid.NewSHA1(hypervisorNS, []byte(host)).String()
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return int(h.Sum32() & 0x7fffffff)
}

// libvirtVersion turns "9.0.0" into Nova's integer form, 9000000.
func libvirtVersion(s string) int {
	n := 0
	parts := strings.SplitN(s, ".", 3)
	for i := range 3 {
		d := 0
		if i < len(parts) {
			d, _ = strconv.Atoi(parts[i])
		}
		n = n*1000 + d
	}
	return n
}

func hypervisorView(v microversion, h compute.HypervisorInfo, brief bool) map[string]any {
	id := hypervisorID(v, h.Host)
	m := map[string]any{"id": id, "hypervisor_hostname": h.Host, "state": h.State, "status": h.Status}
	if brief {
		return m
	}
	m["vcpus"], m["vcpus_used"] = h.VCPUs, h.VCPUsUsed
	m["memory_mb"], m["memory_mb_used"], m["free_ram_mb"] = h.MemoryMiB, h.MemoryMiBUse, h.MemoryMiB-h.MemoryMiBUse
	m["local_gb"], m["local_gb_used"], m["free_disk_gb"] = h.DiskGiB, h.DiskGiBUsed, h.DiskGiB-h.DiskGiBUsed
	m["disk_available_least"] = h.DiskGiB - h.DiskGiBUsed
	m["running_vms"], m["current_workload"] = h.Servers, 0
	m["hypervisor_type"], m["hypervisor_version"] = "QEMU", libvirtVersion(h.Version)
	m["host_ip"] = ""
	m["service"] = map[string]any{"host": h.Host, "id": id, "disabled_reason": nil}
	if v.atLeast(28) {
		m["cpu_info"] = map[string]any{}
	} else {
		m["cpu_info"] = "{}"
	}
	return m
}

// listHypervisors lists the site's hypervisor hosts (filter
// hypervisor_hostname_pattern: a substring).
func (o *api) listHypervisors(detail bool) novaHandler {
	return func(r *http.Request, v microversion) (int, any, error) {
		svc, err := o.servers()
		if err != nil {
			return 0, nil, err
		}
		hs, err := svc.Hypervisors(r.Context())
		if err != nil {
			return 0, nil, err
		}
		pattern := r.URL.Query().Get("hypervisor_hostname_pattern")
		views := []map[string]any{}
		for _, h := range hs {
			if strings.Contains(h.Host, pattern) {
				views = append(views, hypervisorView(v, h, !detail))
			}
		}
		return http.StatusOK, map[string]any{"hypervisors": views}, nil
	}
}

// getHypervisor shows a hypervisor by ID (either form) or host name.
func (o *api) getHypervisor(r *http.Request, v microversion) (int, any, error) {
	svc, err := o.servers()
	if err != nil {
		return 0, nil, err
	}
	hs, err := svc.Hypervisors(r.Context())
	if err != nil {
		return 0, nil, err
	}
	id := rest.Var(r, "id")
	for _, h := range hs {
		if h.Host == id || id == strconv.Itoa(hypervisorID(minVersion, h.Host).(int)) || id == hypervisorID(maxVersion, h.Host) {
			return http.StatusOK, map[string]any{"hypervisor": hypervisorView(v, h, false)}, nil
		}
	}
	return 0, nil, errs.Wrapf(errs.NotFound, "hypervisor %s could not be found", id)
}

// hypervisorUptime is not reported (501, which clients take as "not
// offered").
func (o *api) hypervisorUptime(r *http.Request, _ microversion) (int, any, error) {
	return 0, nil, &statusError{status: http.StatusNotImplemented, msg: "hypervisor uptime is not reported"}
}

// listAggregates: a site has no host aggregates.
func (o *api) listAggregates(r *http.Request, _ microversion) (int, any, error) {
	return http.StatusOK, map[string][]any{"aggregates": {}}, nil
}

// listZones lists the site's one availability zone; the detailed form
// names its hypervisor hosts.
func (o *api) listZones(detail bool) novaHandler {
	return func(r *http.Request, _ microversion) (int, any, error) {
		zone := map[string]any{"zoneName": zoneName, "zoneState": map[string]bool{"available": true}, "hosts": nil}
		if detail {
			svc, err := o.servers()
			if err != nil {
				return 0, nil, err
			}
			hs, err := svc.Hypervisors(r.Context())
			if err != nil {
				return 0, nil, err
			}
			hosts := map[string]any{}
			now := time.Now().UTC().Format(novaUsageTime)
			for _, h := range hs {
				hosts[h.Host] = map[string]any{"nova-compute": map[string]any{
					"available": h.State == "up", "active": h.Status == "enabled", "updated_at": now}}
			}
			zone["hosts"] = hosts
		}
		return http.StatusOK, map[string]any{"availabilityZoneInfo": []any{zone}}, nil
	}
}
