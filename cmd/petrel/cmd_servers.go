package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/subcloud"
)

// waitFlag adds --wait and --timeout to a command that starts a server
// task.
type waitFlag struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlag) add(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until the server is "+what)
	cmd.Flags().DurationVar(&w.timeout, "timeout", 5*time.Minute, "with --wait: give up after this long")
}

// waitServer polls server id until its task is done, then prints it; a
// server that ends in error is an error naming its fault.
func (a *app) waitServer(cmd *cobra.Command, c *client.Client, id string, w waitFlag) error {
	deadline := time.Now().Add(w.timeout)
	for {
		var raw json.RawMessage
		if err := c.Do(cmd.Context(), http.MethodGet, "/v1/servers/"+url.PathEscape(id), nil, nil, &raw); err != nil {
			return err
		}
		var sv compute.Server
		if err := json.Unmarshal(raw, &sv); err != nil {
			return err
		}
		if sv.Task == compute.TaskNone {
			if err := a.printRaw(raw); err != nil {
				return err
			}
			if sv.Status == compute.ServerError {
				return fmt.Errorf("server %s is in error: %s", sv.Name, sv.Fault)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server %s still %s (%s) after %s", sv.Name, sv.Status, sv.Task, w.timeout)
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// serverCall POSTs to a server route and prints the server, or waits for
// its task.
func (a *app) serverCall(cmd *cobra.Command, method, path string, body any, w waitFlag) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.Do(cmd.Context(), method, path, nil, body, &raw); err != nil {
		return err
	}
	var sv compute.Server
	if err := json.Unmarshal(raw, &sv); err != nil {
		return err
	}
	if !w.wait {
		return a.printRaw(raw)
	}
	return a.waitServer(cmd, c, sv.ID, w)
}

func (a *app) serverCmd() *cobra.Command {
	var req compute.CreateServer
	var cw waitFlag
	create := &cobra.Command{
		Use:   "create NAME --image I --flavor F [--host H] [--group G]",
		Short: "Create a server (a VM) from an image and a flavor; placed at once, then built",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nameArg(cmd, args, req.Name)
			if err != nil {
				return err
			}
			if req.Image == "" || req.Flavor == "" {
				return usagef("give --image and --flavor")
			}
			r := req
			r.Name = n
			return a.serverCall(cmd, http.MethodPost, "/v1/servers", r, cw)
		},
	}
	create.Flags().StringVar(&req.Name, "name", "", "the server's name (alias of NAME)")
	create.Flags().StringVar(&req.Image, "image", "", "image name or ID")
	create.Flags().StringVar(&req.Flavor, "flavor", "", "flavor name or ID")
	create.Flags().StringVar(&req.Host, "host", "", "place it on this host (admin)")
	create.Flags().StringVar(&req.Group, "group", "", "server group name or ID (its policy applies)")
	create.Flags().StringVar(&req.Project, "project", "", "owner project (default: yours)")
	cw.add(create, "active")

	var limit int
	var host, status, project string
	list := &cobra.Command{
		Use: "list", Short: "List servers", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"host": host, "status": status, "project": project} {
				if v != "" {
					q.Set(k, v)
				}
			}
			return a.list(cmd, "/v1/servers", q, limit, "name", "status", "task", "host", "image_name", "flavor.name", "project", "id")
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.Flags().StringVar(&host, "host", "", "only servers on this host")
	list.Flags().StringVar(&status, "status", "", "only servers in this status")
	list.Flags().StringVar(&project, "project", "", "only this project's servers")
	show := &cobra.Command{
		Use: "show NAME|ID", Short: "Show a server", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/servers/"+url.PathEscape(args[0]), nil)
		},
	}
	action := func(act compute.Action, short, until string) *cobra.Command {
		var w waitFlag
		var hard, postCopy bool
		var image, host string
		use := string(act) + " NAME|ID"
		switch act {
		case compute.ActionRebuild:
			use += " [--image NEW]"
		case compute.ActionMigrate:
			use += " [--host TARGET]"
		}
		c := &cobra.Command{
			Use: use, Short: short, Args: exactArgs(1, "NAME|ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				body := compute.ServerAction{Action: act, Hard: hard, Image: image, Host: host, PostCopy: postCopy}
				return a.serverCall(cmd, http.MethodPost, "/v1/servers/"+url.PathEscape(args[0])+"/action", body, w)
			},
		}
		w.add(c, until)
		switch act {
		case compute.ActionReboot:
			c.Flags().BoolVar(&hard, "hard", false, "reset at once instead of asking the guest")
		case compute.ActionRebuild:
			c.Flags().StringVar(&image, "image", "", "the image to rebuild on (default: the server's own)")
		case compute.ActionMigrate:
			c.Flags().StringVar(&host, "host", "", "the destination (default: the scheduler picks one)")
			c.Flags().BoolVar(&postCopy, "post-copy", false, "allow post-copy (the VM is lost if the destination fails during it)")
		}
		return c
	}
	var dw waitFlag
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete a server: its VM and disk", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var sv compute.Server
			path := "/v1/servers/" + url.PathEscape(args[0])
			if err := c.Do(cmd.Context(), http.MethodGet, path, nil, nil, &sv); err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, path, nil, nil, nil); err != nil {
				return err
			}
			if dw.wait {
				deadline := time.Now().Add(dw.timeout)
				for {
					err := c.Do(cmd.Context(), http.MethodGet, "/v1/servers/"+sv.ID, nil, nil, nil)
					if errors.Is(err, errs.NotFound) {
						break
					}
					if err != nil {
						return err
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("server %s still there after %s", sv.Name, dw.timeout)
					}
					select {
					case <-cmd.Context().Done():
						return cmd.Context().Err()
					case <-time.After(300 * time.Millisecond):
					}
				}
				fmt.Fprintf(a.stdout, "Deleted server %s.\n", sv.Name)
				return nil
			}
			fmt.Fprintf(a.stdout, "Deleting server %s.\n", sv.Name)
			return nil
		},
	}
	dw.add(del, "gone")
	var lines int
	console := &cobra.Command{
		Use: "console-log NAME|ID [--lines N]", Short: "Print the server's serial console output", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if lines > 0 {
				q.Set("lines", strconv.Itoa(lines))
			}
			var out subcloud.ConsoleLog
			if err := c.Do(cmd.Context(), http.MethodGet, "/v1/servers/"+url.PathEscape(args[0])+"/console-log", q, nil, &out); err != nil {
				return err
			}
			_, err = fmt.Fprint(a.stdout, out.Output)
			return err
		},
	}
	console.Flags().IntVar(&lines, "lines", 0, "only the last N lines")
	stats := &cobra.Command{
		Use: "stats NAME|ID", Short: "Show a server's resource use, read from its hypervisor", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/servers/"+url.PathEscape(args[0])+"/stats", nil)
		},
	}
	return group("server", "Servers: tenants' VMs on the site's hypervisor hosts", create, list, show,
		action(compute.ActionStop, "Stop a server (ACPI power-off, then pull the plug after a timeout)", "stopped"),
		action(compute.ActionStart, "Start a stopped server", "active"),
		action(compute.ActionReboot, "Reboot a server", "active"),
		action(compute.ActionRebuild, "Rebuild a server's disk from an image (same ID, host and flavor)", "rebuilt"),
		action(compute.ActionMigrate, "Live-migrate a running server to another host (admin); server show reports its progress", "migrated"),
		del, console, stats)
}

