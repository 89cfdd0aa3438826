package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/ackwriter"
	"github.com/petrel-edge/petrel/lab/observer"
	"github.com/petrel-edge/petrel/subcloud/ctlha"
)

// TestControllerPairInTheLab runs a duplex site's controllers as a 1+1
// pair (docs/ha.md) under an independent observer (never two actives,
// the floating API address on one host at most) and a writer that records
// every acknowledged write: swact both ways, power loss of the active
// (failover through the BMC and the witness), the old active's return as
// synchronous standby, and the refusals (swact of the standby, to an
// unreachable standby, lock of the active). Afterwards every acknowledged
// write is in the site's database.
func TestControllerPairInTheLab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the lab needs root")
		}
		t.Skip("the lab needs root")
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-dx=duplex", "--no-demo")
	t.Cleanup(func() { base.run("", "lab", "down") })
	t.Cleanup(func() { // runs before lab down
		if t.Failed() {
			for _, h := range []string{"controller-0", "controller-1"} {
				t.Logf("%s's site controller log ends:\n%s", h, tailFile(filepath.Join(dir, "hosts", "site-dx", h, "logs", "subcloud.log")))
			}
		}
	})
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	se := lf.Sites[0]
	site := base.with("PETREL_URL="+se.URL, "PETREL_TOKEN="+se.Token, "PETREL_CA_CERT="+lf.CACert)
	pair := func() sgView {
		var g sgView
		out, _, code := site.run("", "servicegroup", "show", ctlha.PairGroup, "-o", "json")
		if code == 0 {
			json.Unmarshal([]byte(out), &g)
		}
		return g
	}
	healthy := func(active string) func() bool {
		return func() bool {
			g := pair()
			return g.Status == "ok" && len(g.in("active")) == 1 && g.in("active")[0] == active && len(g.in("standby")) == 1
		}
	}
	waitUntil(t, "the pair ok with controller-0 active", 90*time.Second, healthy("controller-0"))
	if out := site.ok("servicegroup", "list"); !strings.Contains(out, "controller") || !strings.Contains(out, "1+1") {
		t.Fatalf("servicegroup list does not show the controller pair 1+1:\n%s", out)
	}

	// The observer asks each controller for its role on its cluster
	// address and lists who holds the floating API address.
	var targets []observer.Target
	for _, h := range se.Hosts {
		targets = append(targets, observer.Target{Host: h.Name, Netns: h.Netns,
			URL: "http://" + net.JoinHostPort(h.Addresses["cluster"], strconv.Itoa(ctlha.StatusPort)) + "/"})
	}
	obs, err := observer.New(observer.Config{Members: targets, N: 1, Group: ctlha.PairGroup,
		Floating: []string{lab.FloatingAddr(0).String()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	obsDone := make(chan struct{})
	go func() { defer close(obsDone); obs.Run(ctx) }()
	api, err := client.New(client.Config{URL: se.URL, CACert: lf.CACert, Token: se.Token})
	if err != nil {
		t.Fatal(err)
	}
	w := ackwriter.New(api, fmt.Sprint(time.Now().UnixNano()), 50*time.Millisecond)
	wDone := make(chan struct{})
	go func() { defer close(wDone); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-obsDone; <-wDone })

	// Refused: a swact of the standby, a lock of the active.
	if msg := site.exit(1, "host", "swact", "controller-1"); !strings.Contains(msg, "standby") {
		t.Errorf("swact of the standby: %q does not say it is the standby", msg)
	}
	if msg := site.exit(1, "host", "lock", "controller-0"); !strings.Contains(msg, "swact first") {
		t.Errorf("lock of the active controller: %q does not say to swact first", msg)
	}

	swact := func(from, to string) {
		t.Helper()
		start := time.Now()
		site.ok("host", "swact", from)
		took := waitUntil(t, "swact "+from+" -> "+to, 60*time.Second, healthy(to))
		t.Logf("swact %s -> %s: the pair is ok again after %s (%s)", from, to, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	swact("controller-0", "controller-1")
	swact("controller-1", "controller-0")

	// Power loss of the active: the standby confirms it off through the
	// BMC, takes over, replication goes asynchronous with 400.002.
	start := time.Now()
	base.ok("lab", "fault", "power-off", "site-dx/controller-0")
	took := waitUntil(t, "controller-1 active after controller-0's power loss", 60*time.Second, func() bool {
		g := pair()
		return len(g.in("active")) == 1 && g.in("active")[0] == "controller-1"
	})
	t.Logf("failover on power loss: controller-1 serves after %s", took.Round(time.Millisecond))
	_ = start
	waitUntil(t, "400.002 raised for the pair", 30*time.Second, func() bool {
		return strings.Contains(site.ok("alarm", "list"), "service-group="+ctlha.PairGroup)
	})
	// The standby is gone: a swact is refused with the reason.
	if msg := site.exit(1, "host", "swact", "controller-1"); !strings.Contains(msg, "not reachable") {
		t.Errorf("swact to a powered-off standby: %q does not say it is not reachable", msg)
	}
	base.ok("lab", "fault", "power-on", "site-dx/controller-0")
	waitUntil(t, "controller-0 back as synchronous standby", 120*time.Second, healthy("controller-1"))
	waitUntil(t, "400.002 cleared", 30*time.Second, func() bool {
		return !strings.Contains(site.ok("alarm", "list"), "service-group="+ctlha.PairGroup)
	})

	// Everything acknowledged is there; the observer saw no split brain.
	cancel()
	<-wDone
	acked, failed, gaps := w.Stats()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	missing, err := w.Check(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Errorf("%d acknowledged writes lost (of %d): %v", len(missing), acked, missing[:min(5, len(missing))])
	}
	// One write every 50 ms for the whole sequence (seconds, shorter the
	// faster the pair rejoins): a few dozen at the least.
	if acked < 20 {
		t.Errorf("the writer had only %d writes acknowledged", acked)
	}
	t.Logf("writer: %d acknowledged, %d failed, outages %v", acked, failed, gaps)
	<-obsDone
	if v := obs.Violations(); len(v) > 0 {
		t.Errorf("the observer saw %d violations: %v", len(v), v)
	}
}
