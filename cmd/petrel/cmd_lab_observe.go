package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/observer"
)

// errViolations makes `lab observe` exit 1 after its summary.
var errViolations = errors.New("the observer saw violations")

// labObserveCmd is `petrel lab observe` (docs/servicemgr.md, "Demo service
// and observer"); dir is the lab command's --dir.
func (a *app) labObserveCmd(dir *string) *cobra.Command {
	var site, group, floating string
	var port, n int
	var duration time.Duration
	c := &cobra.Command{
		Use: "observe --site S --group G --port P [--n N] [--floating A,B] [--for D]",
		Short: "Watch a service group at a lab site: its actives and its floating addresses' holders; " +
			"exit 1 if more than N were active, or two hosts held one address, at once",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if site == "" || group == "" {
				return usagef("--site and --group are required")
			}
			if port < 1 || port > 65535 {
				return usagef("--port %d: want 1-65535", port)
			}
			if n < 1 {
				return usagef("--n %d: want at least 1", n)
			}
			f, err := lab.Load(a.labDir(*dir))
			if err != nil {
				return err
			}
			var entry *lab.SiteEntry
			var names []string
			for i := range f.Sites {
				names = append(names, f.Sites[i].Name)
				if f.Sites[i].Name == site {
					entry = &f.Sites[i]
				}
			}
			if entry == nil {
				return fmt.Errorf("no site %s in the lab (sites: %s)", site, strings.Join(names, ", "))
			}
			members, err := observer.SiteTargets(*entry, port)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("lab observe needs root: it opens its connections inside the lab's network namespaces")
			}
			var addrs []string
			for _, s := range strings.Split(floating, ",") {
				if s = strings.TrimSpace(s); s != "" {
					addrs = append(addrs, s)
				}
			}
			table := a.output == "table"
			stamp := func(t time.Time) string { return t.Local().Format("15:04:05.000") }
			logger, _ := server.NewLogger(a.stderr, "error")
			o, err := observer.New(observer.Config{
				Members: members, N: n, Group: group, Floating: addrs,
				Logger: logger.With("component", "observer", "site", site, "group", group),
				OnChange: func(s observer.Snapshot) {
					if table {
						fmt.Fprintf(a.stdout, "%s  %s\n", stamp(s.At), s)
					}
				},
				OnViolation: func(v observer.Violation) {
					if table {
						fmt.Fprintf(a.stdout, "%s  VIOLATION %s: %s\n", stamp(v.First), v.Kind, v.Detail)
					}
				},
			})
			if err != nil {
				return usageError{err}
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			start := time.Now()
			if err := o.Run(ctx); err != nil {
				return err
			}
			took := time.Since(start)
			last, history, violations := o.Snapshot(), o.History(), o.Violations()

			if !table {
				b, _ := json.Marshal(map[string]any{
					"site": site, "group": group, "n": n, "seconds": took.Seconds(),
					"rounds": last.Seq, "history": history, "violations": violations,
				})
				if err := a.printRaw(b); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "Observed group %s at site %s for %s: %d rounds, %d state(s), %d violation(s).\n",
					group, site, took.Round(time.Millisecond), last.Seq, len(history), len(violations))
				for _, v := range violations {
					fmt.Fprintf(a.stdout, "  %s-%s (%d rounds)  %s  %s\n", stamp(v.First), stamp(v.Last), v.Rounds, v.Kind, v.Detail)
				}
			}
			if len(violations) > 0 {
				return fmt.Errorf("%d violation(s): %w", len(violations), errViolations)
			}
			return nil
		},
	}
	c.Flags().StringVar(&site, "site", "", "the site (lab.json's name)")
	c.Flags().StringVar(&group, "group", "", "the service group: only its members' answers count as active")
	c.Flags().IntVar(&port, "port", 0, "the members' port: each host is asked at http://CLUSTER_ADDRESS:PORT/")
	c.Flags().IntVar(&n, "n", 1, "the most members allowed to be active at once")
	c.Flags().StringVar(&floating, "floating", "", "floating addresses to watch, without prefix, comma-separated")
	c.Flags().DurationVar(&duration, "for", 0, "stop after this long (default: until interrupted)")
	return c
}