func (a *app) serverGroupCmd() *cobra.Command {
	var policy, project string
	create := &cobra.Command{
		Use: "create NAME --policy anti-affinity|affinity", Short: "Create a server group", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodPost, "/v1/server-groups",
				compute.ServerGroup{Name: args[0], Policy: compute.ServerGroupPolicy(policy), Project: project})
		},
	}
	create.Flags().StringVar(&policy, "policy", "anti-affinity", "anti-affinity (every member on its own host) or affinity")
	create.Flags().StringVar(&project, "project", "", "owner project (default: yours)")
	list := &cobra.Command{
		Use: "list", Short: "List server groups", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/server-groups", nil, 0, "name", "policy", "project", "members", "id")
		},
	}
	show := &cobra.Command{
		Use: "show NAME|ID", Short: "Show a server group", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/server-groups/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete an empty server group", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/server-groups/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted server group %s.\n", args[0])
			return nil
		},
	}
	return group("server-group", "Server groups: placement policies for servers", create, list, show, del)
}

func (a *app) hypervisorCmd() *cobra.Command {
	list := &cobra.Command{
		Use: "list", Short: "List the site's hypervisor hosts with capacity and usage", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/hypervisors", nil, 0, "host", "state", "status", "running_vms", "vcpus_used", "vcpus",
				"memory_mib_used", "memory_mib", "hypervisor_version")
		},
	}
	return group("hypervisor", "The site's hypervisor hosts", list)
}
