package central_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
)

// TestDeployStatusTransitions walks every (from, to) pair of deploy
// statuses against the deploy described in docs/central.md.
func TestDeployStatusTransitions(t *testing.T) {
	allowed := map[[2]central.DeployStatus]bool{
		{central.DeployNotDeployed, central.DeployBootstrapping}:     true,
		{central.DeployBootstrapping, central.DeployBootstrapped}:    true,
		{central.DeployBootstrapping, central.DeployBootstrapFailed}: true,
		{central.DeployBootstrapFailed, central.DeployBootstrapping}: true,
		{central.DeployBootstrapped, central.DeployConfiguring}:      true,
		{central.DeployConfiguring, central.DeployComplete}:          true,
		{central.DeployConfiguring, central.DeployConfigFailed}:      true,
		{central.DeployConfigFailed, central.DeployConfiguring}:      true,
	}
	all := central.DeployStatuses()
	for _, from := range all {
		if !from.Valid() {
			t.Errorf("%s.Valid() = false", from)
		}
		for _, to := range all {
			want := allowed[[2]central.DeployStatus{from, to}]
			if got := from.CanTo(to); got != want {
				t.Errorf("%s.CanTo(%s) = %v; want %v", from, to, got, want)
			}
			sc := central.Subcloud{Name: "site-a", DeployStatus: from}
			err := sc.SetDeployStatus(to)
			switch {
			case want && (err != nil || sc.DeployStatus != to):
				t.Errorf("SetDeployStatus(%s -> %s) = %v, now %s", from, to, err, sc.DeployStatus)
			case !want && (!errors.Is(err, central.ErrInvalidTransition) || !errors.Is(err, errs.InvalidTransition) || sc.DeployStatus != from):
				t.Errorf("SetDeployStatus(%s -> %s) = %v, now %s; want ErrInvalidTransition, unchanged", from, to, err, sc.DeployStatus)
			}
		}
	}
	if central.DeployStatus("deploying").Valid() {
		t.Error(`DeployStatus("deploying").Valid() = true`)
	}
	for _, d := range all {
		wantTransitional := d == central.DeployBootstrapping || d == central.DeployConfiguring
		if d.Transitional() != wantTransitional {
			t.Errorf("%s.Transitional() = %v", d, d.Transitional())
		}
		if d.Failed() != strings.HasSuffix(string(d), "-failed") {
			t.Errorf("%s.Failed() = %v", d, d.Failed())
		}
	}
}

func TestManagementTransitions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sc     central.Subcloud
		to     central.Management
		wantOK bool
	}{
		{"manage an online complete subcloud", central.Subcloud{Management: central.Unmanaged, Availability: central.Online, DeployStatus: central.DeployComplete}, central.Managed, true},
		{"manage a site brought up outside the deploy", central.Subcloud{Management: central.Unmanaged, Availability: central.Online, DeployStatus: central.DeployNotDeployed}, central.Managed, true},
		{"unmanage", central.Subcloud{Management: central.Managed, Availability: central.Offline, DeployStatus: central.DeployComplete}, central.Unmanaged, true},
		{"manage twice", central.Subcloud{Management: central.Managed, Availability: central.Online, DeployStatus: central.DeployComplete}, central.Managed, false},
		{"unmanage twice", central.Subcloud{Management: central.Unmanaged, Availability: central.Online, DeployStatus: central.DeployComplete}, central.Unmanaged, false},
		{"manage offline", central.Subcloud{Management: central.Unmanaged, Availability: central.Offline, DeployStatus: central.DeployComplete}, central.Managed, false},
		{"manage while bootstrapping", central.Subcloud{Management: central.Unmanaged, Availability: central.Online, DeployStatus: central.DeployBootstrapping}, central.Managed, false},
		{"manage after a failed config", central.Subcloud{Management: central.Unmanaged, Availability: central.Online, DeployStatus: central.DeployConfigFailed}, central.Managed, false},
	} {
		sc := tc.sc
		sc.Name = "site-a"
		err := sc.SetManagement(tc.to)
		if tc.wantOK && (err != nil || sc.Management != tc.to) {
			t.Errorf("%s: SetManagement(%s) = %v", tc.name, tc.to, err)
		}
		if !tc.wantOK && (!errors.Is(err, central.ErrInvalidTransition) || sc.Management != tc.sc.Management) {
			t.Errorf("%s: SetManagement(%s) = %v, now %s; want ErrInvalidTransition, unchanged", tc.name, tc.to, err, sc.Management)
		}
	}
	for _, m := range []central.Management{central.Managed, central.Unmanaged} {
		if !m.Valid() {
			t.Errorf("%s.Valid() = false", m)
		}
	}
}

