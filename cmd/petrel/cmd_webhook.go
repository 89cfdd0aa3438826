package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
)

// parseWebhookFilter turns --type and --filter key=v1,v2 flags into a
// filter (the server validates the values).
func parseWebhookFilter(types string, filters []string) (webhook.Filter, error) {
	var f webhook.Filter
	add := func(key, vals string) error {
		for _, v := range strings.Split(vals, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			switch key {
			case "type", "types":
				f.Types = append(f.Types, faultmgr.EventType(v))
			case "severity", "severities":
				f.Severities = append(f.Severities, faultmgr.Severity(v))
			case "alarm_id", "alarm_ids", "alarm-id":
				f.AlarmIDs = append(f.AlarmIDs, v)
			case "site", "sites":
				f.Sites = append(f.Sites, v)
			default:
				return usagef("--filter %s: want severity=, alarm_id=, site= or type=", key)
			}
		}
		return nil
	}
	if err := add("type", types); err != nil {
		return f, err
	}
	for _, kv := range filters {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return f, usagef("--filter %q: want key=value[,value...], e.g. severity=critical,major", kv)
		}
		if err := add(strings.TrimSpace(k), v); err != nil {
			return f, err
		}
	}
	return f, nil
}

func (a *app) webhookCmd() *cobra.Command {
	var types, desc string
	var filters []string
	var disabled bool
	addFilterFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&types, "type", "", "event types to send: set, clear, log, audit (default set,clear)")
		c.Flags().StringArrayVar(&filters, "filter", nil, "severity=critical,major | alarm_id=200.,280.001 | site=NAME,... (repeatable; all must match)")
		c.Flags().StringVar(&desc, "description", "", "what the webhook is for")
	}
	create := &cobra.Command{
		Use:   "create URL [--type set,clear] [--filter severity=critical,major] [--filter alarm_id=200.] [--filter site=NAME] [--description D] [--disabled]",
		Short: "Register a webhook (admin); its signing secret is printed once",
		Long: "create registers URL to receive fault events as signed JSON POSTs (docs/webhooks.md).\n" +
			"The target must pass the daemon's webhooks.allow/deny lists. In table output the signing\n" +
			"secret alone goes to stdout and what it is to stderr; it is never shown again.",
		Args: exactArgs(1, "URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseWebhookFilter(types, filters)
			if err != nil {
				return err
			}
			enabled := !disabled
			req := webhook.CreateRequest{URL: args[0], Description: desc, Filter: &f, Enabled: &enabled}
			return a.createSecret(cmd, "/v1/webhooks", req, func(raw []byte) (string, string, error) {
				var c webhook.Created
				if err := json.Unmarshal(raw, &c); err != nil {
					return "", "", err
				}
				return c.Secret, fmt.Sprintf("Webhook %s delivers %s to %s.\n"+
					"The line above is its signing secret, shown only now: give it to the receiver (keep it in a 0600 file);\n"+
					"it verifies X-Petrel-Signature (docs/webhooks.md).", c.Webhook.ID, describeFilter(c.Webhook.Filter), c.Webhook.URL), nil
			})
		},
	}
	addFilterFlags(create)
	create.Flags().BoolVar(&disabled, "disabled", false, "register it paused (enable later)")

	var limit int
	list := &cobra.Command{
		Use: "list", Short: "Webhooks and how their deliveries go", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/webhooks", url.Values{}, limit, "id", "url", "status.state", "status.lag",
				"status.consecutive_failures", "status.last_success_at", "status.last_error")
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use: "show ID", Short: "Show a webhook, its filter and delivery status (never its secret)", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/webhooks/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a webhook (admin)", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/webhooks/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted webhook %s.\n", args[0])
			return nil
		},
	}
	setEnabled := func(verb string, on bool, what string) *cobra.Command {
		return &cobra.Command{
			Use: verb + " ID", Short: what, Args: exactArgs(1, "ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				if err := c.Do(cmd.Context(), http.MethodPatch, "/v1/webhooks/"+url.PathEscape(args[0]), nil,
					webhook.UpdateRequest{Enabled: &on}, nil); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%sd webhook %s.\n", strings.ToUpper(verb[:1])+verb[1:], args[0])
				return nil
			},
		}
	}
	var uTypes, uDesc string
	var uFilters []string
	update := &cobra.Command{
		Use:   "update ID [--type T,...] [--filter key=v,...]... [--description D]",
		Short: "Replace a webhook's filter or description (admin)",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req webhook.UpdateRequest
			if cmd.Flags().Changed("type") || cmd.Flags().Changed("filter") {
				f, err := parseWebhookFilter(uTypes, uFilters)
				if err != nil {
					return err
				}
				req.Filter = &f
			}
			if cmd.Flags().Changed("description") {
				req.Description = &uDesc
			}
			if req.Filter == nil && req.Description == nil {
				return usagef("webhook update needs --type, --filter or --description")
			}
			return a.call(cmd, http.MethodPatch, "/v1/webhooks/"+url.PathEscape(args[0]), req)
		},
	}
	update.Flags().StringVar(&uTypes, "type", "", "event types to send: set, clear, log, audit (default set,clear)")
	update.Flags().StringArrayVar(&uFilters, "filter", nil, "severity=… | alarm_id=… | site=… (repeatable; replaces the whole filter)")
	update.Flags().StringVar(&uDesc, "description", "", "what the webhook is for")
	test := &cobra.Command{
		Use: "test ID", Short: "Send a signed test delivery now and show the answer (admin; exit 1 if the target fails)", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/webhooks/"+url.PathEscape(args[0])+"/test", nil, nil, &raw); err != nil {
				return err
			}
			if err := a.printRaw(raw); err != nil {
				return err
			}
			var res webhook.TestResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return err
			}
			if !res.OK {
				return fmt.Errorf("the target did not accept the test delivery: %s", res.Error)
			}
			return nil
		},
	}
	return group("webhook", "Webhooks: fault events POSTed, signed, to receivers (admin)", create, list, show, update,
		setEnabled("enable", true, "Resume deliveries where they stopped (admin)"),
		setEnabled("disable", false, "Pause deliveries; the webhook keeps its place (admin)"), del, test)
}

func describeFilter(f webhook.Filter) string {
	var types []string
	for _, t := range f.Types {
		types = append(types, string(t))
	}
	s := strings.Join(types, " and ") + " events"
	var sev []string
	for _, v := range f.Severities {
		sev = append(sev, string(v))
	}
	if len(sev) > 0 {
		s += " of severity " + strings.Join(sev, "/")
	}
	if len(f.AlarmIDs) > 0 {
		s += " of alarm IDs " + strings.Join(f.AlarmIDs, "*, ") + "*"
	}
	if len(f.Sites) > 0 {
		s += " from " + strings.Join(f.Sites, ", ")
	}
	return s
}
