package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/observer"
)

// FailoverResult is T4b: the host of an active member of the lab's demo
// service group (2+1) fails; how long until two members are active and
// answer again, the victim not among them, as an independent observer
// polling every member every 50 ms sees it.
type FailoverResult struct {
	Cycles     int
	ByKind     map[string][]time.Duration // fault kind -> sorted samples
	Violations int                        // rounds with more than N actives or a shared address
}

// P50 and P99 of a kind's samples.
func (r FailoverResult) P50(kind string) time.Duration { return Percentile(r.ByKind[kind], 50) }
func (r FailoverResult) P99(kind string) time.Duration { return Percentile(r.ByKind[kind], 99) }

// RunFailover faults the host of an active demo member cycles times per
// kind (power-off, hang, crash), waiting after each until the group has
// its standby again.
func RunFailover(ctx context.Context, binary string, cycles int, kinds []string, log io.Writer) (FailoverResult, error) {
	res := FailoverResult{Cycles: cycles, ByKind: map[string][]time.Duration{}}
	err := withLab(ctx, binary, "site-ha=multi-server:2", log, func(f *lab.File) error {
		api, err := client.New(client.Config{URL: f.Sites[0].URL, CACert: f.CACert, Token: f.Sites[0].Token})
		if err != nil {
			return err
		}
		type member struct{ Host, State string }
		var g struct {
			Status  string
			Members []member
		}
		ok := func() bool {
			g.Status, g.Members = "", nil
			if err := api.Do(ctx, http.MethodGet, "/v1/service-groups/"+lab.DemoGroup, nil, nil, &g); err != nil {
				return false
			}
			n := 0
			for _, m := range g.Members {
				if m.State == "active" || m.State == "standby" {
					n++
				}
			}
			return g.Status == "ok" && n == 3
		}
		waitOK := func(limit time.Duration) error {
			deadline := time.Now().Add(limit)
			for !ok() {
				if time.Now().After(deadline) {
					return fmt.Errorf("the demo group is not ok within %s (%s)", limit, g.Status)
				}
				time.Sleep(100 * time.Millisecond) // polling
			}
			return nil
		}
		if err := waitOK(90 * time.Second); err != nil {
			return err
		}
		// Host management watches every host (heartbeat on both networks,
		// a BMC to confirm with) before the first fault.
		deadline := time.Now().Add(60 * time.Second)
		for watched := false; !watched; {
			watched = true
			for _, m := range g.Members {
				var h struct {
					Heartbeat struct{ Mgmt, Cluster string }
					BMC       struct{ Type string }
				}
				if err := api.Do(ctx, http.MethodGet, "/v1/hosts/"+m.Host, nil, nil, &h); err != nil ||
					h.Heartbeat.Mgmt != "ok" || h.Heartbeat.Cluster != "ok" || h.BMC.Type == "" {
					watched = false
				}
			}
			if !watched {
				if time.Now().After(deadline) {
					return fmt.Errorf("the demo hosts are not all watched by host management within 60 s")
				}
				time.Sleep(200 * time.Millisecond) // polling
			}
		}
		targets, err := observer.SiteTargets(f.Sites[0], lab.DemoPort)
		if err != nil {
			return err
		}
		obs, err := observer.New(observer.Config{Members: targets, N: 2, Group: lab.DemoGroup,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return err
		}
		octx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); obs.Run(octx) }()
		defer func() { stop(); <-done }()
		for _, kind := range kinds {
			for i := range cycles {
				victim := ""
				for _, m := range g.Members {
					if m.State == "active" {
						victim = m.Host
						break
					}
				}
				t0 := time.Now()
				if err := lab.Fault(ctx, f.Dir, kind, f.Sites[0].Name+"/"+victim, "", 0, 0); err != nil {
					return err
				}
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				at, err := obs.WaitFor(wctx, func(s observer.Snapshot) bool { return len(s.Actives) == 2 && !s.IsActive(victim) })
				cancel()
				if err != nil {
					return fmt.Errorf("%s of %s: no failover within 30 s: %w", kind, victim, err)
				}
				d := at.Sub(t0)
				res.ByKind[kind] = append(res.ByKind[kind], d)
				fmt.Fprintf(log, "%s %d of %s: two members active again after %s\n", kind, i+1, victim, d.Round(time.Millisecond))
				if err := waitOK(120 * time.Second); err != nil {
					return err
				}
				if kind == "hang" {
					_ = lab.Fault(ctx, f.Dir, "resume", f.Sites[0].Name+"/"+victim, "", 0, 0)
				}
			}
			slices.Sort(res.ByKind[kind])
		}
		res.Violations = len(obs.Violations())
		return nil
	})
	return res, err
}
