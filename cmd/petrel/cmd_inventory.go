package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// filterFlags binds one string flag per list filter and returns the query.
func filterFlags(c *cobra.Command, names ...string) func() url.Values {
	vals := make([]*string, len(names))
	for i, n := range names {
		vals[i] = c.Flags().String(n, "", "only those whose "+n+" is this")
	}
	return func() url.Values {
		q := url.Values{}
		for i, n := range names {
			if *vals[i] != "" {
				q.Set(n, *vals[i])
			}
		}
		return q
	}
}

func (a *app) hostCmd() *cobra.Command {
	var limit int
	list := &cobra.Command{Use: "list", Short: "List the site's hosts", Args: noArgs}
	query := filterFlags(list, "personality", "administrative", "operational", "availability", "provisioning")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.list(cmd, "/v1/hosts", query(), limit,
			"name", "personality", "administrative", "operational", "availability", "uptime_s",
			"heartbeat.mgmt", "heartbeat.cluster", "bmc.status", "recovery.last_action", "uuid")
	}
	show := &cobra.Command{
		Use:   "show NAME|UUID",
		Short: "Show a host, with its inventory",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/hosts/"+url.PathEscape(args[0]), nil)
		},
	}
	var personality, hostname string
	var subfunctions []string
	assign := &cobra.Command{
		Use:   "assign NAME|UUID --personality controller|worker|storage [--hostname NAME] [--subfunctions a,b]",
		Short: "Give a discovered (locked) host its personality and name (StarlingX host-update)",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			if personality != "" {
				body["personality"] = personality
			}
			if hostname != "" {
				body["hostname"] = hostname
			}
			if subfunctions != nil {
				body["subfunctions"] = subfunctions
			}
			if len(body) == 0 {
				return usagef("give --personality, --hostname or --subfunctions")
			}
			return a.call(cmd, http.MethodPatch, "/v1/hosts/"+url.PathEscape(args[0]), body)
		},
	}
	assign.Flags().StringVar(&personality, "personality", "", "controller, worker or storage")
	assign.Flags().StringVar(&hostname, "hostname", "", "the host's new name")
	assign.Flags().StringSliceVar(&subfunctions, "subfunctions", nil, "override the subfunctions")
	del := &cobra.Command{
		Use:   "delete NAME|UUID",
		Short: "Delete a locked host and revoke its certificate",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/hosts/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted host %s.\n", args[0])
			return nil
		},
	}
	var actions []*cobra.Command
	for _, act := range []struct{ verb, short string }{
		{"lock", "Lock a host (refused for the site's only enabled controller)"},
		{"force-lock", "Lock a host even if it is the only enabled controller"},
		{"unlock", "Unlock a host: it returns to service"},
		{"power-on", "Power a locked host on through its BMC"},
		{"power-off", "Power a locked host off through its BMC (it stays off)"},
		{"reset", "Reset a locked host through its BMC"},
		{"reboot", "Reboot a locked host"},
	} {
		actions = append(actions, &cobra.Command{
			Use: act.verb + " NAME|UUID", Short: act.short, Args: exactArgs(1, "NAME|UUID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.call(cmd, http.MethodPost, "/v1/hosts/"+url.PathEscape(args[0])+"/action", map[string]string{"action": act.verb})
			},
		})
	}
	var force bool
	swact := &cobra.Command{
		Use: "swact NAME|UUID [--force]", Args: exactArgs(1, "NAME|UUID"),
		Short: "Move activity from the active controller NAME to the standby (docs/ha.md)",
		Long: "Move activity from the active controller NAME to the standby controller. Refused, with the reason,\n" +
			"when the standby is unreachable or not synchronous; --force swacts to a standby that is not\n" +
			"synchronous, and the writes it has not received are lost.",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodPost, "/v1/hosts/"+url.PathEscape(args[0])+"/action",
				map[string]any{"action": "swact", "force": force})
		},
	}
	swact.Flags().BoolVar(&force, "force", false, "swact to a standby that is not synchronous (loses the writes it has not received)")
	actions = append(actions, swact)
	var bmcType, ipmiAddr, redfishURL, bmcUser, bmcPasswordFile string
	bmcSet := &cobra.Command{
		Use:   "set NAME|UUID --type ipmi|redfish|dynamic|none [--ipmi HOST[:PORT]] [--redfish URL] --username U --password-file F",
		Short: "Set a host's BMC (admin); the password comes from a 0600 file or standard input, never argv",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]string{"type": bmcType, "ipmi": ipmiAddr, "redfish": redfishURL, "username": bmcUser}
			if bmcType != "none" {
				pw, err := a.readPassword(bmcPasswordFile, "BMC password: ")
				if err != nil {
					return err
				}
				body["password"] = pw
			}
			for k, v := range body {
				if v == "" {
					delete(body, k)
				}
			}
			return a.call(cmd, http.MethodPut, "/v1/hosts/"+url.PathEscape(args[0])+"/bmc", body)
		},
	}
	bmcSet.Flags().StringVar(&bmcType, "type", "dynamic", "ipmi, redfish, dynamic (Redfish first) or none")
	bmcSet.Flags().StringVar(&ipmiAddr, "ipmi", "", "the BMC's IPMI address, host or host:port")
	bmcSet.Flags().StringVar(&redfishURL, "redfish", "", "the BMC's Redfish URL, https://host[:port]/redfish/v1")
	bmcSet.Flags().StringVar(&bmcUser, "username", "", "BMC user")
	bmcSet.Flags().StringVar(&bmcPasswordFile, "password-file", "", "file holding the BMC password (mode 0600)")
	bmcCmd := group("bmc", "A host's board management controller", bmcSet)
	sensors := &cobra.Command{
		Use: "sensors NAME|UUID", Short: "The host's sensors, read from its BMC now", Args: exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.list(cmd, "/v1/hosts/"+url.PathEscape(args[0])+"/sensors", nil, 0, "name", "kind", "value", "unit", "status")
		},
	}
	actions = append(actions, sensors, a.hostInstallCmd())
	return group("host", "Inspect and manage a site's hosts (at a site, or through central with --site)",
		append([]*cobra.Command{list, show, assign, del, a.joinTokenCmd(), bmcCmd}, actions...)...)
}

