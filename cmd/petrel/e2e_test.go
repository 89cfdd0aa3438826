package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// petrelBin is the binary under test, built once by TestMain.
var petrelBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "petrel-e2e-bin-")
	if err != nil {
		panic(err)
	}
	petrelBin = filepath.Join(dir, "petrel")
	out, err := exec.Command("go", "build", "-o", petrelBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the petrel binary with env (on top of a clean environment).
type cli struct {
	t   *testing.T
	env []string
}

func (c cli) run(stdin string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := exec.Command(petrelBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.t.TempDir()}, c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("petrel %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c cli) exit(want int, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run("", args...)
	if code != want {
		c.t.Errorf("petrel %s: exit %d; want %d\n%s%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return errOut
}

func (c cli) with(env ...string) cli {
	return cli{t: c.t, env: append(append([]string(nil), c.env...), env...)}
}

func TestEndToEndThroughTheCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	base.ok("lab", "up")
	t.Cleanup(func() { base.run("", "lab", "down") })

	// lab.json is mode 0600, version 1, with every default site.
	fi, err := os.Stat(filepath.Join(dir, "lab.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lab.json: %v mode %v; want 0600", err, fi.Mode().Perm())
	}
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(lf.Sites) != 3 || lf.Sites[0].Name != "site-sx" || lf.Sites[2].Shape != "multi-server" || lf.Central.Token == "" {
		t.Fatalf("lab.json = %+v", lf)
	}
	// A second lab up on the same dir refuses and starts nothing.
	procs, _ := lab.Processes(dir)
	if msg := base.exit(1, "lab", "up"); !strings.Contains(msg, "already exists") {
		t.Errorf("second lab up said %q", msg)
	}
	if again, _ := lab.Processes(dir); len(again) != len(procs) {
		t.Errorf("second lab up changed the processes: %d -> %d", len(procs), len(again))
	}
	// central, the fabric, and one chassis per host (7 hosts in the default lab).
	if out := base.ok("lab", "status"); strings.Count(out, "running") != 9 {
		t.Errorf("lab status:\n%s", out)
	}
	// Every host is a namespace with its addresses, and every site lists its
	// hosts with their personalities and the three states.
	var hostCount int
	for _, s := range lf.Sites {
		for _, h := range s.Hosts {
			hostCount++
			if _, err := os.Stat("/var/run/netns/" + h.Netns); err != nil || h.UUID == "" || h.Addresses["mgmt"] == "" {
				t.Errorf("host %s/%s: netns %s (%v), uuid %q, addresses %v", s.Name, h.Name, h.Netns, err, h.UUID, h.Addresses)
			}
		}
	}
	if hostCount != 7 {
		t.Errorf("lab.json lists %d hosts; want 7", hostCount)
	}

	// lab env exports what the CLI needs.
	admin := base.with(exports(t, base.ok("lab", "env"))...)
	if out := admin.ok("version"); !strings.Contains(out, "server: petrel central") {
		t.Errorf("version:\n%s", out)
	}
	// Every lab site dialed home: central lists it online.
	var subclouds struct {
		Items []struct {
			Name, Shape, Availability, Status string
			Hosts                             struct{ Total int }
		}
	}
	if err := json.Unmarshal([]byte(admin.ok("subcloud", "list", "-o", "json")), &subclouds); err != nil || len(subclouds.Items) != 3 {
		t.Fatalf("subcloud list -o json = %+v, %v; want the 3 lab sites", subclouds, err)
	}
	for _, sc := range subclouds.Items {
		if sc.Availability != "online" || sc.Status != "ok" {
			t.Errorf("subcloud %s is %s/%s; want online/ok", sc.Name, sc.Availability, sc.Status)
		}
		if want := map[string]int{"site-sx": 1, "site-dx": 2, "site-std": 4}[sc.Name]; sc.Hosts.Total != want {
			t.Errorf("subcloud %s reports %d hosts; want %d", sc.Name, sc.Hosts.Total, want)
		}
	}
	// Duplex and multi-server sites run their controllers as a 1+1 pair
	// (docs/ha.md), listed first among the service groups.
	for _, s := range []string{"site-dx", "site-std"} {
		waitUntil(t, s+" lists its controller pair 1+1, ok", 120*time.Second, func() bool {
			out, _, code := admin.run("", "servicegroup", "list", "--site", s)
			return code == 0 && strings.Contains(out, "controller") && strings.Contains(out, "1+1") && strings.Contains(out, " ok ")
		})
	}
	if out := admin.ok("subcloud", "show", "site-std", "-o", "yaml"); !strings.Contains(out, "shape: multi-server") {
		t.Errorf("subcloud show -o yaml:\n%s", out)
	}
	// --site reaches a site through central's relay, with central's token only.
	if out := admin.ok("--site", "site-std", "host", "list"); !strings.Contains(out, "worker-1") {
		t.Errorf("--site site-std host list:\n%s", out)
	}
	if out := admin.ok("--site", "site-sx", "version"); !strings.Contains(out, "at site site-sx") {
		t.Errorf("--site site-sx version:\n%s", out)
	}
	site := admin.with("PETREL_URL="+lf.Sites[2].URL, "PETREL_TOKEN="+lf.Sites[2].Token)
	out := site.ok("host", "list")
	for _, want := range []string{"controller-0  controller", "controller-1  controller", "worker-0      worker", "worker-1      worker"} {
		if !strings.Contains(out, want) {
			t.Errorf("host list at site-std lacks %q:\n%s", want, out)
		}
	}
	site.exit(1, "host", "show", "controller-9")

	// Users and roles: a reader reads, and is refused writes with exit 4.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("reader-password-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin.ok("user", "create", "rita", "--role", "reader", "--password-file", pwFile)
	if out := admin.ok("user", "list"); !strings.Contains(out, "rita") || !strings.Contains(out, "reader") {
		t.Errorf("user list:\n%s", out)
	}
	// The change is in the audit history.
	if out := admin.ok("event", "list", "--type", "audit", "--since", "10m"); !strings.Contains(out, "createUser") || !strings.Contains(out, "admin") {
		t.Errorf("event list --type audit:\n%s", out)
	}
	admin.exit(1, "event", "list", "--type", "gossip")

	// Alarms at a site: raise, list, summary, suppress, clear.
	site.ok("alarm", "raise", "100.104", "host=worker-0.filesystem=/var", "--field", "threshold=90")
	if out := site.ok("alarm", "list"); !strings.Contains(out, "100.104") || !strings.Contains(out, "/var of worker-0 above 90% full") {
		t.Errorf("alarm list:\n%s", out)
	}
	var sum struct{ Major int }
	json.Unmarshal([]byte(site.ok("alarm", "summary", "-o", "json")), &sum)
	if sum.Major != 1 {
		t.Errorf("alarm summary major = %d; want 1", sum.Major)
	}
	site.exit(1, "alarm", "raise", "123.456", "host=x")
	site.exit(1, "alarm", "suppress", "200.004")
	site.ok("alarm", "suppress", "100.104")
	var alarms struct{ Items []struct{ UUID string } }
	json.Unmarshal([]byte(site.ok("alarm", "list", "--suppressed", "true", "-o", "json")), &alarms)
	if len(alarms.Items) != 1 {
		t.Fatalf("suppressed alarms = %+v", alarms.Items)
	}
	site.ok("alarm", "delete", alarms.Items[0].UUID)
	if out := site.ok("event", "list", "--alarm-id", "100.104"); strings.Count(out, "100.104") != 2 {
		t.Errorf("events of 100.104 (set, clear):\n%s", out)
	}
	readerTok := strings.TrimSpace(admin.with("PETREL_TOKEN=").ok("login", "-u", "rita", "--password-file", pwFile, "--print-token"))
	reader := admin.with("PETREL_TOKEN=" + readerTok)
	reader.ok("subcloud", "list")
	if msg := reader.exit(4, "user", "create", "eve", "--role", "admin", "--password-file", pwFile); !strings.Contains(msg, "needs admin") {
		t.Errorf("reader user create said %q", msg)
	}
	// A password file others can read is refused before anything is sent.
	loose := filepath.Join(t.TempDir(), "loose")
	os.WriteFile(loose, []byte("reader-password-1\n"), 0o644)
	if msg := admin.exit(1, "user", "create", "lou", "--role", "reader", "--password-file", loose); !strings.Contains(msg, "chmod 600") {
		t.Errorf("loose password file said %q", msg)
	}
	// login saves credentials for later commands.
	saved := base.with("PETREL_CA_CERT=" + lf.CACert)
	if out := saved.ok("login", "--url", lf.Central.URL, "-u", "rita", "--password-file", pwFile); !strings.Contains(out, "as rita (reader)") {
		t.Errorf("login:\n%s", out)
	}
	saved.ok("subcloud", "list")
	saved.ok("logout")
	saved.exit(2, "subcloud", "list") // no URL any more: a usage error

	// Tokens: create, use, revoke; a revoked token gets exit 4.
	var issued struct {
		Token  string
		Detail struct{ ID string }
	}
	if err := json.Unmarshal([]byte(admin.ok("token", "create", "--ttl", "1h", "--description", "ci", "-o", "json")), &issued); err != nil {
		t.Fatal(err)
	}
	tokUser := admin.with("PETREL_TOKEN=" + issued.Token)
	tokUser.ok("user", "show", "admin")
	admin.ok("token", "revoke", issued.Detail.ID)
	tokUser.exit(4, "user", "show", "admin")
	admin.with("PETREL_TOKEN=").exit(4, "user", "list")
	admin.with("PETREL_TOKEN=pt_forged").exit(4, "user", "list")

	// Usage errors exit 2.
	admin.exit(2, "bogus")
	admin.exit(2, "user")
	admin.exit(2, "user", "list", "-o", "xml")
	admin.exit(2, "user", "show")
	admin.exit(2, "lab", "up", "--sites", "site=triplex")

	// lab down stops every process and removes what the lab made.
	base.ok("lab", "down")
	for _, p := range procs {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); strings.Contains(string(b), dir) {
				t.Errorf("lab process %s (pid %d) survives lab down", p.Name, p.PID)
			}
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir remains after lab down: %v", err)
	}
}

func TestLabDownAfterAnInterruptedUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	c := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	c.ok("lab", "up", "--sites", "site-sx=simplex")
	t.Cleanup(func() { c.run("", "lab", "down") })
	procs, _ := lab.Processes(dir)
	// As if lab up died before writing lab.json.
	os.Remove(filepath.Join(dir, "lab.json"))
	c.exit(1, "lab", "env")
	c.exit(1, "lab", "up", "--sites", "site-sx=simplex")
	c.ok("lab", "down")
	for _, p := range procs {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); err == nil && strings.Contains(string(b), dir) {
			t.Errorf("process %s survives", p.Name)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir remains: %v", err)
	}
}

// exports turns `petrel lab env` output into KEY=VALUE pairs.
func exports(t *testing.T, s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		kv, ok := strings.CutPrefix(l, "export ")
		if !ok {
			t.Fatalf("lab env line %q", l)
		}
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, k+"="+strings.Trim(v, `"`))
	}
	return out
}
