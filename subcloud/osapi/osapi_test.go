package osapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/availabilityzones"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/hypervisors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/petrel-edge/petrel/compute"
)

// passwordAuth authenticates user with gophercloud's password method,
// scoped to project by name in domain Default.
func (e *env) passwordAuth(user, project string) (*gophercloud.ProviderClient, error) {
	return openstack.AuthenticatedClient(context.Background(), gophercloud.AuthOptions{
		IdentityEndpoint: e.url + "/identity/v3", Username: user, Password: password(user),
		DomainName: "Default", TenantName: project})
}

// clients returns compute, image and identity clients for a provider, at
// compute microversion mv ("" for none: 2.1).
func (e *env) clients(p *gophercloud.ProviderClient, mv string) (*gophercloud.ServiceClient, *gophercloud.ServiceClient, *gophercloud.ServiceClient) {
	e.t.Helper()
	eo := gophercloud.EndpointOpts{Region: "RegionOne"}
	cc, err := openstack.NewComputeV2(p, eo)
	if err != nil {
		e.t.Fatal(err)
	}
	cc.Microversion = mv
	ic, err := openstack.NewImageV2(p, eo)
	if err != nil {
		e.t.Fatal(err)
	}
	kc, err := openstack.NewIdentityV3(p, eo)
	if err != nil {
		e.t.Fatal(err)
	}
	return cc, ic, kc
}

func (e *env) computeAs(user, project, mv string) *gophercloud.ServiceClient {
	e.t.Helper()
	p, err := e.passwordAuth(user, project)
	if err != nil {
		e.t.Fatalf("password auth as %s in %s: %v", user, project, err)
	}
	cc, _, _ := e.clients(p, mv)
	return cc
}

// statusOf is the HTTP status of a gophercloud error (0 if none).
func statusOf(err error) int {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return ue.Actual
	}
	return 0
}

// bodyOf is the response body carried by a gophercloud error.
func bodyOf(err error) string {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return string(ue.Body)
	}
	return ""
}

