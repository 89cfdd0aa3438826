package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab"
)

// browserScript returns the path of a script in tests/browser, after
// checking the browser and playwright-core are there. Under CI=true they
// must be present; elsewhere the test skips without them.
func browserScript(t *testing.T, name string) string {
	t.Helper()
	script, _ := filepath.Abs(filepath.Join("../../tests/browser", name))
	modules := filepath.Join(filepath.Dir(script), "node_modules", "playwright-core")
	for _, need := range []string{"/usr/bin/chromium", modules} {
		if _, err := os.Stat(need); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (scripts/test.sh installs it)", need)
			}
			t.Skipf("%s is missing; run scripts/test.sh to install the browser test tools", need)
		}
	}
	return script
}

// daemon is a petrel daemon the test started from the binary.
type daemon struct {
	url, ca, passwordFile, token string
	kind, cfg                    string
	cmd                          *exec.Cmd
}

// startDaemon runs `petrel KIND --config` on a free loopback port with a
// fresh data directory (extra is more YAML), waits until it is ready, logs
// in as the bootstrap admin, and stops it with SIGTERM when the test ends.
func startDaemon(t *testing.T, kind, extra string) *daemon {
	t.Helper()
	return startDaemonIn(t, kind, extra, t.TempDir())
}

// startDaemonIn is startDaemon on the data directory dir (which a test may
// have filled before).
func startDaemonIn(t *testing.T, kind, extra, dir string) *daemon {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, kind+".yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("%slisten: %s\ndata_dir: %s\n", extra, addr, dir)), 0o600)
	d := &daemon{url: "https://" + addr, ca: filepath.Join(dir, "pki", "ca.crt"), passwordFile: filepath.Join(dir, "admin.password"),
		kind: kind, cfg: cfg}
	d.start(t)
	t.Cleanup(d.stop)
	d.token = strings.TrimSpace(cli{t: t, env: []string{"PETREL_CA_CERT=" + d.ca}}.ok("login", "--url", d.url,
		"--password-file", d.passwordFile, "--print-token"))
	return d
}

// start runs the daemon on its config and waits until it is ready.
func (d *daemon) start(t *testing.T) {
	t.Helper()
	d.cmd = exec.Command(petrelBin, d.kind, "--config", d.cfg)
	d.cmd.Stderr = os.Stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitForFile(d.ca); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(t.Context(), d.url, d.ca, 20*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}

// stop ends the daemon with SIGTERM and waits for it (once).
func (d *daemon) stop() {
	if d.cmd != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
		d.cmd = nil
	}
}

// runBrowser runs a tests/browser script under node with env and expects
// it to print "PASS: name".
func runBrowser(t *testing.T, script, name string, env ...string) {
	t.Helper()
	runBrowserWith(t, script, name, nil, env...)
}

// runBrowserWith is runBrowser with hooks: when the script prints a line
// "@hook", the test runs hooks["hook"] and answers "ok" on the script's
// stdin (the script waits for it), so a script can have a daemon
// restarted while its page is open.
func runBrowserWith(t *testing.T, script, name string, hooks map[string]func(), env ...string) {
	t.Helper()
	shots := os.Getenv("PETREL_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	node := exec.Command("node", script)
	node.Env = append(os.Environ(), append(env, "PETREL_SCREENSHOTS="+shots)...)
	stdin, err := node.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	node.Stderr = nil
	var out strings.Builder
	errOut := &strings.Builder{}
	node.Stderr = errOut
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if hook, ok := hooks[strings.TrimPrefix(line, "@")]; ok && strings.HasPrefix(line, "@") {
			hook()
			io.WriteString(stdin, "ok\n")
			continue
		}
		out.WriteString(line + "\n")
	}
	err = node.Wait()
	t.Logf("browser test:\n%s%s", out.String(), errOut.String())
	if err != nil || !strings.Contains(out.String(), "PASS: "+name) {
		t.Fatalf("browser test failed: %v", err)
	}
}

// TestBrowserDashboard drives the dashboard in Debian's chromium through
// playwright-core (tests/browser/dashboard.mjs).
func TestBrowserDashboard(t *testing.T) {
	script := browserScript(t, "dashboard.mjs")
	c := startDaemon(t, "central", "")
	restart := func() {
		start := time.Now()
		c.stop()
		c.start(t)
		t.Logf("central restarted in %s", time.Since(start).Round(time.Millisecond))
	}
	runBrowserWith(t, script, "dashboard", map[string]func(){"restart-central": restart}, "PETREL_URL="+c.url, "PETREL_TOKEN="+c.token,
		"PETREL_ADMIN_PASSWORD_FILE="+c.passwordFile, "NODE_EXTRA_CA_CERTS="+c.ca)
}