func TestAvailabilityTransitions(t *testing.T) {
	for _, from := range []central.Availability{central.Online, central.Offline} {
		for _, to := range []central.Availability{central.Online, central.Offline} {
			sc := central.Subcloud{Name: "site-a", Availability: from}
			if err := sc.SetAvailability(to); err != nil || sc.Availability != to {
				t.Errorf("SetAvailability(%s -> %s) = %v", from, to, err)
			}
		}
	}
	sc := central.Subcloud{Name: "site-a", Availability: central.Online}
	if err := sc.SetAvailability("failed"); !errors.Is(err, central.ErrInvalidTransition) || sc.Availability != central.Online {
		t.Errorf(`SetAvailability(online -> "failed") = %v; want ErrInvalidTransition`, err)
	}
	if central.Availability("failed").Valid() {
		t.Error(`Availability("failed").Valid() = true`)
	}
}

func TestDeletable(t *testing.T) {
	ok := central.Subcloud{Name: "site-a", Management: central.Unmanaged, Availability: central.Offline, DeployStatus: central.DeployComplete}
	if err := ok.Deletable(); err != nil {
		t.Errorf("Deletable(unmanaged, offline, complete) = %v", err)
	}
	for _, change := range []func(*central.Subcloud){
		func(sc *central.Subcloud) { sc.Management = central.Managed },
		func(sc *central.Subcloud) { sc.Availability = central.Online },
		func(sc *central.Subcloud) { sc.DeployStatus = central.DeployBootstrapping },
		func(sc *central.Subcloud) { sc.DeployStatus = central.DeployConfiguring },
	} {
		sc := ok
		change(&sc)
		if err := sc.Deletable(); !errors.Is(err, central.ErrSubcloudInUse) || !errors.Is(err, errs.Conflict) {
			t.Errorf("Deletable(%s, %s, %s) = %v; want ErrSubcloudInUse", sc.Management, sc.Availability, sc.DeployStatus, err)
		}
	}
}

// validValues is a bootstrap values document with every required key.
const validValues = `
system_mode: simplex
name: site-a
description: shop 12
location: Lyon
management_subnet: 192.168.204.0/24
management_start_address: 192.168.204.2
management_end_address: 192.168.204.50
management_gateway_address: 192.168.204.1
external_oam_subnet: 10.10.10.0/24
external_oam_gateway_address: 10.10.10.1
external_oam_floating_address: 10.10.10.2
dns_servers: [8.8.8.8, "2001:4860:4860::8888"]
ntp_servers: [pool.ntp.org]
`