func TestGophercloudPasswordAuthAndServerLifecycle(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	p, err := e.passwordAuth("ops", "tenant-a")
	if err != nil {
		t.Fatalf("AuthenticatedClient(ops, tenant-a) = %v", err)
	}
	cc, ic, kc := e.clients(p, "2.37")
	// The token is a Petrel token of tenant-a.
	if pr, err := e.auth.Authenticate(ctx, p.Token()); err != nil || pr.Project != "tenant-a" || pr.User != "ops" {
		t.Errorf("the Keystone token authenticates as %+v, %v; want ops of tenant-a", pr, err)
	}
	tok := tokens.Get(ctx, kc, p.Token())
	if proj, err := tok.ExtractProject(); err != nil || proj.Name != "tenant-a" || proj.Domain.Name != "Default" {
		t.Errorf("token project = %+v, %v", proj, err)
	}
	if roles, _ := tok.ExtractRoles(); len(roles) != 2 || roles[0].Name != "member" {
		t.Errorf("operator's Keystone roles = %+v; want member, reader", roles)
	}

	created, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "vm-1", ImageRef: e.images["petrel-test"].ID,
		FlavorRef: e.flavors["m1.tiny"].ID, Networks: "none"}, nil).Extract()
	if err != nil {
		t.Fatalf("servers.Create = %v (%s)", err, bodyOf(err))
	}
	sv, err := servers.Get(ctx, cc, created.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if sv.Name != "vm-1" || sv.Status != "ACTIVE" || sv.TenantID != "tenant-a" || sv.Host != "compute-0" ||
		sv.VmState != "active" || sv.PowerState != servers.RUNNING || sv.Image["id"] != e.images["petrel-test"].ID ||
		sv.Flavor["id"] != e.flavors["m1.tiny"].ID || sv.AvailabilityZone != "nova" || sv.Locked == nil || *sv.Locked {
		t.Errorf("servers.Get = %+v", sv)
	}
	// The names of images and flavors work as references too.
	if _, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "vm-2", ImageRef: "private-a", FlavorRef: "a.private",
		Networks: "none"}, nil).Extract(); err != nil {
		t.Errorf("create from the project's private image and flavor, by name: %v (%s)", err, bodyOf(err))
	}
	pages, err := servers.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := servers.ExtractServers(pages)
	if len(all) != 2 || all[0].Name != "vm-1" || all[1].Name != "vm-2" || all[1].Status != "ACTIVE" {
		t.Errorf("servers.List = %+v", all)
	}
	// Paging with limit and marker follows servers_links.
	var names []string
	err = servers.List(cc, servers.ListOpts{Limit: 1}).EachPage(ctx, func(_ context.Context, pg pagination.Page) (bool, error) {
		ss, err := servers.ExtractServers(pg)
		for _, s := range ss {
			names = append(names, s.Name)
		}
		return true, err
	})
	if err != nil || strings.Join(names, ",") != "vm-1,vm-2" {
		t.Errorf("paged list = %v, %v; want vm-1,vm-2", names, err)
	}
	pages, _ = servers.List(cc, servers.ListOpts{Name: "^vm-2$"}).AllPages(ctx)
	if ss, _ := servers.ExtractServers(pages); len(ss) != 1 || ss[0].Name != "vm-2" {
		t.Errorf("list name=^vm-2$ = %+v", ss)
	}

	// Actions: stop, start, reboot answer 202; rebuild answers the server.
	if err := servers.Stop(ctx, cc, sv.ID).ExtractErr(); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if got, _ := servers.Get(ctx, cc, sv.ID).Extract(); got.Status != "SHUTOFF" || got.PowerState != servers.SHUTDOWN || got.VmState != "stopped" {
		t.Errorf("after stop: %s %d %s", got.Status, got.PowerState, got.VmState)
	}
	if err := servers.Start(ctx, cc, sv.ID).ExtractErr(); err != nil {
		t.Errorf("Start = %v", err)
	}
	if err := servers.Reboot(ctx, cc, sv.ID, servers.RebootOpts{Type: servers.HardReboot}).ExtractErr(); err != nil {
		t.Errorf("Reboot = %v", err)
	}
	rebuilt, err := servers.Rebuild(ctx, cc, sv.ID, servers.RebuildOpts{ImageRef: e.images["petrel-test-v2"].ID}).Extract()
	if err != nil || rebuilt.Image["id"] != e.images["petrel-test-v2"].ID {
		t.Errorf("Rebuild = %+v, %v (%s)", rebuilt, err, bodyOf(err))
	}
	// os-migrateLive (gophercloud's LiveMigrate): a live migration to
	// the host named.
	host := "compute-1"
	if err := servers.LiveMigrate(ctx, cc, sv.ID, servers.LiveMigrateOpts{Host: &host}).ExtractErr(); err != nil {
		t.Errorf("LiveMigrate = %v (%s)", err, bodyOf(err))
	}
	acts := e.servers.acts
	if len(acts) != 5 || acts[2].Action != compute.ActionReboot || !acts[2].Hard || acts[3].Action != compute.ActionRebuild ||
		acts[4].Action != compute.ActionMigrate || acts[4].Host != "compute-1" {
		t.Errorf("actions reaching compute = %+v", acts)
	}
	if err := servers.Delete(ctx, cc, sv.ID).ExtractErr(); err != nil {
		t.Errorf("Delete = %v", err)
	}
	if _, err := servers.Get(ctx, cc, sv.ID).Extract(); statusOf(err) != http.StatusNotFound || !strings.Contains(bodyOf(err), `"itemNotFound"`) {
		t.Errorf("Get(deleted) = %v %s; want 404 itemNotFound", err, bodyOf(err))
	}

	// Flavors, images, hypervisors, zones and limits.
	fpages, err := flavors.ListDetail(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fl, _ := flavors.ExtractFlavors(fpages)
	if names := flavorNames(fl); names != "a.private,m1.small,m1.tiny" {
		t.Errorf("tenant-a's flavors = %s; want its private one and the public ones", names)
	}
	if f, err := flavors.Get(ctx, cc, e.flavors["m1.small"].ID).Extract(); err != nil || f.RAM != 256 || f.VCPUs != 2 || !f.IsPublic {
		t.Errorf("flavors.Get = %+v, %v", f, err)
	}
	ipages, err := images.List(ic, images.ListOpts{Limit: 1}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ims, _ := images.ExtractImages(ipages)
	var imNames []string
	for _, im := range ims {
		imNames = append(imNames, im.Name)
	}
	if got := strings.Join(imNames, ","); got != "petrel-test,petrel-test-v2,private-a,queued-a" {
		t.Errorf("images (paged by 1) = %s", got)
	}
	if im, err := images.Get(ctx, ic, e.images["petrel-test"].ID).Extract(); err != nil || im.Status != images.ImageStatusActive ||
		im.Visibility != images.ImageVisibilityPublic || im.Owner != "admin" || im.SizeBytes != 4096 {
		t.Errorf("images.Get = %+v, %v", im, err)
	}
	hpages, err := hypervisors.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := hypervisors.ExtractHypervisors(hpages)
	if err != nil || len(hs) != 2 || hs[0].HypervisorHostname != "compute-0" || hs[0].State != "up" || hs[0].VCPUs != 4 ||
		hs[0].HypervisorVersion != 9000000 || hs[0].HypervisorType != "QEMU" || hs[1].Status != "disabled" {
		t.Errorf("hypervisors = %+v, %v", hs, err)
	}
	if h, err := hypervisors.Get(ctx, cc, hs[0].ID).Extract(); err != nil || h.HypervisorHostname != "compute-0" {
		t.Errorf("hypervisors.Get(%s) = %+v, %v", hs[0].ID, h, err)
	}
	zpages, err := availabilityzones.ListDetail(cc).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	zones, err := availabilityzones.ExtractAvailabilityZones(zpages)
	if err != nil || len(zones) != 1 || zones[0].ZoneName != "nova" || !zones[0].ZoneState.Available || len(zones[0].Hosts) != 2 {
		t.Errorf("availability zones = %+v, %v", zones, err)
	}
	if l, err := limits.Get(ctx, cc, nil).Extract(); err != nil || l.Absolute.TotalInstancesUsed != 1 || l.Absolute.MaxTotalInstances != -1 {
		t.Errorf("limits = %+v, %v; want vm-2 counted", l, err)
	}
	ppages, err := projects.ListAvailable(kc).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ps, _ := projects.ExtractProjects(ppages); len(ps) != 1 || ps[0].Name != "tenant-a" || ps[0].DomainID != "default" {
		t.Errorf("auth/projects = %+v", ps)
	}
}

func flavorNames(fs []flavors.Flavor) string {
	var n []string
	for _, f := range fs {
		n = append(n, f.Name)
	}
	return strings.Join(n, ",")
}

// A Petrel token works as a Keystone token: passed through unchanged, or
// exchanged (rescoped) with the token method.
func TestGophercloudTokenAuth(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	secret := e.token("ops")
	// Passed through: gophercloud validates it (GET auth/tokens) and uses it.
	p, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{IdentityEndpoint: e.url + "/identity/v3", TokenID: secret})
	if err != nil {
		t.Fatalf("token pass-through: %v", err)
	}
	cc, _, _ := e.clients(p, "2.1")
	if _, err := servers.List(cc, nil).AllPages(ctx); err != nil {
		t.Errorf("servers.List with a Petrel token: %v", err)
	}
	// The token method, scoped to the token's project by ID.
	p, err = openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{IdentityEndpoint: e.url + "/identity/v3", TokenID: secret,
		Scope: &gophercloud.AuthScope{ProjectID: "tenant-a"}})
	if err != nil {
		t.Fatalf("token method scoped to tenant-a: %v", err)
	}
	if p.Token() != secret {
		t.Errorf("the token method issued a new token; want the same one back")
	}
	cc, _, _ = e.clients(p, "2.37")
	if _, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "vm-t", ImageRef: "petrel-test", FlavorRef: "m1.tiny", Networks: "none"}, nil).Extract(); err != nil {
		t.Errorf("create with a token-method token: %v (%s)", err, bodyOf(err))
	}
	// Another project is refused.
	_, err = openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{IdentityEndpoint: e.url + "/identity/v3", TokenID: secret,
		Scope: &gophercloud.AuthScope{ProjectName: "tenant-b", DomainName: "Default"}})
	if statusOf(err) != http.StatusUnauthorized {
		t.Errorf("token scoped to another project: %v; want 401", err)
	}
}

