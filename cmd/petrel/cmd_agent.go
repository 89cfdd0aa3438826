package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/version"
	"github.com/petrel-edge/petrel/swpatch"
)

// agentFileConfig is the configuration file of `petrel agent`.
type agentFileConfig struct {
	SiteURL       string `json:"site_url"`
	CACert        string `json:"ca_cert"`
	JoinTokenFile string `json:"join_token_file"`
	StateDir      string `json:"state_dir"`
	Profile       string `json:"profile"`  // optional hardware overlay
	Platform      string `json:"platform"` // "host" (default) or "lab"
	Lab           struct {
		SoftwareRoot string `json:"software_root"`
		Chassis      string `json:"chassis"`
	} `json:"lab"`
	SoftwareRoot string `json:"software_root"` // host platform: the file system the monitor watches; default /
	// PatchPublicKey is the PEM file of the key patch archives must be
	// signed with; "": installs are refused.
	PatchPublicKey string `json:"patch_public_key"`
	LogLevel       string `json:"log_level"`
	CheckInterval  string `json:"check_interval"`
	Monitor        struct {
		Disabled   bool              `json:"disabled"`
		Interval   string            `json:"interval"` // default 10s
		CPU        monitor.Threshold `json:"cpu"`
		Memory     monitor.Threshold `json:"memory"`
		Filesystem monitor.Threshold `json:"filesystem"`
	} `json:"monitor"`
}

// loadAgentConfig reads the agent's configuration file (--config).
func loadAgentConfig(path string) (agentFileConfig, error) {
	var fc agentFileConfig
	if path == "" {
		return fc, usagef("--config is required")
	}
	return fc, server.LoadConfig(path, &fc)
}

func (a *app) agentDaemonCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "agent --config FILE",
		Short: "Run the host agent: join the site, report this host",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := loadAgentConfig(cfgFile)
			if err != nil {
				return err
			}
			logger, err := server.NewLogger(os.Stderr, fc.LogLevel)
			if err != nil {
				return err
			}
			var plat agent.Platform
			switch fc.Platform {
			case "lab":
				plat, err = agent.NewLabPlatform(fc.Lab.SoftwareRoot, fc.Lab.Chassis)
			case "", "host":
				var hp *agent.HostPlatform
				if hp, err = agent.NewHostPlatform(); err == nil {
					hp.SoftwareRoot = fc.SoftwareRoot
					plat = hp
				}
			default:
				return usagef("config: platform %q: want host or lab", fc.Platform)
			}
			if err != nil {
				return err
			}
			cfg := agent.Config{SiteURL: fc.SiteURL, CACert: fc.CACert, JoinTokenFile: fc.JoinTokenFile,
				StateDir: fc.StateDir, Platform: plat, Version: version.Get().Version, Logger: logger.With("daemon", "agent")}
			if fc.PatchPublicKey != "" {
				if cfg.PatchPublicKey, err = swpatch.LoadPublicKey(fc.PatchPublicKey); err != nil {
					// The host still reports; installs are refused until fixed.
					cfg.Logger.Error("no trusted patch key: installs will be refused", "err", err)
				}
			}
			if fc.Profile != "" {
				if cfg.Profile, err = agent.LoadProfile(fc.Profile); err != nil {
					return err
				}
			}
			if fc.CheckInterval != "" {
				if cfg.CheckInterval, err = time.ParseDuration(fc.CheckInterval); err != nil {
					return usagef("config: check_interval: %v", err)
				}
			}
			cfg.MonitorDisable = fc.Monitor.Disabled
			cfg.Monitor = monitor.Config{CPU: fc.Monitor.CPU, Memory: fc.Monitor.Memory, Filesystem: fc.Monitor.Filesystem}
			if fc.Monitor.Interval != "" {
				if cfg.Monitor.Interval, err = time.ParseDuration(fc.Monitor.Interval); err != nil {
					return usagef("config: monitor.interval: %v", err)
				}
			}
			ag, err := agent.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return ag.Run(ctx)
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	c.AddCommand(a.agentMachineIDCmd())
	return c
}

// agentMachineIDCmd prints the identity the agent of --config joins its
// site with (its host's UUID there): deploy/ansible finds its own host so.
func (a *app) agentMachineIDCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "machine-id --config FILE",
		Short: "Print this host's machine identity (its host UUID at the site)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := loadAgentConfig(cfgFile)
			if err != nil {
				return err
			}
			if fc.StateDir == "" {
				return usagef("config: state_dir is required")
			}
			id, err := agent.MachineID(fc.StateDir, agent.DMIProductUUID)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	return c
}
