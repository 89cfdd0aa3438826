package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// strategyCmd is `petrel strategy`: plan, show, apply, abort and delete a
// site's orchestration strategy (with --site, or against a site), or,
// against central, the fleet strategy (docs/patching.md). One strategy
// per type: the verbs take no ID.
func (a *app) strategyCmd() *cobra.Command {
	var typ string
	path := func() string { return "/v1/strategies/" + typ }
	var opts strategy.Options
	var fleet bool
	create := &cobra.Command{
		Use: "create [--fleet --patch ID [--group G] [--max-parallel N] [--stop-on-failure]]",
		Short: "Plan a strategy from the site's hosts and applied patches, or with --fleet (against central) one across the " +
			"subclouds (shown as stages and steps; nothing runs until apply)",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			if !fleet {
				for _, n := range []string{"patch", "group", "max-parallel", "stop-on-failure"} {
					if fl.Changed(n) {
						return usagef("--%s is a fleet strategy's option: add --fleet (against central, without --site)", n)
					}
				}
			} else {
				if a.site != "" {
					return usagef("--fleet plans central's fleet strategy: drop --site")
				}
				if len(opts.Patches) == 0 {
					return usagef("--fleet needs the patches to install: --patch ID (uploaded to central with petrel patch upload FILE)")
				}
			}
			return a.strategyCall(cmd, http.MethodPost, path(), opts)
		},
	}
	f := create.Flags()
	f.BoolVar(&fleet, "fleet", false, "plan central's fleet strategy: every managed subcloud (or --group's), --max-parallel at a time, each running its own site strategy with the options below")
	f.StringArrayVar(&opts.Patches, "patch", nil, "with --fleet: a patch uploaded to central to install at every site (repeatable)")
	f.StringVar(&opts.Group, "group", "", "with --fleet: only this subcloud group's subclouds")
	f.IntVar(&opts.MaxParallel, "max-parallel", 0, "with --fleet: sites patched at once, 1..500 (default the group's max_parallel_subclouds; 1 for a serial group)")
	f.BoolVar(&opts.StopOnFailure, "stop-on-failure", false, "with --fleet: start no new site once one has failed")
	f.StringVar((*string)(&opts.ControllerApplyType), "controller-apply-type", "serial", "controllers: serial (one at a time, the active one last after a swact) or ignore")
	f.StringVar((*string)(&opts.WorkerApplyType), "worker-apply-type", "serial", "workers: serial, parallel or ignore")
	f.IntVar(&opts.MaxParallelWorkerHosts, "max-parallel-worker-hosts", strategy.MinParallelWorkerHosts, "most workers taken at once with --worker-apply-type parallel (2..10)")
	f.StringVar((*string)(&opts.InstanceAction), "instance-action", "migrate", "servers of a host to be locked: migrate (live, by the lock) or stop-start")
	f.StringVar((*string)(&opts.AlarmRestrictions), "alarm-restrictions", "strict", "strict: any management-affecting alarm refuses the apply; relaxed: only new ones stop it")
	var watch time.Duration
	show := &cobra.Command{
		Use: "show", Short: "Show the strategy: its state, options, stages and steps (a fleet strategy: each site's progress)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch <= 0 {
				return a.strategyCall(cmd, http.MethodGet, path(), nil)
			}
			return a.strategyWatch(cmd, path(), watch)
		},
	}
	show.Flags().DurationVar(&watch, "watch", 0, "print the strategy again every interval while it changes, until it is applied, apply-failed or aborted")
	apply := &cobra.Command{
		Use: "apply", Short: "Apply the strategy (or resume it after apply-failed); refused, naming them, by management-affecting alarms under strict restrictions",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.strategyCall(cmd, http.MethodPost, path()+"/actions", map[string]string{"action": "apply"})
		},
	}
	abort := &cobra.Command{
		Use: "abort", Short: "Abort the strategy: no new step starts; the hosts it locked are unlocked, the servers it stopped started",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.strategyCall(cmd, http.MethodPost, path()+"/actions", map[string]string{"action": "abort"})
		},
	}
	del := &cobra.Command{
		Use: "delete", Short: "Delete the strategy (not while it is applying or aborting)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.call(cmd, http.MethodDelete, path(), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted the %s strategy.\n", typ)
			return nil
		},
	}
	g := group("strategy", "Orchestration strategies: patch every host of a site without taking servers down, or every site of the fleet from central (docs/patching.md)",
		create, show, apply, abort, del)
	g.PersistentFlags().StringVar(&typ, "type", string(strategy.Patch), "strategy type: patch")
	return g
}

