package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/internal/server"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/lab"
)

func (a *app) labDir(flag string) string {
	if flag != "" {
		return flag
	}
	if d := a.getenv("PETREL_LAB_DIR"); d != "" {
		return d
	}
	return lab.DefaultDir
}

func (a *app) labCmd() *cobra.Command {
	var dir, sites string
	var noDemo, centralHA bool
	up := &cobra.Command{
		Use:   "up [--dir DIR] [--sites NAME=SHAPE[:WORKERS],...]",
		Short: "Start a central cloud and sites on this machine",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var specs []lab.SiteSpec
			if sites != "" {
				var err error
				if specs, err = lab.ParseSites(sites); err != nil {
					return usageError{err}
				}
			}
			d := a.labDir(dir)
			fmt.Fprintf(a.stderr, "Starting the lab in %s ...\n", d)
			// Progress (processes started, test images, seeding) to
			// stderr, without timestamps.
			progress := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{
				ReplaceAttr: func(groups []string, at slog.Attr) slog.Attr {
					if len(groups) == 0 && at.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return at
				}}))
			f, err := lab.Up(cmd.Context(), lab.Config{Dir: d, Sites: specs, NoDemo: noDemo, CentralHA: centralHA, Logger: progress})
			if err != nil {
				return err
			}
			if a.output != "table" {
				b, _ := json.Marshal(f)
				return a.printRaw(b)
			}
			fmt.Fprintf(a.stdout, "The lab is up. Central:   %s\n", f.Central.URL)
			fmt.Fprintf(a.stdout, "            Dashboard: %s\n", f.Central.DashboardURL)
			for _, s := range f.Sites {
				fmt.Fprintf(a.stdout, "            Site %-10s %s (%s)\n", s.Name, s.URL, s.Shape)
				for _, h := range s.Hosts {
					fmt.Fprintf(a.stdout, "                 %-13s %-11s mgmt %-12s netns %s\n", h.Name, h.Personality, h.Addresses["mgmt"], h.Netns)
				}
			}
			fmt.Fprintf(a.stdout, "\nUse it from this shell:\n  eval \"$(petrel lab env --dir %s)\"\n  petrel subcloud list\n", f.Dir)
			if len(f.Sites) > 0 {
				fmt.Fprintf(a.stdout, "  petrel --url %s --token \"$(jq -r .sites[0].token %s/lab.json)\" host list\n", f.Sites[0].URL, f.Dir)
			}
			var flavors []string
			for _, fl := range lab.Flavors {
				flavors = append(flavors, fl.Name)
			}
			fmt.Fprintf(a.stdout, "Sites with a hypervisor host have the public images %s and %s and flavors %s (petrel image list, petrel flavor list).\n",
				guestimage.Test, guestimage.TestV2, strings.Join(flavors, ", "))
			fmt.Fprintf(a.stdout, "Log in as admin: the password is in %s/central/%s (mode 0600).\n", f.Dir, "admin.password")
			fmt.Fprintf(a.stdout, "Everything (URLs, tokens, CA) is in %s/lab.json. Stop with: petrel lab down --dir %s\n", f.Dir, f.Dir)
			return nil
		},
	}
	up.Flags().StringVar(&sites, "sites", "", "sites to start (default site-sx=simplex,site-dx=duplex,site-std=multi-server:2)")
	up.Flags().BoolVar(&centralHA, "central-ha", false, "run central as a 1+1 pair: two centrals on one PostgreSQL, leader elected through a 3-member etcd (default: one central on SQLite)")
	up.Flags().BoolVar(&noDemo, "no-demo", false, "declare no demo service group (multi-server sites with two workers or more have one)")
	down := &cobra.Command{
		Use:   "down [--dir DIR]",
		Short: "Stop the lab and remove everything it made",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := a.labDir(dir)
			if err := lab.Down(cmd.Context(), d); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "The lab in %s is down.\n", d)
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status [--dir DIR]",
		Short: "Show the lab's processes",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := a.labDir(dir)
			procs, err := lab.Processes(d)
			if err != nil {
				return err
			}
			if procs == nil {
				return fmt.Errorf("no lab in %s", d)
			}
			if a.output != "table" {
				b, _ := json.Marshal(map[string]any{"dir": d, "processes": procs})
				return a.printRaw(b)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROCESS\tPID\tSTATE")
			down := 0
			for _, p := range procs {
				state := "running"
				if !p.Running {
					state, down = "stopped", down+1
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\n", p.Name, p.PID, state)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if down > 0 {
				return fmt.Errorf("%d lab process(es) not running", down)
			}
			return nil
		},
	}
	env := &cobra.Command{
		Use:   "env [--dir DIR]",
		Short: "Print shell exports for talking to the lab's central",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := lab.Load(a.labDir(dir))
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "export PETREL_LAB_DIR=%q\nexport PETREL_URL=%q\nexport PETREL_TOKEN=%q\nexport PETREL_CA_CERT=%q\n",
				f.Dir, f.Central.URL, f.Central.Token, f.CACert)
			return nil
		},
	}
	addHost := &cobra.Command{
		Use:   "add-host SITE",
		Short: "Power on one more host, with no personality, at a site of the lab",
		Args:  exactArgs(1, "SITE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			he, took, err := lab.AddHost(cmd.Context(), a.labDir(dir), args[0], "")
			if err != nil {
				return err
			}
			if a.output != "table" {
				b, _ := json.Marshal(he)
				return a.printRaw(b)
			}
			fmt.Fprintf(a.stdout, "Host %s (%s) joined %s and was inventoried in %s; assign it with:\n  petrel host assign %s --personality worker --hostname NAME\n",
				he.Name, he.UUID, args[0], took.Round(time.Millisecond), he.UUID)
			return nil
		},
	}
	var bare bool
	addMachine := &cobra.Command{
		Use:   "add-machine NAME --bare",
		Short: "Add a bare machine (nothing installed; an sshd for Ansible), registered at central as subcloud NAME",
		Long: "Add a bare machine to the lab: a host namespace, cgroup, empty software root and chassis whose OS is an\n" +
			"sshd (key-based root login only), reached from this machine through a forwarder on 127.0.0.0/8. It writes\n" +
			"DIR/machines/NAME/{inventory.ini,values.yml,secrets.yml,deploy.yml} and registers subcloud NAME at central,\n" +
			"so that either of these brings it up as a new site (docs/deploy.md):\n" +
			"  ansible-playbook -i DIR/machines/NAME/inventory.ini deploy/ansible/bootstrap.yml -e @DIR/machines/NAME/values.yml\n" +
			"  petrel subcloud deploy NAME --options DIR/machines/NAME/deploy.yml --wait 5m",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !bare {
				return usagef("add-machine makes bare machines only: give --bare")
			}
			m, err := lab.AddMachine(cmd.Context(), a.labDir(dir), args[0], "")
			if err != nil {
				return err
			}
			if a.output != "table" {
				b, _ := json.Marshal(m)
				return a.printRaw(b)
			}
			fmt.Fprintf(a.stdout, "Machine %s is up (ssh through %s); bring it up as a site with:\n"+
				"  ansible-playbook -i %s/inventory.ini deploy/ansible/bootstrap.yml -e @%s/values.yml\n"+
				"or from central:\n  petrel subcloud deploy %s --options %s/deploy.yml --wait 5m\n",
				m.Name, m.SSH, m.Dir, m.Dir, m.Name, m.Dir)
			return nil
		},
	}
	addMachine.Flags().BoolVar(&bare, "bare", false, "nothing installed (the only kind so far)")
	var faultNet, faultOneWay string
	var faultPercent int
	var faultDelay time.Duration
	fault := &cobra.Command{
		Use: "fault KIND SITE/HOST|SITE [--net mgmt|cluster|all] [--percent N] [--delay D] | fault list",
		Short: "Inject a fault: power-off, power-on, power-cycle, hang, resume, link-down, link-up, loss, " +
			"bmc-down, bmc-slow (--delay, default 5s), bmc-ignore, clear (a host); partition, loss, clear (a site's WAN link); " +
			"kill-central (SIGKILL the active central of a --central-ha lab); " +
			"list shows what is in effect",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "list" && len(args) == 1 {
				fs, err := lab.Faults(cmd.Context(), a.labDir(dir))
				if err != nil {
					return err
				}
				page := client.Page{Items: []json.RawMessage{}}
				for _, f := range fs {
					b, _ := json.Marshal(f)
					page.Items = append(page.Items, b)
				}
				return a.printList(page, "target", "kind", "detail")
			}
			if args[0] == "kill-central" && len(args) == 1 {
				f, err := lab.Load(a.labDir(dir))
				if err != nil {
					return err
				}
				name, err := lab.KillActiveCentral(cmd.Context(), f)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "kill-central: %s killed (SIGKILL); the other central takes over.\n", name)
				return nil
			}
			if len(args) != 2 {
				return usagef("give KIND and SITE/HOST|SITE, or list, or kill-central")
			}
			if faultOneWay != "" {
				if args[0] != "loss" {
					return usagef("--oneway-to goes with loss")
				}
				if err := lab.FaultOneWay(cmd.Context(), a.labDir(dir), args[1], faultOneWay, faultNet, faultPercent); err != nil {
					return err
				}
			} else if err := lab.Fault(cmd.Context(), a.labDir(dir), args[0], args[1], faultNet, faultPercent, faultDelay); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %s: done.\n", args[0], args[1])
			return nil
		},
	}
	fault.Flags().StringVar(&faultNet, "net", "all", "network: mgmt, cluster or all")
	fault.Flags().IntVar(&faultPercent, "percent", 0, "packet loss percentage (loss)")
	fault.Flags().StringVar(&faultOneWay, "oneway-to", "", "loss only on what the host sends to this SITE/HOST (one way)")
	fault.Flags().DurationVar(&faultDelay, "delay", 0, "one-way delay added on a site's WAN link (loss SITE; --percent may be 0)")
	var fabricCfg string
	fabric := &cobra.Command{
		Use:    "fabric --config FILE",
		Short:  "Serve the lab's network fabric (started by lab up)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, _ := server.NewLogger(a.stderr, "info")
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return lab.RunFabric(ctx, fabricCfg, logger.With("daemon", "lab-fabric"))
		},
	}
	fabric.Flags().StringVar(&fabricCfg, "config", "", "fabric configuration")
	c := group("lab", "Run a whole Petrel cloud on this machine", up, down, status, env, addHost, addMachine, fault, fabric, a.labObserveCmd(&dir))
	c.PersistentFlags().StringVar(&dir, "dir", "", "lab directory (env PETREL_LAB_DIR; default "+lab.DefaultDir+")")
	return c
}
