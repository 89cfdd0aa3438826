package subcloud_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

func newSite(t *testing.T) *subcloud.Subcloud {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	return s
}

func TestSiteRoutesMatchOpenAPI(t *testing.T) {
	s := newSite(t)
	servertest.CheckRoutes(t, s.Shell().Spec(), s.Shell().REST.Routes())
}

func TestHostListAndShow(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	c := servertest.Client(t, s, servertest.AdminToken(t, s))
	var empty rest.List[inventory.Host]
	if err := c.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &empty); err != nil || len(empty.Items) != 0 || empty.Items == nil {
		t.Fatalf("GET /v1/hosts on a new site = %+v, %v; want an empty items array", empty, err)
	}
	h := inventory.Host{UUID: "3f1c0e52-0000-4000-8000-000000000001", Name: "controller-0", Personality: inventory.Controller,
		Subfunctions: []string{"controller", "worker"}, Provisioning: inventory.Provisioned, Administrative: inventory.Unlocked,
		Operational: inventory.Enabled, Availability: inventory.Available,
		Inventory: inventory.Hardware{CPUModel: "lab", Cores: 4, NUMANodes: 1, MemoryMiB: 8192,
			PCI: []inventory.PCIDevice{{Address: "0000:3b:00.0", Vendor: "10de", Device: "20b5", Class: "0302"}}}}
	if _, err := s.Hosts.PutHost(ctx, h, 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"controller-0", h.UUID} {
		var got inventory.Host
		if err := c.Do(ctx, http.MethodGet, "/v1/hosts/"+id, nil, nil, &got); err != nil {
			t.Fatalf("GET /v1/hosts/%s: %v", id, err)
		}
		if got.Name != "controller-0" || got.Availability != inventory.Available || len(got.Inventory.PCI) != 1 {
			t.Errorf("GET /v1/hosts/%s = %+v", id, got)
		}
	}
	var list rest.List[inventory.Host]
	if err := c.Do(ctx, http.MethodGet, "/v1/hosts", map[string][]string{"personality": {"controller"}}, nil, &list); err != nil || len(list.Items) != 1 {
		t.Errorf("GET /v1/hosts?personality=controller = %d hosts, %v", len(list.Items), err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/hosts/controller-9", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("GET unknown host = %v; want not found", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/hosts", map[string][]string{"rack": {"1"}}, nil, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("GET /v1/hosts?rack=1 = %v; want invalid argument", err)
	}
	var ver struct{ Daemon, Site string }
	if err := c.Do(ctx, http.MethodGet, "/v1/version", nil, nil, &ver); err != nil || ver.Daemon != "subcloud" || ver.Site != "site-sx" {
		t.Errorf("GET /v1/version = %+v, %v", ver, err)
	}
	var spec []byte
	if err := c.Do(ctx, http.MethodGet, "/v1/openapi.yaml", nil, nil, &spec); err != nil || len(spec) == 0 {
		t.Errorf("GET /v1/openapi.yaml = %d bytes, %v", len(spec), err)
	}
}

func TestConfigFromFileRejectsBadSites(t *testing.T) {
	for _, fc := range []subcloud.FileConfig{{Site: "Site X", Shape: "simplex"}, {Site: "site-x", Shape: "triplex"},
		// qemu+tls without the controller's certificate
		{Site: "site-x", Shape: "simplex", Compute: &subcloud.ComputeConfig{LibvirtURI: subcloud.DefaultLibvirtURI}}} {
		if _, err := subcloud.ConfigFromFile(fc, servertest.Shell(t)); err == nil {
			t.Errorf("ConfigFromFile(%+v) = nil error", fc)
		}
	}
}

// A site controller serves its own dashboard: the site's hosts at /, the
// alarm banner and the alarms page, behind a session.
func TestSiteDashboard(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	base := s.Shell().URL()
	hc := servertest.HTTPClient(t, s)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(path, session string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if session != "" {
			req.AddCookie(&http.Cookie{Name: s.Shell().Auth.SessionCookie(), Value: session})
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, p := range []string{"/", "/ui/alarms"} {
		if resp, _ := get(p, ""); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
			t.Errorf("GET %s without a session = %d %s; want 303 to /ui/login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, page := get("/ui/login", ""); resp.StatusCode != 200 || !strings.Contains(page, `name="csrf_token"`) {
		t.Errorf("login page = %d", resp.StatusCode)
	}
	tok := servertest.AdminToken(t, s)
	c := servertest.Client(t, s, tok)
	if err := c.Do(ctx, http.MethodPost, "/v1/alarms", nil, server.RaiseRequest{AlarmID: "200.010", EntityInstanceID: "host=controller-0"}, nil); err != nil {
		t.Fatal(err)
	}
	resp, page := get("/", tok)
	if resp.StatusCode != 200 || !strings.Contains(page, "<h1>Site site-sx</h1>") || !strings.Contains(page, `data-api=""`) {
		t.Fatalf("site home = %d:\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("site home CSP = %q", resp.Header.Get("Content-Security-Policy"))
	}
	if !strings.Contains(page, `data-alarm-count="major">1<`) {
		t.Error("the site's banner does not count its major alarm")
	}
	resp, page = get("/ui/alarms", tok)
	if resp.StatusCode != 200 || !strings.Contains(page, `<table id="alarms">`) || strings.Contains(page, "<th>Site</th>") {
		t.Errorf("site alarms page = %d (want the table, no Site column):\n%s", resp.StatusCode, page)
	}
	if resp, _ := get("/ui/static/app.js", ""); resp.StatusCode != 200 {
		t.Errorf("app.js = %d", resp.StatusCode)
	}
}
