package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// TestFleetPatchStrategyInTheLab patches the default lab's three sites
// from central: a patch built with the lab's key and uploaded to central
// (not to a site), a fleet strategy with max-parallel 2 over the managed
// sites. While it applies, `petrel strategy show -o json` shows each
// site's progress; never more than two sites run at once; at the end
// every site holds the patch deployed and every host is patch-current.
// Then a second patch, one site at a time, aborted once the first site
// started: no site that had not started starts, the strategy ends
// aborted, and every site's hosts are unlocked and available.
//
// The patches install in service (files only, no new binary): the e2e
// proves the fleet orchestration, not reboots, which
// TestPatchStrategyInTheLab covers at one site.
func TestFleetPatchStrategyInTheLab(t *testing.T) {
	start := time.Now()
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	base.ok("lab", "up", "--no-demo")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("central's log ends:\n%s", tailFile(filepath.Join(dir, "logs", "central.log")))
		}
	})
	labUp := time.Since(start)
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	central := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	var sites []string
	for _, s := range lf.Sites {
		sites = append(sites, s.Name)
	}
	waitUntil(t, "every site online at central", 90*time.Second, func() bool {
		out, _, code := central.run("", "subcloud", "list", "-o", "json")
		return code == 0 && strings.Count(out, `"online"`) == len(sites)
	})
	for _, s := range sites {
		central.ok("subcloud", "manage", s)
	}
	type hostView struct {
		Name           string    `json:"name"`
		Administrative string    `json:"administrative"`
		Availability   string    `json:"availability"`
		PatchCurrent   bool      `json:"patch_current"`
		Software       *struct{} `json:"software"`
	}
	hosts := func(site string) []hostView {
		var l struct{ Items []hostView }
		out, _, code := central.run("", "--site", site, "host", "list", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
			return nil
		}
		return l.Items
	}
	for _, s := range lf.Sites {
		waitUntil(t, s.Name+"'s hosts available with their software reported", 90*time.Second, func() bool {
			hs := hosts(s.Name)
			n := 0
			for _, h := range hs {
				if h.Availability == "available" && h.Software != nil {
					n++
				}
			}
			return n == len(s.Hosts)
		})
	}
	patchState := func(site, id string) string {
		var p struct{ State string }
		out, _, code := central.run("", "--site", site, "patch", "show", id, "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &p) != nil {
			return "absent"
		}
		return p.State
	}
	show := func() strategy.Strategy {
		var s strategy.Strategy
		out, _, code := central.run("", "strategy", "show", "-o", "json")
		if code == 0 {
			json.Unmarshal([]byte(out), &s)
		}
		return s
	}
	build := func(id string) string {
		f := filepath.Join(t.TempDir(), "motd")
		os.WriteFile(f, []byte("patched by "+id+"\n"), 0o644)
		p := filepath.Join(t.TempDir(), id+".patch")
		base.ok("patch", "build", "--id", id, "--file", f+":etc/motd-"+id, "--out", p)
		return p
	}

	// FP1 to every site, two at a time.
	central.ok("patch", "upload", build("FP1"))
	if out := central.ok("patch", "list"); !strings.Contains(out, "FP1") {
		t.Fatalf("central's patches:\n%s", out)
	}
	t0 := time.Now()
	central.ok("strategy", "create", "--fleet", "--patch", "FP1", "--max-parallel", "2", "--alarm-restrictions", "relaxed")
	plan := show()
	if plan.Scope != strategy.ScopeFleet || plan.State != strategy.ReadyToApply || len(plan.Stages) != 2 {
		t.Fatalf("plan: %s %s with %d stages; want a fleet strategy, ready, in 2 stages", plan.Scope, plan.State, len(plan.Stages))
	}
	central.ok("strategy", "apply")
	maxRunning, sawProgress := 0, false
	var final strategy.Strategy
	waitUntil(t, "the fleet strategy applied", 6*time.Minute, func() bool {
		s := show()
		running := 0
		for _, stg := range s.Stages {
			for _, st := range stg.Steps {
				if st.State == strategy.StepApplying {
					running++
				}
				if st.Site != nil && st.Site.Phase != strategy.PhaseWaiting && st.Site.Phase != strategy.PhaseDone {
					sawProgress = true
				}
			}
		}
		maxRunning = max(maxRunning, running)
		final = s
		return s.State == strategy.Applied || s.State == strategy.ApplyFailed
	})
	applied := time.Since(t0)
	if final.State != strategy.Applied {
		t.Fatalf("fleet strategy %s: %s\n%s", final.State, final.Reason, central.ok("strategy", "show"))
	}
	t.Logf("the fleet strategy, applied:\n%s", central.ok("strategy", "show"))
	if maxRunning > 2 || !sawProgress {
		t.Errorf("most sites applying at once %d (want ≤ 2); per-site progress seen while applying: %t", maxRunning, sawProgress)
	}
	for _, s := range sites {
		if st := patchState(s, "FP1"); st != "deployed" {
			t.Errorf("%s: FP1 %s; want deployed", s, st)
		}
		for _, h := range hosts(s) {
			if !h.PatchCurrent || h.Availability != "available" || h.Administrative != "unlocked" {
				t.Errorf("%s/%s: patch-current %t, %s/%s", s, h.Name, h.PatchCurrent, h.Administrative, h.Availability)
			}
		}
	}
	central.ok("strategy", "delete")

	// FP2, one site at a time, aborted once the first site started.
	central.ok("patch", "upload", build("FP2"))
	central.ok("strategy", "create", "--fleet", "--patch", "FP2", "--max-parallel", "1", "--alarm-restrictions", "relaxed")
	central.ok("strategy", "apply")
	waitUntil(t, "the first site started", time.Minute, func() bool {
		s := show()
		return s.Stages[0].Steps[0].State != strategy.StepInitial
	})
	var atAbort strategy.Strategy
	json.Unmarshal([]byte(central.ok("strategy", "abort", "-o", "json")), &atAbort)
	var notStarted []string
	for _, stg := range atAbort.Stages {
		for _, st := range stg.Steps {
			if st.State == strategy.StepInitial {
				notStarted = append(notStarted, st.Target)
			}
		}
	}
	waitUntil(t, "the fleet strategy aborted", 3*time.Minute, func() bool {
		final = show()
		return final.State == strategy.Aborted
	})
	t.Logf("the fleet strategy, aborted:\n%s", central.ok("strategy", "show"))
	for _, stg := range final.Stages {
		for _, st := range stg.Steps {
			if slices.Contains(notStarted, st.Target) {
				if st.State != strategy.StepAborted {
					t.Errorf("%s had not started at the abort; its step is %s", st.Target, st.State)
				}
				if ps := patchState(st.Target, "FP2"); ps != "available" && ps != "absent" {
					t.Errorf("%s had not started at the abort; FP2 is %s there", st.Target, ps)
				}
			}
		}
	}
	for _, s := range sites {
		for _, h := range hosts(s) {
			if h.Availability != "available" || h.Administrative != "unlocked" {
				t.Errorf("after the abort %s/%s is %s/%s", s, h.Name, h.Administrative, h.Availability)
			}
		}
	}
	t.Logf("lab up %s; fleet strategy over %d sites applied in %s; total %s", labUp.Round(time.Second), len(sites),
		applied.Round(time.Second), time.Since(start).Round(time.Second))
}
