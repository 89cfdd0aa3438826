package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// TestPartitionedSiteGoesOfflineAndReturns cuts a site's WAN link (real
// packet drops): central declares it offline after consecutive missed
// updates, never at once; the site keeps working locally; when the link
// heals it is online again by itself.
func TestPartitionedSiteGoesOfflineAndReturns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-sx=simplex")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	central := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert)
	availability := func() string {
		var sc struct{ Availability string }
		json.Unmarshal([]byte(central.ok("subcloud", "show", "site-sx", "-o", "json")), &sc)
		return sc.Availability
	}
	waitFor := func(want string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < limit {
			if availability() == want {
				return time.Since(start)
			}
			<-time.After(250 * time.Millisecond)
		}
		t.Fatalf("site-sx not %s within %s", want, limit)
		return 0
	}
	if a := availability(); a != "online" {
		t.Fatalf("site-sx is %s after lab up; want online", a)
	}

	// A one-way WAN delay of 300 ms slows relayed calls by about a round
	// trip (600 ms; at least 500 ms allows for noise in the CLI's own start),
	// and the site stays online.
	timed := func() time.Duration {
		start := time.Now()
		central.ok("--site", "site-sx", "version")
		return time.Since(start)
	}
	base0 := timed()
	base.ok("lab", "fault", "loss", "site-sx", "--percent", "0", "--delay", "300ms")
	var slowed time.Duration
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) { // the fabric picks the change up within a fraction of a second
		if slowed = timed(); slowed >= base0+500*time.Millisecond {
			break
		}
	}
	t.Logf("relayed call: %s without delay, %s with 300 ms one-way WAN delay", base0.Round(time.Millisecond), slowed.Round(time.Millisecond))
	if slowed < base0+500*time.Millisecond {
		t.Errorf("with 300 ms one-way delay a relayed call took %s (%s without)", slowed, base0)
	}
	if a := availability(); a != "online" {
		t.Errorf("site-sx %s with WAN delay; want online", a)
	}
	base.ok("lab", "fault", "clear", "site-sx")

	// 1 % packet loss on the WAN link: never a false offline (T3).
	base.ok("lab", "fault", "loss", "site-sx", "--percent", "1")
	lossStart := time.Now()
	for time.Since(lossStart) < 16*time.Second {
		if a := availability(); a != "online" {
			t.Fatalf("site-sx %s at 1 %% WAN loss after %s; want online", a, time.Since(lossStart).Round(time.Second))
		}
		<-time.After(time.Second)
	}
	base.ok("lab", "fault", "clear", "site-sx")

	base.ok("lab", "fault", "partition", "site-sx")
	cut := time.Now()
	// Never on a single miss: still online two intervals (10 s) later.
	for time.Since(cut) < 9*time.Second {
		if a := availability(); a != "online" {
			t.Fatalf("site-sx %s %s after the partition; want online until 4 updates are missed", a, time.Since(cut).Round(time.Second))
		}
		<-time.After(time.Second)
	}
	took := time.Since(cut) + waitFor("offline", 30*time.Second)
	t.Logf("offline %s after the partition (T3 target p99 ≤ 30 s)", took.Round(100*time.Millisecond))
	// The site keeps working locally, and the relay says it is unreachable.
	if out := site.ok("host", "list"); !strings.Contains(out, "controller-0") {
		t.Errorf("site-sx while partitioned:\n%s", out)
	}
	central.exit(1, "--site", "site-sx", "host", "list")

	base.ok("lab", "fault", "clear", "site-sx")
	back := waitFor("online", 60*time.Second)
	t.Logf("online again %s after the partition healed", back.Round(100*time.Millisecond))
	if out := central.ok("--site", "site-sx", "host", "list"); !strings.Contains(out, "controller-0") {
		t.Errorf("relay after healing:\n%s", out)
	}
	base.exit(1, "lab", "fault", "hang", "site-sx") // not a WAN fault
}
