package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/subcloud"
)

// daemonContext ends on SIGTERM or SIGINT.
func daemonContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
}

func (a *app) centralDaemonCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "central --config FILE",
		Short: "Run the central cloud daemon",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			var fc central.FileConfig
			if err := server.LoadConfig(cfgFile, &fc); err != nil {
				return err
			}
			logger, err := server.NewLogger(os.Stderr, fc.LogLevel)
			if err != nil {
				return err
			}
			shell, err := fc.ShellConfig("central", "", logger.With("daemon", "central"))
			if err != nil {
				return err
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			ttl, err := fc.LeaseTTL()
			if err != nil {
				return err
			}
			c, err := central.New(ctx, central.Config{Shell: shell, SiteListen: fc.SiteListen, WitnessLeaseTTL: ttl})
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	return c
}

// runSubcloudDaemon runs `petrel subcloud --config FILE`: the subcloud noun
// doubles as the site controller daemon (brief §8 names both).
func (a *app) runSubcloudDaemon(cmd *cobra.Command, cfgFile string) error {
	var fc subcloud.FileConfig
	if err := server.LoadConfig(cfgFile, &fc); err != nil {
		return err
	}
	logger, err := server.NewLogger(os.Stderr, fc.LogLevel)
	if err != nil {
		return err
	}
	shell, err := fc.ShellConfig("subcloud", fc.Site, logger.With("daemon", "subcloud", "site", fc.Site))
	if err != nil {
		return err
	}
	cfg, err := subcloud.ConfigFromFile(fc, shell)
	if err != nil {
		return err
	}
	ctx, stop := daemonContext(cmd.Context())
	defer stop()
	s, err := subcloud.New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