func TestParseBootstrapValues(t *testing.T) {
	vals, err := central.ParseBootstrapValues(validValues)
	if err != nil {
		t.Fatalf("ParseBootstrapValues(valid) = %v", err)
	}
	if vals["system_mode"] != "simplex" || vals["management_subnet"] != "192.168.204.0/24" {
		t.Errorf("ParseBootstrapValues(valid) = %v", vals)
	}
	without := func(key string) string {
		var lines []string
		for _, l := range strings.Split(validValues, "\n") {
			if !strings.HasPrefix(l, key+":") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	for _, tc := range []struct{ name, doc, field string }{
		{"unknown key", validValues + "admin_password: secret\n", "bootstrap_values.admin_password"},
		{"ansible key", validValues + "ansible_become_pass: x\n", "bootstrap_values.ansible_become_pass"},
		{"ansible key, upper case", validValues + "ANSIBLE_SSH_ARGS: x\n", "bootstrap_values.ANSIBLE_SSH_ARGS"},
		{"missing required key", without("external_oam_subnet"), "bootstrap_values.external_oam_subnet"},
		{"wrong type", validValues + "timezone: 5\n", "bootstrap_values.timezone"},
		{"not an address", strings.Replace(validValues, "10.10.10.1\n", "ten.ten\n", 1), "bootstrap_values.external_oam_gateway_address"},
		{"not a subnet", strings.Replace(validValues, "192.168.204.0/24", "192.168.204.7/24", 1), "bootstrap_values.management_subnet"},
		{"address outside its subnet", strings.Replace(validValues, "10.10.10.2", "10.10.11.2", 1), "bootstrap_values.external_oam_floating_address"},
		{"range backwards", strings.Replace(validValues, "192.168.204.50", "192.168.204.1", 1), "bootstrap_values.management_end_address"},
		{"bad enum", strings.Replace(validValues, "system_mode: simplex", "system_mode: duplex-direct", 1), "bootstrap_values.system_mode"},
		{"list of the wrong type", validValues + "cluster_subnet: [1]\n", "bootstrap_values.cluster_subnet"},
		{"key twice", validValues + "timezone: UTC\ntimezone: CET\n", "bootstrap_values"},
		{"not a mapping", "- a\n- b\n", "bootstrap_values"},
		{"not YAML", "a: [\n", "bootstrap_values"},
	} {
		_, err := central.ParseBootstrapValues(tc.doc)
		var fe *errs.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, errs.Invalid) {
			t.Errorf("%s: ParseBootstrapValues = %v; want an invalid-argument error on %s", tc.name, err, tc.field)
		}
	}
}

func TestConformanceSubcloudGroups(t *testing.T) {
	eachRegistry(t, func(t *testing.T, db *sqldb.DB, reopen func(*testing.T) central.SubcloudStore) {
		ctx := context.Background()
		reopen(t)
		// Opening again keeps the one Default group (the list below holds one).
		st := reopen(t)
		def, err := st.SubcloudGroup(ctx, central.DefaultGroup)
		if err != nil || def.UpdateApplyType != central.ApplyParallel || def.MaxParallelSubclouds != 2 {
			t.Fatalf("SubcloudGroup(Default) = %+v, %v", def, err)
		}
		east := central.SubcloudGroup{Name: "east", UpdateApplyType: central.ApplySerial, MaxParallelSubclouds: 1}
		if err := st.CreateSubcloudGroup(ctx, east); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSubcloudGroup(ctx, east); !errors.Is(err, central.ErrSubcloudGroupExists) {
			t.Errorf("CreateSubcloudGroup(duplicate) = %v; want ErrSubcloudGroupExists", err)
		}

		// Subclouds: the default group, a named one, unique bootstrap addresses.
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-a", Shape: inventory.Simplex, BootstrapAddress: "10.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-b", Shape: inventory.Duplex, Group: "east"}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-c", Shape: inventory.Duplex}); err != nil {
			t.Fatal(err) // no bootstrap address: never collides with site-b's none
		}
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-d", BootstrapAddress: "10.0.0.1"}); !errors.Is(err, central.ErrBootstrapAddressInUse) {
			t.Errorf("CreateSubcloud(address in use) = %v; want ErrBootstrapAddressInUse", err)
		}
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-d", Group: "west"}); !errors.Is(err, central.ErrSubcloudGroupNotFound) {
			t.Errorf("CreateSubcloud(unknown group) = %v; want ErrSubcloudGroupNotFound", err)
		}
		if _, err := st.Subcloud(ctx, "site-d"); !errors.Is(err, central.ErrSubcloudNotFound) {
			t.Errorf("a refused CreateSubcloud stored something: %v", err)
		}
		a, err := st.Subcloud(ctx, "site-a")
		if err != nil || a.Group != central.DefaultGroup || a.BootstrapAddress != "10.0.0.1" || a.DeployStatus != central.DeployNotDeployed {
			t.Errorf("Subcloud(site-a) = %+v, %v", a, err)
		}
		if _, err := st.UpdateSubcloud(ctx, "site-b", func(sc *central.Subcloud) error { sc.BootstrapAddress = "10.0.0.1"; return nil }); !errors.Is(err, central.ErrBootstrapAddressInUse) {
			t.Errorf("UpdateSubcloud(address in use) = %v; want ErrBootstrapAddressInUse", err)
		}
		if _, err := st.UpdateSubcloud(ctx, "site-b", func(sc *central.Subcloud) error { sc.Group = "west"; return nil }); !errors.Is(err, central.ErrSubcloudGroupNotFound) {
			t.Errorf("UpdateSubcloud(unknown group) = %v; want ErrSubcloudGroupNotFound", err)
		}
		byGroup, _, err := st.Subclouds(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"group": "east"}})
		if err != nil || len(byGroup) != 1 || byGroup[0].Name != "site-b" {
			t.Errorf("Subclouds(group=east) = %v, %v", byGroup, err)
		}
		notDeployed, _, err := st.Subclouds(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"deploy_status": "not-deployed"}})
		if err != nil || len(notDeployed) != 3 {
			t.Errorf("Subclouds(deploy_status=not-deployed) = %d subclouds, %v; want 3", len(notDeployed), err)
		}

		// Groups with members, and Default, stay.
		if err := st.DeleteSubcloudGroup(ctx, "east"); !errors.Is(err, central.ErrSubcloudGroupInUse) {
			t.Errorf("DeleteSubcloudGroup(with members) = %v; want ErrSubcloudGroupInUse", err)
		}
		if err := st.DeleteSubcloudGroup(ctx, central.DefaultGroup); !errors.Is(err, central.ErrSubcloudGroupInUse) {
			t.Errorf("DeleteSubcloudGroup(Default) = %v; want ErrSubcloudGroupInUse", err)
		}
		if _, err := st.UpdateSubcloudGroup(ctx, central.DefaultGroup, func(g *central.SubcloudGroup) error { g.Name = "other"; return nil }); !errors.Is(err, central.ErrSubcloudGroupInUse) {
			t.Errorf("rename Default = %v; want ErrSubcloudGroupInUse", err)
		}
		if _, err := st.UpdateSubcloudGroup(ctx, "east", func(g *central.SubcloudGroup) error { g.Name = central.DefaultGroup; return nil }); !errors.Is(err, central.ErrSubcloudGroupExists) {
			t.Errorf("rename east to Default = %v; want ErrSubcloudGroupExists", err)
		}
		// A rename moves the members.
		g, err := st.UpdateSubcloudGroup(ctx, "east", func(g *central.SubcloudGroup) error {
			g.Name, g.UpdateApplyType, g.MaxParallelSubclouds = "north", central.ApplyParallel, 500
			return nil
		})
		if err != nil || g.Name != "north" || g.Subclouds != 1 || g.MaxParallelSubclouds != 500 {
			t.Errorf("rename east to north = %+v, %v", g, err)
		}
		if b, err := st.Subcloud(ctx, "site-b"); err != nil || b.Group != "north" {
			t.Errorf("after the rename site-b is in %q, %v; want north", b.Group, err)
		}
		gs, _, err := st.SubcloudGroups(ctx, rest.ListOptions{Limit: 10})
		if err != nil || len(gs) != 2 || gs[0].Name != central.DefaultGroup || gs[0].Subclouds != 2 || gs[1].Name != "north" {
			t.Errorf("SubcloudGroups = %+v, %v", gs, err)
		}
		// Emptied, it goes.
		if _, err := st.UpdateSubcloud(ctx, "site-b", func(sc *central.Subcloud) error { sc.Group = central.DefaultGroup; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteSubcloudGroup(ctx, "north"); err != nil {
			t.Errorf("DeleteSubcloudGroup(empty) = %v", err)
		}
		if _, err := st.SubcloudGroup(ctx, "north"); !errors.Is(err, central.ErrSubcloudGroupNotFound) {
			t.Errorf("SubcloudGroup(deleted) = %v; want ErrSubcloudGroupNotFound", err)
		}

		// DeleteSubcloud's check runs on the stored subcloud.
		refuse := errors.New("refused")
		if err := st.DeleteSubcloud(ctx, "site-a", func(sc central.Subcloud) error {
			if sc.BootstrapAddress != "10.0.0.1" {
				return fmt.Errorf("check saw %+v", sc)
			}
			return refuse
		}); !errors.Is(err, refuse) {
			t.Errorf("DeleteSubcloud(check refuses) = %v", err)
		}
		if _, err := st.Subcloud(ctx, "site-a"); err != nil {
			t.Errorf("a refused delete removed the subcloud: %v", err)
		}
		if err := st.DeleteSubcloud(ctx, "site-a", nil); err != nil {
			t.Fatal(err)
		}
		// Its address is free again.
		if err := st.CreateSubcloud(ctx, central.Subcloud{Name: "site-d", BootstrapAddress: "10.0.0.1"}); err != nil {
			t.Errorf("CreateSubcloud(freed address) = %v", err)
		}

		// Racing registrations of one address: one wins, the others are
		// told why (never a raw unique-constraint error).
		errc := make(chan error, 8)
		for i := range 8 {
			go func() {
				errc <- st.CreateSubcloud(ctx, central.Subcloud{Name: fmt.Sprintf("race-%d", i), BootstrapAddress: "10.0.0.9"})
			}()
		}
		won := 0
		for range 8 {
			switch err := <-errc; {
			case err == nil:
				won++
			case !errors.Is(err, central.ErrBootstrapAddressInUse):
				t.Errorf("racing CreateSubcloud = %v; want nil or ErrBootstrapAddressInUse", err)
			}
		}
		if won != 1 {
			t.Errorf("%d racing registrations of one address succeeded; want 1", won)
		}
		sameAsDatabase(t, db, st)
	})
}

