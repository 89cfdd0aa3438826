package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// TestPatchInstallAndRollbackInTheLab patches a simplex lab site end to
// end through the CLI: a patch built and signed with the lab's key (this
// petrel, stamped CURRENT+ID) is uploaded, applied, installed on the
// locked controller and booted by its unlock; the host then reports the
// new software_version and patch_current. Then a patch whose binary
// cannot boot: the chassis rolls the host back to its previous slot by
// itself, 900.003 is raised, the patch is install-failed on the host, and
// the host is available again on the previous version.
func TestPatchInstallAndRollbackInTheLab(t *testing.T) {
	start := time.Now()
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-px=simplex", "--no-demo")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(lf.PatchSigning.PrivateKey); err != nil || fi.Mode().Perm() != 0o600 || lf.PatchSigning.PublicKey == "" {
		t.Fatalf("lab.json patch_signing = %+v (%v); want a 0600 private key and a public key", lf.PatchSigning, err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	type hostView struct {
		Availability    string `json:"availability"`
		Administrative  string `json:"administrative"`
		SoftwareVersion string `json:"software_version"`
		PatchCurrent    bool   `json:"patch_current"`
		BootID          string `json:"boot_id"`
		Software        *struct {
			Slot     string    `json:"slot"`
			NextSlot string    `json:"next_slot"`
			Patches  []string  `json:"patches"`
			Rollback *struct{} `json:"rollback"`
		} `json:"software"`
	}
	// The site is away while its only host reboots: a failed call is a
	// host not seen yet.
	show := func() (hostView, bool) {
		var h hostView
		out, _, code := site.run("", "host", "show", "controller-0", "-o", "json")
		return h, code == 0 && json.Unmarshal([]byte(out), &h) == nil
	}
	waitFor := func(what string, limit time.Duration, cond func(hostView) bool) (hostView, time.Duration) {
		t.Helper()
		t0 := time.Now()
		var last hostView
		for time.Since(t0) < limit {
			if h, ok := show(); ok {
				last = h
				if cond(h) {
					return h, time.Since(t0)
				}
			}
			time.Sleep(200 * time.Millisecond) // polling with a deadline
		}
		t.Fatalf("controller-0 %s: not within %s; last %+v", what, limit, last)
		return last, 0
	}
	patchView := func(id string) (state, hostState string) {
		var p struct {
			State string            `json:"state"`
			Hosts map[string]string `json:"hosts"`
		}
		json.Unmarshal([]byte(site.ok("patch", "show", id, "-o", "json")), &p)
		return p.State, p.Hosts["controller-0"]
	}
	h0, _ := waitFor("available", 60*time.Second, func(h hostView) bool {
		return h.Availability == "available" && h.Software != nil
	})
	oldVersion := h0.SoftwareVersion

	// A reboot-required patch carrying this petrel, stamped.
	work := t.TempDir()
	p1 := filepath.Join(work, "p1.patch")
	out := base.ok("patch", "build", "--id", "P1", "--out", p1)
	want := oldVersion + "+P1"
	if !strings.Contains(out, want) {
		t.Fatalf("patch build: %s; want version %s", out, want)
	}
	// Uploaded through central's relay (a 30+ MiB archive does not fit a
	// plain request body; the relay streams it), applied at the site.
	central := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	central.ok("--site", "site-px", "patch", "upload", p1)
	site.ok("patch", "apply", "P1")
	if st, hs := patchView("P1"); st != "deploying" || hs != "pending" {
		t.Errorf("P1 after apply: %s, controller-0 %s; want deploying, pending", st, hs)
	}
	if errOut := site.exit(1, "host", "install", "controller-0"); !strings.Contains(errOut, "lock") {
		t.Errorf("install on the unlocked host: %q; want a refusal saying to lock it", errOut)
	}
	site.ok("host", "force-lock", "controller-0")
	t0 := time.Now()
	site.ok("host", "install", "controller-0")
	_, installed := waitFor("staged", 120*time.Second, func(h hostView) bool { return h.Software != nil && h.Software.NextSlot == "b" })
	t.Logf("install (fetch, verify, copy slot, unpack, checksums): %s", installed.Round(10*time.Millisecond))
	_ = t0
	site.ok("host", "unlock", "controller-0")
	h1, booted := waitFor("running P1", 180*time.Second, func(h hostView) bool {
		return h.BootID != h0.BootID && h.SoftwareVersion == want && h.PatchCurrent && h.Availability == "available" &&
			h.Software != nil && h.Software.Slot == "b"
	})
	t.Logf("unlock to available on %s: %s", h1.SoftwareVersion, booted.Round(10*time.Millisecond))
	deadline := time.Now().Add(30 * time.Second)
	for st, hs := patchView("P1"); st != "deployed" || hs != "patch-current"; st, hs = patchView("P1") {
		if time.Now().After(deadline) {
			t.Fatalf("P1: %s, controller-0 %s; want deployed, patch-current", st, hs)
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}

	// A patch whose binary cannot boot.
	bad := filepath.Join(work, "bad.sh")
	os.WriteFile(bad, []byte("#!/bin/sh\necho this petrel cannot boot >&2\nexit 1\n"), 0o755)
	p2 := filepath.Join(work, "bad.patch")
	base.ok("patch", "build", "--id", "BAD", "--requires", "P1", "--binary", bad, "--out", p2)
	site.ok("patch", "upload", p2)
	site.ok("patch", "apply", "BAD")
	site.ok("host", "force-lock", "controller-0")
	site.ok("host", "install", "controller-0")
	waitFor("staged", 120*time.Second, func(h hostView) bool { return h.Software != nil && h.Software.NextSlot == "a" })
	site.ok("host", "unlock", "controller-0")
	h2, back := waitFor("rolled back", 240*time.Second, func(h hostView) bool {
		return h.BootID != h1.BootID && h.Availability == "available" && h.Software != nil && h.Software.Rollback != nil
	})
	t.Logf("unlock into the bad slot to available again after the rollback: %s", back.Round(10*time.Millisecond))
	if h2.SoftwareVersion != want || h2.Software.Slot != "b" || !strings.Contains(strings.Join(h2.Software.Patches, ","), "P1") {
		t.Errorf("after the rollback: version %s slot %s patches %v; want %s on slot b with P1", h2.SoftwareVersion, h2.Software.Slot, h2.Software.Patches, want)
	}
	if h2.PatchCurrent {
		t.Error("patch_current after the rollback; want false (BAD is applied, not running)")
	}
	if alarms := site.ok("alarm", "list", "-o", "json"); !strings.Contains(alarms, `"900.003"`) {
		t.Errorf("alarms after the rollback lack 900.003:\n%s", alarms)
	}
	if st, hs := patchView("BAD"); st != "deploying" || hs != "install-failed" {
		t.Errorf("BAD: %s, controller-0 %s; want deploying, install-failed", st, hs)
	}
	console, _ := os.ReadFile(filepath.Join(dir, "hosts", "site-px", "controller-0", "console.log"))
	if !strings.Contains(string(console), "this petrel cannot boot") {
		t.Errorf("the console shows no boot of the bad binary:\n%s", console)
	}
	// The runbook: remove the patch that rolled back; the alarm clears and
	// the host is patch-current again on P1.
	site.ok("patch", "remove", "BAD")
	if st, _ := patchView("BAD"); st != "available" {
		t.Errorf("BAD after remove: %s; want available (no host runs it)", st)
	}
	waitFor("patch-current again", 30*time.Second, func(h hostView) bool { return h.PatchCurrent })
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(site.ok("alarm", "list", "-o", "json"), `"900.003"`); {
		if time.Now().After(deadline) {
			t.Fatal("900.003 still raised 10 s after BAD was removed")
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}
	site.ok("patch", "delete", "BAD")
	t.Logf("whole test: %s", time.Since(start).Round(time.Second))
}
