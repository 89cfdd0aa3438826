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

// TestHostRecoveryInTheLab drives rows of brief §4's fault table on a real
// lab site (heartbeat over the host networks, the chassis as BMC over
// IPMI/Redfish) and checks the response: power loss -> failed at once,
// powered on through the BMC, available; one network down -> degraded,
// never a reboot; a 2 s hang -> no reboot; an operator's power-off of a
// locked host stays off. And the refusals of host actions.
func TestHostRecoveryInTheLab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-r=multi-server:1")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	type hostView struct {
		Availability   string `json:"availability"`
		Administrative string `json:"administrative"`
		BootID         string `json:"boot_id"`
		Heartbeat      struct{ Mgmt, Cluster string }
		BMC            struct{ Status string }
	}
	show := func(name string) hostView {
		var h hostView
		json.Unmarshal([]byte(site.ok("host", "show", name, "-o", "json")), &h)
		return h
	}
	waitFor := func(what string, limit time.Duration, cond func(hostView) bool) (hostView, time.Duration) {
		t.Helper()
		start := time.Now()
		var h hostView
		for time.Since(start) < limit {
			if h = show("worker-0"); cond(h) {
				return h, time.Since(start)
			}
			time.Sleep(100 * time.Millisecond) // polling with a deadline
		}
		t.Fatalf("worker-0 %s: not within %s; last %+v", what, limit, h)
		return h, 0
	}
	alarmEvents := func(id string) string {
		return site.ok("event", "list", "--alarm-id", id, "--entity", "host=worker-0", "-o", "json")
	}
	boots := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "hosts", "site-r", "worker-0", "console.log"))
		return strings.Count(string(b), "boot from slot")
	}
	h0, _ := waitFor("available", 20*time.Second, func(h hostView) bool { return h.Availability == "available" })

	// Power loss of an unlocked host: failed at once, then powered on
	// through its BMC and available again.
	nBoots := boots()
	base.ok("lab", "fault", "power-off", "site-r/worker-0")
	_, failedAfter := waitFor("failed", 10*time.Second, func(h hostView) bool { return h.Availability == "failed" })
	h1, back := waitFor("available again", 60*time.Second, func(h hostView) bool {
		return h.Availability == "available" && h.BootID != h0.BootID
	})
	t.Logf("power loss: failed after %s, available again after %s more", failedAfter.Round(10*time.Millisecond), back.Round(10*time.Millisecond))
	if boots() != nBoots+1 {
		t.Errorf("console shows %d boots after the power loss; want %d", boots(), nBoots+1)
	}
	if ev := alarmEvents("200.004"); !strings.Contains(ev, `"type": "set"`) || !strings.Contains(ev, `"type": "clear"`) {
		t.Errorf("200.004 events for the power loss:\n%s", ev)
	}
	if h1.BMC.Status != "ok" {
		t.Errorf("BMC status %q after it was used; want ok", h1.BMC.Status)
	}
	if out := site.ok("host", "list"); !strings.Contains(out, "bmc-power-on") {
		t.Errorf("host list does not show the last recovery action:\n%s", out)
	}

	// One network down: degraded with 200.009, never a reboot.
	base.ok("lab", "fault", "link-down", "site-r/worker-0", "--net", "cluster")
	waitFor("degraded", 10*time.Second, func(h hostView) bool { return h.Availability == "degraded" && h.Heartbeat.Cluster == "lost" })
	if out := site.ok("alarm", "list", "--alarm_id", "200.009"); !strings.Contains(out, "host=worker-0") {
		t.Errorf("200.009 not active with the cluster link down:\n%s", out)
	}
	holds(t, "no reboot with one network down", 3*time.Second, func() bool { return boots() == nBoots+1 })
	base.ok("lab", "fault", "link-up", "site-r/worker-0", "--net", "cluster")
	h2, _ := waitFor("available after link-up", 10*time.Second, func(h hostView) bool { return h.Availability == "available" })
	if h2.BootID != h1.BootID {
		t.Errorf("one network down rebooted the host")
	}

	// One-way loss on one network (what worker-0 sends controller-0 on
	// cluster: the heartbeat's replies): degraded, never a reboot.
	base.ok("lab", "fault", "loss", "site-r/worker-0", "--net", "cluster", "--percent", "100", "--oneway-to", "site-r/controller-0")
	waitFor("degraded by one-way loss", 10*time.Second, func(h hostView) bool { return h.Availability == "degraded" })
	holds(t, "no reboot with one-way loss", 3*time.Second, func() bool { return boots() == nBoots+1 })
	base.ok("lab", "fault", "clear", "site-r/worker-0")
	if h, _ := waitFor("available after the loss", 10*time.Second, func(h hostView) bool { return h.Availability == "available" }); h.BootID != h1.BootID {
		t.Errorf("one-way loss on one network rebooted the host")
	}
	if out := site.ok("host", "sensors", "worker-0"); !strings.Contains(out, "TEMPERATURE") && !strings.Contains(strings.ToLower(out), "temperature") {
		t.Errorf("host sensors:\n%s", out)
	}

	// A 2 s hang (BMC reads on) is within the graceful window: no reboot.
	base.ok("lab", "fault", "hang", "site-r/worker-0")
	waitFor("silent", 10*time.Second, func(h hostView) bool { return h.Heartbeat.Mgmt == "lost" && h.Heartbeat.Cluster == "lost" })
	base.ok("lab", "fault", "resume", "site-r/worker-0")
	h3, _ := waitFor("available after the hang", 10*time.Second, func(h hostView) bool { return h.Availability == "available" })
	if h3.BootID != h1.BootID || boots() != nBoots+1 {
		t.Errorf("a short hang rebooted the host")
	}

	// A crash (the host reboots by itself): back, on its own.
	base.ok("lab", "fault", "crash", "site-r/worker-0")
	waitFor("back after a crash", 30*time.Second, func(h hostView) bool {
		return h.Availability == "available" && h.BootID != h3.BootID
	})
	nBoots = boots() - 1 // the crash's boot

	// The operator's power-off of a locked host stays off.
	site.exit(1, "host", "power-off", "worker-0") // unlocked: refused
	site.ok("host", "lock", "worker-0")
	site.exit(1, "host", "lock", "worker-0") // already locked
	site.ok("host", "power-off", "worker-0")
	waitFor("power-off", 10*time.Second, func(h hostView) bool { return h.Availability == "power-off" })
	holds(t, "an operator's power-off stays off", 3*time.Second, func() bool {
		return show("worker-0").Availability == "power-off" && boots() == nBoots+1
	})
	site.exit(1, "host", "unlock", "worker-0") // powered off: power it on first
	site.ok("host", "power-on", "worker-0")
	waitFor("back after power-on (locked: online)", 60*time.Second, func(h hostView) bool { return h.Availability == "online" })
	site.ok("host", "unlock", "worker-0")
	waitFor("in service again", 10*time.Second, func(h hostView) bool { return h.Availability == "available" })

	// Locking controllers: the standby locks; the active one (controller-0
	// of the pair) is refused: swact first (docs/ha.md).
	site.ok("host", "lock", "controller-1")
	out := site.exit(1, "host", "lock", "controller-0")
	if !strings.Contains(out, "swact first") {
		t.Errorf("locking the active controller: %s", out)
	}
	site.ok("host", "unlock", "controller-1")
	// Wrong BMC credentials: 200.010 with a repair hint, the client holds
	// further calls (no retry storm); the right ones clear it.
	w0 := lf.Sites[0].Hosts[2]
	wrong := filepath.Join(t.TempDir(), "wrong.pw")
	os.WriteFile(wrong, []byte("not-the-password\n"), 0o600)
	site.ok("host", "bmc", "set", "worker-0", "--type", "ipmi", "--ipmi", w0.BMC.SiteIPMI, "--username", w0.BMC.Username, "--password-file", wrong)
	site.exit(1, "host", "sensors", "worker-0")
	if out := site.ok("alarm", "list", "--alarm_id", "200.010", "-o", "json"); !strings.Contains(out, "host=worker-0") || !strings.Contains(out, "credentials") {
		t.Errorf("wrong BMC credentials: 200.010 missing or without its hint:\n%s", out)
	}
	if h := show("worker-0"); h.BMC.Status != "auth-failed" {
		t.Errorf("BMC status with wrong credentials: %q", h.BMC.Status)
	}
	right := filepath.Join(t.TempDir(), "right.pw")
	os.WriteFile(right, []byte(w0.BMC.Password+"\n"), 0o600)
	site.ok("host", "bmc", "set", "worker-0", "--type", "dynamic", "--ipmi", w0.BMC.SiteIPMI, "--redfish", w0.BMC.SiteRedfish,
		"--username", w0.BMC.Username, "--password-file", right)
	site.ok("host", "sensors", "worker-0")
	if out := site.ok("alarm", "list", "--alarm_id", "200.010"); strings.Contains(out, "host=worker-0") {
		t.Errorf("200.010 not cleared by the right credentials:\n%s", out)
	}
	// No BMC: power actions are refused with the reason.
	site.ok("host", "bmc", "set", "controller-1", "--type", "none")
	site.ok("host", "lock", "controller-1")
	if out := site.exit(1, "host", "power-on", "controller-1"); !strings.Contains(out, "no BMC") {
		t.Errorf("power-on without a BMC: %s", out)
	}

	pw := filepath.Join(t.TempDir(), "bmc.pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	if out := site.exit(1, "host", "bmc", "set", "worker-0", "--type", "bogus", "--username", "u", "--password-file", pw); !strings.Contains(out, "type") {
		t.Errorf("a bogus BMC type: %s", out)
	}
	if h := show("worker-0"); h.BMC.Status != "ok" {
		t.Errorf("a refused BMC change changed the host: %+v", h)
	}
}

