package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/agent/hostinit"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/lab/vbmc"
	"github.com/petrel-edge/petrel/subcloud"
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
	var cfgFile, pidFile string
	c := &cobra.Command{
		Use:   "host-init --config FILE [--pid-file FILE]",
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
			if pidFile != "" {
				// Where systemd does not run, deploy/ansible's control
				// script (and a lab machine's chassis) find host-init by it.
				if err := atomicfile.Write(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
					return err
				}
				defer removePidFile(pidFile)
			}
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			return hostinit.Run(ctx, cfg, logger.With("daemon", "host-init", "site", cfg.Site, "host", cfg.Host))
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML)")
	c.Flags().StringVar(&pidFile, "pid-file", "", "write the process id here while running")
	return c
}

// removePidFile removes a pid file if it still names this process.
func removePidFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		_ = os.Remove(path)
	}
}

// libvirtdCmd runs a private libvirtd in the foreground (compute/libvirtd:
// its own mount namespace, under tini): a host-init service of every lab
// hypervisor host. It exits non-zero if the daemon dies, so host-init
// restarts it, and stops the daemon on SIGTERM. Either way the guests run
// on (their QEMUs outlive libvirtd, as on a real host) and the next
// daemon reconnects to them: a host's guests end with the host (its
// reboot or power-off ends every process of the host), never because its
// libvirtd restarted.
func (a *app) libvirtdCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "libvirtd --config FILE",
		Short: "Run a host's private libvirtd in the foreground (lab hypervisor hosts)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			var cfg libvirtd.Config
			if err := server.LoadConfig(cfgFile, &cfg); err != nil {
				return err
			}
			if cfg.Dir == "" {
				return usagef("%s: dir is required", cfgFile)
			}
			logger, _ := server.NewLogger(os.Stderr, "info")
			log := logger.With("daemon", "libvirtd", "dir", cfg.Dir)
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			start := time.Now()
			d, err := libvirtd.Start(sctx, cfg)
			cancel()
			if err != nil {
				return err
			}
			log.Info("libvirtd ready", "pid", d.Pid(), "uri", d.URI(), "listen", cfg.ListenAddr, "tls", cfg.TLS != nil,
				"in", time.Since(start).Round(time.Millisecond).String())
			select {
			case <-ctx.Done():
				log.Info("stopping libvirtd; its guests run on")
				d.Stop()
				return nil
			case <-d.Done():
				return fmt.Errorf("libvirtd exited (%v); its guests run on: %s", d.Err(), d.LogTail())
			}
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML: dir, host_uuid, listen_addr, tls: {ca_file, cert_file, key_file, allowed_dn})")
	return c
}

// etcdCmd is `petrel etcd`: a site's coordination member on a host that
// runs no site controller (brief §5: on a multi-server site, the second
// controller and a worker hold the other members).
func (a *app) etcdCmd() *cobra.Command {
	var cfgFile string
	c := &cobra.Command{
		Use:   "etcd --config FILE",
		Short: "Run one member of a site's etcd cluster in the foreground (its other members are embedded in site controllers)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile == "" {
				return usagef("--config is required")
			}
			var cfg subcloud.EtcdConfig
			if err := server.LoadConfig(cfgFile, &cfg); err != nil {
				return err
			}
			if cfg.Name == "" || cfg.DataDir == "" || cfg.ClientAddr == "" || cfg.PeerAddr == "" || cfg.TLS == nil {
				return usagef("%s: name, data_dir, client_addr, peer_addr and tls are required", cfgFile)
			}
			logger, _ := server.NewLogger(os.Stderr, "info")
			log := logger.With("daemon", "etcd", "member", cfg.Name)
			ctx, stop := daemonContext(cmd.Context())
			defer stop()
			files := coord.TLSFiles{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, CAFile: cfg.TLS.CAFile}
			mc := cfg.MemberConfig(files, log)
			mc.ReadyTimeout = 10 * time.Minute // the first start waits for a quorum
			start := time.Now()
			m, err := coord.StartMember(ctx, mc)
			if err != nil {
				return err
			}
			log.Info("etcd member ready", "client", cfg.ClientAddr, "peer", cfg.PeerAddr, "in", time.Since(start).Round(time.Millisecond).String())
			select {
			case <-ctx.Done():
				log.Info("stopping the etcd member")
				m.Close()
				return nil
			case <-m.Done():
				m.Close()
				return fmt.Errorf("the etcd member stopped: %v", m.Err())
			}
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "configuration file (YAML: name, data_dir, client_addr, peer_addr, initial_cluster, tls: {cert_file, key_file, ca_file})")
	return c
}
