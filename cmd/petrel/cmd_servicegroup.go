package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/servicemgr"
)

// servicegroupCmd is `petrel servicegroup`: service groups at a site.
func (a *app) servicegroupCmd() *cobra.Command {
	var (
		file, model, hosts, start, stop, activate, deactivate string
		healthType, healthTarget, healthCommand, floating     string
		network, dependsOn                                    string
		interval, timeout, failures                           int
	)
	create := &cobra.Command{
		Use:   "create NAME (--model N+M --hosts H1,H2,... --start 'ARGV' [...] | -f FILE)",
		Short: "Create a service group (admin): members on eligible hosts kept N active + M standby",
		Long: `Create a service group. Either give a YAML or JSON file with the group (-f; the
same shape as the API's, and as one item of the site configuration's service_groups
file), or flags. Actions and health commands are argv lists; with flags they are
split on spaces (use -f for arguments that contain spaces). Placeholders: {host}
{group} {mgmt} {cluster} {state_dir} {floating}; "petrel" as the program runs the
host's own petrel.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec servicemgr.Spec
			if file != "" {
				if model != "" || hosts != "" || start != "" || stop != "" || activate != "" || deactivate != "" ||
					healthTarget != "" || healthCommand != "" || floating != "" || network != "" || dependsOn != "" {
					return usageError{fmt.Errorf("-f FILE gives the whole group: no other flag goes with it")}
				}
				b, err := os.ReadFile(file)
				if err != nil {
					return usageError{err}
				}
				if err := yaml.UnmarshalStrict(b, &spec); err != nil {
					return usageError{fmt.Errorf("%s: %w", file, err)}
				}
				if spec.Name != "" && spec.Name != args[0] {
					return usageError{fmt.Errorf("%s names the group %q, not %q", file, spec.Name, args[0])}
				}
			} else {
				spec = servicemgr.Spec{Model: model, Hosts: splitList(hosts), DependsOn: splitList(dependsOn),
					Actions: servicemgr.Actions{Start: strings.Fields(start), Stop: strings.Fields(stop),
						Activate: strings.Fields(activate), Deactivate: strings.Fields(deactivate)},
					Health: servicemgr.HealthCheck{Type: healthType, Target: healthTarget, Command: strings.Fields(healthCommand),
						IntervalMS: interval, TimeoutMS: timeout, Failures: failures},
					Floating: splitList(floating), Network: network}
			}
			spec.Name = args[0]
			return a.call(cmd, http.MethodPost, "/v1/service-groups", spec)
		},
	}
	f := create.Flags()
	f.StringVarP(&file, "file", "f", "", "the group as YAML or JSON")
	f.StringVar(&model, "model", "", "redundancy model: N+M (1+1, 2+1, ...) or N (active on every eligible host)")
	f.StringVar(&hosts, "hosts", "", "eligible hosts, comma-separated")
	f.StringVar(&dependsOn, "depends-on", "", "groups that must have an active member first, comma-separated")
	f.StringVar(&start, "start", "", "the member's process (argv, split on spaces)")
	f.StringVar(&stop, "stop", "", "how to stop it (default: SIGTERM, then SIGKILL after 5 s)")
	f.StringVar(&activate, "activate", "", "run when a member becomes active")
	f.StringVar(&deactivate, "deactivate", "", "run when a member stops being active")
	f.StringVar(&healthType, "health", "process", "health check: process, tcp, http or command")
	f.StringVar(&healthTarget, "health-target", "", "host:port (tcp) or URL (http)")
	f.StringVar(&healthCommand, "health-command", "", "argv of a command check")
	f.IntVar(&interval, "health-interval-ms", 0, "between checks (default 500)")
	f.IntVar(&timeout, "health-timeout-ms", 0, "of one check (default 1000)")
	f.IntVar(&failures, "health-failures", 0, "failed checks in a row that fail a member (default 3)")
	f.StringVar(&floating, "floating", "", "floating addresses ADDR/PREFIX, one per active slot, comma-separated")
	f.StringVar(&network, "network", "", "where floating addresses go: mgmt or cluster")
	list := &cobra.Command{
		Use: "list", Short: "List service groups with their status", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/service-groups", nil, 0, "name", "model", "status", "epoch", "members", "reason")
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a service group and its members", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/service-groups/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a service group (admin): its members are stopped", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/service-groups/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted service group %s.\n", args[0])
			return nil
		},
	}
	return group("servicegroup", "Service groups: services kept running through host failures (N+M, N, 1+1)", create, list, show, del)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
