package central

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// registerDeploy registers the deploy routes: the deploy engine (admin to
// change, reader to look), join tokens (admin), and the join itself
// (authenticated by the one-time join token in the body).
func (c *Central) registerDeploy(srv *rest.Server, a *auth.Service) {
	srv.Handle("startDeploy", http.MethodPost, "/v1/subclouds/{name}/deploy", a.Require(auth.Admin), c.startDeploy)
	srv.Handle("getDeploy", http.MethodGet, "/v1/subclouds/{name}/deploy", a.Require(auth.Reader), c.getDeploy)
	srv.Handle("abortDeploy", http.MethodPost, "/v1/subclouds/{name}/deploy/abort", a.Require(auth.Admin), c.abortDeploy)
	srv.Handle("resumeDeploy", http.MethodPost, "/v1/subclouds/{name}/deploy/resume", a.Require(auth.Admin), c.resumeDeploy)
	srv.Handle("getDeployErrors", http.MethodGet, "/v1/subclouds/{name}/errors", a.Require(auth.Reader), c.getDeployErrors)
	srv.Handle("createSubcloudJoinToken", http.MethodPost, "/v1/subclouds/{name}/join-tokens", a.Require(auth.Admin), c.createSubcloudJoinToken)
	srv.HandlePublic("joinSubcloud", http.MethodPost, "/v1/subcloud-join", c.joinSubcloud)
	srv.HandlePublic("subcloudJoinStatus", http.MethodPost, "/v1/subcloud-join/status", c.subcloudJoinStatus)
}

