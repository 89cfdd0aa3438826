// Package hostinit is a host's supervisor, `petrel host-init`: the first
// process of a lab host (booted by its chassis) and, on machines without
// systemd, of a real one. It runs the host's services — the agent on every
// host, the site controller on controllers — from the same binary, restarts
// any that exits with a growing delay, and stops them all on SIGTERM.
package hostinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Service is one supervised process: the binary's own subcommand.
type Service struct {
	Name string   `json:"name"`
	Args []string `json:"args"` // e.g. ["agent", "--config", "/…/agent.yaml"]
}

// Config is host-init's configuration file.
type Config struct {
	Site     string    `json:"site"`
	Host     string    `json:"host"`
	LogDir   string    `json:"log_dir"` // one log per service
	Services []Service `json:"services"`
}

// Run supervises every service until ctx ends, then stops them (SIGTERM,
// SIGKILL after 10 s) and returns when all have exited.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error { return RunEnv(ctx, cfg, log, nil) }

// RunEnv is Run with extra environment variables for the services.
func RunEnv(ctx context.Context, cfg Config, log *slog.Logger, env []string) error {
	if len(cfg.Services) == 0 {
		return errors.New("hostinit: no services")
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, s := range cfg.Services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			supervise(ctx, bin, s, cfg.LogDir, env, log.With("service", s.Name))
		}()
	}
	wg.Wait()
	return nil
}

func supervise(ctx context.Context, bin string, s Service, logDir string, env []string, log *slog.Logger) {
	delay := 200 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := runOnce(ctx, bin, s, logDir, env)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			delay = 200 * time.Millisecond // it ran a good while: not a crash loop
		}
		log.Warn("service exited; restarting", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func runOnce(ctx context.Context, bin string, s Service, logDir string, env []string) error {
	f, err := os.OpenFile(filepath.Join(logDir, s.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, s.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
}
