package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// strategyCmd is `petrel strategy`: plan, show, apply, abort and delete a
// site's orchestration strategy (docs/patching.md). One strategy per type:
// the verbs take no ID.
func (a *app) strategyCmd() *cobra.Command {
	var typ string
	path := func() string { return "/v1/strategies/" + typ }
	var opts strategy.Options
	create := &cobra.Command{
		Use: "create", Short: "Plan a strategy from the site's hosts and applied patches (shown as stages and steps; nothing runs until apply)",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.strategyCall(cmd, http.MethodPost, path(), opts)
		},
	}
	f := create.Flags()
	f.StringVar((*string)(&opts.ControllerApplyType), "controller-apply-type", "serial", "controllers: serial (one at a time, the active one last after a swact) or ignore")
	f.StringVar((*string)(&opts.WorkerApplyType), "worker-apply-type", "serial", "workers: serial, parallel or ignore")
	f.IntVar(&opts.MaxParallelWorkerHosts, "max-parallel-worker-hosts", strategy.MinParallelWorkerHosts, "most workers taken at once with --worker-apply-type parallel (2..10)")
	f.StringVar((*string)(&opts.InstanceAction), "instance-action", "migrate", "servers of a host to be locked: migrate (live, by the lock) or stop-start")
	f.StringVar((*string)(&opts.AlarmRestrictions), "alarm-restrictions", "strict", "strict: any management-affecting alarm refuses the apply; relaxed: only new ones stop it")
	show := &cobra.Command{
		Use: "show", Short: "Show the strategy: its state, options, stages and steps", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.strategyCall(cmd, http.MethodGet, path(), nil)
		},
	}
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
	g := group("strategy", "Orchestration strategies: patch every host of a site without taking servers down (docs/patching.md)",
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
	if a.output != "table" {
		return a.printRaw(raw)
	}
	var s strategy.Strategy
	if err := json.Unmarshal(raw, &s); err != nil {
		return a.printRaw(raw)
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
