package central_test

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// relayNova is a gophercloud Nova client for one site through central's
// relay, with central's admin token: the independent observer of what a
// site holds.
func relayNova(t *testing.T, f fleet, site string) *gophercloud.ServiceClient {
	t.Helper()
	pc := &gophercloud.ProviderClient{HTTPClient: *servertest.HTTPClient(t, f.c)}
	pc.SetToken(servertest.AdminToken(t, f.c))
	return &gophercloud.ServiceClient{ProviderClient: pc, Type: "compute", Microversion: "2.37",
		Endpoint: f.c.Shell().URL() + "/v1/subclouds/" + site + "/api/compute/v2.1/"}
}

// siteFlavors lists a site's flavors through the relay as "name=id", sorted.
func siteFlavors(t *testing.T, nova *gophercloud.ServiceClient) (string, error) {
	pages, err := flavors.ListDetail(nova, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(context.Background())
	if err != nil {
		return "", err
	}
	fs, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return "", err
	}
	var out []string
	for _, fl := range fs {
		out = append(out, fl.Name+"="+fl.ID)
	}
	slices.Sort(out)
	return strings.Join(out, ","), nil
}

// waitFor polls cond every 20 ms until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	t.Fatalf("%s: never happened; last: %s", what, last)
}

// startSiteOn runs a simplex site controller on shell (its data directory
// survives a stop, as a restarted site's does).
func (f fleet) startSiteOn(t *testing.T, shell server.Config, name, cert, key string) func() {
	_, stop := f.startSiteServer(t, shell, name, cert, key)
	return stop
}

func (f fleet) startSiteServer(t *testing.T, shell server.Config, name, cert, key string) (*subcloud.Subcloud, func()) {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: name, Shape: inventory.Simplex, Shell: shell,
		Central: &subcloud.HomeConfig{Addr: f.c.SiteAddr().String(), CACert: f.c.Shell().CACert, CertFile: cert, KeyFile: key,
			PublicKeyFile: filepath.Join(f.dir, central.RelayPublicKey), Interval: interval}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	select {
	case <-s.Shell().Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("site not serving after 10 s")
	}
	return s, stop
}

// TestSyncFlavorsToRealSites: flavors defined at central reach every managed
// site with the same ID (seen through the relay with gophercloud), not an
// unmanaged one; a site that was down during changes is out-of-sync, and
// in-sync again with the changes once it returns, with no operator action.
func TestSyncFlavorsToRealSites(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	shells := map[string]server.Config{}
	stops := map[string]func(){}
	creds := map[string][2]string{}
	for _, name := range []string{"site-a", "site-b", "site-u"} {
		cert, key := f.siteFiles(t, name)
		creds[name] = [2]string{cert, key}
		shells[name] = servertest.Shell(t)
		stops[name] = f.startSiteOn(t, shells[name], name, cert, key)
		f.waitAvailability(t, name, central.Online)
	}
	for _, name := range []string{"site-a", "site-b"} {
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds/"+name+"/action", nil,
			central.SubcloudActionRequest{Action: "manage"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	syncOf := func(site string) central.SyncStatus {
		var sc central.Subcloud
		if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+site, nil, nil, &sc); err != nil {
			t.Fatal(err)
		}
		return sc.Sync["flavors"]
	}
	var small compute.Flavor
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/flavors", nil,
		central.FlavorRequest{Name: "c1.small", VCPUs: 1, RAMMiB: 256, DiskGiB: 1, Public: true}, &small); err != nil {
		t.Fatal(err)
	}
	// Bad input changes nothing.
	for _, bad := range []central.FlavorRequest{{Name: "c1.small", VCPUs: 1, RAMMiB: 256, DiskGiB: 1}, {Name: "x", VCPUs: 0, RAMMiB: 256, DiskGiB: 1}} {
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, bad, nil); err == nil {
			t.Errorf("flavor %+v accepted", bad)
		}
	}
	want := "c1.small=" + small.ID
	novas := map[string]*gophercloud.ServiceClient{}
	for _, name := range []string{"site-a", "site-b", "site-u"} {
		novas[name] = relayNova(t, f, name)
	}
	for _, name := range []string{"site-a", "site-b"} {
		waitFor(t, name+" holds c1.small, in-sync", func() (bool, string) {
			got, err := siteFlavors(t, novas[name])
			return err == nil && strings.Contains(got, want) && syncOf(name) == central.InSync, got + " " + string(syncOf(name))
		})
	}
	if got, err := siteFlavors(t, novas["site-u"]); err != nil || strings.Contains(got, "c1.small") {
		t.Errorf("unmanaged site-u holds %q, %v", got, err)
	}
	if s := syncOf("site-u"); s != central.SyncUnknown && s != "" {
		t.Errorf("unmanaged site-u sync %q; want unknown", s)
	}

	// site-b goes down; central changes; site-b is out of sync.
	stops["site-b"]()
	f.waitAvailability(t, "site-b", central.Offline)
	var large compute.Flavor
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/flavors", nil,
		central.FlavorRequest{Name: "c1.large", VCPUs: 4, RAMMiB: 1024, DiskGiB: 10, Public: true}, &large); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Do(ctx, http.MethodDelete, "/v1/flavors/c1.small", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "site-b out-of-sync", func() (bool, string) { return syncOf("site-b") == central.OutOfSync, string(syncOf("site-b")) })
	waitFor(t, "site-a has the changes", func() (bool, string) {
		got, err := siteFlavors(t, novas["site-a"])
		return err == nil && strings.Contains(got, "c1.large="+large.ID) && !strings.Contains(got, "c1.small") &&
			syncOf("site-a") == central.InSync, got
	})
	// It returns (same data): caught up, in sync.
	stops["site-b"] = f.startSiteOn(t, shells["site-b"], "site-b", creds["site-b"][0], creds["site-b"][1])
	waitFor(t, "site-b caught up", func() (bool, string) {
		got, err := siteFlavors(t, novas["site-b"])
		return err == nil && strings.Contains(got, "c1.large="+large.ID) && !strings.Contains(got, "c1.small") &&
			syncOf("site-b") == central.InSync, got + " " + string(syncOf("site-b"))
	})
	// Central's own listing.
	var list struct{ Items []compute.Flavor }
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/flavors", nil, nil, &list); err != nil || len(list.Items) != 1 || list.Items[0].ID != large.ID {
		t.Errorf("central's flavors: %+v, %v", list.Items, err)
	}
}
