package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/petrel-edge/petrel/bench"
)

func (a *app) benchCmd() *cobra.Command {
	var out string
	var record bool
	var dur time.Duration
	var rate, workers, hosts int
	api := &cobra.Command{
		Use:   "api [--rate 2000] [--duration 20s] [--workers 32] [--hosts 200]",
		Short: "T10: API read latency under concurrent load against a site controller",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rate < 1 || workers < 1 || hosts < 1 || dur < time.Second {
				return usagef("--rate, --workers, --hosts must be positive and --duration at least 1s")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunAPI(cmd.Context(), bench.APIConfig{Binary: bin, Duration: dur, Rate: rate,
				Workers: workers, Hosts: hosts, Log: a.stderr})
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
			verdict := "meets T10 (p99 ≤ 50 ms at 2,000 req/s)"
			if r.P99 > 50*time.Millisecond || r.Offered < 2000 || r.Errors > 0 {
				verdict = "does not meet T10 (p99 ≤ 50 ms at 2,000 req/s, no errors)"
			}
			fmt.Fprintf(a.stdout, "reads: offered %.0f/s achieved %.0f/s, %d requests, %d errors\n", r.Offered, r.Achieved, r.Requests, r.Errors)
			fmt.Fprintf(a.stdout, "latency: p50 %s  p90 %s  p99 %s  max %s\n", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max))
			fmt.Fprintf(a.stdout, "baseline /healthz: p50 %s  p99 %s (reads p99 = %.1fx baseline p99)\n", ms(r.BaseP50), ms(r.BaseP99),
				float64(r.P99)/float64(max(r.BaseP99, time.Microsecond)))
			fmt.Fprintf(a.stdout, "site controller: %.0f%% CPU, %.0f MiB RSS\n%s\n", r.ServerCPUPercent, r.ServerMB, verdict)
			if !record {
				return nil
			}
			row := []string{time.Now().UTC().Format("2006-01-02 15:04"), bench.Commit(), bench.Machine(),
				"`" + commandLine(cmd) + "`",
				fmt.Sprintf("%.0f / %.0f", r.Offered, r.Achieved), fmt.Sprint(r.Errors),
				ms(r.P50), ms(r.P99), ms(r.Max), ms(r.BaseP50) + " / " + ms(r.BaseP99),
				fmt.Sprintf("%.0f%% / %.0f MiB", r.ServerCPUPercent, r.ServerMB), verdict}
			if err := bench.Record(out, "T10 — API reads under load",
				"Authenticated reads against one site controller process (SQLite, TLS, keep-alive), open loop: half "+
					"`GET /v1/hosts?limit=50`, half `GET /v1/hosts/{name}` over 200 seeded hosts. Latency counts from each "+
					"request's scheduled start. Baseline: unauthenticated `GET /healthz` at the same rate in the same run. "+
					"Load generator and server share the machine's 2 cores. Target T10: p99 ≤ 50 ms at 2,000 req/s.",
				[]string{"date (UTC)", "commit", "machine", "command", "offered / achieved req/s", "errors", "p50", "p99", "max",
					"baseline p50 / p99", "server CPU / RSS", "verdict"}, row); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "recorded in %s\n", out)
			return nil
		},
	}
	api.Flags().IntVar(&rate, "rate", 2000, "offered requests per second")
	api.Flags().DurationVar(&dur, "duration", 20*time.Second, "measured duration")
	api.Flags().IntVar(&workers, "workers", 32, "concurrent connections")
	api.Flags().IntVar(&hosts, "hosts", 200, "hosts seeded into the site")
	var invHosts int
	inventory := &cobra.Command{
		Use:   "inventory [--hosts 10]",
		Short: "T11: new host powered on → listed with its inventory (needs root: builds a lab)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunInventory(cmd.Context(), bin, invHosts, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			verdict := "meets T11 (≤ 5 s)"
			if r.Max > 5*time.Second {
				verdict = "does not meet T11 (≤ 5 s)"
			}
			fmt.Fprintf(a.stdout, "%d hosts added: p50 %s  p90 %s  max %s\n%s\n", r.Hosts, ms(r.P50), ms(r.P90), ms(r.Max), verdict)
			if !record {
				return nil
			}
			return recordRow(a, out, "T11 — new host → inventoried",
				"`lab add-host` on a running one-site lab, one host after another: from the moment the lab creates the host "+
					"(namespace, cgroup, software root, chassis; power-on; the chassis' 200 ms boot delay; host-init; agent "+
					"start; join with a single-use token; first full report) until the site lists it with its inventory. Target T11: ≤ 5 s.",
				[]string{"date (UTC)", "commit", "machine", "command", "hosts", "p50", "p90", "max", "verdict"},
				[]string{fmt.Sprint(r.Hosts), ms(r.P50), ms(r.P90), ms(r.Max), verdict}, cmd)
		},
	}
	inventory.Flags().IntVar(&invHosts, "hosts", 10, "hosts to add")
	var agentWorkers int
	var window time.Duration
	agentCmd := &cobra.Command{
		Use:   "agent [--workers 4] [--window 30s]",
		Short: "T9: idle agent footprint: anonymous memory, RSS, CPU (needs root: builds a lab)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunAgent(cmd.Context(), bin, agentWorkers, window, a.stderr)
			if err != nil {
				return err
			}
			verdict := "meets T9 (RssAnon ≤ 25 MB, idle CPU ≤ 0.3 %)"
			if r.RssAnonMaxMiB*1.048576 > 25 || r.CPUPercent > 0.3 {
				verdict = "does not meet T9 (RssAnon ≤ 25 MB, idle CPU ≤ 0.3 %)"
			}
			fmt.Fprintf(a.stdout, "%d agents over %s: RssAnon mean %.1f MiB (max %.1f), RSS mean %.1f MiB, CPU %.3f %% each; binary %.1f MiB\n%s\n",
				r.Agents, r.Window, r.RssAnonMiB, r.RssAnonMaxMiB, r.RssMiB, r.CPUPercent, r.BinaryMiB, verdict)
			if !record {
				return nil
			}
			return recordRow(a, out, "T9 — agent footprint",
				"Idle `petrel agent` processes (the one `petrel` binary, no slim build) in a lab site, after 5 s settling, "+
					"sampled over the window: RssAnon and VmRSS from /proc/PID/status, CPU from utime+stime. The lab agent "+
					"re-reads /proc and /sys every 2 s (check_interval) and sends a full report every 5 min. "+
					"Target T9: RssAnon ≤ 25 MB, idle CPU ≤ 0.3 %.",
				[]string{"date (UTC)", "commit", "machine", "command", "agents", "RssAnon mean / max", "RSS mean", "CPU per agent", "binary", "verdict"},
				[]string{fmt.Sprint(r.Agents), fmt.Sprintf("%.1f / %.1f MiB", r.RssAnonMiB, r.RssAnonMaxMiB),
					fmt.Sprintf("%.1f MiB", r.RssMiB), fmt.Sprintf("%.3f %%", r.CPUPercent), fmt.Sprintf("%.1f MiB", r.BinaryMiB), verdict}, cmd)
		},
	}
	agentCmd.Flags().IntVar(&agentWorkers, "workers", 4, "workers in the lab site (plus 2 controllers)")
	agentCmd.Flags().DurationVar(&window, "window", 30*time.Second, "measurement window")
	var raises, clients int
	var atCentral bool
	var distinct int
	var dsn string
	alarms := &cobra.Command{
		Use:   "alarms [--raises 100000] [--clients 64] [--database DSN] [--central]",
		Short: "T6: durable alarm ingest through group commit (SQLite by default)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if raises < 1000 || clients < 1 {
				return usagef("--raises must be at least 1000 and --clients positive")
			}
			if atCentral {
				return benchIngest(cmd, a, out, record, dsn, raises, clients)
			}
			r, err := bench.RunAlarms(cmd.Context(), dsn, raises, distinct, clients)
			if err != nil {
				return err
			}
			verdict := "meets T6 (≥ 50,000 events/s)"
			if r.PerSecond < 50000 {
				verdict = "does not meet T6 (≥ 50,000 events/s)"
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
			fmt.Fprintf(a.stdout, "%s: %d raises of %d alarms from %d clients in %s: %.0f raises/s (p50 %s, p99 %s); baseline one tx per raise: %.0f/s (%.1fx)\n%s\n",
				r.Engine, r.Raises, r.Distinct, r.Clients, r.Elapsed.Round(time.Millisecond), r.PerSecond, ms(r.P50), ms(r.P99),
				r.BaselinePerSec, r.PerSecond/r.BaselinePerSec, verdict)
			if !record {
				return nil
			}
			return recordRow(a, out, "T6 — alarm ingest",
				"Distinct alarms raised through `faultmgr.Manager` (catalogue check, reason fill, unique-key lookup, insert, set "+
					"event) by concurrent clients; each raise returns only after its group commit (≤ 1,000 changes or 10 ms "+
					"per transaction; SQLite WAL + synchronous=FULL, PostgreSQL synchronous_commit=on). Baseline in the same "+
					"run: one transaction per raise. Target T6: ≥ 50,000 events/s.",
				[]string{"date (UTC)", "commit", "machine", "command", "engine", "raises / clients", "events/s", "p50 / p99 raise", "baseline 1 tx/raise", "verdict"},
				[]string{r.Engine, fmt.Sprintf("%d / %d%s", r.Raises, r.Clients, repeats(r.Raises, r.Distinct)), fmt.Sprintf("%.0f", r.PerSecond),
					ms(r.P50) + " / " + ms(r.P99), fmt.Sprintf("%.0f/s (%.1fx)", r.BaselinePerSec, r.PerSecond/r.BaselinePerSec), verdict}, cmd)
		},
	}
	alarms.Flags().IntVar(&raises, "raises", 100000, "alarms to raise")
	alarms.Flags().IntVar(&distinct, "distinct", 0, "different alarms among the raises (default all: every raise a new alarm); fewer: a storm of repeats")
	alarms.Flags().BoolVar(&atCentral, "central", false, "central's ingest of sites' records instead (--clients = sites)")
	alarms.Flags().IntVar(&clients, "clients", 64, "concurrent raisers")
	alarms.Flags().StringVar(&dsn, "database", "", "PostgreSQL DSN (default: SQLite in a temp dir)")
	var cycles, lossPct int
	var lossWindow time.Duration
	recovery := &cobra.Command{
		Use:   "recovery [--cycles 10] [--loss 5] [--window 30s]",
		Short: "T4a and recovery time: a lab worker's power loss until failed and until available; false suspicions under loss (needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cycles < 1 || lossPct < 0 || lossPct > 100 {
				return usagef("--cycles must be positive and --loss 0..100")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunRecovery(cmd.Context(), bin, cycles, lossPct, lossWindow, a.stderr)
			if err != nil {
				return err
			}
			verdict := "meets T4a (p50 ≤ 1.5 s)"
			if r.FailedP50 > 1500*time.Millisecond {
				verdict = "does not meet T4a (p50 ≤ 1.5 s)"
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			fmt.Fprintf(a.stdout, "%d power losses: failed p50 %s p99 %s; available again p50 %s p99 %s; %d%% loss on mgmt for %s: %d availability changes, %d reboots\n%s\n",
				r.Cycles, ms(r.FailedP50), ms(r.FailedP99), ms(r.BackP50), ms(r.BackP99), r.LossPercent, r.LossWindow, r.FalseDegrades, r.Reboots, verdict)
			if !record {
				return nil
			}
			return recordRow(a, out, "T4a — host power loss → BMC-confirmed failed, and recovery",
				"A lab worker (multi-server site, host maintenance on with the brief's defaults: 100 ms pulses, lost after 10) "+
					"loses power (`lab fault power-off`, unlocked): time until the site shows it `failed` (heartbeat lost on both "+
					"networks, then the BMC read over Redfish/IPMI says off) and until it is `available` again (powered on through "+
					"the BMC, booted, heard). Polled every 20 ms through the site API. Then loss on its mgmt network for a window: "+
					"availability changes and reboots counted. Target T4a: p50 ≤ 1.5 s (vSphere HA 15 s).",
				[]string{"date (UTC)", "commit", "machine", "command", "cycles", "failed p50 / p99", "available p50 / p99", "loss on mgmt", "false changes / reboots", "verdict"},
				[]string{fmt.Sprint(r.Cycles), ms(r.FailedP50) + " / " + ms(r.FailedP99), ms(r.BackP50) + " / " + ms(r.BackP99),
					fmt.Sprintf("%d%% for %s", r.LossPercent, r.LossWindow), fmt.Sprintf("%d / %d", r.FalseDegrades, r.Reboots), verdict}, cmd)
		},
	}
	recovery.Flags().IntVar(&cycles, "cycles", 10, "power losses")
	recovery.Flags().IntVar(&lossPct, "loss", 5, "packet loss on the worker's mgmt network afterwards, percent")
	recovery.Flags().DurationVar(&lossWindow, "window", 30*time.Second, "how long the loss lasts")
	var foCycles int
	var foKinds string
	failover := &cobra.Command{
		Use:   "failover [--cycles 10] [--kinds power-off,hang,crash]",
		Short: "T4b: the host of an active demo service member fails; time until another member is active and answers (needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kinds := splitList(foKinds)
			for _, k := range kinds {
				if k != "power-off" && k != "hang" && k != "crash" {
					return usagef("--kinds: %q is not power-off, hang or crash", k)
				}
			}
			if foCycles < 1 || len(kinds) == 0 {
				return usagef("--cycles must be positive and --kinds name at least one fault")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunFailover(cmd.Context(), bin, foCycles, kinds, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			verdict := "meets T4b (p50 ≤ 3 s, p99 ≤ 6 s)"
			var figures []string
			for _, k := range []string{"power-off", "hang", "crash"} {
				if len(r.ByKind[k]) == 0 {
					figures = append(figures, "-")
					continue
				}
				figures = append(figures, ms(r.P50(k))+" / "+ms(r.P99(k)))
				fmt.Fprintf(a.stdout, "%s × %d: failed over p50 %s p99 %s\n", k, len(r.ByKind[k]), ms(r.P50(k)), ms(r.P99(k)))
				if k == "power-off" && (r.P50(k) > 3*time.Second || r.P99(k) > 6*time.Second) {
					verdict = "does not meet T4b (p50 ≤ 3 s, p99 ≤ 6 s)"
				}
			}
			fmt.Fprintf(a.stdout, "observer violations: %d\n%s\n", r.Violations, verdict)
			if !record {
				return nil
			}
			return recordRow(a, out, "T4b — host power loss → its N+M service active elsewhere",
				"The lab's `demo` service group (2+1 over controller-1, worker-0, worker-1 of a multi-server site; health "+
					"checked over HTTP every 200 ms) runs; the host of an active member fails (`lab fault power-off`, `hang` or "+
					"`crash`). The time is from the fault until the independent observer (`lab/observer`, every member polled "+
					"every 50 ms from its host's namespace) sees two members answering as active, the victim not among them. "+
					"Power loss and hang go through host management (heartbeat lost ≈ 1 s, BMC read back off or fence), then the "+
					"lease revoke, the epoch commit in etcd and the standby's activation; a crash is seen by the host's new boot ID. "+
					"After each fault the group must be ok (a standby again) before the next. Target T4b: power loss p50 ≤ 3 s, "+
					"p99 ≤ 6 s (Pacemaker ≥ 7 s + fencing).",
				[]string{"date (UTC)", "commit", "machine", "command", "cycles per kind", "power-off p50 / p99", "hang p50 / p99",
					"crash p50 / p99", "violations", "verdict"},
				append(append([]string{fmt.Sprint(r.Cycles)}, figures...), fmt.Sprint(r.Violations), verdict), cmd)
		},
	}
	failover.Flags().IntVar(&foCycles, "cycles", 10, "faults of each kind")
	failover.Flags().StringVar(&foKinds, "kinds", "power-off,hang,crash", "faults to inject, comma-separated")
	var pairCycles int
	var pairKinds, pairShape string
	pair := &cobra.Command{
		Use:   "pair [--shape duplex|multi-server] [--cycles 10] [--kinds swact,power-off,hang]",
		Short: "T5: a site's controller pair swacts, or its active controller fails; time until the other serves (needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kinds := splitList(pairKinds)
			for _, k := range kinds {
				if k != "swact" && k != "power-off" && k != "hang" {
					return usagef("--kinds: %q is not swact, power-off or hang", k)
				}
			}
			if pairShape != "duplex" && pairShape != "multi-server" {
				return usagef("--shape: %q is not duplex or multi-server", pairShape)
			}
			if pairCycles < 1 || len(kinds) == 0 {
				return usagef("--cycles must be positive and --kinds name at least one")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunPair(cmd.Context(), bin, pairShape, pairCycles, kinds, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			verdict := []string{}
			var figures []string
			for _, k := range []string{"swact", "power-off", "hang"} {
				if len(r.ByKind[k]) == 0 {
					figures = append(figures, "-", "-")
					continue
				}
				out := r.Outage[k]
				figures = append(figures, ms(r.P50(k))+" / "+ms(r.P99(k)), ms(bench.Percentile(out, 50))+" / "+ms(bench.Percentile(out, 99)))
				fmt.Fprintf(a.stdout, "%s × %d: the other controller active p50 %s p99 %s; write outage p50 %s p99 %s\n", k, len(r.ByKind[k]),
					ms(r.P50(k)), ms(r.P99(k)), ms(bench.Percentile(out, 50)), ms(bench.Percentile(out, 99)))
				switch {
				case k == "swact" && r.P99(k) > time.Second:
					verdict = append(verdict, "swact p99 > 1 s")
				case k == "power-off" && r.P99(k) > 3*time.Second:
					verdict = append(verdict, "failover p99 > 3 s")
				}
			}
			if r.Violations > 0 || r.Lost > 0 {
				verdict = append(verdict, "split brain or lost writes")
			}
			v := "meets T5 (swact p99 ≤ 1 s, failover p99 ≤ 3 s, 0 split brain)"
			if len(verdict) > 0 {
				v = "does not meet T5: " + strings.Join(verdict, ", ")
			}
			fmt.Fprintf(a.stdout, "writes: %d acknowledged, %d lost; observer violations (two actives, shared address): %d\n%s\n", r.Acked, r.Lost, r.Violations, v)
			if !record {
				return nil
			}
			return recordRow(a, out, "T5 — controller pair: swact, failover on power loss, hang",
				"A one-site lab (`--shape duplex`: two controllers, the central witness, BMCs; `multi-server`: two controllers "+
					"and a worker, etcd's three members) runs its controllers as a 1+1 pair (docs/ha.md). The active controller "+
					"is swacted (`POST /v1/hosts/{id}/action swact`), powered off or hung (`lab fault`). The time is from the "+
					"request or fault until the independent observer (each controller's role on port 7301, polled every 50 ms, "+
					"and who holds the floating API address) sees the other controller active; the site controller is serving "+
					"by then. A writer creates a record every 50 ms through the floating address; its longest pause per cycle is "+
					"the write outage, and afterwards every acknowledged write must be there. After each cycle the pair must be "+
					"ok again (the old active back as synchronous standby). Target T5: swact p99 ≤ 1 s, failover p99 ≤ 3 s, "+
					"0 split brain (keepalived 3–4 s; StarlingX SM 800 ms detect + swact).",
				[]string{"date (UTC)", "commit", "machine", "command", "shape", "cycles per kind", "swact p50 / p99", "swact write outage p50 / p99",
					"power-off p50 / p99", "power-off write outage p50 / p99", "hang p50 / p99", "hang write outage p50 / p99",
					"acked / lost", "violations", "verdict"},
				append(append([]string{r.Shape, fmt.Sprint(r.Cycles)}, figures...), fmt.Sprintf("%d / %d", r.Acked, r.Lost), fmt.Sprint(r.Violations), v), cmd)
		},
	}
	pair.Flags().IntVar(&pairCycles, "cycles", 10, "cycles of each kind")
	pair.Flags().StringVar(&pairKinds, "kinds", "swact,power-off,hang", "what to do to the active controller, comma-separated")
	pair.Flags().StringVar(&pairShape, "shape", "duplex", "duplex or multi-server")
	var syncSites, syncChanges int
	syncCmd := &cobra.Command{
		Use:   "sync [--sites 3] [--changes 20]",
		Short: "Shared-resource sync: a flavor created at central until every managed site holds it; a partitioned site's catch-up (needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if syncSites < 1 || syncChanges < 1 {
				return usagef("--sites and --changes must be positive")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunSync(cmd.Context(), bin, syncSites, syncChanges, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			p99 := bench.Percentile(r.Fleet, 99)
			v := "meets the issue's target (fleet p99 ≤ 10 s)"
			if p99 > 10*time.Second {
				v = "does not meet the target: fleet p99 > 10 s"
			}
			fmt.Fprintf(a.stdout, "%d changes × %d sites: every site holds it p50 %s p99 %s; one site p50 %s p99 %s; a partitioned site caught up %d changes %s after the heal\n%s\n",
				r.Changes, r.Sites, ms(bench.Percentile(r.Fleet, 50)), ms(p99), ms(bench.Percentile(r.PerSite, 50)), ms(bench.Percentile(r.PerSite, 99)),
				r.Missed, ms(r.CatchUp), v)
			if !record {
				return nil
			}
			return recordRow(a, out, "Sync — a flavor change reaching every managed site",
				"A lab of simplex sites, all managed. A flavor is created at central (`POST /v1/flavors`); the time is from "+
					"central's 201 until each site lists it, seen through central's relay with gophercloud (`GET "+
					"/v1/subclouds/NAME/api/compute/v2.1/flavors/{id}`, every 25 ms per site); the fleet time is the last site's. "+
					"Then one site's WAN link is partitioned, 5 flavors are created, the link heals, and the time until that site "+
					"holds all 5 is its catch-up. Target (issue 11): fleet p99 ≤ 10 s (at 10,000 sites with the fleet simulator "+
					"of the scale issue; this is the lab figure).",
				[]string{"date (UTC)", "commit", "machine", "command", "sites", "changes", "fleet p50 / p99", "per site p50 / p99", "catch-up after heal", "verdict"},
				[]string{fmt.Sprint(r.Sites), fmt.Sprint(r.Changes), ms(bench.Percentile(r.Fleet, 50)) + " / " + ms(p99),
					ms(bench.Percentile(r.PerSite, 50)) + " / " + ms(bench.Percentile(r.PerSite, 99)),
					fmt.Sprintf("%s (%d changes)", ms(r.CatchUp), r.Missed), v}, cmd)
		},
	}
	syncCmd.Flags().IntVar(&syncSites, "sites", 3, "managed simplex sites")
	syncCmd.Flags().IntVar(&syncChanges, "changes", 20, "flavors created at central, one after another")
	var fmSeeds, fmSteps int
	matrix := &cobra.Command{
		Use:   "faultmatrix [--seeds 10] [--steps 4]",
		Short: "T5: seeded fault sequences against a duplex controller pair; split brain and lost writes must be 0 (needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fmSeeds < 1 || fmSteps < 1 {
				return usagef("--seeds and --steps must be positive")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunMatrix(cmd.Context(), bin, fmSeeds, fmSteps, a.stderr)
			if err != nil {
				return err
			}
			v := "meets T5 (0 split brain, 0 lost writes)"
			if r.Violations > 0 || r.Lost > 0 {
				v = "does not meet T5: split brain or lost writes"
			}
			fmt.Fprintf(a.stdout, "%d seeds, %d steps in %s: %d writes acknowledged, %d lost, %d observer violations, %d steps without recovery\n%s\n",
				r.Seeds, r.Steps, r.Took.Round(time.Second), r.Acked, r.Lost, r.Violations, r.Stuck, v)
			if !record {
				return nil
			}
			return recordRow(a, out, "T5 — split brain over seeded fault sequences",
				"`lab/faultmatrix` (docs/ha.md, The fault matrix) against a duplex site's pair: seeds 1..N, each a sequence of "+
					"faults (power loss, hang, crash of either controller; links down per network or both; one-way loss; a "+
					"flapping link; BMC down; central down; central down with the active's power loss), each held 4 s, healed, "+
					"and the pair ok again before the next. The observer counts rounds with two actives or the floating address "+
					"on two hosts; the writer's acknowledged writes must all be in the database. Target: 0 and 0.",
				[]string{"date (UTC)", "commit", "machine", "command", "seeds", "steps", "took", "acked", "lost", "violations", "not recovered", "verdict"},
				[]string{fmt.Sprint(r.Seeds), fmt.Sprint(r.Steps), r.Took.Round(time.Second).String(), fmt.Sprint(r.Acked), fmt.Sprint(r.Lost),
					fmt.Sprint(r.Violations), fmt.Sprint(r.Stuck), v}, cmd)
		},
	}
	matrix.Flags().IntVar(&fmSeeds, "seeds", 10, "seeds to run (1..N)")
	matrix.Flags().IntVar(&fmSteps, "steps", 4, "faults per seed")
	var vms int
	servers := &cobra.Command{
		Use:   "servers [--count 6]",
		Short: "Compute: server create latency, time to active and to the guest's banner, guests per host (a simplex lab; needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if vms < 2 {
				return usagef("--count must be at least 2")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunServers(cmd.Context(), bin, vms, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			s := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
			fit := (r.HostMemMiB - r.ReservedMiB) / int64(r.FlavorMiB)
			fmt.Fprintf(a.stdout, "%d servers (m1.tiny, petrel-test, TCG): create p50 %s p99 %s (GET /v1/flavors p50 %s); first active %s (image copy); active p50 %s p99 %s; banner p50 %s p99 %s; %d/%d heartbeating at once, QEMU RSS %.0f MiB each; the scheduler fits %d of this flavor on the host\n",
				r.Count, ms(r.CreateP50), ms(r.CreateP99), ms(r.BaselineP50), s(r.FirstActive), s(r.ActiveP50), s(r.ActiveP99),
				s(r.BannerP50), s(r.BannerP99), r.Running, r.Count, r.RSSMiBMean, fit)
			if !record {
				return nil
			}
			return recordRow(a, out, "Compute — server create, boot time, guests per host",
				"A simplex lab site (one all-in-one host with its own libvirtd; QEMU TCG, no KVM). One server is created "+
					"and booted first (it copies the 64 MiB petrel-test image to the host), then the others all at once. "+
					"*create* is the POST /v1/servers round trip (validation, placement, record; the build is asynchronous), "+
					"against GET /v1/flavors in the same run; *active* is until the domain runs; *banner* until the guest "+
					"prints `=== IMAGE v1 BOOTED` on its console, read through the API. Then every guest's heartbeat is "+
					"checked over 5 s and QEMU's resident memory read from /proc.",
				[]string{"date (UTC)", "commit", "machine", "command", "servers", "create p50 / p99 (baseline GET)", "first active (image copy)",
					"active p50 / p99", "banner p50 / p99", "heartbeating", "QEMU RSS / guest", "fit by memory"},
				[]string{fmt.Sprint(r.Count), ms(r.CreateP50) + " / " + ms(r.CreateP99) + " (" + ms(r.BaselineP50) + ")", s(r.FirstActive),
					s(r.ActiveP50) + " / " + s(r.ActiveP99), s(r.BannerP50) + " / " + s(r.BannerP99),
					fmt.Sprintf("%d / %d", r.Running, r.Count), fmt.Sprintf("%.0f MiB", r.RSSMiBMean),
					fmt.Sprintf("%d × %d MiB in %d MiB − %d reserved", fit, r.FlavorMiB, r.HostMemMiB, r.ReservedMiB)}, cmd)
		},
	}
	servers.Flags().IntVar(&vms, "count", 6, "servers to boot")
	var hops, evac int
	migrate := &cobra.Command{
		Use:   "migrate [--hops 10] [--evacuate 3]",
		Short: "T7: live-migration downtime and time, idle and memory-dirtying guests, and a host evacuation (a duplex lab; needs root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hops < 1 || evac < 0 {
				return usagef("--hops must be positive and --evacuate not negative")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunMigrate(cmd.Context(), bin, hops, evac, a.stderr)
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			series := func(s bench.MigrationSeries) []string {
				return []string{ms(s.DowntimeP50) + " / " + ms(s.DowntimeP99), ms(s.JobP50) + " / " + ms(s.JobP99),
					ms(s.WallP50) + " / " + ms(s.WallP99), fmt.Sprint(s.Failed)}
			}
			fmt.Fprintf(a.stdout, "idle guest, %d hops: downtime p50/p99 %s, job %s, API call to done %s, failed %s\n", r.Idle.Hops,
				series(r.Idle)[0], series(r.Idle)[1], series(r.Idle)[2], series(r.Idle)[3])
			fmt.Fprintf(a.stdout, "busy guest, %d hops: downtime p50/p99 %s, job %s, API call to done %s, failed %s\n", r.Busy.Hops,
				series(r.Busy)[0], series(r.Busy)[1], series(r.Busy)[2], series(r.Busy)[3])
			fmt.Fprintf(a.stdout, "host lock evacuating %d servers: %s\n", r.Evacuated, ms(r.EvacuationWall))
			if !record {
				return nil
			}
			row := []string{fmt.Sprint(hops)}
			row = append(row, series(r.Idle)...)
			row = append(row, series(r.Busy)...)
			row = append(row, fmt.Sprintf("%d in %s", r.Evacuated, ms(r.EvacuationWall)))
			return recordRow(a, out, "T7 — live migration: downtime, job time, evacuation",
				"A duplex lab site (two all-in-one hosts, each its own libvirtd; QEMU TCG, no KVM). A 128 MiB guest is "+
					"live-migrated back and forth `--hops` times: peer to peer over TLS, a block migration of its qcow2 "+
					"overlay to the destination's cluster address. *idle* is petrel-test (a heartbeat a second); *busy* "+
					"is petrel-test-busy, which rewrites 32 MiB of its memory from /dev/urandom in a loop. *downtime* and "+
					"*job* are QEMU's figures from the completed job; *API call to done* is POST .../action until the "+
					"record's task clears (placement, the destination's overlay, the job, the source's clean-up). Then "+
					"`--evacuate` servers on one host and `host lock` (it live-migrates them, two at a time, before locking).",
				[]string{"date (UTC)", "commit", "machine", "command", "hops", "idle downtime p50 / p99", "idle job p50 / p99",
					"idle API→done p50 / p99", "idle failed", "busy downtime p50 / p99", "busy job p50 / p99",
					"busy API→done p50 / p99", "busy failed", "evacuation"}, row, cmd)
		},
	}
	migrate.Flags().IntVar(&hops, "hops", 10, "migrations per guest")
	migrate.Flags().IntVar(&evac, "evacuate", 3, "servers on the host then locked")
	c := group("bench", "Run benchmarks and record them in docs/benchmarks.md", api, inventory, agentCmd, alarms, recovery, failover, pair, matrix, servers, migrate, syncCmd,
		a.benchFleetCmd(&out, &record), a.benchSitesimCmd(), a.benchPatchCmd(&out, &record), a.benchStrategyCmd(&out, &record))
	c.PersistentFlags().StringVar(&out, "out", "docs/benchmarks.md", "results file")
	c.PersistentFlags().BoolVar(&record, "record", true, "append the result to --out")
	return c
}