// TestBrowserAlarms drives the alarm banner and the alarms page in chromium
// (tests/browser/alarms.mjs) at central and at a standalone site controller:
// alarms raised through the API show in the banner and on the page without
// a reload, an operator acknowledges and clears them with the buttons, a
// reader gets no buttons.
func TestBrowserAlarms(t *testing.T) {
	script := browserScript(t, "alarms.mjs")
	c := startDaemon(t, "central", "")
	s := startDaemon(t, "subcloud", "site: site-ui\nshape: simplex\n")
	// Node trusts one extra CA file: both daemons' CAs in one bundle.
	bundle := filepath.Join(t.TempDir(), "ca-bundle.pem")
	var pem []byte
	for _, ca := range []string{c.ca, s.ca} {
		b, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(bundle, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	runBrowser(t, script, "alarms", "NODE_EXTRA_CA_CERTS="+bundle,
		"PETREL_URL="+c.url, "PETREL_TOKEN="+c.token, "PETREL_ADMIN_PASSWORD_FILE="+c.passwordFile,
		"PETREL_SITE_URL="+s.url, "PETREL_SITE_TOKEN="+s.token, "PETREL_SITE_ADMIN_PASSWORD_FILE="+s.passwordFile)
}

// seedFleet writes n subclouds into the central store in dir, as if they
// had dialed home and reported: a mix of shapes, availability, management,
// sync, alarm summaries and software versions. Central is not running.
func seedFleet(t *testing.T, dir string, n int) {
	t.Helper()
	ctx := t.Context()
	db, err := sqldb.Open(ctx, filepath.Join(dir, server.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := central.OpenSubcloudStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	shapes := []inventory.Shape{inventory.Simplex, inventory.Duplex, inventory.MultiServer}
	now := time.Now().UTC()
	for i := range n {
		sc := central.Subcloud{Name: fmt.Sprintf("site-%05d", i), Shape: shapes[i%3], Availability: central.Online,
			Management: central.Managed, SoftwareVersion: "26.09", LastSeen: &now,
			Sync:  map[string]central.SyncStatus{"users": central.InSync, "images": central.InSync},
			Hosts: central.HostCounts{Total: []int{1, 2, 4}[i%3]}}
		switch {
		case i%10 == 9:
			sc.Availability = central.Offline
		case i%50 == 0:
			sc.AlarmSummary.Critical = 1
		case i%7 == 0:
			sc.AlarmSummary.Major = 2
		}
		if i%4 == 0 {
			sc.SoftwareVersion = "26.03"
		}
		if i%13 == 0 {
			sc.Sync["images"] = central.OutOfSync
		}
		if i%25 == 0 {
			sc.Management = central.Unmanaged
		}
		sc.AlarmSummary.Minor = i % 3
		sc.Status = central.StatusOf(sc.Availability, sc.AlarmSummary)
		if err := st.CreateSubcloud(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBrowserFleet10k measures the fleet page with 10,000 subclouds in
// chromium (tests/browser/fleet10k.mjs): load, search, filter and page
// times, and that stream updates touch only the page of rows shown. A
// benchmark, not a CI test: it runs with PETREL_UI_BENCH=1 (its numbers
// are in docs/benchmarks.md).
func TestBrowserFleet10k(t *testing.T) {
	if os.Getenv("PETREL_UI_BENCH") == "" {
		t.Skip("a benchmark: set PETREL_UI_BENCH=1 to run it")
	}
	script := browserScript(t, "fleet10k.mjs")
	dir := t.TempDir()
	start := time.Now()
	seedFleet(t, dir, 10000)
	t.Logf("seeded 10,000 subclouds in %s", time.Since(start).Round(time.Millisecond))
	c := startDaemonIn(t, "central", "", dir)
	runBrowser(t, script, "fleet10k", "PETREL_URL="+c.url, "PETREL_TOKEN="+c.token,
		"PETREL_ADMIN_PASSWORD_FILE="+c.passwordFile, "NODE_EXTRA_CA_CERTS="+c.ca)
}

// startAgent joins a real `petrel agent` process (lab platform, a
// simulated hardware profile) to the site controller d and assigns it the
// personality worker as hostname; it is killed when the test ends.
func startAgent(t *testing.T, d *daemon, hostname string) {
	t.Helper()
	site := cli{t: t, env: []string{"PETREL_URL=" + d.url, "PETREL_TOKEN=" + d.token, "PETREL_CA_CERT=" + d.ca,
		"PETREL_CONFIG_DIR=" + t.TempDir()}}
	tok := strings.TrimSpace(site.ok("host", "join-token", "create", "--ttl", "10m", "--description", "browser test"))
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "join.token"), []byte(tok+"\n"), 0o600)
	os.WriteFile(filepath.Join(work, "profile.yaml"), []byte("cores: 16\nnuma_nodes: 2\nmemory_mib: 65536\n"), 0o600)
	cfg := fmt.Sprintf("site_url: %s\nca_cert: %s\njoin_token_file: %s\nstate_dir: %s\nprofile: %s\nplatform: lab\n"+
		"lab: {software_root: %s}\ncheck_interval: 200ms\n", d.url, d.ca, filepath.Join(work, "join.token"),
		filepath.Join(work, "state"), filepath.Join(work, "profile.yaml"), filepath.Join(work, "root"))
	os.WriteFile(filepath.Join(work, "agent.yaml"), []byte(cfg), 0o600)
	ag := exec.Command(petrelBin, "agent", "--config", filepath.Join(work, "agent.yaml"))
	ag.Stderr = os.Stderr
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Process.Signal(syscall.SIGTERM); ag.Wait() })
	var hosts struct{ Items []struct{ UUID string } }
	deadline := time.Now().Add(15 * time.Second)
	for len(hosts.Items) == 0 && time.Now().Before(deadline) {
		json.Unmarshal([]byte(site.ok("host", "list", "--provisioning", "unprovisioned", "-o", "json")), &hosts)
		if len(hosts.Items) == 0 {
			<-time.After(50 * time.Millisecond)
		}
	}
	if len(hosts.Items) == 0 {
		t.Fatal("the agent's host did not join within 15 s")
	}
	site.ok("host", "assign", hosts.Items[0].UUID, "--personality", "worker", "--hostname", hostname)
}

// homeConfig registers site at the running central c (which has a site
// listener at siteAddr), has central issue its certificate and returns the
// YAML that makes a site controller dial home with it.
func homeConfig(t *testing.T, c *daemon, siteAddr, site string) string {
	t.Helper()
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(c.ca)
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	post := func(path string, in, out any) {
		body, _ := json.Marshal(in)
		req, _ := http.NewRequest(http.MethodPost, c.url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			msg, _ := io.ReadAll(resp.Body)
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, msg)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	post("/v1/subclouds", central.CreateSubcloudRequest{Name: site, Shape: inventory.MultiServer}, nil)
	keyPEM, csrPEM, err := pki.NewCSR(site)
	if err != nil {
		t.Fatal(err)
	}
	var creds central.SiteCredentials
	post("/v1/subclouds/"+site+"/certificate", central.SiteCertificateRequest{CSR: string(csrPEM)}, &creds)
	dir := t.TempDir()
	files := map[string]string{"site.crt": creds.Certificate, "site.key": string(keyPEM), "central-ca.crt": creds.CACertificate,
		"relay.pub.pem": creds.RelayPublicKey}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("central:\n  addr: %s\n  ca_cert: %s\n  cert_file: %s\n  key_file: %s\n  public_key_file: %s\n",
		siteAddr, filepath.Join(dir, "central-ca.crt"), filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key"),
		filepath.Join(dir, "relay.pub.pem"))
}

// TestBrowserSite drives a site's page in chromium (tests/browser/site.mjs)
// on a site controller with one real agent host, dialed home to a real
// central: at the site's own dashboard, the hosts table and its
// inventory, unlock and lock with confirmation (and a cancelled one that
// does nothing), an action the API refuses showing its reason, an alarm
// appearing live, the events page with the actions' audit events, the
// patching page, the theme toggle, a reader without buttons, and an ended
// session: the next action lands on the login page and changes nothing.
// Then at central: the site online on the fleet page, and its page through
// the relay, with unlock and lock.
func TestBrowserSite(t *testing.T) {
	script := browserScript(t, "site.mjs")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	siteAddr := l.Addr().String()
	l.Close()
	c := startDaemon(t, "central", "site_listen: "+siteAddr+"\n")
	s := startDaemon(t, "subcloud", "site: site-ui\nshape: multi-server\n"+homeConfig(t, c, siteAddr, "site-ui"))
	startAgent(t, s, "worker-0")
	// Node trusts one extra CA file: both daemons' CAs in one bundle.
	bundle := filepath.Join(t.TempDir(), "ca-bundle.pem")
	var pem []byte
	for _, ca := range []string{c.ca, s.ca} {
		b, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(bundle, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	runBrowser(t, script, "site", "NODE_EXTRA_CA_CERTS="+bundle,
		"PETREL_URL="+c.url, "PETREL_TOKEN="+c.token, "PETREL_ADMIN_PASSWORD_FILE="+c.passwordFile,
		"PETREL_SITE_URL="+s.url, "PETREL_SITE_TOKEN="+s.token, "PETREL_SITE_ADMIN_PASSWORD_FILE="+s.passwordFile)
}

// TestBrowserLab drives the dashboard against a real one-site lab (a
// simplex site dialed home to central; tests/browser/lab.mjs): with the
// fleet page and the alarms page open at central, `lab fault partition`
// cuts the site's WAN link: the site goes offline and central's 280.001
// appears in the banner and the list without a reload, and `lab fault
// clear` takes them away; then a patch strategy from the browser: an
// in-service patch built with the lab's key is uploaded and applied by the
// CLI, the site's strategy is created with the form on central's patching
// page, applied (confirmations), followed live to applied, and deleted;
// then a second patch uploaded at central and the site managed, the fleet
// strategy is created from its box and applied. The hosts end
// patch-current and both patches deployed (checked through the CLI).
func TestBrowserLab(t *testing.T) {
	script := browserScript(t, "lab.mjs")
	start := time.Now()
	const site = "sb"
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	base.ok("lab", "up", "--sites", site+"=simplex", "--no-demo")
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
	type hostView struct {
		Name         string    `json:"name"`
		Availability string    `json:"availability"`
		PatchCurrent bool      `json:"patch_current"`
		Software     *struct{} `json:"software"`
	}
	hosts := func() []hostView {
		var l struct{ Items []hostView }
		out, _, code := central.run("", "--site", site, "host", "list", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
			return nil
		}
		return l.Items
	}
	waitUntil(t, site+" online at central, its host available with its software reported", 90*time.Second, func() bool {
		hs := hosts()
		return len(hs) == len(lf.Sites[0].Hosts) && !slices.ContainsFunc(hs, func(h hostView) bool {
			return h.Availability != "available" || h.Software == nil
		})
	})
	// In-service patches (files only): the strategies install them without
	// a lock or a reboot.
	build := func(id string) string {
		f := filepath.Join(t.TempDir(), "motd")
		os.WriteFile(f, []byte("patched by "+id+"\n"), 0o644)
		p := filepath.Join(t.TempDir(), id+".patch")
		base.ok("patch", "build", "--id", id, "--file", f+":etc/motd-"+id, "--out", p)
		return p
	}
	central.ok("--site", site, "patch", "upload", build("LP1"))
	central.ok("--site", site, "patch", "apply", "LP1")
	fleetPatch := build("LP2")
	ready := time.Since(start)

	// The hooks answer the script whatever happens (a failed command is an
	// error here, and the script then fails on what it waits for).
	do := func(c cli, args ...string) {
		t0 := time.Now()
		if out, errOut, code := c.run("", args...); code != 0 {
			t.Errorf("petrel %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
			return
		}
		t.Logf("petrel %s: %s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	}
	// The site's WAN link (real drops on controller-0's WAN port): central
	// marks the site offline and raises 280.001. A host-network fault
	// raises nothing at a simplex site: its controller pulses itself over
	// local routes, which a link-down or loss leaves alone; bmc-* faults
	// show only at the next BMC call.
	hooks := map[string]func(){
		"fault":       func() { do(base, "lab", "fault", "partition", site) },
		"fault-clear": func() { do(base, "lab", "fault", "clear", site) },
		"fleet-setup": func() {
			do(central, "patch", "upload", fleetPatch)
			do(central, "subcloud", "manage", site)
		},
	}
	t0 := time.Now()
	runBrowserWith(t, script, "lab", hooks, "NODE_EXTRA_CA_CERTS="+lf.CACert,
		"PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_SITE="+site,
		"PETREL_PATCH=LP1", "PETREL_FLEET_PATCH=LP2")
	inBrowser := time.Since(t0)

	for _, id := range []string{"LP1", "LP2"} {
		var p struct{ State string }
		json.Unmarshal([]byte(central.ok("--site", site, "patch", "show", id, "-o", "json")), &p)
		if p.State != "deployed" {
			t.Errorf("%s at %s: %s; want deployed", id, site, p.State)
		}
	}
	for _, h := range hosts() {
		if !h.PatchCurrent || h.Availability != "available" {
			t.Errorf("%s: patch-current %t, %s; want patch-current and available", h.Name, h.PatchCurrent, h.Availability)
		}
	}
	t.Logf("lab up %s; site ready and patch applied %s later; in the browser %s; total %s", labUp.Round(time.Second),
		(ready - labUp).Round(time.Second), inBrowser.Round(time.Second), time.Since(start).Round(time.Second))
}
