package main

import (
	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/servicemgr/demo"
)

// demoServiceCmd runs the demo service that service groups run in the lab
// (docs/servicemgr.md, "Demo service and observer").
func (a *app) demoServiceCmd() *cobra.Command {
	var listen []string
	var stateDir, logLevel string
	c := &cobra.Command{
		Use:   "demo-service --listen ADDR:PORT [--listen ADDR:PORT ...] --state-dir DIR",
		Short: "Run the demo service of a service group member: GET / answers 200 while its role.json says active, 503 otherwise",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(listen) == 0 || stateDir == "" {
				return usagef("--listen and --state-dir are required")
			}
			logger, err := server.NewLogger(a.stderr, logLevel)
			if err != nil {
				return usageError{err}
			}
			host, group := a.getenv("PETREL_HOST"), a.getenv("PETREL_GROUP")
			s, err := demo.New(demo.Config{
				Listen: listen, StateDir: stateDir, Host: host, Group: group,
				Logger: logger.With("daemon", "demo-service", "host", host, "group", group),
			})
			if err != nil {
				return usageError{err}
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return s.Run(ctx)
		},
	}
	c.Flags().StringArrayVar(&listen, "listen", nil, "address to serve on, ip:port (repeatable)")
	c.Flags().StringVar(&stateDir, "state-dir", "", "the member's state directory, where the agent writes role.json")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}
