package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/subcloud/ctlha"
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
	if len(fc.HA) > 0 && string(fc.HA) != "null" {
		// One of a controller pair: the runner starts the site
		// controller while this controller is active (docs/ha.md).
		var hc ctlha.FileConfig
		if err := yaml.UnmarshalStrict(fc.HA, &hc); err != nil {
			return fmt.Errorf("config %s: ha: %w", cfgFile, err)
		}
		pair, err := ctlha.Build(hc, cfg, logger.With("daemon", "subcloud", "site", fc.Site, "component", "pair"))
		if err != nil {
			return err
		}
		return pair.Run(ctx)
	}
	s, err := subcloud.New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
