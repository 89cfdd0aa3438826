package compute

import (
	"errors"
	"strings"
	"testing"
)

func TestSchedule(t *testing.T) {
	small := ServerFlavor{Name: "small", VCPUs: 2, RAMMiB: 1024, DiskGiB: 10}
	hosts := []Candidate{
		{Host: "a", VCPUs: 2, MemoryMiB: 8192, DiskGiB: 100},
		{Host: "b", VCPUs: 2, MemoryMiB: 4096, DiskGiB: 100},
		{Host: "c", Down: "locked", VCPUs: 64, MemoryMiB: 65536, DiskGiB: 1000},
	}
	on := func(host string, f ServerFlavor, group string) Server {
		return Server{Host: host, Flavor: f, Status: ServerActive, Group: group}
	}
	for _, tc := range []struct {
		name    string
		cfg     SchedulerConfig
		req     ScheduleRequest
		servers []Server
		want    string // host, or a substring of the error
	}{
		{name: "spread picks most free memory", req: ScheduleRequest{Flavor: small}, want: "a"},
		{name: "pack picks least free memory", cfg: SchedulerConfig{Weigher: Pack}, req: ScheduleRequest{Flavor: small}, want: "b"},
		{name: "spread after usage", req: ScheduleRequest{Flavor: small},
			servers: []Server{on("a", ServerFlavor{RAMMiB: 6000}, "")}, want: "b"},
		{name: "deleted servers claim nothing", req: ScheduleRequest{Flavor: small},
			servers: []Server{{Host: "a", Flavor: ServerFlavor{RAMMiB: 6000}, Status: ServerDeleted}}, want: "a"},
		{name: "stopped servers keep their claim", req: ScheduleRequest{Flavor: ServerFlavor{RAMMiB: 3000}},
			servers: []Server{{Host: "a", Flavor: ServerFlavor{RAMMiB: 7000}, Status: ServerShutoff}}, want: "b"},
		{name: "cpu overcommit 16x", req: ScheduleRequest{Flavor: ServerFlavor{VCPUs: 32, RAMMiB: 100}}, want: "a"},
		{name: "cpu over the ratio", cfg: SchedulerConfig{CPURatio: 1}, req: ScheduleRequest{Flavor: ServerFlavor{VCPUs: 3, RAMMiB: 100}},
			want: "a: needs 3 vCPUs, 2 of 2 free"},
		{name: "memory ratio 1.5", cfg: SchedulerConfig{RAMRatio: 1.5}, req: ScheduleRequest{Flavor: ServerFlavor{RAMMiB: 11000}}, want: "a"},
		{name: "disk", req: ScheduleRequest{Flavor: ServerFlavor{RAMMiB: 100, DiskGiB: 101}}, want: "needs 101 GiB of disk"},
		{name: "pinned host", req: ScheduleRequest{Flavor: small, Host: "b"}, want: "b"},
		{name: "pinned down host", req: ScheduleRequest{Flavor: small, Host: "c"}, want: "c: locked"},
		{name: "pinned unknown host", req: ScheduleRequest{Flavor: small, Host: "z"}, want: "z is not a hypervisor host"},
		{name: "anti-affinity", req: ScheduleRequest{Flavor: small, Group: &ServerGroup{ID: "g", Name: "g", Policy: AntiAffinity}},
			servers: []Server{on("a", ServerFlavor{}, "g")}, want: "b"},
		{name: "affinity", req: ScheduleRequest{Flavor: small, Group: &ServerGroup{ID: "g", Name: "g", Policy: Affinity}},
			servers: []Server{on("b", ServerFlavor{}, "g")}, want: "b"},
		{name: "affinity full", req: ScheduleRequest{Flavor: small, Group: &ServerGroup{ID: "g", Name: "g", Policy: Affinity}},
			servers: []Server{on("b", ServerFlavor{RAMMiB: 3000}, "g")}, want: "a: is not the host of affinity group g"},
		{name: "no hosts", req: ScheduleRequest{Flavor: small}, want: "the site has no hypervisor host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := hosts
			if tc.name == "no hosts" {
				hs = nil
			}
			got, err := Schedule(tc.cfg, tc.req, hs, tc.servers)
			if err != nil {
				if !errors.Is(err, ErrNoValidHost) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v; want %q", err, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("host %s; want %s", got, tc.want)
			}
		})
	}
}

func TestServerStateMachine(t *testing.T) {
	if ServerDeleted.CanTo(ServerActive) || ServerShutoff.CanTo(ServerMigrating) || !ServerBuilding.CanTo(ServerActive) {
		t.Error("transition table")
	}
	sv := Server{Name: "vm", Status: ServerShutoff}
	if err := sv.CheckAction(ActionStop); !errors.Is(err, ErrServerState) {
		t.Errorf("stop a stopped server: %v", err)
	}
	if err := sv.CheckAction(ActionStart); err != nil {
		t.Errorf("start a stopped server: %v", err)
	}
	sv.Task = TaskStarting
	if err := sv.CheckAction(ActionStart); !errors.Is(err, ErrServerState) {
		t.Errorf("start a busy server: %v", err)
	}
}
