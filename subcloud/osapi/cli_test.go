package osapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// osCLI runs the real `openstack` CLI (Debian python3-openstackclient)
// against an env. Secrets travel in the environment, never in argv.
type osCLI struct {
	t    *testing.T
	bin  string
	env  []string
	args []string // global flags before the command
	took time.Duration
	runs int
}

// newOSCLI finds the CLI; without it the test is skipped, except under
// CI=true, where a missing CLI is a failure.
func newOSCLI(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("openstack")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the openstack CLI is missing (apt-get install --no-install-recommends python3-openstackclient)")
		}
		t.Skip("the openstack CLI is not installed (Debian python3-openstackclient)")
	}
	return bin
}

// as returns a CLI for e authenticated by password (user's, in OS_PASSWORD)
// or, with token set, by that token (OS_TOKEN, --os-auth-type token).
func (e *env) cli(bin, user, project, token, mv string) *osCLI {
	home := e.t.TempDir()
	c := &osCLI{t: e.t, bin: bin,
		env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8", "OS_IDENTITY_API_VERSION=3",
			"OS_CLIENT_CONFIG_FILE=/nonexistent", "PYTHONDONTWRITEBYTECODE=1"},
		args: []string{"--os-auth-url", e.url + "/identity/v3", "--os-project-name", project,
			"--os-project-domain-name", "Default", "--os-compute-api-version", mv},
	}
	if token != "" {
		c.args = append(c.args, "--os-auth-type", "token")
		c.env = append(c.env, "OS_TOKEN="+token)
	} else {
		c.args = append(c.args, "--os-username", user, "--os-user-domain-name", "Default")
		c.env = append(c.env, "OS_PASSWORD="+password(user))
	}
	return c
}

// run runs one command and returns its stdout; a failure fails the test.
func (c *osCLI) run(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("openstack %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fail runs a command that must fail and returns its stderr.
func (c *osCLI) fail(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.exec(args...)
	if err == nil {
		c.t.Fatalf("openstack %s succeeded; want a failure\nstdout:\n%s", strings.Join(args, " "), out)
	}
	return errOut
}

func (c *osCLI) exec(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append(append([]string{}, c.args...), args...)...)
	cmd.Env = c.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	c.took += d
	c.runs++
	c.t.Logf("openstack %s: %.2f s", strings.Join(args, " "), d.Seconds())
	return out.String(), errOut.String(), err
}

// jsonRows decodes `-f json` output of a list.
func jsonRows(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("not a JSON list: %v\n%s", err, out)
	}
	return rows
}

func jsonObject(t *testing.T, out string) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, out)
	}
	return obj
}

func columns(rows []map[string]any, col string) string {
	var v []string
	for _, r := range rows {
		s, _ := r[col].(string)
		v = append(v, s)
	}
	return strings.Join(v, ",")
}

