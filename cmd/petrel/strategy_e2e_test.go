package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// TestPatchStrategyInTheLab patches a multi-server lab site (two
// controllers as a pair, two workers) with a reboot-required patch
// through a strategy: planned and shown as stages and steps, applied to
// applied. Every host then runs the new version; the running server
// stayed active, moved by live migration off its worker; an observer
// polling the hosts saw never more than one host locked or unavailable
// at once (serial). The active controller is patched last, after a
// swact: the peer's executor resumes the strategy. The guests' heartbeat
// counters never skip. Then the patch is removed the same way: every host
// back on the software before it.
func TestPatchStrategyInTheLab(t *testing.T) {
	if err := libvirtd.Installed(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	start := time.Now()
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "sp=multi-server:2", "--no-demo")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() { // runs before lab down
		if t.Failed() {
			for _, h := range []string{"controller-0", "controller-1"} {
				t.Logf("%s's site controller log ends:\n%s", h, tailFile(filepath.Join(dir, "hosts", "sp", h, "logs", "subcloud.log")))
				t.Logf("%s's site controller on servers and their hosts:\n%s", h, grepFile(filepath.Join(dir, "hosts", "sp", h, "logs", "subcloud.log"),
					"server state observed", "removing", "hypervisor host restarted", "server migrated", "migration", "evacuat", "swact",
					"reboot", "MNFA", "confirmed down", "fenc", "\"level\":\"ERROR\""))
			}
			for _, h := range []string{"worker-0", "worker-1"} {
				logs, _ := filepath.Glob(filepath.Join(dir, "hosts", "sp", h, "libvirt", "log", "qemu", "*.log"))
				for _, l := range logs {
					t.Logf("%s's %s ends:\n%s", h, filepath.Base(l), tailFile(l)) // a crash's assertion is there
				}
				// The host's libvirtd: host-init's service (restarts) and
				// the daemon's own log (its errors).
				for _, l := range []string{filepath.Join("logs", "libvirtd.log"), filepath.Join("libvirt", "log", "libvirtd.log"), filepath.Join("libvirt", "log", "stdout.log")} {
					t.Logf("%s's %s ends:\n%s", h, l, tailFile(filepath.Join(dir, "hosts", "sp", h, l)))
				}
			}
		}
	})
	labUp := time.Since(start)
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	t.Cleanup(func() { // before lab down: the site's history (host recovery, instance events)
		if t.Failed() {
			out, _, _ := site.run("", "event", "list", "--limit", "150")
			t.Logf("the site's events, newest first:\n%s", out)
		}
	})
	type hostView struct {
		Name            string `json:"name"`
		Administrative  string `json:"administrative"`
		Availability    string `json:"availability"`
		SoftwareVersion string `json:"software_version"`
		PatchCurrent    bool   `json:"patch_current"`
		Software        *struct {
			Slot string `json:"slot"`
		} `json:"software"`
	}
	hosts := func(c cli) ([]hostView, bool) {
		out, _, code := c.run("", "host", "list", "-o", "json")
		var l struct{ Items []hostView }
		return l.Items, code == 0 && json.Unmarshal([]byte(out), &l) == nil
	}
	var h0 []hostView
	waitUntil(t, "four hosts available with their software reported", 90*time.Second, func() bool {
		hs, ok := hosts(site)
		n := 0
		for _, h := range hs {
			if h.Availability == "available" && h.Software != nil {
				n++
			}
		}
		h0 = hs
		return ok && n == 4
	})
	oldVersion := h0[0].SoftwareVersion
	waitUntil(t, "two hypervisors up", 60*time.Second, func() bool { return strings.Count(site.ok("hypervisor", "list"), " up ") == 2 })

	type serverView struct{ ID, Status, Host string }
	server := func(name string) serverView {
		var sv serverView
		json.Unmarshal([]byte(site.ok("server", "show", name, "-o", "json")), &sv)
		return sv
	}
	// A server on each worker: each worker then has the image, which a
	// migration's destination needs (after the swact the active
	// controller, controller-1, does not hold the images seeded on
	// controller-0: docs/patching.md, Limits).
	site.ok("server", "create", "vm-0", "--image", "petrel-test", "--flavor", "m1.tiny", "--host", "worker-0", "--wait")
	site.ok("server", "create", "vm-1", "--image", "petrel-test", "--flavor", "m1.tiny", "--host", "worker-1", "--wait")
	before := map[string]serverView{"vm-0": server("vm-0"), "vm-1": server("vm-1")}
	for n, sv := range before {
		if sv.Status != "active" {
			t.Fatalf("%s: %+v; want active", n, sv)
		}
	}
	// The guests count: a heartbeat counter on the console that must go on
	// across every live migration, never skipping or restarting.
	beats := func(name string) int {
		hb := guestHealthy(t, name, site.ok("server", "console-log", name))
		if len(hb) == 0 {
			return 0
		}
		return hb[len(hb)-1]
	}
	counted := map[string]int{}
	for _, n := range []string{"vm-0", "vm-1"} {
		waitUntil(t, n+" counting", 90*time.Second, func() bool { counted[n] = beats(n); return counted[n] >= 2 })
	}
	stillCounting := func(when string) {
		t.Helper()
		for _, n := range []string{"vm-0", "vm-1"} {
			last := counted[n]
			waitUntil(t, n+" counting on "+when, 60*time.Second, func() bool { counted[n] = beats(n); return counted[n] > last })
		}
	}

	// A reboot-required patch carrying this petrel, stamped CURRENT+P1,
	// uploaded through central's relay, applied at the site.
	p1 := filepath.Join(t.TempDir(), "p1.patch")
	base.ok("patch", "build", "--id", "P1", "--out", p1)
	want := oldVersion + "+P1"
	central := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	central.ok("--site", "sp", "patch", "upload", p1)
	site.ok("patch", "apply", "P1")

	// The plan, before anything runs.
	show := func() strategy.Strategy {
		var s strategy.Strategy
		out, _, code := site.run("", "strategy", "show", "-o", "json")
		if code == 0 {
			json.Unmarshal([]byte(out), &s)
		}
		return s
	}
	site.ok("strategy", "create", "--type", "patch", "--worker-apply-type", "serial", "--instance-action", "migrate")
	table := site.ok("strategy", "show")
	if relayed := central.ok("--site", "sp", "strategy", "show", "-o", "yaml"); !strings.Contains(relayed, "state: ready-to-apply") {
		t.Errorf("strategy show through central's relay:\n%s", relayed)
	}
	t.Logf("the plan:\n%s", table)
	plan := show()
	var stages []string
	for _, st := range plan.Stages {
		var targets []string
		for _, step := range st.Steps {
			if step.Action == strategy.LockHosts {
				targets = append(targets, step.Target)
			}
		}
		stages = append(stages, st.Name+":"+strings.Join(targets, ","))
	}
	wantStages := []string{"sw-patch-controllers:controller-1", "sw-patch-controllers:controller-0",
		"sw-patch-worker-hosts:worker-0", "sw-patch-worker-hosts:worker-1"}
	if plan.State != strategy.ReadyToApply || strings.Join(stages, " ") != strings.Join(wantStages, " ") {
		t.Fatalf("plan %s with stages %v; want ready-to-apply with %v (the active controller after a swact)", plan.State, stages, wantStages)
	}
	if !strings.Contains(table, "swact-hosts") || !strings.Contains(table, "system-stabilize") {
		t.Errorf("strategy show lacks the swact or the health gate:\n%s", table)
	}

	// The observer: never more than one host locked or out of service
	// (degraded is in service).
	var mu sync.Mutex
	maxDown, polls := 0, 0
	var worst []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		home := t.TempDir()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.Command(petrelBin, "host", "list", "-o", "json")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, site.env...)
			var o bytes.Buffer
			cmd.Stdout = &o
			if cmd.Run() == nil {
				var l struct{ Items []hostView }
				if json.Unmarshal(o.Bytes(), &l) == nil && len(l.Items) == 4 {
					var down []string
					for _, h := range l.Items {
						if h.Administrative == "locked" || h.Availability != "available" && h.Availability != "degraded" {
							down = append(down, h.Name+"="+h.Administrative+"/"+h.Availability)
						}
					}
					mu.Lock()
					polls++
					if len(down) > maxDown {
						maxDown, worst = len(down), down
					}
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond): // the observer's poll period
			}
		}
	}()

	// The servers' live migrations, as the API records them: each one's
	// switch-over pause is the VM's downtime for the host it left.
	type migrationView struct {
		Phase     string    `json:"phase"`
		StartedAt time.Time `json:"started_at"`
		Progress  struct {
			Downtime time.Duration `json:"downtime"`
		} `json:"progress"`
	}
	downtimes := map[string]time.Duration{} // server@started_at → downtime
	wg.Add(1)
	go func() {
		defer wg.Done()
		home := t.TempDir()
		for {
			cmd := exec.Command(petrelBin, "server", "list", "-o", "json")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}, site.env...)
			var o bytes.Buffer
			cmd.Stdout = &o
			if cmd.Run() == nil {
				var l struct {
					Items []struct {
						Name      string         `json:"name"`
						Migration *migrationView `json:"migration"`
					}
				}
				if json.Unmarshal(o.Bytes(), &l) == nil {
					mu.Lock()
					for _, sv := range l.Items {
						if m := sv.Migration; m != nil && m.Phase == string(compute.MigrationDone) {
							downtimes[sv.Name+"@"+m.StartedAt.Format(time.RFC3339Nano)] = m.Progress.Downtime
						}
					}
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond): // the poll period
			}
		}
	}()

	applyStart := time.Now()
	site.ok("strategy", "apply")
	var final strategy.Strategy
	waitUntil(t, "the strategy applied", 6*time.Minute, func() bool {
		final = show()
		if final.State == strategy.ApplyFailed || final.State == strategy.Aborted {
			t.Fatalf("strategy %s: %s\n%s", final.State, final.Reason, site.ok("strategy", "show"))
		}
		return final.State == strategy.Applied
	})
	total := time.Since(applyStart)
	close(stop)
	wg.Wait()
	t.Logf("the strategy applied:\n%s", site.ok("strategy", "show"))

	hs, _ := hosts(site)
	for _, h := range hs {
		if h.SoftwareVersion != want || !h.PatchCurrent || h.Administrative != "unlocked" || h.Availability != "available" {
			t.Errorf("%s after the strategy: %+v; want %s, patch-current, unlocked, available", h.Name, h, want)
		}
	}
	// Both servers active; vm-1 moved off worker-1 (patched last) by
	// live migration; vm-0 moved off worker-0 first, then back.
	if sv := server("vm-1"); sv.Status != "active" || sv.Host != "worker-0" {
		t.Errorf("vm-1 after the strategy: %+v; want active on worker-0 (moved off worker-1)", sv)
	}
	if sv := server("vm-0"); sv.Status != "active" || sv.Host != "worker-0" {
		t.Errorf("vm-0 after the strategy: %+v; want active on worker-0 (to worker-1 and back)", sv)
	}
	mu.Lock()
	if maxDown != 1 || polls < 10 {
		t.Errorf("the observer saw at most %d hosts down (%v) in %d polls; want exactly 1 at a time", maxDown, worst, polls)
	}
	// vm-0 left worker-0 and came back, vm-1 left worker-1: three
	// migrations (one a poll missed still shows as the server's last).
	var pauses []string
	for k, d := range downtimes {
		pauses = append(pauses, k+"="+d.String())
	}
	mu.Unlock()
	if len(pauses) < 2 {
		t.Errorf("live migrations seen completed: %v; want vm-0's and vm-1's", pauses)
	}
	t.Logf("VM downtime per live migration (one per server per host it left): %v", pauses)

	// Where the time went: steps that wait on the site (migrations with
	// the lock, installs, reboots to available, the swact) against the
	// whole; the rest is the orchestration's own.
	spent := map[strategy.Action]time.Duration{}
	var first, last time.Time
	for _, st := range final.Stages {
		for _, step := range st.Steps {
			if step.StartedAt != nil && step.EndedAt != nil {
				spent[step.Action] += step.EndedAt.Sub(*step.StartedAt)
				if first.IsZero() || step.StartedAt.Before(first) {
					first = *step.StartedAt
				}
				if step.EndedAt.After(last) {
					last = *step.EndedAt
				}
			}
		}
	}
	span := last.Sub(first) // the strategy's own clock: first step started to last step ended
	waited := spent[strategy.LockHosts] + spent[strategy.SwPatchHosts] + spent[strategy.UnlockHosts] + spent[strategy.SystemStabilize] + spent[strategy.SwactHosts]
	t.Logf("hosts patched per minute: %.1f (4 hosts, first step to last)", 4/span.Minutes())
	t.Logf("lab up %s; apply to applied seen %s; steps %s for 4 hosts: lock+migrate %s, install %s, unlock %s, reboot to healthy %s, swact %s; overhead %s (%s per host)",
		labUp.Round(time.Second), total.Round(100*time.Millisecond), span.Round(100*time.Millisecond), spent[strategy.LockHosts].Round(10*time.Millisecond),
		spent[strategy.SwPatchHosts].Round(10*time.Millisecond), spent[strategy.UnlockHosts].Round(10*time.Millisecond),
		spent[strategy.SystemStabilize].Round(10*time.Millisecond), spent[strategy.SwactHosts].Round(10*time.Millisecond),
		(span - waited).Round(10*time.Millisecond), ((span - waited) / 4).Round(10*time.Millisecond))
	stillCounting("after the strategy")
	site.ok("strategy", "delete")

	// The patch removed the same way: remove it, plan, apply; every host
	// back on the software before it, the guests still counting.
	site.ok("patch", "remove", "P1")
	site.ok("strategy", "create", "--type", "patch", "--worker-apply-type", "serial", "--instance-action", "migrate")
	removeStart := time.Now()
	site.ok("strategy", "apply")
	waitUntil(t, "the removal strategy applied", 6*time.Minute, func() bool {
		final = show()
		if final.State == strategy.ApplyFailed || final.State == strategy.Aborted {
			t.Fatalf("removal strategy %s: %s\n%s", final.State, final.Reason, site.ok("strategy", "show"))
		}
		return final.State == strategy.Applied
	})
	hs, _ = hosts(site)
	for _, h := range hs {
		if h.SoftwareVersion != oldVersion || h.Administrative != "unlocked" || h.Availability != "available" {
			t.Errorf("%s after the removal: %+v; want %s, unlocked, available", h.Name, h, oldVersion)
		}
	}
	for _, n := range []string{"vm-0", "vm-1"} {
		if sv := server(n); sv.Status != "active" {
			t.Errorf("%s after the removal: %+v; want active", n, sv)
		}
	}
	stillCounting("after the removal")
	t.Logf("removal applied in %s", time.Since(removeStart).Round(100*time.Millisecond))
	site.ok("strategy", "delete")
	t.Logf("whole test: %s", time.Since(start).Round(time.Second))
}