// call sends a raw request and decodes the JSON answer.
func (e *env) call(method, path, token string, headers map[string]string, body any) (*http.Response, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for k, v := range headers {
		if k != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp, out
}

func TestKeystone(t *testing.T) {
	e := newEnv(t, false)
	ks := func(user, pw string, scope any) (*http.Response, map[string]any) {
		req := map[string]any{"auth": map[string]any{"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": user, "domain": map[string]string{"id": "default"}, "password": pw}}},
			"scope": scope}}
		return e.call("POST", "/identity/v3/auth/tokens", "", nil, req)
	}
	// Unscoped: the user's own project.
	resp, body := ks("ro", password("ro"), nil)
	secret := resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(secret, "pt_") {
		t.Fatalf("password auth = %d %v", resp.StatusCode, body)
	}
	token := body["token"].(map[string]any)
	if token["project"].(map[string]any)["name"] != "tenant-a" || len(token["catalog"].([]any)) != 4 || token["expires_at"] == "" {
		t.Errorf("token body = %v", token)
	}
	resp, body = ks("ro", "wrong-password", nil)
	if resp.StatusCode != http.StatusUnauthorized || body["error"].(map[string]any)["code"] != 401.0 ||
		!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Keystone uri=") {
		t.Errorf("wrong password = %d %v %v", resp.StatusCode, body, resp.Header)
	}
	scope := map[string]any{"project": map[string]any{"name": "tenant-b", "domain": map[string]string{"name": "Default"}}}
	if resp, body := ks("ro", password("ro"), scope); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Subject-Token") != "" {
		t.Errorf("scope to another project = %d %v; want 401 and no token", resp.StatusCode, body)
	}
	scope = map[string]any{"project": map[string]any{"name": "tenant-a", "domain": map[string]string{"name": "Other"}}}
	if resp, _ := ks("ro", password("ro"), scope); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("scope in an unknown domain = %d; want 401", resp.StatusCode)
	}
	// Validate (GET, HEAD) and revoke, by the owner; others may not look.
	h := map[string]string{"X-Subject-Token": secret}
	if resp, body := e.call("GET", "/identity/v3/auth/tokens", secret, h, nil); resp.StatusCode != 200 || body["token"] == nil {
		t.Errorf("validate own token = %d %v", resp.StatusCode, body)
	}
	if resp, _ := e.call("HEAD", "/identity/v3/auth/tokens", secret, h, nil); resp.StatusCode != 200 {
		t.Errorf("HEAD own token = %d", resp.StatusCode)
	}
	if resp, _ := e.call("GET", "/identity/v3/auth/tokens", e.token("bob"), h, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob validates ro's token = %d; want 403", resp.StatusCode)
	}
	if resp, _ := e.call("GET", "/identity/v3/auth/tokens", e.token("root"), h, nil); resp.StatusCode != 200 {
		t.Errorf("admin validates ro's token = %d; want 200", resp.StatusCode)
	}
	if resp, _ := e.call("GET", "/identity/v3/auth/tokens", secret, map[string]string{"X-Subject-Token": "pt_nope"}, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("validate an unknown token = %d; want 404", resp.StatusCode)
	}
	other := e.token("ro")
	if resp, _ := e.call("DELETE", "/identity/v3/auth/tokens", other, h, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("revoke = %d", resp.StatusCode)
	}
	if resp, _ := e.call("GET", "/identity/v3/auth/tokens", other, h, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("validate a revoked token = %d; want 404", resp.StatusCode)
	}
	// Projects: admins see all, others their own.
	_, body = e.call("GET", "/identity/v3/projects", e.token("root"), nil, nil)
	if ps := body["projects"].([]any); len(ps) != 3 {
		t.Errorf("admin's projects = %v", ps)
	}
	_, body = e.call("GET", "/identity/v3/projects", other, nil, nil)
	if ps := body["projects"].([]any); len(ps) != 1 || ps[0].(map[string]any)["id"] != "tenant-a" {
		t.Errorf("ro's projects = %v", ps)
	}
	if resp, _ := e.call("GET", "/identity/v3/projects/tenant-b", other, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("ro shows tenant-b = %d; want 404", resp.StatusCode)
	}
	if resp, body := e.call("GET", "/identity/v3/users/ro", other, nil, nil); resp.StatusCode != 200 || body["user"].(map[string]any)["default_project_id"] != "tenant-a" {
		t.Errorf("ro shows itself = %d %v", resp.StatusCode, body)
	}
	// Version documents need no token.
	if resp, body := e.call("GET", "/identity", "", nil, nil); resp.StatusCode != http.StatusMultipleChoices || body["versions"] == nil {
		t.Errorf("GET /identity = %d %v", resp.StatusCode, body)
	}
	if resp, body := e.call("GET", "/identity/v3", "", nil, nil); resp.StatusCode != 200 || body["version"].(map[string]any)["id"] != "v3.14" {
		t.Errorf("GET /identity/v3 = %d %v", resp.StatusCode, body)
	}
}

