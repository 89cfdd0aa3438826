package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/sqldb"
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
			poll, offline, err := fc.FleetDurations()
			if err != nil {
				return err
			}
			cfg := central.Config{Shell: shell, SiteListen: fc.SiteListen, WitnessLeaseTTL: ttl, PatchPublicKey: fc.PatchPublicKey,
				FleetPoll: poll, FleetOfflineWait: offline}
			if fc.DebugListen != "" {
				go func() {
					if err := central.ServeDebug(ctx, fc.DebugListen); err != nil {
						logger.Error("the profiler is not served", "err", err)
					}
				}()
			}
			if fc.HA != nil {
				return runCentralPair(ctx, cfg, *fc.HA)
			}
			c, err := central.New(ctx, cfg)
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

// runCentralPair runs central as one of a 1+1 pair: leader through etcd,
// state in the shared PostgreSQL database (docs/central.md).
func runCentralPair(ctx context.Context, cfg central.Config, ha central.HAFileConfig) error {
	if ha.Name == "" || len(ha.Etcd.Endpoints) == 0 || ha.Etcd.CertFile == "" || ha.Etcd.KeyFile == "" || ha.Etcd.CAFile == "" {
		return usagef("ha: name, etcd.endpoints, etcd.cert_file, etcd.key_file and etcd.ca_file are required")
	}
	if sqldb.KindOf(cfg.Shell.Database) != sqldb.Postgres {
		return usagef("ha: a pair shares one PostgreSQL database: set database (a PostgreSQL DSN)")
	}
	ttl := 2 * time.Second
	if ha.SessionTTL != "" {
		d, err := time.ParseDuration(ha.SessionTTL)
		if err != nil || d < time.Second {
			return usagef("ha.session_ttl %q: want a duration of at least 1s", ha.SessionTTL)
		}
		ttl = d
	}
	log := cfg.Shell.Logger.With("component", "pair", "name", ha.Name)
	cli, err := coord.NewClient(coord.ClientConfig{Endpoints: ha.Etcd.Endpoints, Logger: log,
		TLS: coord.TLSFiles{CertFile: ha.Etcd.CertFile, KeyFile: ha.Etcd.KeyFile, CAFile: ha.Etcd.CAFile}})
	if err != nil {
		return err
	}
	defer cli.Close()
	lead, err := coord.NewLeadership(coord.LeadershipConfig{Client: cli, Prefix: central.ElectionPrefix, Name: ha.Name,
		SessionTTL: ttl, Logger: log})
	if err != nil {
		return err
	}
	defer lead.Close()
	log.Info("standby: campaigning for the central pair's leadership")
	err = central.RunPair(ctx, cfg, ha.Name, lead, nil)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
