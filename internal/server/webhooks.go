package server

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/egress"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sealed"
)

// newWebhooks builds the webhook manager from the daemon's configuration.
func newWebhooks(cfg Config, fdb *faultdb.Store, box *sealed.Box, reg prometheus.Registerer) (*webhook.Manager, error) {
	pol, err := egress.NewPolicy(cfg.Webhooks.Allow, cfg.Webhooks.Deny)
	if err != nil {
		return nil, fmt.Errorf("server: webhooks: %w", err)
	}
	var roots *x509.CertPool
	if f := cfg.Webhooks.CACert; f != "" {
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("server: webhooks.ca_cert: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server: webhooks.ca_cert %s holds no PEM certificate", f)
		}
	}
	return webhook.New(webhook.Config{Store: fdb, Log: fdb, Box: box, Policy: pol, RootCAs: roots,
		Logger: cfg.Logger.With("component", "webhook"), Registry: reg})
}

func (s *Server) registerWebhooks() {
	a := s.Auth
	s.REST.Handle("listWebhooks", http.MethodGet, "/v1/webhooks", a.Require(auth.Reader), s.listWebhooks)
	s.REST.Handle("createWebhook", http.MethodPost, "/v1/webhooks", a.Require(auth.Admin), s.createWebhook)
	s.REST.Handle("getWebhook", http.MethodGet, "/v1/webhooks/{id}", a.Require(auth.Reader), s.getWebhook)
	s.REST.Handle("updateWebhook", http.MethodPatch, "/v1/webhooks/{id}", a.Require(auth.Admin), s.updateWebhook)
	s.REST.Handle("deleteWebhook", http.MethodDelete, "/v1/webhooks/{id}", a.Require(auth.Admin), s.deleteWebhook)
	s.REST.Handle("testWebhook", http.MethodPost, "/v1/webhooks/{id}/test", a.Require(auth.Admin), s.testWebhook)
}

func (s *Server) listWebhooks(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r)
	if err != nil {
		return 0, nil, err
	}
	ws, next, err := s.Webhooks.List(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[webhook.Webhook]{Items: ws, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Server) createWebhook(r *http.Request) (int, any, error) {
	var req webhook.CreateRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	p, _ := auth.PrincipalFrom(r.Context())
	c, err := s.Webhooks.Create(r.Context(), req, p.User)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, c, nil
}

func (s *Server) getWebhook(r *http.Request) (int, any, error) {
	w, err := s.Webhooks.Get(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, w, nil
}

func (s *Server) updateWebhook(r *http.Request) (int, any, error) {
	var req webhook.UpdateRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	w, err := s.Webhooks.Update(r.Context(), rest.Var(r, "id"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, w, nil
}

func (s *Server) deleteWebhook(r *http.Request) (int, any, error) {
	if err := s.Webhooks.Delete(r.Context(), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) testWebhook(r *http.Request) (int, any, error) {
	res, err := s.Webhooks.Test(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, res, nil
}
