package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/agent/hostinit"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/lab/vbmc"
)

func (a *app) vbmcCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "vbmc --config FILE",
		Short: "Run a lab host's chassis (power and boot)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			var cfg vbmc.Config
			if err := server.LoadConfig(cfgFile, &cfg); err != nil {
				return err
			}
			logger, _ := server.NewLogger(os.Stderr, "info")
			ch, err := vbmc.New(cfg, logger.With("daemon", "vbmc", "site", cfg.Site, "host", cfg.Host))
			if err != nil {
				return err
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return ch.Run(ctx)
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	return c
}

func (a *app) hostInitCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "host-init --config FILE",
		Short: "Supervise a host's services (the agent; the site controller on controllers)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			var cfg hostinit.Config
			if err := server.LoadConfig(cfgFile, &cfg); err != nil {
				return err
			}
			logger, _ := server.NewLogger(os.Stderr, "info")
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return hostinit.Run(ctx, cfg, logger.With("daemon", "host-init", "site", cfg.Site, "host", cfg.Host))
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	return c
}