func (c *Central) startDeploy(r *http.Request) (int, any, error) {
	var opts DeployOptions
	if err := rest.DecodeJSON(r, &opts); err != nil {
		return 0, nil, err
	}
	d, err := c.deploys.Start(r.Context(), rest.Var(r, "name"), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, d, nil
}

func (c *Central) getDeploy(r *http.Request) (int, any, error) {
	d, err := c.deploys.Show(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, d, nil
}

func (c *Central) abortDeploy(r *http.Request) (int, any, error) {
	d, err := c.deploys.Abort(r.Context(), rest.Var(r, "name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, d, nil
}

// ResumeDeployRequest is the body of POST …/deploy/resume: new options,
// if any (replacing the deploy's).
type ResumeDeployRequest struct {
	Options *DeployOptions `json:"options,omitempty"`
}

func (c *Central) resumeDeploy(r *http.Request) (int, any, error) {
	var req ResumeDeployRequest
	if r.ContentLength != 0 {
		if err := rest.DecodeJSON(r, &req); err != nil {
			return 0, nil, err
		}
	}
	d, err := c.deploys.Resume(r.Context(), rest.Var(r, "name"), req.Options)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, d, nil
}

func (c *Central) getDeployErrors(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	sc, err := c.Subclouds.Subcloud(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	out := deployErrors{Subcloud: name, DeployStatus: sc.DeployStatus}
	if d, err := c.deploys.store.deploy(r.Context(), name); err == nil {
		out.State, out.Failure = d.State, d.Failure
	}
	return http.StatusOK, out, nil
}

// JoinTokenRequest is the body of POST /v1/subclouds/{name}/join-tokens.
type JoinTokenRequest struct {
	TTLSeconds int64 `json:"ttl_s,omitempty"` // default 3600, at most 7 days
}

// IssuedJoinToken is a new join token: shown once.
type IssuedJoinToken struct {
	Subcloud  string    `json:"subcloud"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (c *Central) createSubcloudJoinToken(r *http.Request) (int, any, error) {
	var req JoinTokenRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ttl := time.Hour
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 1 || req.TTLSeconds > 7*24*3600 {
			return 0, nil, errs.Field("ttl_s", "must be in [1, 604800]")
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	name := rest.Var(r, "name")
	if _, err := c.Subclouds.Subcloud(r.Context(), name); err != nil {
		return 0, nil, err
	}
	tok, exp, err := c.deploys.newJoinToken(r.Context(), name, ttl)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, IssuedJoinToken{Subcloud: name, Token: tok, ExpiresAt: exp}, nil
}

// SubcloudJoinRequest is the body of POST /v1/subcloud-join: a new site's
// certificate request, with the one-time join token that admits it.
type SubcloudJoinRequest struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM; the site keeps its key
}

// checkJoinToken finds the token and says why it does not admit name now.
// used: whether a used token is accepted (the status route).
func (c *Central) checkJoinToken(r *http.Request, name, tok string, used bool) (joinTokenRow, error) {
	if name == "" || tok == "" {
		return joinTokenRow{}, errs.Wrapf(errs.Invalid, "name and token are required")
	}
	t, err := c.deploys.store.joinToken(r.Context(), tok)
	if err != nil {
		return t, err
	}
	if t.Subcloud != name {
		return t, ErrJoinTokenInvalid // says nothing about other subclouds
	}
	now := c.deploys.cfg.Now()
	switch {
	case t.UsedAt != nil && used:
		return t, nil
	case t.UsedAt != nil:
		return t, fmt.Errorf("%w: it admitted subcloud %s at %s; make a new one ('petrel subcloud join-token %s')",
			ErrJoinTokenUsed, name, t.UsedAt.UTC().Format(time.RFC3339), name)
	case !t.ExpiresAt.After(now):
		return t, fmt.Errorf("%w: it was valid until %s; make a new one ('petrel subcloud join-token %s')",
			ErrJoinTokenExpired, t.ExpiresAt.UTC().Format(time.RFC3339), name)
	}
	return t, nil
}

// joinSubcloud signs a new site's link certificate in exchange for its
// one-time join token. The token is spent and the certificate recorded
// together: if recording fails the token is given back, so a refused or
// failed join leaves nothing half-registered.
func (c *Central) joinSubcloud(r *http.Request) (int, any, error) {
	if c.fleet == nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "central serves no site links (site_listen is not set)")
	}
	var req SubcloudJoinRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	t, err := c.checkJoinToken(r, req.Name, req.Token, false)
	if err != nil {
		return 0, nil, err
	}
	sc, err := c.Subclouds.Subcloud(r.Context(), req.Name)
	if err != nil {
		return 0, nil, err
	}
	if t.CreatedAt.Before(sc.CreatedAt) {
		// Made for an earlier subcloud of that name, since deleted.
		return 0, nil, ErrJoinTokenInvalid
	}
	certPEM, serial, err := c.fleet.SignClientCSR([]byte(req.CSR), req.Name, "site", siteCertTTL)
	if err != nil {
		return 0, nil, errs.Field("csr", "%v", err)
	}
	var ca []byte
	if c.shell.CACert != "" {
		if ca, err = os.ReadFile(c.shell.CACert); err != nil {
			return 0, nil, err
		}
	}
	pub, err := os.ReadFile(filepath.Join(c.cfg.Shell.DataDir, RelayPublicKey))
	if err != nil {
		return 0, nil, err
	}
	now := c.deploys.cfg.Now()
	detail := SiteCertificate{Serial: serial, IssuedAt: now, NotAfter: now.Add(siteCertTTL)}
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	ok, err := c.deploys.store.useJoinToken(r.Context(), t.ID, now)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, nil, fmt.Errorf("%w: it was used or expired just now; make a new one ('petrel subcloud join-token %s')", ErrJoinTokenUsed, req.Name)
	}
	sc, err = c.Subclouds.UpdateSubcloud(r.Context(), req.Name, func(sc *Subcloud) error {
		sc.Certificate = &detail
		return nil
	})
	c.certs.forget(req.Name)
	if err != nil {
		if uerr := c.deploys.store.unuseJoinToken(r.Context(), t.ID); uerr != nil {
			c.log.Error("giving back a join token failed", "subcloud", req.Name, "err", uerr)
		}
		return 0, nil, err
	}
	if s := c.links.get(req.Name); s != nil {
		s.Close() // a link on an earlier certificate ends now
	}
	c.witness.closeSessions(req.Name)
	c.stream.Publish("subcloud", sc)
	c.log.Info("site joined with a join token", "subcloud", req.Name, "serial", serial)
	return http.StatusCreated, SiteCredentials{Certificate: string(certPEM), CACertificate: string(ca),
		RelayPublicKey: string(pub), Detail: detail}, nil
}

// SubcloudJoinStatusRequest is the body of POST /v1/subcloud-join/status.
type SubcloudJoinStatusRequest struct {
	Name  string `json:"name"`
	Token string `json:"token"`
}

// SubcloudJoinStatus is what a join token may read of its subcloud.
type SubcloudJoinStatus struct {
	Name         string       `json:"name"`
	Availability Availability `json:"availability"`
	DeployStatus DeployStatus `json:"deploy_status"`
}

// subcloudJoinStatus answers, for the token that joined a site (or an
// unused, unexpired one), whether central sees the site online: what the
// playbook waits for.
func (c *Central) subcloudJoinStatus(r *http.Request) (int, any, error) {
	var req SubcloudJoinStatusRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if _, err := c.checkJoinToken(r, req.Name, req.Token, true); err != nil {
		return 0, nil, err
	}
	sc, err := c.Subclouds.Subcloud(r.Context(), req.Name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, SubcloudJoinStatus{Name: sc.Name, Availability: sc.Availability, DeployStatus: sc.DeployStatus}, nil
}