// TestHostMNFAAndEscalation: two hosts hung together are MNFA — one alarm
// (200.012), nothing destructive, back without a reboot when they return;
// one host hung past the graceful window escalates: failed with 200.004,
// reboot through its agent, then a BMC reset that brings it back.
func TestHostMNFAAndEscalation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--no-demo", "--sites", "site-m=multi-server:2")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	avail := func(host string) string { return availabilityOf(site, host) }
	boots := func(host string) int {
		b, _ := os.ReadFile(filepath.Join(dir, "hosts", "site-m", host, "console.log"))
		return strings.Count(string(b), "boot from slot")
	}
	waitUntil(t, "workers available", 20*time.Second, func() bool { return avail("worker-0") == "available" && avail("worker-1") == "available" })
	b0, b1 := boots("worker-0"), boots("worker-1")

	// Two hosts silent within 2 s: MNFA.
	base.ok("lab", "fault", "hang", "site-m/worker-0")
	base.ok("lab", "fault", "hang", "site-m/worker-1")
	waitUntil(t, "200.012 raised", 10*time.Second, func() bool {
		return strings.Contains(site.ok("alarm", "list", "--alarm_id", "200.012"), "site=site-m")
	})
	holds(t, "MNFA: no reboot for longer than G", 6*time.Second, func() bool {
		return boots("worker-0") == b0 && boots("worker-1") == b1
	})
	base.ok("lab", "fault", "resume", "site-m/worker-0")
	base.ok("lab", "fault", "resume", "site-m/worker-1")
	waitUntil(t, "both back", 20*time.Second, func() bool { return avail("worker-0") == "available" && avail("worker-1") == "available" })
	waitUntil(t, "200.012 cleared", 10*time.Second, func() bool {
		return !strings.Contains(site.ok("alarm", "list", "--alarm_id", "200.012"), "site=site-m")
	})
	if boots("worker-0") != b0 || boots("worker-1") != b1 {
		t.Errorf("MNFA rebooted a host: boots %d/%d, were %d/%d", boots("worker-0"), boots("worker-1"), b0, b1)
	}

	// One host hung for good: graceful window, failed, reboot via the agent,
	// then BMC reset (the lab's step timeout is 20 s) — and it is back.
	base.ok("lab", "fault", "hang", "site-m/worker-0")
	failed := waitUntil(t, "failed", 20*time.Second, func() bool { return avail("worker-0") == "failed" })
	back := waitUntil(t, "back after the BMC reset", 60*time.Second, func() bool {
		return avail("worker-0") == "available" && boots("worker-0") == b0+1
	})
	t.Logf("hung host: failed after %s (G = 5 s), available again %s later through a BMC reset", failed.Round(100*time.Millisecond), back.Round(100*time.Millisecond))
	ev := site.ok("event", "list", "--alarm-id", "200.022", "--entity", "host=worker-0", "--limit", "50")
	for _, want := range []string{"recovery grace -> reboot", "reboot through the agent requested", "recovery reboot -> bmc-reset"} {
		if !strings.Contains(ev, want) {
			t.Errorf("host maintenance log lacks %q:\n%s", want, ev)
		}
	}
}

