package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/bench"
)

// benchStrategyCmd is `petrel bench strategy`: sites orchestrated per
// minute by central's fleet strategy, with simulated sites (docs/fleet.md).
func (a *app) benchStrategyCmd(out *string, record *bool) *cobra.Command {
	var cfg bench.StrategyConfig
	c := &cobra.Command{
		Use:   "strategy [--sites 200] [--max-parallel 50] [--site-duration 10s]",
		Short: "Fleet patch strategy: sites orchestrated per minute and central's overhead per site, with simulated sites",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Sites < 1 || cfg.Sites > 1000 {
				return usagef("--sites must be 1..1000 (a modest scale: the machine is shared)")
			}
			if cfg.MaxParallel < 1 || cfg.MaxParallel > 500 {
				return usagef("--max-parallel must be 1..500")
			}
			if cfg.SiteDuration <= 0 {
				return usagef("--site-duration must be positive")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary, cfg.Log = bin, a.stderr
			r, err := bench.RunStrategy(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			s := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
			fmt.Fprintf(a.stdout, "fleet strategy over %d sites (%d simulator processes, central on %s), max-parallel %d, each site strategy %s: %s\n",
				r.Sites, r.Processes, r.Engine, r.MaxParallel, r.SiteDuration, r.State)
			fmt.Fprintf(a.stdout, "applied %d sites in %s (ideal %s): %.1f sites/minute\n", r.Applied, s(r.Total), s(r.Ideal), r.SitesPerMinute)
			fmt.Fprintf(a.stdout, "a site's step beyond its site strategy: p50 %s, p99 %s, max %s; central CPU %.1f ms a site\n",
				s(r.StepOverheadP50), s(r.StepOverheadP99), s(r.StepOverheadMax), float64(r.CPUPerSite.Microseconds())/1000)
			if r.Reason != "" {
				fmt.Fprintf(a.stdout, "reason: %s\n", r.Reason)
			}
			if !*record {
				return nil
			}
			return recordRow(a, *out, "Fleet patch strategy — sites orchestrated per minute",
				"`petrel bench strategy`: a real central (its own process, PostgreSQL 15 unless `--sqlite`) and simulator "+
					"processes (`petrel bench sitesim`) whose sites dial home, accept the patch upload (verified with the "+
					"patch key) and run a simulated site strategy of `--site-duration` (its steps, one per host, done evenly). "+
					"Every site managed; a small signed patch uploaded to central; a fleet strategy over all sites with "+
					"`--max-parallel`, applied and polled to applied. *sites/minute*: sites applied over apply → applied; "+
					"*ideal*: stages × site duration; *step overhead*: a site's step duration minus its site strategy's "+
					"(sync, apply, create, apply, and the 1 s polls that see it end); *CPU a site*: central's CPU time "+
					"during the apply over the sites.",
				[]string{"date (UTC)", "commit", "machine", "command", "sites / max-parallel / site strategy", "applied in (ideal)",
					"sites/minute", "step overhead p50 / p99 / max", "central CPU a site"},
				[]string{fmt.Sprintf("%d / %d / %s", r.Sites, r.MaxParallel, r.SiteDuration), fmt.Sprintf("%d in %s (%s)", r.Applied, s(r.Total), s(r.Ideal)),
					fmt.Sprintf("%.1f", r.SitesPerMinute), s(r.StepOverheadP50) + " / " + s(r.StepOverheadP99) + " / " + s(r.StepOverheadMax),
					fmt.Sprintf("%.1f ms", float64(r.CPUPerSite.Microseconds())/1000)}, cmd)
		},
	}
	f := c.Flags()
	f.IntVar(&cfg.Sites, "sites", 200, "simulated sites (at most 1,000)")
	f.IntVar(&cfg.PerProcess, "per-process", 1000, "sites per simulator process")
	f.IntVar(&cfg.MaxParallel, "max-parallel", 50, "the fleet strategy's max-parallel")
	f.DurationVar(&cfg.SiteDuration, "site-duration", 10*time.Second, "how long each simulated site strategy applies")
	f.BoolVar(&cfg.SQLite, "sqlite", false, "central on SQLite instead of PostgreSQL")
	f.Uint64Var(&cfg.Seed, "seed", 1, "simulator seed")
	return c
}
