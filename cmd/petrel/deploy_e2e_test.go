package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab"
)

// deployLab starts a one-site lab and adds a bare machine to it.
func deployLab(t *testing.T, machine string) (cli, *lab.File, lab.MachineEntry) {
	t.Helper()
	for tool, pkg := range map[string]string{"ansible-playbook": "ansible-core", "/usr/sbin/sshd": "openssh-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Debian %s; scripts/test.sh installs it)", tool, pkg)
		}
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	start := time.Now()
	base.ok("lab", "up", "--sites", "sx=simplex", "--no-demo")
	t.Cleanup(func() {
		if _, errOut, code := base.run("", "lab", "down"); code != 0 {
			t.Errorf("lab down: exit %d\n%s", code, errOut)
		}
	})
	t.Logf("lab up took %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	base.ok("lab", "add-machine", machine, "--bare")
	t.Logf("add-machine took %s", time.Since(start).Round(time.Millisecond))
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(lf.Machines) != 1 || lf.Machines[0].Name != machine {
		t.Fatalf("lab.json machines = %+v", lf.Machines)
	}
	central := base.with("PETREL_URL="+lf.Central.URL, "PETREL_TOKEN="+lf.Central.Token, "PETREL_CA_CERT="+lf.CACert)
	return central, lf, lf.Machines[0]
}

var recap = regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// ansible runs the bootstrap playbook against a machine and returns its
// recap's changed count.
func ansible(t *testing.T, m lab.MachineEntry, values string) (changed int, out string) {
	t.Helper()
	playbook, _ := filepath.Abs("../../deploy/ansible/bootstrap.yml")
	cmd := exec.Command("ansible-playbook", "-i", filepath.Join(m.Dir, lab.MachineInventory), playbook, "-e", "@"+values)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "HOME="+t.TempDir(), "ANSIBLE_CONFIG="+filepath.Join(filepath.Dir(playbook), "ansible.cfg"))
	b, err := cmd.CombinedOutput()
	out = string(b)
	rc := recap.FindStringSubmatch(out)
	if err != nil || rc == nil || rc[4] != "0" || rc[5] != "0" {
		t.Fatalf("ansible-playbook: %v\n%s", err, out)
	}
	changed, _ = strconv.Atoi(rc[3])
	return changed, out
}

// checkProvisioned checks the playbook's config phase left the site's
// controller-0 unlocked and available, with a BMC the site reaches (its
// sensors read through it).
func checkProvisioned(t *testing.T, c cli, site string) {
	t.Helper()
	var h inventory.Host
	if err := json.Unmarshal([]byte(c.ok("--site", site, "host", "show", "controller-0", "-o", "json")), &h); err != nil {
		t.Fatal(err)
	}
	if h.Personality != inventory.Controller || h.Administrative != inventory.Unlocked || h.Availability != inventory.Available || h.BMC.Type != "dynamic" {
		t.Fatalf("%s/controller-0 = %s, %s, %s, bmc %+v; want controller, unlocked, available, a dynamic BMC", site,
			h.Personality, h.Administrative, h.Availability, h.BMC)
	}
	if out := c.ok("--site", site, "host", "sensors", "controller-0"); !strings.Contains(out, "temperature") {
		t.Errorf("%s/controller-0's BMC sensors:\n%s; want readings", site, out)
	}
}

func showSubcloud(t *testing.T, c cli, name string) central.Subcloud {
	t.Helper()
	var sc central.Subcloud
	if err := json.Unmarshal([]byte(c.ok("subcloud", "show", name, "-o", "json")), &sc); err != nil {
		t.Fatal(err)
	}
	return sc
}

// TestAnsibleBootstrapInTheLab: deploy/ansible takes a bare lab machine
// (only an sshd, reached through a 127.x forwarder) to a site online at
// central, and a second run changes nothing.
func TestAnsibleBootstrapInTheLab(t *testing.T) {
	c, _, m := deployLab(t, "m1")

	// Nothing is installed, and nothing of the machine is routable from
	// here (network etiquette: `ip route get` sends nothing).
	if _, err := os.Stat(filepath.Join(m.SoftwareRoot, "sw")); err == nil {
		t.Errorf("the bare machine's software root has sw/ before anything was installed")
	}
	for _, a := range m.Addresses {
		if out, err := exec.Command("ip", "route", "get", a).CombinedOutput(); err == nil && !strings.Contains(string(out), "blackhole") {
			t.Errorf("root namespace routes machine address %s: %s", a, out)
		}
	}
	// sshd takes the lab's key and nothing else.
	host, port, _ := strings.Cut(m.SSH, ":")
	pw := exec.Command("ssh", "-p", port, "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
		"-o", "UserKnownHostsFile="+filepath.Join(m.Dir, lab.MachineKnown), "-o", "StrictHostKeyChecking=yes", "root@"+host, "true")
	if out, err := pw.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied (publickey)") {
		t.Errorf("ssh without the key: %v\n%s; want refused, publickey only", err, out)
	}

	values := filepath.Join(m.Dir, lab.MachineValues)
	start := time.Now()
	changed, out := ansible(t, m, values)
	first := time.Since(start)
	if changed == 0 {
		t.Fatalf("first run changed nothing:\n%s", out)
	}
	if sc := showSubcloud(t, c, "m1"); sc.Availability != central.Online || sc.Certificate == nil {
		t.Fatalf("after the playbook, m1 at central = %s, certificate %v; want online with one", sc.Availability, sc.Certificate)
	}
	start = time.Now()
	changed, out = ansible(t, m, values)
	second := time.Since(start)
	if changed != 0 {
		t.Errorf("second run: changed=%d; want 0\n%s", changed, out)
	}
	t.Logf("playbook: first run %s, second run %s (changed=0)", first.Round(time.Millisecond), second.Round(time.Millisecond))
	// Its host is in service at its site: controller-0, unlocked,
	// available, with the machine's chassis as its BMC.
	checkProvisioned(t, c, "m1")
	// The site's processes run in the machine's namespace, under host-init.
	pids, _ := exec.Command("ip", "netns", "pids", m.Netns).Output()
	if n := len(strings.Fields(string(pids))); n < 4 { // sshd, host-init, subcloud, agent
		t.Errorf("machine namespace runs %d processes; want sshd, host-init, the site controller and the agent", n)
	}
	if sc := showSubcloud(t, c, "m1"); sc.Availability != central.Online || sc.DeployStatus != central.DeployNotDeployed {
		t.Errorf("m1 = %s, %s; want online, not-deployed (brought up outside central's deploy)", sc.Availability, sc.DeployStatus)
	}
}

