package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/ackwriter"
	"github.com/petrel-edge/petrel/lab/observer"
	"github.com/petrel-edge/petrel/subcloud/ctlha"
)

// PairResult is T5: a site's controller pair (docs/ha.md) swacts, or its
// active controller fails; how long until the other one is active as an
// independent observer sees it, the longest write outage a writer saw,
// and whether anything acknowledged was lost or two were ever active.
type PairResult struct {
	Shape      string
	Cycles     int
	ByKind     map[string][]time.Duration // "swact", "power-off", "hang" -> sorted samples
	Outage     map[string][]time.Duration // the writer's longest gap per cycle, sorted
	Acked      int                        // writes acknowledged
	Lost       int                        // acknowledged writes missing afterwards
	Violations int                        // observer rounds with two actives or a shared floating address
}

// P50 and P99 of a kind's samples.
func (r PairResult) P50(kind string) time.Duration { return Percentile(r.ByKind[kind], 50) }
func (r PairResult) P99(kind string) time.Duration { return Percentile(r.ByKind[kind], 99) }

// waitAcks waits until the writer has n more acknowledged writes.
func waitAcks(w *ackwriter.Writer, n int, limit time.Duration) error {
	before, _, _ := w.Stats()
	deadline := time.Now().Add(limit)
	for {
		acked, _, _ := w.Stats()
		if acked >= before+n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("writes did not resume within %s (%d of %d acknowledged)", limit, acked-before, n)
		}
		time.Sleep(50 * time.Millisecond) // polling
	}
}

// RunPair builds a one-site lab of shape (duplex or multi-server), then
// for each kind and cycle: swacts the active controller, or powers it off,
// or hangs it; waits until the other controller is active (the observer),
// then until the pair is ok again (the old active back as synchronous
// standby), before the next.
func RunPair(ctx context.Context, binary, shape string, cycles int, kinds []string, log io.Writer) (PairResult, error) {
	res := PairResult{Shape: shape, Cycles: cycles, ByKind: map[string][]time.Duration{}, Outage: map[string][]time.Duration{}}
	spec := "site-ha=duplex"
	if shape == "multi-server" {
		spec = "site-ha=multi-server:1"
	}
	err := withLabConfig(ctx, binary, spec, true, log, func(f *lab.File) error {
		se := f.Sites[0]
		api, err := client.New(client.Config{URL: se.URL, CACert: f.CACert, Token: se.Token})
		if err != nil {
			return err
		}
		var g struct {
			Status  string
			Members []struct{ Host, State string }
		}
		active := func() string {
			for _, m := range g.Members {
				if m.State == "active" {
					return m.Host
				}
			}
			return ""
		}
		waitOK := func(limit time.Duration) error {
			deadline := time.Now().Add(limit)
			for {
				g.Status, g.Members = "", nil
				err := api.Do(ctx, http.MethodGet, "/v1/service-groups/"+ctlha.PairGroup, nil, nil, &g)
				if err == nil && g.Status == "ok" {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("the controller pair is not ok within %s (%s, %v)", limit, g.Status, err)
				}
				time.Sleep(100 * time.Millisecond) // polling
			}
		}
		if err := waitOK(120 * time.Second); err != nil {
			return err
		}
		var targets []observer.Target
		for _, h := range se.Hosts {
			if h.Personality != "controller" {
				continue
			}
			targets = append(targets, observer.Target{Host: h.Name, Netns: h.Netns,
				URL: "http://" + net.JoinHostPort(h.Addresses["cluster"], strconv.Itoa(ctlha.StatusPort)) + "/"})
		}
		obs, err := observer.New(observer.Config{Members: targets, N: 1, Group: ctlha.PairGroup,
			Floating: []string{lab.FloatingAddr(0).String()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return err
		}
		octx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); obs.Run(octx) }()
		defer func() { stop(); <-done }()
		w := ackwriter.New(api, fmt.Sprint(time.Now().UnixNano()), 50*time.Millisecond)
		wdone := make(chan struct{})
		go func() { defer close(wdone); w.Run(octx) }()
		for _, kind := range kinds {
			for i := range cycles {
				victim := active()
				t0 := time.Now()
				var err error
				if kind == "swact" {
					err = api.Do(ctx, http.MethodPost, "/v1/hosts/"+victim+"/action", nil, map[string]string{"action": "swact"}, nil)
				} else {
					err = lab.Fault(ctx, f.Dir, kind, se.Name+"/"+victim, "", 0, 0)
				}
				if err != nil {
					return fmt.Errorf("%s of %s: %w", kind, victim, err)
				}
				wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				at, err := obs.WaitFor(wctx, func(s observer.Snapshot) bool { return len(s.Actives) == 1 && !s.IsActive(victim) })
				cancel()
				if err != nil {
					return fmt.Errorf("%s of %s: the other controller is not active within 60 s: %w", kind, victim, err)
				}
				d := at.Sub(t0)
				res.ByKind[kind] = append(res.ByKind[kind], d)
				switch kind {
				case "power-off":
					err = lab.Fault(ctx, f.Dir, "power-on", se.Name+"/"+victim, "", 0, 0)
				case "hang":
					// The standby fenced it (power-off) before taking over.
					_ = lab.Fault(ctx, f.Dir, "resume", se.Name+"/"+victim, "", 0, 0)
					err = lab.Fault(ctx, f.Dir, "power-on", se.Name+"/"+victim, "", 0, 0)
				}
				if err != nil {
					return err
				}
				if err := waitOK(180 * time.Second); err != nil {
					return err
				}
				// Writes resume before the next cycle: the writer's pause
				// is measured, and a pair that is "ok" but takes no writes
				// fails the run.
				if err := waitAcks(w, 10, 60*time.Second); err != nil {
					return fmt.Errorf("%s %d of %s: %w", kind, i+1, victim, err)
				}
				gap := w.MaxGapSince(t0)
				res.Outage[kind] = append(res.Outage[kind], gap)
				fmt.Fprintf(log, "%s %d of %s: %s active after %s; writes paused up to %s\n", kind, i+1, victim, active(),
					d.Round(time.Millisecond), gap.Round(time.Millisecond))
			}
			slices.Sort(res.ByKind[kind])
			slices.Sort(res.Outage[kind])
		}
		stop()
		<-wdone
		acked, _, _ := w.Stats()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		missing, err := w.Check(cctx)
		if err != nil {
			return err
		}
		res.Acked, res.Lost = acked, len(missing)
		res.Violations = len(obs.Violations())
		return nil
	})
	return res, err
}