// strategyCall calls the strategy API and prints the strategy: as the
// API's JSON or YAML, or in the table format as a summary and one row per
// step.
func (a *app) strategyCall(cmd *cobra.Command, method, path string, body any) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.Do(cmd.Context(), method, path, nil, body, &raw); err != nil {
		return err
	}
	return a.printStrategy(raw)
}

// strategyWatch prints the strategy each time it changes until it ends.
func (a *app) strategyWatch(cmd *cobra.Command, path string, every time.Duration) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var rev uint64
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var raw []byte
		if err := c.Do(cmd.Context(), http.MethodGet, path, nil, nil, &raw); err != nil {
			return err
		}
		var s strategy.Strategy
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		if s.Rev != rev {
			rev = s.Rev
			if err := a.printStrategy(raw); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout)
		}
		if s.State.Terminal() || s.State == strategy.ApplyFailed || s.State == strategy.ReadyToApply {
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-t.C:
		}
	}
}

// printStrategy prints a strategy as the API's JSON or YAML, or in the
// table format as a summary and one row per step (a fleet strategy: per
// site, with its progress).
func (a *app) printStrategy(raw []byte) error {
	if a.output != "table" {
		return a.printRaw(raw)
	}
	var s strategy.Strategy
	if err := json.Unmarshal(raw, &s); err != nil {
		return a.printRaw(raw)
	}
	if s.Scope == strategy.ScopeFleet {
		return a.printFleetStrategy(s)
	}
	o := s.Options
	fmt.Fprintf(a.stdout, "Strategy %s (%s): %s\n", s.Type, s.Scope, s.State)
	fmt.Fprintf(a.stdout, "Patches: %s (reboot required: %t)\n", strings.Join(s.Patches, ", "), s.RebootRequired)
	fmt.Fprintf(a.stdout, "Options: controller-apply-type %s, worker-apply-type %s, max-parallel-worker-hosts %d, instance-action %s, alarm-restrictions %s\n",
		o.ControllerApplyType, o.WorkerApplyType, o.MaxParallelWorkerHosts, o.InstanceAction, o.AlarmRestrictions)
	if s.Reason != "" {
		fmt.Fprintf(a.stdout, "Reason: %s\n", s.Reason)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tNAME\tSTEP\tACTION\tTARGET\tSTATE\tREASON")
	for i, st := range s.Stages {
		for j, step := range st.Steps {
			name := st.Name + " (" + string(st.State) + ")"
			stage := fmt.Sprint(i + 1)
			if j > 0 {
				name, stage = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", stage, name, j+1, step.Action, dash(step.Target), step.State, dash(step.Reason))
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printFleetStrategy prints central's fleet strategy: one row per site.
func (a *app) printFleetStrategy(s strategy.Strategy) error {
	o := s.Options
	fmt.Fprintf(a.stdout, "Strategy %s (%s): %s\n", s.Type, s.Scope, s.State)
	fmt.Fprintf(a.stdout, "Patches: %s (reboot required: %t)\n", strings.Join(s.Patches, ", "), s.RebootRequired)
	fmt.Fprintf(a.stdout, "Options: group %s, max-parallel %d, stop-on-failure %t; at each site: controller-apply-type %s, worker-apply-type %s, max-parallel-worker-hosts %d, instance-action %s, alarm-restrictions %s\n",
		dash(o.Group), o.MaxParallel, o.StopOnFailure, o.ControllerApplyType, o.WorkerApplyType, o.MaxParallelWorkerHosts, o.InstanceAction, o.AlarmRestrictions)
	if s.Reason != "" {
		fmt.Fprintf(a.stdout, "Reason: %s\n", s.Reason)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tSITE\tSTATE\tPHASE\tSITE STRATEGY\tSTEPS\tCURRENT\tREASON")
	for i, st := range s.Stages {
		for j, step := range st.Steps {
			stage := fmt.Sprintf("%d (%s)", i+1, st.State)
			if j > 0 {
				stage = ""
			}
			phase, state, steps, current := "-", "-", "-", "-"
			if p := step.Site; p != nil {
				phase, state = dash(string(p.Phase)), dash(string(p.State))
				if p.StepsTotal > 0 {
					steps = fmt.Sprintf("%d/%d", p.StepsDone, p.StepsTotal)
				}
				if p.Action != "" {
					current = string(p.Action)
					if len(p.Hosts) > 0 {
						current += " " + strings.Join(p.Hosts, ",")
					}
				}
				if p.OfflineSince != nil && step.State == strategy.StepApplying {
					current = "site unreachable since " + p.OfflineSince.Format(time.RFC3339)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", stage, step.Target, step.State, phase, state, steps, current, dash(step.Reason))
		}
	}
	return tw.Flush()
}