// lifecycleEnv is a central with an admin and a reader client, both
// checked against the OpenAPI document.
type lifecycleEnv struct {
	c             *central.Central
	admin, reader *client.Client
}

func startLifecycle(t *testing.T) lifecycleEnv {
	t.Helper()
	ctx := context.Background()
	c, err := central.New(ctx, central.Config{Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	if _, err := c.Shell().Auth.CreateUser(ctx, "watcher", auth.Reader, "reader-pass-1"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Shell().Auth.Login(ctx, "watcher", "reader-pass-1")
	if err != nil {
		t.Fatal(err)
	}
	return lifecycleEnv{c: c, admin: servertest.Client(t, c, servertest.AdminToken(t, c)), reader: servertest.Client(t, c, tok)}
}

// fieldOf is the field an API error names.
func fieldOf(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Field
	}
	return ""
}

func TestSubcloudLifecycleAPI(t *testing.T) {
	e := startLifecycle(t)
	ctx := context.Background()
	add := func(name, addr, values string) error {
		return e.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: name,
			BootstrapAddress: addr, BootstrapValues: values}, nil)
	}
	var sc central.Subcloud
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: "site-a",
		BootstrapAddress: "10.10.10.3", BootstrapValues: validValues}, &sc); err != nil {
		t.Fatal(err)
	}
	if sc.Shape != inventory.Simplex || sc.Group != central.DefaultGroup || sc.BootstrapAddress != "10.10.10.3" ||
		sc.Description != "shop 12" || sc.Location != "Lyon" || sc.DeployStatus != central.DeployNotDeployed ||
		sc.Management != central.Unmanaged || sc.BootstrapValues["management_subnet"] != "192.168.204.0/24" {
		t.Errorf("POST /v1/subclouds = %+v", sc)
	}
	// The old contract still works: name and shape only.
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, map[string]string{"name": "site-lab", "shape": "duplex"}, nil); err != nil {
		t.Errorf("POST name+shape only = %v", err)
	}

	// Conflicts: 409, and nothing created.
	otherValues := strings.ReplaceAll(validValues, "name: site-a\n", "")
	if err := add("site-a", "10.10.10.4", otherValues); !errors.Is(err, errs.Conflict) {
		t.Errorf("duplicate name = %v; want 409 conflict", err)
	}
	if err := add("site-b", "10.10.10.3", otherValues); !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "site-a") {
		t.Errorf("duplicate bootstrap address = %v; want 409 naming site-a", err)
	}
	assertAbsent := func(name string) {
		t.Helper()
		if err := e.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+name, nil, nil, nil); !errors.Is(err, errs.NotFound) {
			t.Errorf("GET %s after a refused create = %v; want not found", name, err)
		}
	}
	assertAbsent("site-b")

	// Invalid values: 400 naming the key, nothing created.
	for _, tc := range []struct{ doc, field string }{
		{otherValues + "root_password: x\n", "bootstrap_values.root_password"},
		{otherValues + "ansible_ssh_common_args: -o ProxyCommand=x\n", "bootstrap_values.ansible_ssh_common_args"},
		{strings.ReplaceAll(otherValues, "management_subnet: 192.168.204.0/24\n", ""), "bootstrap_values.management_subnet"},
		{strings.ReplaceAll(otherValues, "system_mode: simplex", "system_mode: 3"), "bootstrap_values.system_mode"},
	} {
		err := add("site-b", "10.10.10.5", tc.doc)
		if !errors.Is(err, errs.Invalid) || fieldOf(err) != tc.field || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("values with a bad %s = %v (field %q); want 400 naming it", tc.field, err, fieldOf(err))
		}
		assertAbsent("site-b")
	}
	for _, tc := range []struct {
		req   central.CreateSubcloudRequest
		field string
	}{
		{central.CreateSubcloudRequest{Name: "site-b", BootstrapAddress: "10.10.10.5"}, "bootstrap_values"},
		{central.CreateSubcloudRequest{Name: "site-b", BootstrapValues: otherValues}, "bootstrap_address"},
		{central.CreateSubcloudRequest{Name: "site-b", BootstrapAddress: "ten", BootstrapValues: otherValues}, "bootstrap_address"},
		{central.CreateSubcloudRequest{Name: "site-b", Shape: inventory.Duplex, BootstrapAddress: "10.10.10.5", BootstrapValues: otherValues}, "bootstrap_values.system_mode"},
		{central.CreateSubcloudRequest{Name: "site-b", BootstrapAddress: "10.10.10.5", BootstrapValues: validValues}, "bootstrap_values.name"},
		{central.CreateSubcloudRequest{Name: "site-b"}, "shape"},
		{central.CreateSubcloudRequest{Name: "site-b", Shape: inventory.Simplex, Group: "nowhere"}, "group"},
	} {
		err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, tc.req, nil)
		if !errors.Is(err, errs.Invalid) || fieldOf(err) != tc.field {
			t.Errorf("POST %+v = %v (field %q); want 400 on %s", tc.req, err, fieldOf(err), tc.field)
		}
		assertAbsent("site-b")
	}

	// Groups.
	var g central.SubcloudGroup
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subcloud-groups", nil, map[string]any{"name": "east",
		"update_apply_type": "parallel", "max_parallel_subclouds": 10}, &g); err != nil || g.MaxParallelSubclouds != 10 {
		t.Fatalf("create group = %+v, %v", g, err)
	}
	for _, body := range []map[string]any{
		{"name": "west", "max_parallel_subclouds": 501},
		{"name": "west", "max_parallel_subclouds": 0},
		{"name": "west", "update_apply_type": "random"},
	} {
		if err := e.admin.Do(ctx, http.MethodPost, "/v1/subcloud-groups", nil, body, nil); !errors.Is(err, errs.Invalid) {
			t.Errorf("create group %v = %v; want 400", body, err)
		}
	}
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subclouds/site-a", nil, map[string]string{"group": "east", "location": "Lyon 3"}, &sc); err != nil || sc.Group != "east" || sc.Location != "Lyon 3" {
		t.Errorf("PATCH site-a group = %+v, %v", sc, err)
	}
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subcloud-groups/east", nil, nil, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("DELETE a group with members = %v; want 409", err)
	}
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subcloud-groups/Default", nil, nil, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("DELETE Default = %v; want 409", err)
	}
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subcloud-groups/Default", nil, map[string]string{"name": "Other"}, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("rename Default = %v; want 409", err)
	}
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subcloud-groups/Default", nil, map[string]any{"max_parallel_subclouds": 4}, &g); err != nil || g.MaxParallelSubclouds != 4 {
		t.Errorf("PATCH Default's max parallel = %+v, %v", g, err)
	}
	var groups rest.List[central.SubcloudGroup]
	if err := e.reader.Do(ctx, http.MethodGet, "/v1/subcloud-groups", nil, nil, &groups); err != nil || len(groups.Items) != 2 {
		t.Errorf("GET /v1/subcloud-groups = %+v, %v", groups, err)
	}
	if err := e.reader.Do(ctx, http.MethodGet, "/v1/subcloud-groups/east", nil, nil, &g); err != nil || g.Subclouds != 1 {
		t.Errorf("GET east = %+v, %v", g, err)
	}

	// Bootstrap data: checked like on create.
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subclouds/site-a", nil, map[string]string{"bootstrap_values": validValues + "ansible_user: root\n"}, nil); fieldOf(err) != "bootstrap_values.ansible_user" {
		t.Errorf("PATCH ansible_ values = %v; want 400 naming the key", err)
	}
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subclouds/site-lab", nil, map[string]string{"bootstrap_address": "10.10.10.3"}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("PATCH an address without values = %v; want 400", err)
	}

	// Manage needs the subcloud online; delete needs it unmanaged and offline.
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/action", nil, map[string]string{"action": "manage"}, nil); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("manage an offline subcloud = %v; want invalid_transition", err)
	}
	setState(t, e.c, "site-a", central.Online, central.DeployComplete)
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/action", nil, map[string]string{"action": "manage"}, &sc); err != nil || sc.Management != central.Managed {
		t.Fatalf("manage = %+v, %v", sc, err)
	}
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/action", nil, map[string]string{"action": "manage"}, nil); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("manage twice = %v; want invalid_transition", err)
	}
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subclouds/site-a", nil, nil, nil); !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "managed") {
		t.Errorf("DELETE a managed subcloud = %v; want 409 saying it is managed", err)
	}
	if err := e.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/action", nil, map[string]string{"action": "unmanage"}, &sc); err != nil || sc.Management != central.Unmanaged {
		t.Fatalf("unmanage = %+v, %v", sc, err)
	}
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subclouds/site-a", nil, nil, nil); !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "online") {
		t.Errorf("DELETE an online subcloud = %v; want 409 saying it is online", err)
	}
	setState(t, e.c, "site-a", central.Offline, central.DeployConfiguring)
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subclouds/site-a", nil, nil, nil); !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "configuring") {
		t.Errorf("DELETE a configuring subcloud = %v; want 409 saying so", err)
	}
	if err := e.admin.Do(ctx, http.MethodPatch, "/v1/subclouds/site-a", nil, map[string]string{"bootstrap_address": "10.10.10.9"}, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("PATCH bootstrap data while configuring = %v; want 409", err)
	}
	setState(t, e.c, "site-a", central.Offline, central.DeployConfigFailed)

	// A reader reads but cannot write.
	if err := e.reader.Do(ctx, http.MethodGet, "/v1/subclouds/site-a", nil, nil, &sc); err != nil || sc.Group != "east" {
		t.Errorf("reader GET = %+v, %v", sc, err)
	}
	for _, w := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, "/v1/subclouds", map[string]string{"name": "site-r", "shape": "simplex"}},
		{http.MethodPatch, "/v1/subclouds/site-a", map[string]string{"location": "x"}},
		{http.MethodPost, "/v1/subclouds/site-a/action", map[string]string{"action": "manage"}},
		{http.MethodDelete, "/v1/subclouds/site-a", nil},
		{http.MethodPost, "/v1/subcloud-groups", map[string]string{"name": "r"}},
		{http.MethodPatch, "/v1/subcloud-groups/east", map[string]string{"description": "x"}},
		{http.MethodDelete, "/v1/subcloud-groups/east", nil},
	} {
		if err := e.reader.Do(ctx, w.method, w.path, nil, w.body, nil); !errors.Is(err, errs.Forbidden) {
			t.Errorf("reader %s %s = %v; want 403", w.method, w.path, err)
		}
	}

	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subclouds/site-a", nil, nil, nil); err != nil {
		t.Errorf("DELETE an unmanaged, offline, failed subcloud = %v", err)
	}
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/subcloud-groups/east", nil, nil, nil); err != nil {
		t.Errorf("DELETE an emptied group = %v", err)
	}

	// Every change was audited, refusals included.
	evs, _, err := e.c.Shell().Events.Events(ctx, rest.ListOptions{Limit: 1000, Filters: map[string]string{"type": "audit"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev.Type == faultmgr.EventAudit {
			seen[ev.Action+" "+ev.Result] = true
		}
	}
	for _, want := range []string{"createSubcloud ok", "createSubcloud conflict", "createSubcloud invalid_argument",
		"updateSubcloud ok", "subcloudAction ok", "subcloudAction invalid_transition", "deleteSubcloud conflict",
		"deleteSubcloud ok", "createSubcloudGroup ok", "updateSubcloudGroup ok", "deleteSubcloudGroup conflict",
		"deleteSubcloudGroup ok", "createSubcloud permission_denied"} {
		if !seen[want] {
			t.Errorf("no audit event %q; have %v", want, slices.Sorted(maps.Keys(seen)))
		}
	}
}

// setState puts a subcloud in the given observed state, as the link and
// the deploy engine would.
func setState(t *testing.T, c *central.Central, name string, a central.Availability, d central.DeployStatus) {
	t.Helper()
	if _, err := c.Subclouds.UpdateSubcloud(context.Background(), name, func(sc *central.Subcloud) error {
		sc.Availability, sc.DeployStatus = a, d
		sc.Status = central.StatusOf(a, sc.AlarmSummary)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
