package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/lab"
)

// ServersResult is the compute benchmark on one lab hypervisor host:
// the API latency of server create, the time until the server is active
// and until its guest prints its boot banner, and how many guests the
// host runs at once with their memory cost.
type ServersResult struct {
	Count                   int
	CreateP50, CreateP99    time.Duration // POST /v1/servers round trip (placement and record)
	BaselineP50             time.Duration // GET /v1/flavors round trip, same run
	FirstActive             time.Duration // the first server: includes copying the image to the host
	ActiveP50, ActiveP99    time.Duration // create -> active (domain started)
	BannerP50, BannerP99    time.Duration // create -> "=== IMAGE v1 BOOTED" on its console
	Running                 int           // guests heartbeating at once at the end
	RSSMiBMean              float64       // QEMU resident memory per guest
	FlavorMiB               int
	HostMemMiB, ReservedMiB int64
}

// RunServers boots count m1.tiny servers from petrel-test on a simplex
// lab site, all created at once after a first one (which copies the
// image to the host), and measures them.
func RunServers(ctx context.Context, binary string, count int, log io.Writer) (ServersResult, error) {
	res := ServersResult{Count: count}
	err := withLab(ctx, binary, "site-s=simplex", log, func(f *lab.File) error {
		api, err := client.New(client.Config{URL: f.Sites[0].URL, CACert: f.CACert, Token: f.Sites[0].Token})
		if err != nil {
			return err
		}
		var hv struct {
			Items []compute.HypervisorInfo `json:"items"`
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if err := api.Do(ctx, http.MethodGet, "/v1/hypervisors", nil, nil, &hv); err != nil {
				return err
			}
			if len(hv.Items) == 1 && hv.Items[0].State == "up" && hv.Items[0].Status == "enabled" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the site's hypervisor is not up and enabled: %+v", hv.Items)
			}
			time.Sleep(200 * time.Millisecond) // polling
		}
		res.HostMemMiB, res.ReservedMiB = int64(hv.Items[0].MemoryMiB), compute.SchedulerConfig{}.WithDefaults().ReservedMemoryMiB
		var fl compute.Flavor
		if err := api.Do(ctx, http.MethodGet, "/v1/flavors/m1.tiny", nil, nil, &fl); err != nil {
			return err
		}
		res.FlavorMiB = fl.RAMMiB
		for range 20 {
			t0 := time.Now()
			if err := api.Do(ctx, http.MethodGet, "/v1/flavors", nil, nil, nil); err != nil {
				return err
			}
			res.BaselineP50 += time.Since(t0)
		}
		res.BaselineP50 /= 20

		type run struct {
			id                     string
			create, active, banner time.Duration
		}
		boot := func(name string) (run, error) {
			t0 := time.Now()
			var sv compute.Server
			err := api.Do(ctx, http.MethodPost, "/v1/servers", nil,
				compute.CreateServer{Name: name, Image: "petrel-test", Flavor: "m1.tiny"}, &sv)
			if err != nil {
				return run{}, err
			}
			r := run{id: sv.ID, create: time.Since(t0)}
			limit := time.Now().Add(10 * time.Minute)
			for r.banner == 0 {
				if time.Now().After(limit) {
					return r, fmt.Errorf("server %s did not boot within 10 minutes", name)
				}
				time.Sleep(100 * time.Millisecond) // polling
				if r.active == 0 {
					if err := api.Do(ctx, http.MethodGet, "/v1/servers/"+sv.ID, nil, nil, &sv); err != nil {
						return r, err
					}
					switch {
					case sv.Status == compute.ServerError:
						return r, fmt.Errorf("server %s: %s", name, sv.Fault)
					case sv.Status == compute.ServerActive && sv.Task == compute.TaskNone:
						r.active = time.Since(t0)
					}
					continue
				}
				var out struct{ Output string }
				if err := api.Do(ctx, http.MethodGet, "/v1/servers/"+sv.ID+"/console-log", url.Values{"lines": {"50"}}, nil, &out); err != nil {
					return r, err
				}
				if strings.Contains(out.Output, "=== IMAGE v1 BOOTED") {
					r.banner = time.Since(t0)
				}
			}
			return r, nil
		}
		first, err := boot("bench-0")
		if err != nil {
			return err
		}
		res.FirstActive = first.active
		fmt.Fprintf(log, "first server: create %s, active %s (image copied to the host), banner %s\n",
			first.create.Round(time.Millisecond), first.active.Round(time.Millisecond), first.banner.Round(time.Millisecond))
		runs := make([]run, count-1)
		errs := make([]error, count-1)
		var wg sync.WaitGroup
		for i := range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[i], errs[i] = boot(fmt.Sprintf("bench-%d", i+1))
			}()
		}
		wg.Wait()
		for _, e := range errs {
			if e != nil {
				return e
			}
		}
		runs = append(runs, first)
		var creates, actives, banners []time.Duration
		for _, r := range runs {
			creates = append(creates, r.create)
			banners = append(banners, r.banner)
		}
		for _, r := range runs[:len(runs)-1] {
			actives = append(actives, r.active)
		}
		for _, s := range [][]time.Duration{creates, actives, banners} {
			slices.Sort(s)
		}
		res.CreateP50, res.CreateP99 = Percentile(creates, 50), Percentile(creates, 99)
		res.ActiveP50, res.ActiveP99 = Percentile(actives, 50), Percentile(actives, 99)
		res.BannerP50, res.BannerP99 = Percentile(banners, 50), Percentile(banners, 99)
		if len(actives) == 0 {
			res.ActiveP50, res.ActiveP99 = first.active, first.active
		}

		// All guests keep heartbeating: count those whose console moved on.
		ids := make([]string, len(runs))
		for i, r := range runs {
			ids[i] = r.id
		}
		beats := func(id string) int {
			var out struct{ Output string }
			if api.Do(ctx, http.MethodGet, "/v1/servers/"+id+"/console-log", url.Values{"lines": {"200"}}, nil, &out) != nil {
				return -1
			}
			return strings.Count(out.Output, "HEARTBEAT v1")
		}
		before := make([]int, len(ids))
		for i, id := range ids {
			before[i] = beats(id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second): // a window for every guest to beat again
		}
		for i, id := range ids {
			if b := beats(id); b > before[i] || (b >= 200 && before[i] >= 200) {
				res.Running++
			}
		}
		var total float64
		for _, id := range ids {
			total += float64(qemuRSS(id)) / 1024
		}
		res.RSSMiBMean = total / float64(len(ids))
		for _, id := range ids {
			api.Do(ctx, http.MethodDelete, "/v1/servers/"+id, nil, nil, nil)
		}
		return nil
	})
	return res, err
}

// qemuRSS is the resident memory (KiB) of the QEMU running domain id
// (found by its -uuid argument), 0 if none.
func qemuRSS(id string) int64 {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		argv, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(argv), "qemu-system") || !strings.Contains(string(argv), id) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}
