package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
)

// RecoveryResult is T4a and recovery time: a worker's power loss until
// host management has it BMC-confirmed failed, and until it is available
// again (powered on through its BMC, booted, heard); and false suspicions
// with packet loss on one network.
type RecoveryResult struct {
	Cycles                 int
	FailedP50, FailedP99   time.Duration // power loss -> failed
	BackP50, BackP99       time.Duration // power loss -> available
	LossPercent            int
	LossWindow             time.Duration
	FalseDegrades, Reboots int // during the loss window: availability changes and boots
}

// RunRecovery cuts a lab worker's power cycles times and measures, then
// puts lossPercent loss on its mgmt network for lossWindow and counts what
// host management did about it.
func RunRecovery(ctx context.Context, binary string, cycles, lossPercent int, lossWindow time.Duration, log io.Writer) (RecoveryResult, error) {
	res := RecoveryResult{Cycles: cycles, LossPercent: lossPercent, LossWindow: lossWindow}
	err := withLab(ctx, binary, "site-b=multi-server:1", log, func(f *lab.File) error {
		api, err := client.New(client.Config{URL: f.Sites[0].URL, CACert: f.CACert, Token: f.Sites[0].Token})
		if err != nil {
			return err
		}
		avail := func() string {
			var h struct {
				Availability string `json:"availability"`
				BootID       string `json:"boot_id"`
			}
			if err := api.Do(ctx, http.MethodGet, "/v1/hosts/worker-0", nil, nil, &h); err != nil {
				return ""
			}
			return h.Availability
		}
		waitFor := func(want string, limit time.Duration) (time.Duration, error) {
			start := time.Now()
			for time.Since(start) < limit {
				if avail() == want {
					return time.Since(start), nil
				}
				time.Sleep(20 * time.Millisecond) // polling
			}
			return 0, fmt.Errorf("worker-0 not %s within %s", want, limit)
		}
		if _, err := waitFor("available", 30*time.Second); err != nil {
			return err
		}
		var failed, back []time.Duration
		for i := range cycles {
			t0 := time.Now()
			if err := lab.Fault(ctx, f.Dir, "power-off", "site-b/worker-0", "", 0, 0); err != nil {
				return err
			}
			if _, err := waitFor("failed", 30*time.Second); err != nil {
				return err
			}
			failed = append(failed, time.Since(t0))
			if _, err := waitFor("available", 60*time.Second); err != nil {
				return err
			}
			back = append(back, time.Since(t0))
			fmt.Fprintf(log, "cycle %d: failed after %s, available after %s\n", i+1, failed[i].Round(time.Millisecond), back[i].Round(time.Millisecond))
		}
		slices.Sort(failed)
		slices.Sort(back)
		res.FailedP50, res.FailedP99 = Percentile(failed, 50), Percentile(failed, 99)
		res.BackP50, res.BackP99 = Percentile(back, 50), Percentile(back, 99)

		// Loss on one network: count availability changes and boots.
		since := time.Now().UTC()
		if err := lab.Fault(ctx, f.Dir, "loss", "site-b/worker-0", "mgmt", lossPercent, 0); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lossWindow):
		}
		if err := lab.Fault(ctx, f.Dir, "clear", "site-b/worker-0", "", 0, 0); err != nil {
			return err
		}
		evs, err := api.List(ctx, "/v1/events", url.Values{"alarm_id": {"200.022"}, "entity_instance_id": {"host=worker-0"},
			"since": {since.Format(time.RFC3339Nano)}}, 0)
		if err != nil {
			return err
		}
		for _, raw := range evs.Items {
			if s := string(raw); strings.Contains(s, "availability") {
				res.FalseDegrades++
			}
			if strings.Contains(string(raw), "bmc-reset") || strings.Contains(string(raw), "power-cycle") || strings.Contains(string(raw), "-> reboot") {
				res.Reboots++
			}
		}
		return nil
	})
	return res, err
}
