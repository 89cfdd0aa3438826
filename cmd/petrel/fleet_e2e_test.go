package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/bench"
)

// TestFleet1000 holds a simulated fleet (1,000 sites at
// PETREL_TEST_SCALE=ci, the default; the 10,000-site run is `petrel bench
// fleet`) at a real central on PostgreSQL, with 1 % of update frames lost:
// every site online and in-sync, a flavor reaches every site, then central
// restarts — every site is back within T2's 60 s, none is marked offline,
// and the API answers throughout the reconnect storm. Every process it
// starts (central, PostgreSQL, the simulators) is stopped by PID.
func TestFleet1000(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("a 1,000-site fleet: not in -short (CI always runs it)")
	}
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/initdb"); err != nil {
		t.Fatal("PostgreSQL 15 is required (apt-get install postgresql; scripts/test.sh installs it)")
	}
	sites := 1000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := bench.RunFleet(ctx, bench.FleetConfig{Binary: petrelBin, Sites: sites, PerProcess: 500, Loss: 0.01, Seed: 12,
		Hold: 5 * time.Second, Flavors: 1, Restart: true, AlarmsPerMinute: 1, Log: testWriter{t}})
	if err != nil {
		t.Fatalf("RunFleet = %v", err)
	}
	for _, n := range r.Notes {
		t.Logf("note: %s", n)
	}
	if r.HeldOnline != sites || r.InSync != sites {
		t.Errorf("held online %d, in-sync %d; want %d each", r.HeldOnline, r.InSync, sites)
	}
	if r.FlavorSites != sites {
		t.Errorf("a flavor created at central reached %d sites; want %d", r.FlavorSites, sites)
	}
	if r.FalseOffline != 0 {
		t.Errorf("%d sites marked offline at 1 %% loss; want 0", r.FalseOffline)
	}
	if r.Resynced != sites || r.Resync > 60*time.Second {
		t.Errorf("after central's restart %d sites back in %s; want %d within 60 s", r.Resynced, r.Resync, sites)
	}
	if r.RestartFalse != 0 {
		t.Errorf("%d sites marked offline after central's restart; want 0", r.RestartFalse)
	}
	if r.StormAPICalls == 0 || r.StormAPIErrors != 0 || r.StormAPIMax > 10*time.Second {
		t.Errorf("API during the reconnect storm: %d calls, %d errors, slowest %s; want answers, no errors, each within 10 s",
			r.StormAPICalls, r.StormAPIErrors, r.StormAPIMax)
	}
	t.Logf("central: %.3f cores, %.0f MiB RSS holding %d sites; resync %s; flavor p99 %s; API in the storm: slowest %s",
		r.CPU, r.RSSMiB, sites, r.Resync, r.FlavorP99, r.StormAPIMax)
}
