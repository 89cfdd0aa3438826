package services

import (
	"testing"

	"github.com/petrel-edge/petrel/servicemgr"
)

// TestTransitions walks every pair of states against the table.
func TestTransitions(t *testing.T) {
	all := []state{starting, standby, active, failed, stopping, gone}
	want := map[[2]state]bool{
		{starting, standby}: true, {starting, failed}: true, {starting, stopping}: true, {starting, starting}: true,
		{standby, active}: true, {standby, failed}: true, {standby, stopping}: true, {standby, starting}: true,
		{active, standby}: true, {active, failed}: true, {active, stopping}: true,
		{failed, starting}: true, {failed, stopping}: true,
		{stopping, gone}: true,
	}
	for _, from := range all {
		if !from.valid() {
			t.Errorf("%s is not valid", from)
		}
		_ = from.wire() // every state maps to the wire
		for _, to := range all {
			if got := from.canTo(to); got != want[[2]state{from, to}] {
				t.Errorf("%s.canTo(%s) = %v; want %v", from, to, got, !got)
			}
		}
	}
	if len(memberNext) != len(all) {
		t.Errorf("the table has %d states; want %d", len(memberNext), len(all))
	}
	if state("leader").valid() {
		t.Error("an unknown state is valid")
	}
	// active can only be reached from a healthy standby.
	for _, from := range all {
		if from.canTo(active) && from != standby {
			t.Errorf("%s can become active directly", from)
		}
	}
}

func TestExpand(t *testing.T) {
	v := vars{host: "h1", group: "dns", mgmt: "10.0.0.1", cluster: "10.1.0.1", stateDir: "/s/dns", floating: "10.0.0.50"}
	got := v.argv([]string{"/bin/x", "--listen={floating}:53", "{state_dir}/conf", "{host}.{group}", "{mgmt},{cluster}", "{unknown}", "{host"})
	want := []string{"/bin/x", "--listen=10.0.0.50:53", "/s/dns/conf", "h1.dns", "10.0.0.1,10.1.0.1", "{unknown}", "{host"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("argv[%d] = %q; want %q", i, got[i], want[i])
		}
	}
	spec := newHealthSpec(servicemgr.HealthCheck{Type: "command", Target: "{mgmt}:80", Command: []string{"check", "{group}"}}, v)
	if spec.target != "10.0.0.1:80" || spec.command[1] != "dns" {
		t.Errorf("health spec = %+v; want its target and command expanded", spec)
	}
	if spec.interval != defaultInterval || spec.timeout != defaultTimeout || spec.failures != defaultFailures {
		t.Errorf("health spec = %+v; want the defaults 500ms, 1s, 3", spec)
	}
	if floatingAddr("10.0.0.50/24") != "10.0.0.50" || floatingAddr("") != "" {
		t.Error("floatingAddr does not strip the prefix length")
	}
}
