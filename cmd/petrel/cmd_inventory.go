package main

import (
	"net/http"
	"net/url"

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
			"name", "personality", "administrative", "operational", "availability", "uuid")
	}
	show := &cobra.Command{
		Use:   "show NAME|UUID",
		Short: "Show a host, with its inventory",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/hosts/"+url.PathEscape(args[0]), nil)
		},
	}
	return group("host", "Inspect and manage a site's hosts (at a site, or through central with --site)", list, show)
}

func (a *app) subcloudCmd() *cobra.Command {
	var limit int
	list := &cobra.Command{Use: "list", Short: "List subclouds", Args: noArgs}
	query := filterFlags(list, "shape", "availability", "management", "status")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.list(cmd, "/v1/subclouds", query(), limit,
			"name", "shape", "availability", "management", "deploy_status", "status", "last_seen")
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a subcloud",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/subclouds/"+url.PathEscape(args[0]), nil)
		},
	}
	c := group("subcloud", "Inspect the fleet's subclouds (at central); with --config, run a site controller", list, show)
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
