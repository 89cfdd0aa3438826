package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

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

// WANFaultsFile sits beside the fabric's configuration.
const WANFaultsFile = "wan-faults.yaml"

// FabricConfig is the file `petrel lab fabric` serves.
type FabricConfig struct {
	Routes []Route `json:"routes"`
}

// WANFaults is the file (DIR/wan-faults.yaml) the fabric polls for each
// outbound route's added delay, so `lab fault` can change it while the
// fabric runs.
type WANFaults struct {
	DelayMS map[string]int `json:"delay_ms"` // route name -> one-way delay in ms
}

// delays holds the current delay of each route, read by the copy loops.
type delays struct {
	mu sync.RWMutex
	ms map[string]int
}

func (d *delays) get(route string) time.Duration {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return time.Duration(d.ms[route]) * time.Millisecond
}

// watch reloads the faults file whenever it changes, until ctx ends.
func (d *delays) watch(ctx context.Context, file string, log *slog.Logger) {
	var last time.Time
	for {
		if fi, err := os.Stat(file); err == nil && fi.ModTime() != last {
			last = fi.ModTime()
			var f WANFaults
			if b, err := os.ReadFile(file); err == nil && yaml.Unmarshal(b, &f) == nil {
				d.mu.Lock()
				d.ms = f.DelayMS
				d.mu.Unlock()
				log.Info("WAN faults", "delay_ms", f.DelayMS)
			}
		} else if err != nil && !last.IsZero() {
			last = time.Time{}
			d.mu.Lock()
			d.ms = nil
			d.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
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
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: an error return stops every goroutine
	dl := &delays{}
	wg.Add(1)
	go func() { defer wg.Done(); dl.watch(ctx, filepath.Join(filepath.Dir(cfgFile), WANFaultsFile), log) }()
	for _, r := range cfg.Routes {
		if r.Outbound {
			ln, err := hostnet.ListenIn(ctx, r.Netns, r.Listen)
			if err != nil {
				return fmt.Errorf("lab fabric: route %s: %w", r.Name, err)
			}
			defer ln.Close()
			wg.Add(1)
			delay := func() time.Duration { return dl.get(r.Name) }
			go func() { defer wg.Done(); serveOutbound(ctx, ln, r.Target, delay, log.With("route", r.Name)) }()
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
func serveOutbound(ctx context.Context, ln net.Listener, target string, delay func() time.Duration, log *slog.Logger) {
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
			go func() { delayedCopy(out, in, delay); done <- struct{}{} }()
			go func() { delayedCopy(in, out, delay); done <- struct{}{} }()
			<-done
		}()
	}
}

func sessionAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// delayedCopy copies src to dst, delivering each chunk delay() after it was
// read: a one-way WAN delay that does not throttle throughput (chunks in
// flight overlap).
func delayedCopy(dst io.Writer, src io.Reader, delay func() time.Duration) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 256)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(delay())}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			for range q { // drain so the reader can finish
			}
			return
		}
	}
}
