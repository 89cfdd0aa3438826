package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
)

// processOf finds the pid of the lab process whose argv contains every part
// (and the lab dir), or 0.
func processOf(dir string, parts ...string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir+string(filepath.Separator)) {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(string(b), p)
		}
		if all {
			return pid
		}
	}
	return 0
}

// countList counts a list's items, following page tokens.
func countList(ctx context.Context, c *client.Client, path string, q url.Values) (map[string]int, error) {
	p, err := c.List(ctx, path, q, 0)
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	for _, raw := range p.Items {
		s := string(raw)
		i := strings.Index(s, `"entity_instance_id":"`)
		if i < 0 {
			return nil, errors.New("item without entity_instance_id")
		}
		s = s[i+len(`"entity_instance_id":"`):]
		seen[s[:strings.IndexByte(s, '"')]]++
	}
	return seen, nil
}

// TestSiteControllerKilledMidBurst: the site controller is SIGKILLed while
// clients raise alarms as fast as they can. Every raise the API
// acknowledged is still active after the restart (its host supervisor
// restarts it), each with one set event, and central ends up with exactly
// the site's alarms and events: none lost, none twice.
func TestSiteControllerKilledMidBurst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	base.ok("lab", "up", "--sites", "site-k=simplex")
	t.Cleanup(func() { base.run("", "lab", "down") })
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	site, _ := client.New(client.Config{URL: lf.Sites[0].URL, CACert: lf.CACert, Token: lf.Sites[0].Token, Timeout: 10 * time.Second})
	central, _ := client.New(client.Config{URL: lf.Central.URL, CACert: lf.CACert, Token: lf.Central.Token})

	var (
		mu     sync.Mutex
		acked  = map[string]bool{}
		stop   atomic.Bool
		killed atomic.Bool
		after  atomic.Int64 // acknowledged after the restart
		wg     sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				entity := fmt.Sprintf("host=burst-%d-%d", w, i)
				err := site.Do(ctx, http.MethodPost, "/v1/alarms", nil,
					map[string]any{"alarm_id": "100.101", "entity_instance_id": entity, "fields": map[string]string{"threshold": "90"}}, nil)
				if err != nil {
					continue // the controller is down; this raise may or may not have committed
				}
				mu.Lock()
				acked[entity] = true
				mu.Unlock()
				if killed.Load() {
					after.Add(1)
				}
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	waitUntil := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, limit)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
	waitUntil("300 raises acknowledged", 60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 300 })
	pid := processOf(dir, "\x00subcloud\x00--config\x00", "site-k")
	if pid == 0 {
		t.Fatal("no site controller process found")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed.Store(true)
	t.Logf("SIGKILLed the site controller (pid %d) after %d acknowledged raises", pid, len(acked))
	waitUntil("raises acknowledged after the restart", 60*time.Second, func() bool { return after.Load() >= 200 })
	stop.Store(true)
	wg.Wait()
	if p := processOf(dir, "\x00subcloud\x00--config\x00", "site-k"); p == pid || p == 0 {
		t.Errorf("site controller pid %d after the kill (was %d); want a restarted one", p, pid)
	}

	q := url.Values{"alarm_id": {"100.101"}, "entity_instance_id": {"host=burst-"}}
	active, err := countList(ctx, site, "/v1/alarms", q)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for e := range acked {
		if active[e] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged raises are missing after the SIGKILL", lost, len(acked))
	}
	sets, err := countList(ctx, site, "/v1/events", url.Values{"alarm_id": {"100.101"}, "type": {"set"}})
	if err != nil {
		t.Fatal(err)
	}
	for e := range active {
		if sets[e] != 1 {
			t.Errorf("%s has %d set events at the site; want 1", e, sets[e])
		}
	}
	t.Logf("%d raises acknowledged, %d alarms active at the site", len(acked), len(active))

	// Central converges on exactly the site's alarms and events.
	converged := func() {
		t.Helper()
		active, err := countList(ctx, site, "/v1/alarms", q)
		if err != nil {
			t.Fatal(err)
		}
		sets, err := countList(ctx, site, "/v1/events", url.Values{"alarm_id": {"100.101"}, "type": {"set"}})
		if err != nil {
			t.Fatal(err)
		}
		var atCentral, centralSets map[string]int
		deadline := time.Now().Add(60 * time.Second)
		for {
			atCentral, err = countList(ctx, central, "/v1/alarms", url.Values{"alarm_id": {"100.101"}, "site": {"site-k"}})
			if err == nil && len(atCentral) == len(active) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("central holds %d of the site's %d alarms (%v); logs:\n%s\n%s", len(atCentral), len(active), err,
					tailFile(filepath.Join(dir, "logs", "central-restarted.log")),
					tailFile(filepath.Join(dir, "hosts", "site-k", "controller-0", "logs", "subcloud.log")))
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
		waitUntil("central holds the site's events", 30*time.Second, func() bool {
			centralSets, err = countList(ctx, central, "/v1/events", url.Values{"alarm_id": {"100.101"}, "type": {"set"}})
			return err == nil && len(centralSets) == len(sets)
		})
		for e, n := range sets {
			if centralSets[e] != n {
				t.Errorf("%s: %d set events at central, %d at the site", e, centralSets[e], n)
			}
		}
		for e := range active {
			if atCentral[e] != 1 {
				t.Errorf("%s: held %d times at central", e, atCentral[e])
			}
		}
	}
	converged()

	// SIGKILL central while the site ships a burst (lab fault crash central:
	// killed, started again on the same store and ports); the new central
	// takes the log up from its cursor.
	burst := make(chan error, 1)
	crashed := make(chan int, 1)
	go func() {
		for i := range 400 {
			if err := site.Do(ctx, http.MethodPost, "/v1/alarms", nil, map[string]any{"alarm_id": "100.101",
				"entity_instance_id": fmt.Sprintf("host=burst-c-%d", i), "fields": map[string]string{"threshold": "90"}}, nil); err != nil {
				burst <- err
				return
			}
			if i == 100 {
				_, _, code := base.run("", "lab", "fault", "crash", "central")
				crashed <- code
			}
		}
		burst <- nil
	}()
	if err := <-burst; err != nil {
		t.Fatalf("the site refused a raise while central was down: %v", err)
	}
	if code := <-crashed; code != 0 {
		t.Fatalf("lab fault crash central: exit %d", code)
	}
	converged()
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// grepFile is the lines of the file at path holding any of the patterns
// (the last 60), for a failed test's report.
func grepFile(path string, patterns ...string) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, p := range patterns {
			if strings.Contains(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out[max(0, len(out)-60):], "\n")
}
