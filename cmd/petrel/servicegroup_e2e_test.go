package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/observer"
)

// sgView is the service group resource as the tests read it.
type sgView struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Epoch   uint64 `json:"epoch"`
	Members []struct {
		Host   string `json:"host"`
		State  string `json:"state"`
		Reason string `json:"reason"`
		Epoch  uint64 `json:"epoch"`
	} `json:"members"`
}

func (g sgView) in(state string) []string {
	var out []string
	for _, m := range g.Members {
		if m.State == state {
			out = append(out, m.Host)
		}
	}
	return out
}

// TestServiceHAInTheLab runs the lab's demo service group (2+1 over
// controller-1, worker-0 and worker-1 of a multi-server site) and drives
// brief §4's faults against the host of an active member: power loss,
// hang and crash. An independent observer polls every member from its
// host's namespace throughout: another member must be active and answer
// within T4b's bound, and never may more than two answer as active. Then
// bad input, and a crash-looping group.
func TestServiceHAInTheLab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the lab needs root")
		}
		t.Skip("the lab needs root")
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-ha=multi-server:2")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() { // runs before lab down
		if t.Failed() {
			t.Logf("the site controller's log ends:\n%s", tailFile(filepath.Join(dir, "hosts", "site-ha", "controller-0", "logs", "subcloud.log")))
			for _, h := range []string{"controller-1", "worker-0"} {
				t.Logf("%s's chassis log ends:\n%s", h, tailFile(filepath.Join(dir, "logs", "vbmc-site-ha-"+h+".log")))
			}
		}
	})
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	show := func(name string) sgView {
		var g sgView
		out, _, code := site.run("", "servicegroup", "show", name, "-o", "json")
		if code == 0 {
			json.Unmarshal([]byte(out), &g)
		}
		return g // not found yet: the configuration's groups wait for their hosts to join
	}
	ok := func(g sgView) bool { return g.Status == "ok" && len(g.in("active")) == 2 && len(g.in("standby")) == 1 }
	var g sgView
	waitUntil(t, "demo ok (2 active, 1 standby)", 60*time.Second, func() bool { g = show("demo"); return ok(g) })
	// Host management watches every host (heartbeat on both networks, a
	// BMC to confirm with) before the first fault.
	waitUntil(t, "every demo host watched", 60*time.Second, func() bool {
		for _, h := range []string{"controller-1", "worker-0", "worker-1"} {
			var hv struct {
				Heartbeat struct{ Mgmt, Cluster string }
				BMC       struct{ Type string }
			}
			json.Unmarshal([]byte(site.ok("host", "show", h, "-o", "json")), &hv)
			if hv.Heartbeat.Mgmt != "ok" || hv.Heartbeat.Cluster != "ok" || hv.BMC.Type == "" {
				return false
			}
		}
		return true
	})

	targets, err := observer.SiteTargets(lf.Sites[0], lab.DemoPort)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := observer.New(observer.Config{Members: targets, N: 2, Group: "demo",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); obs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := obs.WaitFor(ctxFor(t, 20*time.Second), func(s observer.Snapshot) bool { return len(s.Actives) == 2 }); err != nil {
		t.Fatalf("the observer never saw 2 actives: %v (%s)", err, obs.Snapshot())
	}

	for _, fault := range []string{"power-off", "hang", "crash"} {
		g = show("demo")
		victim := g.in("active")[0]
		epoch := g.Epoch
		start := time.Now()
		base.ok("lab", "fault", fault, "site-ha/"+victim)
		at, err := obs.WaitFor(ctxFor(t, 6*time.Second), func(s observer.Snapshot) bool {
			return len(s.Actives) == 2 && !s.IsActive(victim)
		})
		if err != nil {
			snap := obs.Snapshot()
			t.Fatalf("%s of %s (active): no other member active and answering within T4b's 6 s: %v (round %d at %s, fault at %s: %s; members %+v)",
				fault, victim, err, snap.Seq, snap.At.Format("15:04:05.000"), start.Format("15:04:05.000"), snap, snap.Members)
		}
		t.Logf("%s of %s: 2 members active again after %s", fault, victim, at.Sub(start).Round(time.Millisecond))
		waitUntil(t, "demo ok again after "+fault, 90*time.Second, func() bool { g = show("demo"); return ok(g) })
		if g.Epoch <= epoch {
			t.Errorf("epoch %d after the failover; want above %d", g.Epoch, epoch)
		}
		for _, m := range g.Members {
			if m.Epoch != g.Epoch {
				t.Errorf("member %s carries epoch %d; want the group's %d", m.Host, m.Epoch, g.Epoch)
			}
		}
		if fault == "hang" {
			base.run("", "lab", "fault", "resume", "site-ha/"+victim) // fenced: nothing to resume, but clear the fault
		}
	}
	// Locking an active's host moves its member gracefully: demoted
	// first, then the standby promoted, never two actives for a slot.
	g = show("demo")
	locked := g.in("active")[0]
	site.ok("host", "lock", locked)
	if _, err := obs.WaitFor(ctxFor(t, 20*time.Second), func(s observer.Snapshot) bool {
		return len(s.Actives) == 2 && !s.IsActive(locked)
	}); err != nil {
		t.Fatalf("lock of %s: its member did not move: %v (%s)", locked, err, obs.Snapshot())
	}
	site.ok("host", "unlock", locked)
	waitUntil(t, "demo ok after the unlock", 60*time.Second, func() bool { g = show("demo"); return ok(g) })
	if v := obs.Violations(); len(v) > 0 {
		t.Errorf("the observer saw violations: %+v", v)
	}
	events := site.ok("event", "list", "--alarm-id", "400.010", "-o", "json")
	for _, why := range []string{"power loss (BMC reads off)", "fenced (BMC power-off, read back off)", "it booted again"} {
		if !strings.Contains(events, why) {
			t.Errorf("no 400.010 decision says %q:\n%s", why, events)
		}
	}
	// Redundancy was lost while a failed host came back, and restored.
	if ev := site.ok("event", "list", "--alarm-id", "400.002", "--entity", "service-group=demo", "-o", "json"); !strings.Contains(ev, `"set"`) || !strings.Contains(ev, `"clear"`) {
		t.Errorf("400.002 was not raised and cleared:\n%s", ev)
	}
	if a := site.ok("alarm", "list", "-o", "json"); strings.Contains(a, "service-group=demo") {
		t.Errorf("service group alarms still raised with the group ok:\n%s", a)
	}

	// Floating addresses: the active of a 1+1 group holds one on the
	// cluster network; it moves with the role when the active's host
	// loses power, and is never held by two hosts at once.
	cluster := netip.MustParsePrefix(lf.Sites[0].Hosts[0].Addresses["cluster"] + "/24").Masked()
	vip := cluster.Addr().Next().Next() // .2: no lab host's
	site.ok("servicegroup", "create", "vip", "-f", writeSpec(t, `
name: vip
model: "1+1"
hosts: [worker-0, worker-1]
actions:
  start: [petrel, demo-service, --listen, "{cluster}:8082", --state-dir, "{state_dir}"]
health: {type: http, target: "http://{cluster}:8082/healthz", interval_ms: 200}
floating: [`+vip.String()+`/24]
network: cluster
`))
	vtargets, _ := observer.SiteTargets(lf.Sites[0], 8082)
	vobs, err := observer.New(observer.Config{Members: vtargets, N: 1, Group: "vip", Floating: []string{vip.String()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	vdone := make(chan struct{})
	go func() { defer close(vdone); vobs.Run(ctx) }()
	held := func(s observer.Snapshot) bool {
		return len(s.Actives) == 1 && slices.Equal(s.Holders[vip.String()], []string{s.Actives[0].Host})
	}
	if _, err := vobs.WaitFor(ctxFor(t, 60*time.Second), held); err != nil {
		t.Fatalf("vip: the active never held %s: %v (%s)", vip, err, vobs.Snapshot())
	}
	holder := vobs.Snapshot().Actives[0].Host
	start := time.Now()
	base.ok("lab", "fault", "power-off", "site-ha/"+holder)
	at, err := vobs.WaitFor(ctxFor(t, 6*time.Second), func(s observer.Snapshot) bool { return held(s) && !s.IsActive(holder) })
	if err != nil {
		t.Fatalf("vip: %s did not move off %s within 6 s: %v (%s)", vip, holder, err, vobs.Snapshot())
	}
	t.Logf("vip: %s moved from %s in %s", vip, holder, at.Sub(start).Round(time.Millisecond))
	waitUntil(t, "vip ok again", 90*time.Second, func() bool { return show("vip").Status == "ok" })
	if v := vobs.Violations(); len(v) > 0 {
		t.Errorf("vip: violations %+v", v)
	}
	site.ok("servicegroup", "delete", "vip")
	if _, err := vobs.WaitFor(ctxFor(t, 20*time.Second), func(s observer.Snapshot) bool { return len(s.Holders[vip.String()]) == 0 }); err != nil {
		t.Errorf("%s still held after the group was deleted: %s", vip, vobs.Snapshot())
	}

	// Bad input: 400 naming the problem, nothing applied.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", "3+1", "--hosts", "worker-0,worker-1,controller-1"}, "needs 4 hosts"},
		{[]string{"--model", "1+1", "--hosts", "worker-0,worker-9"}, `host "worker-9" is not a host of this site`},
		{[]string{"--model", "1+1", "--hosts", "worker-0,worker-1", "--depends-on", "nope"}, `depends on "nope"`},
		{[]string{"--model", "1+1", "--hosts", "worker-0,worker-1", "--depends-on", "bad"}, "cannot depend on itself"},
	} {
		args := append([]string{"servicegroup", "create", "bad", "--start", "petrel demo-service"}, c.args...)
		if out := site.exit(1, args...); !strings.Contains(out, c.want) {
			t.Errorf("servicegroup create %v: %q; want it to say %q", c.args, out, c.want)
		}
	}
	var list struct{ Items []sgView }
	json.Unmarshal([]byte(site.ok("servicegroup", "list", "-o", "json")), &list)
	// The controller pair (docs/ha.md) is listed first, then demo.
	if len(list.Items) != 2 || list.Items[0].Name != "controller" || list.Items[1].Name != "demo" {
		t.Errorf("groups after refused creates: %+v; want only the controller pair and demo", list.Items)
	}

	// A standby that crash-loops (its process dies at once on worker-1
	// only): the group is degraded with 400.003, its active untouched.
	site.ok("servicegroup", "create", "wobbly", "-f", writeSpec(t, `
name: wobbly
model: "1+1"
hosts: [worker-0, worker-1]
actions:
  start: [sh, -c, "if [ {host} = worker-1 ]; then exit 3; fi; exec sleep 3600"]
`))
	waitUntil(t, "wobbly degraded with 400.003 for worker-1", 60*time.Second, func() bool {
		g := show("wobbly")
		return g.Status == "degraded" && strings.Contains(site.ok("alarm", "list", "-o", "json"), "service-group=wobbly.host=worker-1")
	})
	if g = show("wobbly"); len(g.in("active")) != 1 || g.in("active")[0] != "worker-0" || len(g.in("failed")) != 1 {
		t.Errorf("wobbly: %+v; want worker-0 active, worker-1 failed", g)
	}
	if d := site.ok("event", "list", "--alarm-id", "400.010", "--entity", "service-group=wobbly", "-o", "json"); strings.Contains(d, "promote ") {
		t.Errorf("a flapping standby caused promotions:\n%s", d)
	}
	site.ok("servicegroup", "delete", "wobbly")

	// A group whose every member crash-loops: backoff, 400.003 and a
	// failed group, not an activation storm.
	site.ok("servicegroup", "create", "flappy", "--model", "1+1", "--hosts", "worker-0,worker-1",
		"--start", "petrel no-such-command")
	waitUntil(t, "400.003 for a flapping member", 60*time.Second, func() bool {
		return strings.Contains(site.ok("alarm", "list", "-o", "json"), "service-group=flappy.host=")
	})
	decisions := site.ok("event", "list", "--alarm-id", "400.010", "--entity", "service-group=flappy", "-o", "json")
	if n := strings.Count(decisions, "promote "); n > 4 {
		t.Errorf("%d promotions of a crash-looping group; want the storm guard to hold them:\n%s", n, decisions)
	}
	if g = show("flappy"); g.Status != "failed" || len(g.in("failed")) == 0 {
		t.Errorf("flappy: %+v; want failed with failed members", g)
	}
	if ok := show("demo"); ok.Status != "ok" {
		t.Errorf("demo is %s while another group flaps", ok.Status)
	}
	site.ok("servicegroup", "delete", "flappy")
	waitUntil(t, "flappy's alarms cleared", 20*time.Second, func() bool {
		return !strings.Contains(site.ok("alarm", "list", "-o", "json"), "service-group=flappy")
	})
	if names := strings.Fields(site.ok("servicegroup", "list")); slices.Contains(names, "flappy") {
		t.Error("flappy still listed after delete")
	}
}

// writeSpec writes a service group file for servicegroup create -f.
func writeSpec(t *testing.T, yaml string) string {
	path := filepath.Join(t.TempDir(), "group.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ctxFor is a context that ends after d or with the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