func (a *app) subcloudCmd() *cobra.Command {
	var limit int
	list := &cobra.Command{Use: "list", Short: "List subclouds", Args: noArgs}
	query := filterFlags(list, "shape", "availability", "management", "status", "deploy_status", "group")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.list(cmd, "/v1/subclouds", query(), limit,
			"name", "shape", "availability", "management", "deploy_status", "status", "group", "hosts.total", "last_seen")
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a subcloud",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/subclouds/"+url.PathEscape(args[0]), nil)
		},
	}
	c := group("subcloud", "The fleet's subclouds (at central): list, add, manage, delete; with --config, run a site controller",
		append([]*cobra.Command{list, show}, a.subcloudLifecycleCmds()...)...)
	c.Use = "subcloud [--config FILE]"
	var cfgFile string
	c.Flags().StringVar(&cfgFile, "config", "", "run the site controller daemon with this configuration file (YAML)")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		if cfgFile == "" {
			return usagef("subcloud needs a verb (%s), or --config FILE to run the site controller", verbNames(cmd))
		}
		return a.runSubcloudDaemon(cmd, cfgFile)
	}
	return c
}

func (a *app) joinTokenCmd() *cobra.Command {
	var ttl time.Duration
	var desc string
	create := &cobra.Command{
		Use:   "create [--ttl 1h] [--description D]",
		Short: "Create a single-use join token for one new host (shown once)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"description": desc, "ttl_s": int64(ttl / time.Second)}
			return a.createSecret(cmd, "/v1/join-tokens", body, func(raw []byte) (string, string, error) {
				var it struct {
					Token  string
					Detail struct {
						ID        string
						ExpiresAt time.Time `json:"expires_at"`
					}
				}
				if err := json.Unmarshal(raw, &it); err != nil {
					return "", "", err
				}
				return it.Token, fmt.Sprintf("Join token %s, single use, expires at %s. Give it to the new host's agent in a 0600 file.",
					it.Detail.ID, it.Detail.ExpiresAt.Format(time.RFC3339)), nil
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "lifetime (at most 168h)")
	create.Flags().StringVar(&desc, "description", "", "what the token is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/join-tokens", nil, 0, "id", "description", "expires_at", "used_at", "used_by")
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a join token",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodDelete, "/v1/join-tokens/"+url.PathEscape(args[0]), nil)
		},
	}
	return group("join-token", "Manage join tokens for new hosts", create, list, del)
}
