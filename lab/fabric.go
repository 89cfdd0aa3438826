package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/lab/hostnet"
)

// Route is one path of the lab's network fabric. Inbound (the default): a
// listener on 127.0.0.0/8 in the root namespace forwarding to an address
// inside a lab namespace. Outbound: a listener inside a lab namespace
// forwarding to an address in the root namespace — a site's WAN link to
// central.
type Route struct {
	Name     string `json:"name"`
	Outbound bool   `json:"outbound,omitempty"`
	Listen   string `json:"listen"` // inbound: 127.x.y.z:port; outbound: an address inside Netns
	Netns    string `json:"netns"`
	Target   string `json:"target"` // inbound: an address inside Netns; outbound: 127.x.y.z:port
}

// FabricConfig is the file `petrel lab fabric` serves.
type FabricConfig struct {
	Routes []Route `json:"routes"`
}

// RunFabric serves every route until ctx ends, then closes every listener
// and connection (sockets opened in a namespace keep it alive otherwise).
func RunFabric(ctx context.Context, cfgFile string, log *slog.Logger) error {
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		return err
	}
	var cfg FabricConfig
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return fmt.Errorf("lab fabric: %s: %w", cfgFile, err)
	}
	var fwds []*hostnet.Forwarder
	defer func() {
		for _, f := range fwds {
			f.Close()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, r := range cfg.Routes {
		if r.Outbound {
			ln, err := hostnet.ListenIn(ctx, r.Netns, r.Listen)
			if err != nil {
				return fmt.Errorf("lab fabric: route %s: %w", r.Name, err)
			}
			defer ln.Close()
			wg.Add(1)
			go func() { defer wg.Done(); serveOutbound(ctx, ln, r.Target, log.With("route", r.Name)) }()
		} else {
			f, err := hostnet.Forward(ctx, r.Listen, r.Netns, r.Target)
			if err != nil {
				return fmt.Errorf("lab fabric: route %s: %w", r.Name, err)
			}
			fwds = append(fwds, f)
		}
		log.Info("forwarding", "route", r.Name, "outbound", r.Outbound, "listen", r.Listen, "netns", r.Netns, "target", r.Target)
	}
	<-ctx.Done()
	return nil
}

// serveOutbound relays connections accepted inside a namespace to target in
// the root namespace until ctx ends; live connections close with it.
func serveOutbound(ctx context.Context, ln net.Listener, target string, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer in.Close()
			var d net.Dialer
			out, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				log.Warn("outbound dial failed", "err", err)
				return
			}
			defer out.Close()
			stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
			defer stop()
			done := make(chan struct{}, 2)
			go func() { io.Copy(out, in); done <- struct{}{} }()
			go func() { io.Copy(in, out); done <- struct{}{} }()
			<-done
		}()
	}
}

func sessionAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
