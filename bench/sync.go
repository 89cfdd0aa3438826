package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/lab"
)

// SyncResult is the shared-resource sync measurement: a flavor created at
// central until every managed site holds it, seen through central's relay
// with gophercloud (the independent observer).
type SyncResult struct {
	Sites, Changes int
	Fleet          []time.Duration // per change: until the last site holds it
	PerSite        []time.Duration // per change and site
	CatchUp        time.Duration   // a partitioned site, from the heal until it holds every change it missed
	Missed         int             // changes made while it was partitioned
}

// RunSync starts a lab of sites simplex sites, manages them, and creates
// changes flavors at central one after another, timing each from central's
// 201 until each site lists it (polled every 25 ms). Then it partitions one
// site's WAN link, makes 5 changes, heals it and times its catch-up.
func RunSync(ctx context.Context, binary string, sites, changes int, log io.Writer) (SyncResult, error) {
	res := SyncResult{Sites: sites, Changes: changes}
	var specs []string
	for i := range sites {
		specs = append(specs, fmt.Sprintf("sync-%d=simplex", i))
	}
	err := withLabConfig(ctx, binary, strings.Join(specs, ","), true, log, func(f *lab.File) error {
		api, err := client.New(client.Config{URL: f.Central.URL, CACert: f.CACert, Token: f.Central.Token})
		if err != nil {
			return err
		}
		hc, err := labHTTPClient(f.CACert)
		if err != nil {
			return err
		}
		var names []string
		novas := map[string]*gophercloud.ServiceClient{}
		for _, s := range f.Sites {
			names = append(names, s.Name)
			if err := api.Do(ctx, http.MethodPost, "/v1/subclouds/"+s.Name+"/action", nil, central.SubcloudActionRequest{Action: "manage"}, nil); err != nil {
				return fmt.Errorf("manage %s: %w", s.Name, err)
			}
			pc := &gophercloud.ProviderClient{HTTPClient: *hc}
			pc.SetToken(f.Central.Token)
			novas[s.Name] = &gophercloud.ServiceClient{ProviderClient: pc, Type: "compute", Microversion: "2.37",
				Endpoint: f.Central.URL + "/v1/subclouds/" + s.Name + "/api/compute/v2.1/"}
		}
		holds := func(site, id string) bool {
			_, err := flavors.Get(ctx, novas[site], id).Extract()
			return err == nil
		}
		create := func(name string) (string, time.Time, error) {
			var fl compute.Flavor
			err := api.Do(ctx, http.MethodPost, "/v1/flavors", nil, central.FlavorRequest{Name: name, VCPUs: 1, RAMMiB: 64, DiskGiB: 1, Public: true}, &fl)
			return fl.ID, time.Now(), err
		}
		// until polls every site every 25 ms until each holds id; per-site times.
		until := func(id string, from time.Time, among []string, limit time.Duration) (map[string]time.Duration, error) {
			got := map[string]time.Duration{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, s := range among {
				wg.Go(func() {
					for time.Since(from) < limit && ctx.Err() == nil {
						if holds(s, id) {
							mu.Lock()
							got[s] = time.Since(from)
							mu.Unlock()
							return
						}
						time.Sleep(25 * time.Millisecond) // the observer's poll period
					}
				})
			}
			wg.Wait()
			if len(got) < len(among) {
				return got, fmt.Errorf("flavor %s reached %d of %d sites within %s", id, len(got), len(among), limit)
			}
			return got, nil
		}
		// Warm-up: every site linked and audited once.
		id, at, err := create("sync-warmup")
		if err != nil {
			return err
		}
		if _, err := until(id, at, names, 120*time.Second); err != nil {
			return err
		}
		for i := range changes {
			id, at, err := create(fmt.Sprintf("sync-%04d", i))
			if err != nil {
				return err
			}
			got, err := until(id, at, names, 60*time.Second)
			if err != nil {
				return err
			}
			var fleet time.Duration
			for _, d := range got {
				res.PerSite = append(res.PerSite, d)
				fleet = max(fleet, d)
			}
			res.Fleet = append(res.Fleet, fleet)
			fmt.Fprintf(log, "change %d: every site in %s\n", i+1, fleet.Round(time.Millisecond))
		}
		// A partitioned site catches up after the heal.
		cut := names[len(names)-1]
		if err := lab.Fault(ctx, f.Dir, "partition", cut, "all", 0, 0); err != nil {
			return err
		}
		var missed []string
		for i := range 5 {
			id, _, err := create(fmt.Sprintf("sync-missed-%d", i))
			if err != nil {
				return err
			}
			missed = append(missed, id)
		}
		res.Missed = len(missed)
		healed := time.Now()
		if err := lab.Fault(ctx, f.Dir, "clear", cut, "all", 0, 0); err != nil {
			return err
		}
		for _, id := range missed {
			if _, err := until(id, healed, []string{cut}, 120*time.Second); err != nil {
				return err
			}
		}
		res.CatchUp = time.Since(healed)
		slices.Sort(res.Fleet) // Percentile wants sorted samples
		slices.Sort(res.PerSite)
		fmt.Fprintf(log, "%s caught up %d changes %s after its WAN link healed\n", cut, len(missed), res.CatchUp.Round(time.Millisecond))
		return nil
	})
	return res, err
}

// labHTTPClient trusts the lab's CA.
func labHTTPClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("bench: no certificate in the lab CA file")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 32}}, nil
}
