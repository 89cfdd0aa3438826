package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/inventory"
)

// readValuesFile reads a bootstrap values file; central validates it.
func readValuesFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("bootstrap values: %w", err)
	}
	if fi.Size() > central.MaxBootstrapValues {
		return "", fmt.Errorf("bootstrap values %s: larger than %d bytes", path, central.MaxBootstrapValues)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("bootstrap values: %w", err)
	}
	return string(b), nil
}

// subcloudLifecycleCmds are the subcloud verbs that change the registry
// (at central, admin).
func (a *app) subcloudLifecycleCmds() []*cobra.Command {
	var req central.CreateSubcloudRequest
	var valuesFile, shape string
	add := &cobra.Command{
		Use:   "add NAME --bootstrap-address ADDR --bootstrap-values FILE [--group G] [--shape S] [--description D] [--location L]",
		Short: "Register a subcloud to deploy: its bootstrap address and values (a YAML file, checked by central)",
		Long: "Register a subcloud that Petrel deploys with Ansible. The values file is YAML, checked against an\n" +
			"allow-list (docs/central.md): unknown keys and ansible_* keys are refused. --shape may be left out when\n" +
			"the values give system_mode. The subcloud is offline and unmanaged until it dials home.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			vals, err := readValuesFile(valuesFile)
			if err != nil {
				return err
			}
			body := req
			body.Name, body.BootstrapValues, body.Shape = args[0], vals, inventory.Shape(shape)
			return a.call(cmd, http.MethodPost, "/v1/subclouds", body)
		},
	}
	add.Flags().StringVar(&req.BootstrapAddress, "bootstrap-address", "", "controller-0's OAM address, where Ansible reaches it")
	add.Flags().StringVar(&valuesFile, "bootstrap-values", "", "the bootstrap values file (YAML)")
	add.Flags().StringVar(&req.Group, "group", "", "its subcloud group (default Default)")
	add.Flags().StringVar(&shape, "shape", "", "simplex, duplex or multi-server (default: the values' system_mode)")
	add.Flags().StringVar(&req.Description, "description", "", "what the site is (default: the values' description)")
	add.Flags().StringVar(&req.Location, "location", "", "where the site is (default: the values' location)")
	_ = add.MarkFlagRequired("bootstrap-address")
	_ = add.MarkFlagRequired("bootstrap-values")

	var desc, loc, grp, addr, updValues string
	update := &cobra.Command{
		Use:   "update NAME [--description D] [--location L] [--group G] [--bootstrap-address ADDR] [--bootstrap-values FILE]",
		Short: "Change a subcloud's description, location, group or bootstrap data",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]string{}
			for flag, v := range map[string]string{"description": desc, "location": loc, "group": grp, "bootstrap-address": addr} {
				if cmd.Flags().Changed(flag) {
					body[jsonKey(flag)] = v
				}
			}
			if cmd.Flags().Changed("bootstrap-values") {
				vals, err := readValuesFile(updValues)
				if err != nil {
					return err
				}
				body["bootstrap_values"] = vals
			}
			if len(body) == 0 {
				return usagef("give --description, --location, --group, --bootstrap-address or --bootstrap-values")
			}
			return a.call(cmd, http.MethodPatch, "/v1/subclouds/"+url.PathEscape(args[0]), body)
		},
	}
	update.Flags().StringVar(&desc, "description", "", "what the site is")
	update.Flags().StringVar(&loc, "location", "", "where the site is")
	update.Flags().StringVar(&grp, "group", "", "move it to this subcloud group")
	update.Flags().StringVar(&addr, "bootstrap-address", "", "controller-0's OAM address")
	update.Flags().StringVar(&updValues, "bootstrap-values", "", "a new bootstrap values file (YAML)")

	cmds := []*cobra.Command{add, update}
	for _, act := range []struct{ verb, short string }{
		{"manage", "Manage a subcloud: central syncs and orchestrates it (it must be online, its deploy complete)"},
		{"unmanage", "Unmanage a subcloud: central stops syncing and orchestrating it"},
	} {
		cmds = append(cmds, &cobra.Command{
			Use: act.verb + " NAME", Short: act.short, Args: exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.call(cmd, http.MethodPost, "/v1/subclouds/"+url.PathEscape(args[0])+"/action",
					central.SubcloudActionRequest{Action: act.verb})
			},
		})
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a subcloud from the registry (it must be unmanaged, offline, and not deploying)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/subclouds/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted subcloud %s.\n", args[0])
			return nil
		},
	}
	return append(append(cmds, del), a.subcloudDeployCmds()...)
}

// jsonKey is the API field of a --flag-name.
func jsonKey(flag string) string {
	b := []byte(flag)
	for i, c := range b {
		if c == '-' {
			b[i] = '_'
		}
	}
	return string(b)
}

func (a *app) subcloudGroupCmd() *cobra.Command {
	var name, desc, applyType string
	var maxParallel int
	// body collects the flags given; create always sends the name.
	body := func(cmd *cobra.Command) map[string]any {
		b := map[string]any{}
		if cmd.Flags().Changed("description") {
			b["description"] = desc
		}
		if cmd.Flags().Changed("apply-type") {
			b["update_apply_type"] = applyType
		}
		if cmd.Flags().Changed("max-parallel") {
			b["max_parallel_subclouds"] = maxParallel
		}
		return b
	}
	create := &cobra.Command{
		Use:   "create NAME [--description D] [--apply-type serial|parallel] [--max-parallel N]",
		Short: "Create a subcloud group (admin)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nameArg(cmd, args, name)
			if err != nil {
				return err
			}
			b := body(cmd)
			b["name"] = n
			return a.call(cmd, http.MethodPost, "/v1/subcloud-groups", b)
		},
	}
	create.Flags().StringVar(&name, "name", "", "the group's name (alias of NAME)")
	var newName string
	update := &cobra.Command{
		Use:   "update NAME [--name NEW] [--description D] [--apply-type serial|parallel] [--max-parallel N]",
		Short: "Change a subcloud group (admin); --name renames it (not Default)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b := body(cmd)
			if cmd.Flags().Changed("name") {
				b["name"] = newName
			}
			if len(b) == 0 {
				return usagef("give --name, --description, --apply-type or --max-parallel")
			}
			return a.call(cmd, http.MethodPatch, "/v1/subcloud-groups/"+url.PathEscape(args[0]), b)
		},
	}
	update.Flags().StringVar(&newName, "name", "", "the group's new name")
	for _, c := range []*cobra.Command{create, update} {
		c.Flags().StringVar(&desc, "description", "", "what the group is for")
		c.Flags().StringVar(&applyType, "apply-type", "serial", "how updates are applied across its subclouds: serial or parallel")
		c.Flags().IntVar(&maxParallel, "max-parallel", 2, "at most this many subclouds updated at once (1-500)")
	}
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List subcloud groups", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/subcloud-groups", nil, limit,
				"name", "update_apply_type", "max_parallel_subclouds", "subclouds", "description")
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a subcloud group", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/subcloud-groups/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an empty subcloud group (not Default)", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/subcloud-groups/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted subcloud group %s.\n", args[0])
			return nil
		},
	}
	return group("subcloud-group", "Manage subcloud groups: how fleet updates roll across their subclouds (at central)",
		create, list, show, update, del)
}
