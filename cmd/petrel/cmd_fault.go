package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/faultmgr"
)

func (a *app) alarmCmd() *cobra.Command {
	var markdown bool
	catalogue := &cobra.Command{
		Use:   "catalogue [--markdown]",
		Short: "List every alarm this binary may raise (docs/alarms.md is --markdown)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
			if err != nil {
				return err
			}
			if markdown {
				_, err := a.stdout.Write(c.Markdown())
				return err
			}
			for _, d := range c.All() {
				fmt.Fprintf(a.stdout, "%s  %-8s  %-13s  %s\n", d.ID, d.Severity, d.Entity, d.Reason)
			}
			return nil
		},
	}
	catalogue.Flags().BoolVar(&markdown, "markdown", false, "print docs/alarms.md")

	var limit int
	list := &cobra.Command{Use: "list", Short: "Active alarms, newest first", Args: noArgs}
	query := filterFlags(list, "severity", "alarm_id", "mgmt_affecting", "suppressed")
	var entity, subcloud string
	list.Flags().StringVar(&entity, "entity", "", "entity instance ID prefix, e.g. host=worker-1")
	list.Flags().StringVar(&subcloud, "subcloud", "", "at central: one site's alarms")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		q := query()
		if entity != "" {
			q.Set("entity_instance_id", entity)
		}
		if subcloud != "" {
			q.Set("site", subcloud)
		}
		return a.list(cmd, "/v1/alarms", q, limit, "uuid", "site", "alarm_id", "severity", "entity_instance_id", "reason_text", "suppressed", "acked_by", "timestamp")
	}
	show := &cobra.Command{
		Use: "show UUID", Short: "Show an alarm", Args: exactArgs(1, "UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/alarms/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete UUID", Short: "Clear an alarm by hand", Args: exactArgs(1, "UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/alarms/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Cleared alarm %s.\n", args[0])
			return nil
		},
	}
	summary := &cobra.Command{
		Use: "summary", Short: "Active, unsuppressed alarms per severity", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, http.MethodGet, "/v1/alarms/summary", nil)
		},
	}
	ack := &cobra.Command{
		Use: "ack UUID", Short: "Acknowledge an alarm", Args: exactArgs(1, "UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodPost, "/v1/alarms/"+url.PathEscape(args[0])+"/ack", nil)
		},
	}
	suppress := &cobra.Command{
		Use: "suppress ALARM_ID", Short: "Suppress an alarm ID (it stays listed, out of summaries)", Args: exactArgs(1, "ALARM_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodPut, "/v1/alarm-suppressions/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Suppressed %s.\n", args[0])
			return nil
		},
	}
	unsuppress := &cobra.Command{
		Use: "unsuppress ALARM_ID", Short: "Stop suppressing an alarm ID", Args: exactArgs(1, "ALARM_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/alarm-suppressions/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Unsuppressed %s.\n", args[0])
			return nil
		},
	}
	var fields []string
	raise := &cobra.Command{
		Use:   "raise ALARM_ID ENTITY [--field key=value]...",
		Short: "Raise an alarm from the catalogue (integrations, tests)",
		Args:  exactArgs(2, "ALARM_ID", "ENTITY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFields(fields)
			if err != nil {
				return err
			}
			return a.call(cmd, http.MethodPost, "/v1/alarms", map[string]any{"alarm_id": args[0], "entity_instance_id": args[1], "fields": f})
		},
	}
	raise.Flags().StringArrayVar(&fields, "field", nil, "fill a {placeholder} of the reason")
	return group("alarm", "Alarms: list, acknowledge, suppress; the catalogue", list, show, del, summary, ack, suppress, unsuppress, raise, catalogue)
}

func (a *app) eventCmd() *cobra.Command {
	var typ, alarmID, entity, user string
	var since, until time.Duration
	var limit int
	list := &cobra.Command{
		Use:   "list [--type set|clear|log|audit] [--alarm-id ID] [--entity PREFIX] [--user U] [--since 1h] [--until 10m]",
		Short: "The event history, newest first (audit events: --type audit)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"type": typ, "alarm_id": alarmID, "entity_instance_id": entity, "user": user} {
				if v != "" {
					q.Set(k, v)
				}
			}
			now := time.Now().UTC()
			if since > 0 {
				q.Set("since", now.Add(-since).Format(time.RFC3339Nano))
			}
			if until > 0 {
				q.Set("until", now.Add(-until).Format(time.RFC3339Nano))
			}
			if limit == 0 {
				limit = 100 // newest first: the latest hundred unless asked for more
			}
			return a.list(cmd, "/v1/events", q, limit, "timestamp", "type", "alarm_id", "entity_instance_id", "user", "action", "result", "reason_text")
		},
	}
	list.Flags().StringVar(&typ, "type", "", "set, clear, log or audit")
	list.Flags().StringVar(&alarmID, "alarm-id", "", "only this alarm ID")
	list.Flags().StringVar(&entity, "entity", "", "entity instance ID prefix, e.g. host=worker-1")
	list.Flags().StringVar(&user, "user", "", "only events by this user")
	list.Flags().DurationVar(&since, "since", 0, "only events newer than this long ago")
	list.Flags().DurationVar(&until, "until", 0, "only events older than this long ago")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default 100)")
	show := &cobra.Command{
		Use:   "show UUID",
		Short: "Show an event",
		Args:  exactArgs(1, "UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/events/"+url.PathEscape(args[0]), nil)
		},
	}
	var fields []string
	logCmd := &cobra.Command{
		Use:   "log ID ENTITY [--field key=value]...",
		Short: "Append a log entry from the catalogue (integrations, tests)",
		Args:  exactArgs(2, "ID", "ENTITY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFields(fields)
			if err != nil {
				return err
			}
			return a.call(cmd, http.MethodPost, "/v1/events", map[string]any{"alarm_id": args[0], "entity_instance_id": args[1], "fields": f})
		},
	}
	logCmd.Flags().StringArrayVar(&fields, "field", nil, "fill a {placeholder} of the reason")
	return group("event", "The event history: alarm sets and clears, logs, audit", list, show, logCmd)
}

// parseFields turns --field key=value flags into a reason's fields.
func parseFields(kvs []string) (map[string]string, error) {
	f := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usagef("--field %q: want key=value", kv)
		}
		f[k] = v
	}
	return f, nil
}