func TestMicroversions(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	tok := e.token("ops")
	for _, path := range []string{"/compute/", "/compute/v2.1/"} {
		resp, body := e.call("GET", path, "", nil, nil)
		raw, _ := json.Marshal(body)
		if resp.StatusCode != 200 || !strings.Contains(string(raw), `"min_version":"2.1"`) || !strings.Contains(string(raw), `"version":"2.60"`) {
			t.Errorf("GET %s = %d %s", path, resp.StatusCode, raw)
		}
	}
	// Echoed in both headers; none asked is 2.1; latest is 2.60.
	for _, tc := range []struct {
		header, value, want string
		status              int
	}{
		{"", "", "2.1", 200},
		{"X-OpenStack-Nova-API-Version", "2.37", "2.37", 200},
		{"OpenStack-API-Version", "compute 2.47", "2.47", 200},
		{"OpenStack-API-Version", "volume 3.5, compute latest", "2.60", 200},
		{"X-OpenStack-Nova-API-Version", "2.61", "", http.StatusNotAcceptable},
		{"X-OpenStack-Nova-API-Version", "2.0", "", http.StatusNotAcceptable},
		{"X-OpenStack-Nova-API-Version", "two", "", http.StatusBadRequest},
	} {
		resp, body := e.call("GET", "/compute/v2.1/servers", tok, map[string]string{tc.header: tc.value}, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s → %d %v; want %d", tc.header, tc.value, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.want != "" && (resp.Header.Get("X-OpenStack-Nova-API-Version") != tc.want || resp.Header.Get("OpenStack-API-Version") != "compute "+tc.want) {
			t.Errorf("%s: %s → headers %v; want %s", tc.header, tc.value, resp.Header, tc.want)
		}
		if tc.status == http.StatusNotAcceptable && body["computeFault"] == nil {
			t.Errorf("406 body = %v; want a computeFault", body)
		}
	}
	// Networks: absent is fine at 2.1 and required from 2.37; "none" only from 2.37.
	create := func(mv, name string, networks any) (int, map[string]any) {
		s := map[string]any{"name": name, "imageRef": e.images["petrel-test"].ID, "flavorRef": e.flavors["m1.tiny"].ID}
		if networks != nil {
			s["networks"] = networks
		}
		resp, body := e.call("POST", "/compute/v2.1/servers", tok, map[string]string{"X-OpenStack-Nova-API-Version": mv}, map[string]any{"server": s})
		return resp.StatusCode, body
	}
	if st, body := create("2.1", "old-style", nil); st != http.StatusAccepted {
		t.Errorf("2.1 create without networks = %d %v", st, body)
	}
	if st, body := create("2.1", "x1", "none"); st != http.StatusBadRequest || body["badRequest"] == nil {
		t.Errorf("2.1 create with networks none = %d %v; want 400 badRequest", st, body)
	}
	if st, _ := create("2.37", "x2", nil); st != http.StatusBadRequest {
		t.Errorf("2.37 create without networks = %d; want 400", st)
	}
	if st, _ := create("2.37", "x3", []any{map[string]string{"uuid": "net-1"}}); st != http.StatusBadRequest {
		t.Errorf("2.37 create on a network = %d; want 400", st)
	}
	// The flavor is a reference before 2.47 and embedded from 2.47.
	sv21 := e.computeAs("ops", "tenant-a", "2.1")
	sv47 := e.computeAs("ops", "tenant-a", "2.47")
	pages, _ := servers.List(sv21, nil).AllPages(ctx)
	ss, _ := servers.ExtractServers(pages)
	if len(ss) != 1 || ss[0].Flavor["id"] != e.flavors["m1.tiny"].ID || ss[0].Flavor["vcpus"] != nil || ss[0].Locked != nil || ss[0].Tags != nil {
		t.Errorf("at 2.1: %+v", ss)
	}
	got, err := servers.Get(ctx, sv47, ss[0].ID).Extract()
	if err != nil || got.Flavor["original_name"] != "m1.tiny" || got.Flavor["vcpus"] != 1.0 || got.Flavor["ram"] != 128.0 ||
		got.Flavor["id"] != nil || got.Locked == nil || got.Tags == nil || got.Hostname == nil {
		t.Errorf("at 2.47: %+v, %v", got, err)
	}
}