// TestHostRecoveryWithBMCFaults: a slow BMC delays no other host's
// recovery; a BMC that does not answer gives no confirmation — the host
// is failed with 200.010 and nothing destructive happens until it answers
// again; a BMC that ignores power-on ends in "gave up" after the bounded
// attempts, saying so. lab fault list shows what is in effect.
func TestHostRecoveryWithBMCFaults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--no-demo", "--sites", "site-f=multi-server:2")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	avail := func(host string) string { return availabilityOf(site, host) }
	waitUntil(t, "workers available", 20*time.Second, func() bool { return avail("worker-0") == "available" && avail("worker-1") == "available" })

	// A slow BMC (worker-1's) holds no other host: worker-0's power loss is
	// handled as fast as ever.
	base.ok("lab", "fault", "bmc-slow", "site-f/worker-1", "--delay", "15s")
	if out := base.ok("lab", "fault", "list"); !strings.Contains(out, "bmc-slow") || !strings.Contains(out, "site-f/worker-1") {
		t.Errorf("lab fault list:\n%s", out)
	}
	base.ok("lab", "fault", "power-off", "site-f/worker-0")
	waitUntil(t, "worker-0 failed", 10*time.Second, func() bool { return avail("worker-0") == "failed" })
	took := waitUntil(t, "worker-0 back", 30*time.Second, func() bool { return avail("worker-0") == "available" })
	t.Logf("power loss with another host's BMC slow: back in %s", took.Round(100*time.Millisecond))
	base.ok("lab", "fault", "clear", "site-f/worker-1")

	// A BMC that does not answer: failed, 200.010, no power-on.
	base.ok("lab", "fault", "bmc-down", "site-f/worker-0")
	base.ok("lab", "fault", "power-off", "site-f/worker-0")
	waitUntil(t, "failed with 200.010", 60*time.Second, func() bool {
		return avail("worker-0") == "failed" && strings.Contains(site.ok("alarm", "list", "--alarm_id", "200.010"), "host=worker-0")
	})
	if out := base.ok("lab", "fault", "list"); !strings.Contains(out, "power-off") {
		t.Errorf("the host was powered on without its BMC's confirmation:\n%s", out)
	}
	base.ok("lab", "fault", "clear", "site-f/worker-0")
	took = waitUntil(t, "back once its BMC answers", 90*time.Second, func() bool { return avail("worker-0") == "available" })
	t.Logf("BMC answering again: host back %s later", took.Round(100*time.Millisecond))
	waitUntil(t, "200.010 cleared", 30*time.Second, func() bool {
		return !strings.Contains(site.ok("alarm", "list", "--alarm_id", "200.010"), "host=worker-0")
	})

	// A BMC that ignores power-on: bounded attempts, then gave up.
	base.ok("lab", "fault", "bmc-ignore", "site-f/worker-0")
	base.ok("lab", "fault", "power-off", "site-f/worker-0")
	waitUntil(t, "gave up", 120*time.Second, func() bool {
		return strings.Contains(site.ok("event", "list", "--alarm-id", "200.022", "--entity", "host=worker-0", "--limit", "5"), "power-on -> gave-up")
	})
	if out := site.ok("alarm", "list", "--alarm_id", "200.004"); !strings.Contains(out, "lock and unlock to retry") {
		t.Errorf("gave up without saying so:\n%s", out)
	}
}

// holds polls cond for d and fails the test the first time it is false:
// something that must not happen within a window.
func holds(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) { // polling over the window
		if !cond() {
			t.Fatalf("%s: broken within %s", what, d)
		}
	}
}

// availabilityOf is a site host's availability.
func availabilityOf(site cli, host string) string {
	var h struct {
		Availability string `json:"availability"`
	}
	json.Unmarshal([]byte(site.ok("host", "show", host, "-o", "json")), &h)
	return h.Availability
}

// waitUntil polls cond until it holds, failing after limit; it returns how
// long it took.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	return time.Since(start)
}
