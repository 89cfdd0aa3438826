package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/bench"
	"github.com/petrel-edge/petrel/bench/fleetsim"
	"github.com/petrel-edge/petrel/internal/server"
)

// benchFleetCmd is `petrel bench fleet`: T1, T2, T3 and T10 with a
// simulated fleet against a real central (docs/fleet.md).
func (a *app) benchFleetCmd(out *string, record *bool) *cobra.Command {
	var cfg bench.FleetConfig
	c := &cobra.Command{
		Use:   "fleet [--sites 10000] [--dir DIR]",
		Short: "T1–T3, T10: a simulated fleet dialing home to a real central (PostgreSQL)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Sites < 1 || cfg.Loss < 0 || cfg.Loss >= 1 {
				return usagef("--sites must be positive and --loss in [0, 1)")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary, cfg.Log = bin, a.stderr
			r, err := bench.RunFleet(cmd.Context(), cfg)
			if err != nil {
				if *record {
					// A run that could not complete is a result too.
					_ = recordRow(a, *out, fleetHeading, fleetIntro, fleetHeader, []string{
						fmt.Sprintf("%d / %d / %s", r.Sites, r.Processes, r.Engine), "-", "-", "-", "-", "-",
						"did not complete: " + err.Error()}, cmd)
				}
				return err
			}
			return reportFleet(a, cmd, *out, *record, cfg, r)
		},
	}
	f := c.Flags()
	f.IntVar(&cfg.Sites, "sites", 10000, "simulated sites")
	f.IntVar(&cfg.PerProcess, "per-process", 4000, "sites per simulator process (at most 5,000)")
	f.StringVar(&cfg.Dir, "dir", "", "working directory kept between runs (database, keys, certificates: a rerun issues none); default a temp dir")
	f.BoolVar(&cfg.SQLite, "sqlite", false, "central on SQLite instead of PostgreSQL")
	f.Float64Var(&cfg.Loss, "loss", 0.01, "fraction of update frames lost on every site's WAN")
	f.Uint64Var(&cfg.Seed, "seed", 1, "simulator seed")
	f.DurationVar(&cfg.Hold, "hold", 60*time.Second, "window for central's CPU and RSS while holding the fleet")
	f.IntVar(&cfg.APIRate, "api-rate", 2000, "API reads per second while holding (0: skip)")
	f.DurationVar(&cfg.APIFor, "api-duration", 20*time.Second, "duration of the API load")
	f.IntVar(&cfg.Flavors, "flavors", 3, "flavors created at central and timed to every site (0: skip)")
	f.IntVar(&cfg.Silence, "silence", 100, "sites black-holed to time offline detection (0: skip)")
	f.BoolVar(&cfg.Restart, "restart", true, "restart central and time the resync")
	f.Float64Var(&cfg.AlarmsPerMinute, "alarms-per-minute", 1, "each site's alarm churn (raise or clear; each a summary delta)")
	return c
}

func reportFleet(a *app, cmd *cobra.Command, out string, record bool, cfg bench.FleetConfig, r bench.FleetResult) error {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	s := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	var verdicts []string
	t1 := r.HeldOnline >= 10000 && r.CPU <= 1 && r.RSSMiB <= 1536
	verdicts = append(verdicts, verdict("T1", t1, fmt.Sprintf("%d held, %.2f cores, %.0f MiB", r.HeldOnline, r.CPU, r.RSSMiB)))
	if cfg.Restart {
		t2 := r.Sites >= 10000 && r.Resynced >= r.Sites && r.Resync <= 60*time.Second && r.RestartFalse == 0
		verdicts = append(verdicts, verdict("T2", t2, fmt.Sprintf("%d resynced in %s, %d false offline", r.Resynced, s(r.Resync), r.RestartFalse)))
	}
	if cfg.Silence > 0 {
		t3 := r.OfflineDetected == r.Silenced && r.OfflineP99 <= 30*time.Second && r.FalseOffline == 0 && cfg.Loss >= 0.01
		verdicts = append(verdicts, verdict("T3", t3, fmt.Sprintf("p99 %s, %d false offline at %.0f %% loss", s(r.OfflineP99), r.FalseOffline, 100*cfg.Loss)))
	}
	apiCol := "-"
	if r.API != nil {
		p99 := bench.Percentile(r.API.Latencies(), 99)
		achieved := r.API.Achieved()
		t10 := p99 <= 50*time.Millisecond && r.API.Errors() == 0 && r.APIRate >= 2000
		verdicts = append(verdicts, verdict("T10", t10, fmt.Sprintf("p99 %s at %d/s", ms(p99), r.APIRate)))
		apiCol = fmt.Sprintf("%d/s (achieved %.0f): p50 %s, p99 %s, %d errors", r.APIRate, achieved,
			ms(bench.Percentile(r.API.Latencies(), 50)), ms(p99), r.API.Errors())
		if b := r.Baseline; b != nil {
			apiCol += fmt.Sprintf("; baseline /healthz p50 %s, p99 %s", ms(bench.Percentile(b.Latencies(), 50)), ms(bench.Percentile(b.Latencies(), 99)))
		}
	}
	fmt.Fprintf(a.stdout, "sites %d (%d simulator processes, central on %s)\n", r.Sites, r.Processes, r.Engine)
	fmt.Fprintf(a.stdout, "all online %s after the simulators started; in-sync %d (%s)\n", s(r.ConnectAll), r.InSync, s(r.SyncAll))
	fmt.Fprintf(a.stdout, "held %d: central %.3f cores, RSS %.0f MiB; PostgreSQL %.3f cores\n", r.HeldOnline, r.CPU, r.RSSMiB, r.DBCPU)
	fmt.Fprintf(a.stdout, "API: %s\n", apiCol)
	fmt.Fprintf(a.stdout, "flavor propagation: p50 %s p99 %s max %s (%d site-flavors)\n", ms(r.FlavorP50), ms(r.FlavorP99), ms(r.FlavorMax), r.FlavorSites)
	fmt.Fprintf(a.stdout, "offline detection: %d of %d, p50 %s p99 %s; false offline at %.0f %% loss: %d\n", r.OfflineDetected, r.Silenced,
		s(r.OfflineP50), s(r.OfflineP99), 100*r.Loss, r.FalseOffline)
	fmt.Fprintf(a.stdout, "restart: central ready %s, %d resynced in %s, %d false offline; API in the storm: %d calls, %d errors, slowest %s\n",
		s(r.CentralDown), r.Resynced, s(r.Resync), r.RestartFalse, r.StormAPICalls, r.StormAPIErrors, ms(r.StormAPIMax))
	for _, n := range r.Notes {
		fmt.Fprintf(a.stdout, "note: %s\n", n)
	}
	fmt.Fprintln(a.stdout, strings.Join(verdicts, "; "))
	if !record {
		return nil
	}
	return recordRow(a, out, fleetHeading, fleetIntro, fleetHeader,
		[]string{fmt.Sprintf("%d / %d / %s", r.Sites, r.Processes, r.Engine),
			fmt.Sprintf("%d: %.2f cores / %.0f MiB (%.2f)", r.HeldOnline, r.CPU, r.RSSMiB, r.DBCPU), apiCol,
			ms(r.FlavorP50) + " / " + ms(r.FlavorP99),
			fmt.Sprintf("%s / %s (%d @ %.0f %%)", s(r.OfflineP50), s(r.OfflineP99), r.FalseOffline, 100*r.Loss),
			fmt.Sprintf("%d in %s (%d)", r.Resynced, s(r.Resync), r.RestartFalse), strings.Join(verdicts, "; ")}, cmd)
}

