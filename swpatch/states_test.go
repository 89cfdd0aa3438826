package swpatch_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
)

var allStates = []swpatch.State{swpatch.Available, swpatch.Deploying, swpatch.Deployed, swpatch.Committed, swpatch.Removing}

func TestTransitionTable(t *testing.T) {
	allowed := map[[2]swpatch.State]bool{
		{swpatch.Available, swpatch.Deploying}: true,
		{swpatch.Deploying, swpatch.Deployed}:  true,
		{swpatch.Deploying, swpatch.Removing}:  true,
		{swpatch.Deployed, swpatch.Committed}:  true,
		{swpatch.Deployed, swpatch.Removing}:   true,
		{swpatch.Deployed, swpatch.Deploying}:  true,
		{swpatch.Removing, swpatch.Available}:  true,
		{swpatch.Removing, swpatch.Deploying}:  true,
	}
	for _, from := range allStates {
		for _, to := range allStates {
			r := swpatch.Record{ID: "P", State: from}
			err := r.To(to, time.Now())
			if want := allowed[[2]swpatch.State{from, to}]; (err == nil) != want {
				t.Errorf("%s -> %s: err = %v; want allowed %v", from, to, err, want)
			} else if err != nil && !errors.Is(err, errs.InvalidTransition) {
				t.Errorf("%s -> %s: err = %v; want InvalidTransition", from, to, err)
			}
		}
	}
	if !swpatch.Committed.Terminal() || swpatch.State("bogus").Valid() {
		t.Error("Committed must be terminal and unknown states invalid")
	}
}

func TestSettle(t *testing.T) {
	now := time.Now()
	r := swpatch.Record{ID: "P1", State: swpatch.Deploying}
	hosts := []swpatch.HostSoftware{{Name: "c0", Patches: []string{"P1"}}, {Name: "w0", Patches: []string{}}}
	swpatch.Settle(&r, hosts, now)
	if r.State != swpatch.Deploying || r.Hosts["c0"] != swpatch.HostCurrent || r.Hosts["w0"] != swpatch.HostPending {
		t.Fatalf("Settle = %+v; want deploying, c0 current, w0 pending", r)
	}
	hosts[1].Failed = "P1"
	swpatch.Settle(&r, hosts, now)
	if r.Hosts["w0"] != swpatch.HostInstallFailed {
		t.Fatalf("w0 = %s; want install-failed", r.Hosts["w0"])
	}
	hosts[1] = swpatch.HostSoftware{Name: "w0", Patches: []string{"P1"}}
	if !swpatch.Settle(&r, hosts, now) || r.State != swpatch.Deployed {
		t.Fatalf("Settle = %+v; want deployed", r)
	}
	if err := r.To(swpatch.Removing, now); err != nil {
		t.Fatal(err)
	}
	swpatch.Settle(&r, hosts, now)
	if r.State != swpatch.Removing || r.Hosts["c0"] != swpatch.HostPending {
		t.Fatalf("removing: %+v; want c0 pending", r)
	}
	for i := range hosts {
		hosts[i].Patches = slices.DeleteFunc(hosts[i].Patches, func(s string) bool { return s == "P1" })
	}
	swpatch.Settle(&r, hosts, now)
	if r.State != swpatch.Available || len(r.Hosts) != 0 {
		t.Fatalf("after removal: %+v; want available, no hosts", r)
	}
}