// TestOpenStackCLI drives the Debian `openstack` CLI (6.0) against the API
// with password and token authentication at compute microversions 2.1 and
// 2.37.
func TestOpenStackCLI(t *testing.T) {
	bin := newOSCLI(t)
	e := newEnv(t, true)
	start := time.Now()
	token := e.token("ops")
	pw37, pw21 := e.cli(bin, "ops", "tenant-a", "", "2.37"), e.cli(bin, "ops", "tenant-a", "", "2.1")
	tok21, tok37 := e.cli(bin, "", "tenant-a", token, "2.1"), e.cli(bin, "", "tenant-a", token, "2.37")
	reader := e.cli(bin, "ro", "tenant-a", "", "2.37")
	defer func() {
		n, took := 0, time.Duration(0)
		for _, c := range []*osCLI{pw37, pw21, tok21, tok37, reader} {
			n, took = n+c.runs, took+c.took
		}
		t.Logf("%d openstack commands took %.1f s (test: %.1f s)", n, took.Seconds(), time.Since(start).Seconds())
	}()

	// Create (2.37: --nic none), show, list, rebuild, delete, by password.
	sv := jsonObject(t, pw37.run("server", "create", "--image", "petrel-test", "--flavor", "m1.tiny", "--nic", "none", "-f", "json", "vm-cli"))
	id, _ := sv["id"].(string)
	if id == "" || sv["name"] != "vm-cli" || sv["status"] != "ACTIVE" {
		t.Errorf("server create = %v", sv)
	}
	shown := jsonObject(t, pw37.run("server", "show", "-f", "json", "vm-cli"))
	if shown["id"] != id || shown["OS-EXT-SRV-ATTR:host"] != "compute-0" || !strings.Contains(shown["flavor"].(string), "m1.tiny") ||
		!strings.Contains(shown["image"].(string), "petrel-test") || shown["project_id"] != "tenant-a" {
		t.Errorf("server show = %v", shown)
	}
	rebuilt := jsonObject(t, pw37.run("server", "rebuild", "--image", "petrel-test-v2", "-f", "json", "vm-cli"))
	if !strings.Contains(rebuilt["image"].(string), "petrel-test-v2") {
		t.Errorf("server rebuild = %v", rebuilt)
	}
	// At 2.1 the flavor is a reference the CLI resolves; at 2.37 embedded.
	shown = jsonObject(t, pw21.run("server", "show", "-f", "json", id))
	if f, _ := shown["flavor"].(string); !strings.Contains(f, "m1.tiny") || !strings.Contains(f, e.flavors["m1.tiny"].ID) {
		t.Errorf("server show at 2.1: flavor %q", f)
	}
	if rows := jsonRows(t, tok37.run("server", "list", "-f", "json")); len(rows) != 1 || rows[0]["Flavor"] != "m1.tiny" {
		t.Errorf("server list at 2.37 by token = %v", rows)
	}
	// A reader may look but not create.
	if msg := reader.fail("server", "create", "--image", "petrel-test", "--flavor", "m1.tiny", "--nic", "none", "vm-ro"); !strings.Contains(msg, "HTTP 403") {
		t.Errorf("reader's server create said %q; want HTTP 403", msg)
	}

	// By token, at 2.1: list, flavors, images, hypervisors, zones.
	rows := jsonRows(t, tok21.run("server", "list", "-f", "json"))
	if len(rows) != 1 || rows[0]["Name"] != "vm-cli" || rows[0]["Status"] != "ACTIVE" || rows[0]["Image"] != "petrel-test-v2" || rows[0]["Flavor"] != "m1.tiny" {
		t.Errorf("server list = %v", rows)
	}
	if got := columns(jsonRows(t, tok21.run("flavor", "list", "-f", "json")), "Name"); got != "a.private,m1.small,m1.tiny" {
		t.Errorf("flavor list = %s; want the public flavors and tenant-a's", got)
	}
	if got := columns(jsonRows(t, tok21.run("image", "list", "-f", "json")), "Name"); got != "petrel-test,petrel-test-v2,private-a,queued-a" {
		t.Errorf("image list = %s", got)
	}
	if got := columns(jsonRows(t, tok21.run("hypervisor", "list", "-f", "json")), "Hypervisor Hostname"); got != "compute-0,compute-1" {
		t.Errorf("hypervisor list = %s", got)
	}
	if rows := jsonRows(t, tok21.run("availability", "zone", "list", "-f", "json")); len(rows) == 0 || rows[0]["Zone Name"] != "nova" {
		t.Errorf("availability zone list = %v", rows)
	}
	if msg := tok21.fail("server", "show", "nope"); !strings.Contains(msg, "No server with a name or ID of 'nope' exists") {
		t.Errorf("server show nope said %q", msg)
	}

	pw37.run("server", "delete", "vm-cli")
	if rows := jsonRows(t, pw37.run("server", "list", "-f", "json")); len(rows) != 0 {
		t.Errorf("server list after delete = %v", rows)
	}
}