func TestNovaErrorBodies(t *testing.T) {
	e := newEnv(t, true)
	ops, ro := e.token("ops"), e.token("ro")
	mv := map[string]string{"X-OpenStack-Nova-API-Version": "2.37"}
	create := map[string]any{"server": map[string]any{"name": "vm-1", "imageRef": "petrel-test", "flavorRef": "m1.tiny", "networks": "none"}}
	resp, body := e.call("POST", "/compute/v2.1/servers", ops, mv, create)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("create = %d %v", resp.StatusCode, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	if loc := resp.Header.Get("Location"); !strings.HasSuffix(loc, "/compute/v2.1/servers/"+id) {
		t.Errorf("Location = %q", loc)
	}
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		fault                     string
	}{
		{"unknown server", "GET", "/compute/v2.1/servers/nope", ops, nil, 404, "itemNotFound"},
		{"no token", "GET", "/compute/v2.1/servers", "", nil, 401, "unauthorized"},
		{"bad token", "GET", "/compute/v2.1/servers", "pt_forged", nil, 401, "unauthorized"},
		{"reader creates", "POST", "/compute/v2.1/servers", ro, create, 403, "forbidden"},
		{"reader deletes", "DELETE", "/compute/v2.1/servers/" + id, ro, nil, 403, "forbidden"},
		{"duplicate name", "POST", "/compute/v2.1/servers", ops, create, 409, "conflictingRequest"},
		{"start an active server", "POST", "/compute/v2.1/servers/" + id + "/action", ops, map[string]any{"os-start": nil}, 409, "conflictingRequest"},
		{"unknown action", "POST", "/compute/v2.1/servers/" + id + "/action", ops, map[string]any{"os-resetState": map[string]any{"state": "active"}}, 400, "badRequest"},
		{"bad reboot type", "POST", "/compute/v2.1/servers/" + id + "/action", ops, map[string]any{"reboot": map[string]string{"type": "GENTLE"}}, 400, "badRequest"},
		{"unknown image", "POST", "/compute/v2.1/servers", ops, map[string]any{"server": map[string]any{"name": "vm-2", "imageRef": "nope", "flavorRef": "m1.tiny", "networks": "none"}}, 400, "badRequest"},
		{"queued image", "POST", "/compute/v2.1/servers", ops, map[string]any{"server": map[string]any{"name": "vm-2", "imageRef": "queued-a", "flavorRef": "m1.tiny", "networks": "none"}}, 400, "badRequest"},
		{"malformed body", "POST", "/compute/v2.1/servers", ops, "not an object", 400, "badRequest"},
		{"all_tenants as non-admin", "GET", "/compute/v2.1/servers?all_tenants=1", ops, nil, 403, "forbidden"},
		{"unknown flavor", "GET", "/compute/v2.1/flavors/nope", ops, nil, 404, "itemNotFound"},
		{"unknown hypervisor", "GET", "/compute/v2.1/os-hypervisors/nope", ops, nil, 404, "itemNotFound"},
		{"hypervisor uptime", "GET", "/compute/v2.1/os-hypervisors/compute-0/uptime", ops, nil, 501, "notImplemented"},
	} {
		resp, body := e.call(tc.method, tc.path, tc.token, mv, tc.body)
		f, _ := body[tc.fault].(map[string]any)
		if resp.StatusCode != tc.status || f == nil || f["code"] != float64(tc.status) || f["message"] == "" {
			t.Errorf("%s: %d %v; want %d {%q: {code, message}}", tc.name, resp.StatusCode, body, tc.status, tc.fault)
		}
	}
	// Glance and Keystone errors take Keystone's shape.
	resp, body = e.call("GET", "/image/v2/images/nope", ops, nil, nil)
	if resp.StatusCode != 404 || body["error"] == nil {
		t.Errorf("unknown image = %d %v", resp.StatusCode, body)
	}
}

