package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/lab"
)

// MigrationSeries is one guest's live migrations back and forth.
type MigrationSeries struct {
	Hops                     int
	DowntimeP50, DowntimeP99 time.Duration // the guest's pause at switch-over (QEMU's figure)
	JobP50, JobP99           time.Duration // QEMU's migration job
	WallP50, WallP99         time.Duration // the API call until the record says done
	Failed                   int
}

// MigrateResult is T7: live-migration downtime and time for an idle and a
// memory-dirtying guest, and a host evacuation.
type MigrateResult struct {
	Idle, Busy     MigrationSeries
	Evacuated      int
	EvacuationWall time.Duration // host lock with evacuation, the API call
}

// RunMigrate migrates an idle guest (petrel-test) and a memory-dirtying
// one (petrel-test-busy) hops times each between the two hosts of a
// duplex lab site, then locks a host holding evacuate servers.
func RunMigrate(ctx context.Context, binary string, hops, evacuate int, log io.Writer) (MigrateResult, error) {
	var res MigrateResult
	err := withLab(ctx, binary, "site-m=duplex", log, func(f *lab.File) error {
		api, err := client.New(client.Config{URL: f.Sites[0].URL, CACert: f.CACert, Token: f.Sites[0].Token, Timeout: 10 * time.Minute})
		if err != nil {
			return err
		}
		busy, err := guestimage.Build(ctx, guestimage.Busy, guestimage.DefaultCacheDir())
		if err != nil {
			return err
		}
		si, err := lab.NewSeedImage(string(guestimage.Busy), busy)
		if err != nil {
			return err
		}
		if err := lab.Seed(ctx, api, []lab.SeedImage{si}, nil); err != nil {
			return err
		}
		if err := waitHypervisors(ctx, api, 2); err != nil {
			return err
		}
		for _, g := range []struct {
			name, image string
			out         *MigrationSeries
		}{{"idle", "petrel-test", &res.Idle}, {"busy", string(guestimage.Busy), &res.Busy}} {
			s, err := migrateSeries(ctx, api, "mig-"+g.name, g.image, hops, log)
			if err != nil {
				return err
			}
			*g.out = s
		}
		// Evacuation: servers on controller-1, then lock it.
		var ids []string
		for i := range evacuate {
			sv, err := bootOn(ctx, api, fmt.Sprintf("evac-%d", i), "petrel-test", "controller-1")
			if err != nil {
				return err
			}
			ids = append(ids, sv.ID)
		}
		t0 := time.Now()
		if err := api.Do(ctx, http.MethodPost, "/v1/hosts/controller-1/action", nil, map[string]string{"action": "lock"}, nil); err != nil {
			return fmt.Errorf("lock with evacuation: %w", err)
		}
		res.EvacuationWall, res.Evacuated = time.Since(t0), len(ids)
		fmt.Fprintf(log, "lock of controller-1 with %d servers: %s\n", len(ids), res.EvacuationWall.Round(time.Millisecond))
		return nil
	})
	return res, err
}

func waitHypervisors(ctx context.Context, api *client.Client, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var hv struct{ Items []compute.HypervisorInfo }
		if err := api.Do(ctx, http.MethodGet, "/v1/hypervisors", nil, nil, &hv); err != nil {
			return err
		}
		up := 0
		for _, h := range hv.Items {
			if h.State == "up" && h.Status == "enabled" {
				up++
			}
		}
		if up >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d hypervisors up and enabled, want %d", up, n)
		}
		time.Sleep(200 * time.Millisecond) // polling
	}
}

// bootOn creates a server on host and waits until its guest heartbeats.
func bootOn(ctx context.Context, api *client.Client, name, image, host string) (compute.Server, error) {
	var sv compute.Server
	if err := api.Do(ctx, http.MethodPost, "/v1/servers", nil, compute.CreateServer{Name: name, Image: image, Flavor: "m1.tiny", Host: host}, &sv); err != nil {
		return sv, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var out struct{ Output string }
		if err := api.Do(ctx, http.MethodGet, "/v1/servers/"+sv.ID+"/console-log", nil, nil, &out); err == nil && strings.Contains(out.Output, "HEARTBEAT") {
			return sv, nil
		}
		time.Sleep(300 * time.Millisecond) // polling
	}
	return sv, fmt.Errorf("server %s did not heartbeat within 5 minutes", name)
}

func migrateSeries(ctx context.Context, api *client.Client, name, image string, hops int, log io.Writer) (MigrationSeries, error) {
	s := MigrationSeries{Hops: hops}
	sv, err := bootOn(ctx, api, name, image, "controller-0")
	if err != nil {
		return s, err
	}
	var downs, jobs, walls []time.Duration
	hosts := []string{"controller-1", "controller-0"}
	for i := range hops {
		t0 := time.Now()
		if err := api.Do(ctx, http.MethodPost, "/v1/servers/"+sv.ID+"/action", nil,
			compute.ServerAction{Action: compute.ActionMigrate, Host: hosts[i%2]}, nil); err != nil {
			return s, err
		}
		for {
			if err := api.Do(ctx, http.MethodGet, "/v1/servers/"+sv.ID, nil, nil, &sv); err != nil {
				return s, err
			}
			if sv.Task == compute.TaskNone {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling
		}
		wall := time.Since(t0)
		if sv.Migration == nil || sv.Migration.Phase != compute.MigrationDone {
			s.Failed++
			reason := ""
			if sv.Migration != nil {
				reason = sv.Migration.Reason
			}
			fmt.Fprintf(log, "%s hop %d failed: %s\n", name, i+1, reason)
			continue
		}
		p := sv.Migration.Progress
		downs, jobs, walls = append(downs, p.Downtime), append(jobs, p.Elapsed), append(walls, wall)
		fmt.Fprintf(log, "%s hop %d -> %s: wall %s, job %s, downtime %s\n", name, i+1, sv.Host,
			wall.Round(time.Millisecond), p.Elapsed, p.Downtime)
	}
	for _, d := range [][]time.Duration{downs, jobs, walls} {
		slices.Sort(d)
	}
	s.DowntimeP50, s.DowntimeP99 = Percentile(downs, 50), Percentile(downs, 99)
	s.JobP50, s.JobP99 = Percentile(jobs, 50), Percentile(jobs, 99)
	s.WallP50, s.WallP99 = Percentile(walls, 50), Percentile(walls, 99)
	api.Do(ctx, http.MethodDelete, "/v1/servers/"+sv.ID, nil, nil, nil)
	return s, nil
}
