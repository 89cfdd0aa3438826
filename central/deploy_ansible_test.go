package central

import "testing"

// The failing task and its message are read from ansible-playbook's
// default output: plain failures, loops, unreachable hosts.
func TestPlaybookParser(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  PlaybookFailure
	}{
		{"fatal", []string{
			"TASK [common : Install petrel into the active slot] ******",
			`fatal: [m2]: FAILED! => {"changed": false, "msg": "Destination directory /x does not exist"}`,
		}, PlaybookFailure{Task: "common : Install petrel into the active slot", Host: "m2", Message: "Destination directory /x does not exist"}},
		{"loop", []string{
			"TASK [Validate the site values against the allow-list] ***",
			"ok: [m2]",
			"TASK [common : Create the software root] ******",
			`failed: [m2] (item=) => {"ansible_loop_var": "item", "changed": false, "item": "", "msg": "There was an issue creating /proc/nope"}`,
			`failed: [m2] (item=bin) => {"msg": "second"}`,
		}, PlaybookFailure{Task: "common : Create the software root", Host: "m2", Message: "There was an issue creating /proc/nope"}},
		{"unreachable", []string{
			"TASK [common : Create the software root] ******",
			`fatal: [m2]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh: Connection refused", "unreachable": true}`,
		}, PlaybookFailure{Task: "common : Create the software root", Host: "m2", Message: "Failed to connect to the host via ssh: Connection refused", Unreachable: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p playbookParser
			for _, l := range tc.lines {
				p.line(l)
			}
			got := p.failure()
			if got == nil || *got != tc.want {
				t.Errorf("failure = %+v; want %+v", got, tc.want)
			}
		})
	}
	var p playbookParser
	p.line("TASK [x] ***")
	p.line("ok: [m2]")
	if f := p.failure(); f != nil {
		t.Errorf("failure of a good run = %+v; want none", f)
	}
}