// TestSubcloudDeployFromCentral: central deploys a registered subcloud onto
// a bare lab machine; a failing install stops in bootstrap-failed naming
// the task, and resume after the fix completes it; the site comes online.
func TestSubcloudDeployFromCentral(t *testing.T) {
	c, _, m := deployLab(t, "m2")
	good := filepath.Join(m.Dir, lab.MachineDeploy)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// A software root the machine cannot write: the install fails.
	bad := filepath.Join(t.TempDir(), "bad.yml")
	os.WriteFile(bad, []byte(strings.Replace(string(b), "software_root: "+m.SoftwareRoot, "software_root: /proc/petrel-cannot", 1)), 0o600)
	start := time.Now()
	_, errOut, code := c.run("", "subcloud", "deploy", "m2", "--options", bad, "--wait", "8m")
	if code == 0 || !strings.Contains(errOut, "failed") {
		t.Fatalf("deploy with an unwritable software root: exit %d\n%s", code, errOut)
	}
	if sc := showSubcloud(t, c, "m2"); sc.DeployStatus != central.DeployBootstrapFailed {
		t.Fatalf("deploy status = %s; want bootstrap-failed", sc.DeployStatus)
	}
	var e struct {
		Failure central.DeployFailure `json:"failure"`
	}
	json.Unmarshal([]byte(c.ok("subcloud", "errors", "m2", "-o", "json")), &e)
	if e.Failure.Task != "common : Create the software root" || !strings.Contains(e.Failure.Hint, "resume") {
		t.Errorf("errors = %+v; want the failing task 'common : Create the software root' and a hint", e.Failure)
	}
	t.Logf("failed bootstrap took %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	c.ok("subcloud", "deploy", "resume", "m2", "--options", good, "--wait", "8m")
	t.Logf("resumed deploy took %s", time.Since(start).Round(time.Millisecond))
	var d central.Deploy
	json.Unmarshal([]byte(c.ok("subcloud", "deploy", "show", "m2", "-o", "json")), &d)
	var runs []string
	for _, r := range d.Runs {
		runs = append(runs, string(r.Phase)+":"+r.Result)
	}
	if got, want := strings.Join(runs, " "), "create:ok bootstrap:failed bootstrap:ok config:ok"; got != want {
		t.Errorf("deploy runs = %s; want %s", got, want)
	}
	sc := showSubcloud(t, c, "m2")
	if sc.DeployStatus != central.DeployComplete || sc.Availability != central.Online {
		t.Fatalf("m2 = %s, %s; want complete, online", sc.DeployStatus, sc.Availability)
	}
	checkProvisioned(t, c, "m2")
	// Complete and online: the operator can manage it.
	c.ok("subcloud", "manage", "m2")
	// The join token is in central's 0600 secrets file, never in the run logs.
	logs, _ := filepath.Glob(filepath.Join(filepath.Dir(m.Dir), "..", "central", "deploys", "m2", "*.log"))
	var secrets struct {
		S map[string]string `json:"petrel_secrets"`
	}
	b, _ = os.ReadFile(filepath.Join(filepath.Dir(m.Dir), "..", "central", "deploys", "m2", "secrets.yml"))
	_ = yaml.Unmarshal(b, &secrets)
	tok := secrets.S["join_token"]
	if len(logs) < 3 || tok == "" {
		t.Errorf("deploy logs %v, token found %v; want the runs' logs and a secrets file", logs, tok != "")
	}
	for _, l := range logs {
		if b, _ := os.ReadFile(l); tok != "" && strings.Contains(string(b), tok) {
			t.Errorf("deploy log %s holds the join token", l)
		}
	}
}
