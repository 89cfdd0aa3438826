package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/deploy"
)

// needs returns the path of a tool the test cannot do without: CI installs
// it (scripts/test.sh); a developer gets a clear failure.
func needs(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (Debian %s; scripts/test.sh installs it)", tool, pkg)
	}
	return p
}

// playbook runs ansible-playbook on bootstrap.yml with a values file
// against a host that does not exist: validation must stop the play before
// anything connects.
func playbook(t *testing.T, values string) (string, error) {
	t.Helper()
	needs(t, "ansible-playbook", "ansible-core")
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory.ini")
	// 192.0.2.0/24 is TEST-NET-1, and nothing may be sent to it: a
	// connection attempt would fail the test below (unreachable).
	os.WriteFile(inv, []byte("m1 ansible_host=192.0.2.1 ansible_connection=ssh\n"), 0o600)
	vals := filepath.Join(dir, "values.yml")
	os.WriteFile(vals, []byte(values), 0o600)
	os.WriteFile(filepath.Join(dir, "secrets.yml"), []byte("petrel_secrets:\n  join_token: pj_x\n"), 0o600)
	cmd := exec.Command("ansible-playbook", "-i", inv, filepath.Join("ansible", deploy.Playbook), "-e", "@"+vals)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func goodValues(dir string) map[string]string {
	return map[string]string{
		"site_name": "m1", "software_root": "/var/lib/petrel/m1", "binary": "/usr/bin/petrel",
		"secrets_file": dir + "/secrets.yml", "mgmt_address": "10.88.9.10", "central_url": "https://127.0.0.1:9000",
		"central_ca_cert": "/etc/petrel/ca.crt", "central_site_address": "10.88.9.1:9443",
	}
}

func render(vals map[string]string, extra string) string {
	var b strings.Builder
	b.WriteString("petrel:\n")
	for k, v := range vals {
		b.WriteString("  " + k + ": " + v + "\n")
	}
	return b.String() + extra
}

var taskLine = regexp.MustCompile(`(?m)^TASK \[([^\]]*)\]`)

// Missing or invalid values fail the play in its first task, naming the
// variable; nothing is connected to.
func TestBadValuesFailTheFirstTaskNamingTheVariable(t *testing.T) {
	for _, tc := range []struct {
		name, drop, extra, want string
		set                     map[string]string
	}{
		{name: "missing", drop: "mgmt_address", want: "petrel.mgmt_address: required"},
		{name: "not an address", set: map[string]string{"mgmt_address": "10.88.9"}, want: "petrel.mgmt_address: '10.88.9' is not an IP address"},
		{name: "ansible key", extra: "  ansible_host: 10.0.0.1\n", want: "petrel.ansible_host: ansible_* keys are refused"},
		{name: "ansible key, upper case", extra: "  ANSIBLE_SSH_ARGS: x\n", want: "petrel.ANSIBLE_SSH_ARGS: ansible_* keys are refused"},
		{name: "unknown key", extra: "  admin_password: x\n", want: "petrel.admin_password: unknown key"},
		{name: "bad enum", set: map[string]string{"init": "upstart"}, want: "petrel.init: 'upstart' is not one of auto, systemd, host-init"},
		{name: "bad port", set: map[string]string{"api_port": "70000"}, want: "petrel.api_port: must be in [1, 65535]"},
		{name: "relative path", set: map[string]string{"software_root": "var/lib/petrel"}, want: "petrel.software_root:"},
		{name: "not https", set: map[string]string{"central_url": "http://127.0.0.1:9000"}, want: "petrel.central_url:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := goodValues("/nonexistent")
			delete(vals, tc.drop)
			for k, v := range tc.set {
				vals[k] = v
			}
			out, err := playbook(t, render(vals, tc.extra))
			if err == nil {
				t.Fatalf("ansible-playbook succeeded; want a failure naming %q\n%s", tc.want, out)
			}
			tasks := taskLine.FindAllStringSubmatch(out, -1)
			if len(tasks) != 1 || tasks[0][1] != "Validate the site values against the allow-list" {
				t.Errorf("tasks run = %v; want only the first, the validation", tasks)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not name the variable (%q):\n%s", tc.want, out)
			}
			if strings.Contains(out, "UNREACHABLE") {
				t.Errorf("the play tried to connect:\n%s", out)
			}
		})
	}
	t.Run("no values at all", func(t *testing.T) {
		out, err := playbook(t, "other: 1\n")
		if err == nil || !strings.Contains(out, "petrel: required") {
			t.Errorf("err = %v; want the play to fail naming petrel\n%s", err, out)
		}
	})
}

// Secrets are checked against their own allow-list, after loading.
func TestBadSecretsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad-secrets.yml")
	os.WriteFile(bad, []byte("petrel_secrets:\n  join_token: pj_x\n  ansible_become_password: x\n"), 0o600)
	vals := goodValues(dir)
	vals["secrets_file"] = bad
	out, err := playbook(t, render(vals, ""))
	if err == nil || !strings.Contains(out, "petrel_secrets.ansible_become_password: ansible_* keys are refused") {
		t.Errorf("err = %v; want the secrets check to name petrel_secrets.ansible_become_password\n%s", err, out)
	}
	if strings.Contains(out, "pj_x") {
		t.Errorf("the output shows the join token:\n%s", out)
	}
}

// The systemd unit the common role renders passes systemd-analyze verify.
func TestSystemdUnitVerifies(t *testing.T) {
	needs(t, "ansible", "ansible-core")
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: docs/deploy.md marks the unit untested here")
	}
	dir := t.TempDir()
	vars := filepath.Join(dir, "vars.yml")
	os.WriteFile(vars, []byte("petrel_site: {site_name: m1}\npetrel_bin: /bin/true\npetrel_root: "+dir+"\nitem: subcloud\n"), 0o600)
	unit := filepath.Join(dir, "petrel-subcloud.service")
	src, _ := filepath.Abs("ansible/roles/common/templates/petrel.service.j2")
	cmd := exec.Command("ansible", "-i", "localhost,", "-c", "local", "localhost", "-m", "ansible.builtin.template",
		"-a", "src="+src+" dest="+unit+" mode=0644", "-e", "@"+vars)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rendering the unit: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(unit)
	if !strings.Contains(string(b), "ExecStart=/bin/true subcloud --config "+dir+"/subcloud.yaml") {
		t.Fatalf("unit:\n%s", b)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || strings.Contains(string(out), "petrel-subcloud.service:") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The embedded schema is the one the playbook reads, and lists what
// central's deploy engine writes.
func TestSchemaLoads(t *testing.T) {
	s, err := deploy.LoadSchema()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"site_name", "software_root", "binary", "secrets_file", "mgmt_address", "central_url", "central_ca_cert", "central_site_address"} {
		if !s.Values[k].Required {
			t.Errorf("schema %s: required = false; want true", k)
		}
	}
	if !s.Secrets["join_token"].Required {
		t.Error("secrets schema join_token: not required")
	}
}
