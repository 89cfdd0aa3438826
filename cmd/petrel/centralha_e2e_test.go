package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/lab"
)

// TestCentralPairInTheLab runs central 1+1 (`lab up --central-ha`: two
// central processes on one PostgreSQL, elected through a 3-member etcd),
// SIGKILLs the active one while a writer creates flavors through central's
// address, and checks that the other takes over, no acknowledged write is
// lost, the site reconnects by itself, and sync carries on through the new
// leader.
func TestCentralPairInTheLab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the lab needs root")
		}
		t.Skip("the lab needs root")
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-sx=simplex", "--no-demo", "--central-ha")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() { // runs before lab down
		if t.Failed() {
			for _, m := range lab.CentralMembers {
				t.Logf("%s's log ends:\n%s", m, tailFile(filepath.Join(dir, "logs", m+".log")))
			}
		}
	})
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if lf.Central.HA == nil {
		t.Fatal("lab.json does not describe a central pair")
	}
	ctx := context.Background()
	first, err := lab.ActiveCentral(ctx, lf)
	if err != nil || first == "" {
		t.Fatalf("no central leads: %q, %v", first, err)
	}
	cen := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	cen.ok("subcloud", "manage", "site-sx")
	api, err := client.New(client.Config{URL: lf.Central.URL, CACert: lf.CACert, Token: lf.Central.Token})
	if err != nil {
		t.Fatal(err)
	}

	// The writer: a flavor every 50 ms through central's one address.
	var (
		mu    sync.Mutex
		acked []string
		times []time.Time
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	wctx, wstop := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for i := 0; wctx.Err() == nil; i++ {
			var f compute.Flavor
			cctx, cancel := context.WithTimeout(wctx, 2*time.Second)
			err := api.Do(cctx, http.MethodPost, "/v1/flavors", nil,
				central.FlavorRequest{Name: fmt.Sprintf("ha%04d", i), VCPUs: 1, RAMMiB: 64, DiskGiB: 1, Public: true}, &f)
			cancel()
			if err == nil {
				mu.Lock()
				acked, times = append(acked, f.ID), append(times, time.Now())
				mu.Unlock()
			}
			select {
			case <-wctx.Done():
			case <-time.After(50 * time.Millisecond): // the writer's pace
			}
		}
	}()
	waitUntil(t, "10 writes through the first leader", 20*time.Second, func() bool { return count() >= 10 })

	out := base.ok("lab", "fault", "kill-central")
	if !strings.Contains(out, first) {
		t.Fatalf("kill-central killed someone else than the leader %s: %s", first, out)
	}
	killed := time.Now()
	took := waitUntil(t, "the other central leads", 30*time.Second, func() bool {
		name, err := lab.ActiveCentral(ctx, lf)
		return err == nil && name != "" && name != first
	})
	before := count()
	waitUntil(t, "writes through the new leader", 60*time.Second, func() bool { return count() >= before+10 })
	wstop()
	<-wdone
	var gap time.Duration
	mu.Lock()
	for i := 1; i < len(times); i++ {
		gap = max(gap, times[i].Sub(times[i-1]))
	}
	mu.Unlock()
	t.Logf("the other central leads %s after the kill (at %s); the writer's longest pause %s", took.Round(time.Millisecond),
		killed.Format(time.TimeOnly), gap.Round(time.Millisecond))

	// Every acknowledged write is there.
	have := map[string]bool{}
	var page struct {
		Items         []compute.Flavor
		NextPageToken string `json:"next_page_token"`
	}
	q := url.Values{"limit": {"1000"}}
	for {
		if err := api.Do(ctx, http.MethodGet, "/v1/flavors", q, nil, &page); err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Items {
			have[f.ID] = true
		}
		if page.NextPageToken == "" {
			break
		}
		q.Set("page_token", page.NextPageToken)
	}
	mu.Lock()
	n := len(acked)
	for _, id := range acked {
		if !have[id] {
			t.Errorf("acknowledged flavor %s lost in the failover", id)
		}
	}
	mu.Unlock()
	t.Logf("%d flavors acknowledged across the kill, %d at central", n, len(have))

	// The site reconnects by itself and gets every flavor through the new
	// leader (the relay answers from the site).
	waitUntil(t, "site-sx online and in sync at the new leader", 120*time.Second, func() bool {
		var sc central.Subcloud
		return api.Do(ctx, http.MethodGet, "/v1/subclouds/site-sx", nil, nil, &sc) == nil &&
			sc.Availability == central.Online && sc.Sync["flavors"] == central.InSync
	})
	// The status is recomputed from the heads the sync engine last read: a
	// write of the last moments may still be on its way when it first says
	// in sync. What counts is that the site gets every flavor.
	var c int
	waitUntil(t, "site-sx lists every acknowledged flavor", 60*time.Second, func() bool {
		listed := cen.ok("--site", "site-sx", "flavor", "list", "-o", "json")
		c = strings.Count(listed, `"ha0`)
		return c >= n
	})
	t.Logf("site-sx lists %d of the %d flavors", c, n)
}