// A tenant does not see another project's servers, private images or
// private flavors; an admin sees all with all_tenants.
func TestTenancy(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	a := e.computeAs("ops", "tenant-a", "2.37")
	if _, err := servers.Create(ctx, a, servers.CreateOpts{Name: "vm-a", ImageRef: "private-a", FlavorRef: "a.private", Networks: "none"}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	pb, err := e.passwordAuth("bob", "tenant-b")
	if err != nil {
		t.Fatal(err)
	}
	b, bi, _ := e.clients(pb, "2.37")
	if _, err := servers.Get(ctx, b, "vm-a").Extract(); statusOf(err) != http.StatusNotFound {
		t.Errorf("bob gets tenant-a's server: %v; want 404", err)
	}
	if err := servers.Delete(ctx, b, "vm-a").ExtractErr(); statusOf(err) != http.StatusNotFound {
		t.Errorf("bob deletes tenant-a's server: %v; want 404", err)
	}
	pages, _ := servers.List(b, nil).AllPages(ctx)
	if ss, _ := servers.ExtractServers(pages); len(ss) != 0 {
		t.Errorf("bob lists %+v; want nothing", ss)
	}
	if _, err := servers.Create(ctx, b, servers.CreateOpts{Name: "vm-b", ImageRef: "private-a", FlavorRef: "m1.tiny", Networks: "none"}, nil).Extract(); statusOf(err) != http.StatusBadRequest {
		t.Errorf("bob boots tenant-a's private image: %v; want 400", err)
	}
	if _, err := servers.Create(ctx, b, servers.CreateOpts{Name: "vm-b", ImageRef: "petrel-test", FlavorRef: "a.private", Networks: "none"}, nil).Extract(); statusOf(err) != http.StatusBadRequest {
		t.Errorf("bob uses tenant-a's private flavor: %v; want 400", err)
	}
	if _, err := servers.Create(ctx, b, servers.CreateOpts{Name: "vm-b", ImageRef: "private-b", FlavorRef: "b.private", Networks: "none"}, nil).Extract(); err != nil {
		t.Errorf("bob creates in tenant-b: %v", err)
	}
	if _, err := images.Get(ctx, bi, e.images["private-a"].ID).Extract(); statusOf(err) != http.StatusNotFound {
		t.Errorf("bob shows tenant-a's private image: %v; want 404", err)
	}
	ipages, _ := images.List(bi, nil).AllPages(ctx)
	ims, _ := images.ExtractImages(ipages)
	for _, im := range ims {
		if im.Owner == "tenant-a" {
			t.Errorf("bob lists tenant-a's image %s", im.Name)
		}
	}
	if _, err := flavors.Get(ctx, b, e.flavors["a.private"].ID).Extract(); statusOf(err) != http.StatusNotFound {
		t.Errorf("bob shows tenant-a's private flavor: %v; want 404", err)
	}
	fpages, _ := flavors.ListDetail(b, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if fl, _ := flavors.ExtractFlavors(fpages); flavorNames(fl) != "b.private,m1.small,m1.tiny" {
		t.Errorf("bob's flavors (is_public=None) = %s", flavorNames(fl))
	}
	// The admin: its own project by default, every project with all_tenants.
	adm := e.computeAs("root", "admin", "2.37")
	pages, _ = servers.List(adm, nil).AllPages(ctx)
	if ss, _ := servers.ExtractServers(pages); len(ss) != 0 {
		t.Errorf("admin lists (own project) %+v; want nothing", ss)
	}
	pages, _ = servers.List(adm, servers.ListOpts{AllTenants: true}).AllPages(ctx)
	if ss, _ := servers.ExtractServers(pages); len(ss) != 2 {
		t.Errorf("admin lists all_tenants: %d servers; want 2", len(ss))
	}
	pages, _ = servers.List(adm, servers.ListOpts{AllTenants: true, TenantID: "tenant-b"}).AllPages(ctx)
	if ss, _ := servers.ExtractServers(pages); len(ss) != 1 || ss[0].Name != "vm-b" {
		t.Errorf("admin lists tenant-b's: %+v", ss)
	}
	if sv, err := servers.Get(ctx, adm, "vm-a").Extract(); err != nil || sv.TenantID != "tenant-a" {
		t.Errorf("admin gets vm-a: %+v, %v", sv, err)
	}
	fpages, _ = flavors.ListDetail(adm, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if fl, _ := flavors.ExtractFlavors(fpages); len(fl) != 4 {
		t.Errorf("admin's flavors (is_public=None) = %s; want all 4", flavorNames(fl))
	}
}

// Without the compute service, identity, flavors and images still work
// and server calls answer 503.
func TestWithoutServers(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	p, err := e.passwordAuth("ops", "tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	cc, ic, _ := e.clients(p, "2.37")
	if _, err := flavors.ListDetail(cc, nil).AllPages(ctx); err != nil {
		t.Errorf("flavors: %v", err)
	}
	if _, err := images.List(ic, nil).AllPages(ctx); err != nil {
		t.Errorf("images: %v", err)
	}
	if _, err := availabilityzones.List(cc).AllPages(ctx); err != nil {
		t.Errorf("availability zones: %v", err)
	}
	_, err = servers.List(cc, nil).AllPages(ctx)
	if statusOf(err) != http.StatusServiceUnavailable || !strings.Contains(bodyOf(err), `"serviceUnavailable"`) {
		t.Errorf("servers without compute: %v %s; want 503 serviceUnavailable", err, bodyOf(err))
	}
}