// commandLine reconstructs the command as run: its path and the flags set.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name != "out" && f.Name != "record" {
			parts = append(parts, "--"+f.Name+"="+f.Value.String())
		}
	})
	return strings.Join(parts, " ")
}

// recordRow appends a row (date, commit, machine, command, figures...) to a
// benchmark's table.
func recordRow(a *app, file, heading, intro string, header, figures []string, cmd *cobra.Command) error {
	row := append([]string{time.Now().UTC().Format("2006-01-02 15:04"), bench.Commit(), bench.Machine(),
		"`" + commandLine(cmd) + "`"}, figures...)
	if err := bench.Record(file, heading, intro, header, row); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "recorded in %s\n", file)
	return nil
}

// benchIngest runs and records T6 at central: sites' records applied.
func benchIngest(cmd *cobra.Command, a *app, out string, record bool, dsn string, n, sites int) error {
	r, err := bench.RunCentralIngest(cmd.Context(), dsn, n, sites)
	if err != nil {
		return err
	}
	verdict := "meets T6 (≥ 50,000 events/s)"
	if r.PerSecond < 50000 {
		verdict = "does not meet T6 (≥ 50,000 events/s)"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Fprintf(a.stdout, "%s: %d records from %d sites in %s: %.0f events/s (batch of 500 applied: p50 %s, p99 %s); heap %.0f MiB\n%s\n",
		r.Engine, r.Records, r.Sites, r.Elapsed.Round(time.Millisecond), r.PerSecond, ms(r.P50), ms(r.P99), r.HeapMiB, verdict)
	if !record {
		return nil
	}
	return recordRow(a, out, "T6 — alarm ingest at central",
		"Sites' records (alarm set events, 500 a batch as links ship them) applied by central's combining ingest "+
			"(`faultdb.Ingest`: every batch queued when a transaction starts goes into it; per-site cursor, fleet index, "+
			"events) from concurrent sites; durable commits. Target T6: ≥ 50,000 events/s.",
		[]string{"date (UTC)", "commit", "machine", "command", "engine", "records / sites", "events/s", "p50 / p99 batch", "heap", "verdict"},
		[]string{r.Engine, fmt.Sprintf("%d / %d", r.Records, r.Sites), fmt.Sprintf("%.0f", r.PerSecond),
			ms(r.P50) + " / " + ms(r.P99), fmt.Sprintf("%.0f MiB", r.HeapMiB), verdict}, cmd)
}

// repeats notes a deduplicated run in the raises column.
func repeats(raises, distinct int) string {
	if distinct >= raises {
		return ""
	}
	return fmt.Sprintf(" (of %d alarms: deduplicated storm)", distinct)
}
