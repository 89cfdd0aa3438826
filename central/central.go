// Package central is the central cloud: the daemon `petrel central` that
// keeps the subcloud registry and serves the fleet's API. Dial-home, relay,
// sync and fleet orchestration plug into it.
package central

import (
	"context"
	_ "embed"
	"net/http"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
)

//go:embed openapi.yaml
var openapiFragment []byte

// FileConfig is the configuration file of `petrel central`.
type FileConfig struct {
	server.FileConfig
}

// Config configures central.
type Config struct {
	Shell server.Config // Daemon and OpenAPI are filled in by New
}

// Central is a running central cloud.
type Central struct {
	cfg       Config
	shell     *server.Server
	Subclouds SubcloudStore
}

// New builds central; it starts nothing.
func New(ctx context.Context, cfg Config) (*Central, error) {
	cfg.Shell.Daemon, cfg.Shell.Site, cfg.Shell.OpenAPI = "central", "", openapiFragment
	shell, err := server.New(ctx, cfg.Shell)
	if err != nil {
		return nil, err
	}
	subclouds, err := OpenSubcloudStore(ctx, shell.DB)
	if err != nil {
		shell.Close()
		return nil, err
	}
	c := &Central{cfg: cfg, shell: shell, Subclouds: subclouds}
	c.register(shell.REST, shell.Auth)
	return c, nil
}

// Run serves until ctx ends.
func (c *Central) Run(ctx context.Context) error { return c.shell.Run(ctx) }

// Shell exposes the daemon shell (URL, readiness, routes) to tests and tools.
func (c *Central) Shell() *server.Server { return c.shell }

func (c *Central) register(srv *rest.Server, a *auth.Service) {
	srv.Handle("listSubclouds", http.MethodGet, "/v1/subclouds", a.Require(auth.Reader), c.listSubclouds)
	srv.Handle("getSubcloud", http.MethodGet, "/v1/subclouds/{name}", a.Require(auth.Reader), c.getSubcloud)
}

func (c *Central) listSubclouds(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, SubcloudFilters...)
	if err != nil {
		return 0, nil, err
	}
	scs, next, err := c.Subclouds.Subclouds(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[Subcloud]{Items: scs, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (c *Central) getSubcloud(r *http.Request) (int, any, error) {
	sc, err := c.Subclouds.Subcloud(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sc, nil
}
