package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/lab/hostnet"
)

// Route is one path of the lab's network fabric: a listener on 127.0.0.0/8
// in the root namespace forwarding to an address inside a lab namespace.
type Route struct {
	Name   string `json:"name"`
	Listen string `json:"listen"` // 127.x.y.z:port
	Netns  string `json:"netns"`
	Target string `json:"target"` // address inside Netns
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
	for _, r := range cfg.Routes {
		f, err := hostnet.Forward(ctx, r.Listen, r.Netns, r.Target)
		if err != nil {
			return fmt.Errorf("lab fabric: route %s: %w", r.Name, err)
		}
		fwds = append(fwds, f)
		log.Info("forwarding", "route", r.Name, "listen", r.Listen, "netns", r.Netns, "target", r.Target)
	}
	<-ctx.Done()
	return nil
}

func sessionAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