func verdict(target string, ok bool, detail string) string {
	if ok {
		return fmt.Sprintf("meets %s (%s)", target, detail)
	}
	return fmt.Sprintf("does not meet %s (%s)", target, detail)
}

// benchSitesimCmd is the simulator process (hidden): `petrel bench sitesim
// --config FILE`, started by `petrel bench fleet`.
func (a *app) benchSitesimCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:    "sitesim --config FILE",
		Short:  "Run simulated sites (started by bench fleet)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			b, err := os.ReadFile(cfgFile)
			if err != nil {
				return err
			}
			var cfg fleetsim.Config
			if err := json.Unmarshal(b, &cfg); err != nil {
				return fmt.Errorf("%s: %w", cfgFile, err)
			}
			logger, err := server.NewLogger(os.Stderr, "info")
			if err != nil {
				return err
			}
			sim, err := fleetsim.New(cfg, logger.With("daemon", "sitesim"))
			if err != nil {
				return err
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return sim.Run(ctx)
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "simulator configuration (JSON, written by bench fleet)")
	return c
}

// The fleet benchmark's section of docs/benchmarks.md.
const fleetHeading = "T1–T3, T10 — a fleet at one central"

var (
	fleetIntro = "`petrel bench fleet`: a real central (`petrel central`, its own process, on a throwaway PostgreSQL 15 cluster " +
		"with durable commits) and simulator processes (`petrel bench sitesim`, ≤ 5,000 sites each) whose sites speak " +
		"the real dial-home protocol from their own 127.x addresses with their own certificates: an update every 5 s, " +
		"alarm churn of one raise/clear a minute per site (a summary delta and an event record each), every update frame " +
		"lost with probability `--loss`. All sites are managed, so central's sync engine audits each over the relay. " +
		"*held*: central's CPU (core-seconds per second, /proc/PID/stat) and RSS over the hold window; PostgreSQL's " +
		"processes apart. *API*: half `GET /v1/subclouds/{name}`, half `GET /v1/subclouds?limit=50`, open loop, " +
		"while holding; then the same run's baseline, unauthenticated `GET /healthz` at the same rate from the same " +
		"client (what the machine adds: simulators, load generator and central share its cores). *flavor*: created at central until each site's create arrived. *offline*: sites black-holed " +
		"(no FIN) until central raised 280.001; *false offline*: 280.001 for sites never cut. *restart*: SIGTERM and " +
		"start central; until every site was welcomed again and listed online; false offline after it. Targets: " +
		"T1 10,000 sites on ≤ 1 core, RSS ≤ 1.5 GiB; T2 ≤ 60 s, 0 false offline; T3 p99 ≤ 30 s, 0 false at 1 % loss; " +
		"T10 p99 ≤ 50 ms at 2,000 req/s."
	fleetHeader = []string{"date (UTC)", "commit", "machine", "command", "sites / sim procs / db", "held: central CPU / RSS (db CPU)",
		"API reads", "flavor p50 / p99", "offline p50 / p99 (false @ loss)", "restart: resynced in (false offline)", "verdict"}
)
