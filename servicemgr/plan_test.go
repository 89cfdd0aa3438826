package servicemgr

import (
	"errors"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
)

func spec(name, model string, hosts ...string) Spec {
	return Spec{Name: name, Model: model, Hosts: hosts, Actions: Actions{Start: []string{"petrel", "demo-service", "--listen", "{cluster}:8080"}}}
}

func TestValidateNamesTheProblem(t *testing.T) {
	exists := func(h string) bool { return h != "ghost" }
	cases := []struct {
		specs []Spec
		want  string
	}{
		{[]Spec{spec("demo", "3+1", "a", "b", "c")}, "needs 4 hosts"},
		{[]Spec{spec("demo", "2+x", "a", "b", "c")}, "model"},
		{[]Spec{spec("demo", "1+1", "a", "ghost")}, `host "ghost"`},
		{[]Spec{spec("Demo", "1+1", "a", "b")}, "name"},
		{[]Spec{spec("a", "1+0", "h"), spec("b", "1+0", "h"), spec("c", "1+0", "h")}, ""},
		{[]Spec{func() Spec { s := spec("a", "1+0", "h"); s.DependsOn = []string{"b"}; return s }(),
			func() Spec { s := spec("b", "1+0", "h"); s.DependsOn = []string{"c"}; return s }(),
			func() Spec { s := spec("c", "1+0", "h"); s.DependsOn = []string{"a"}; return s }()}, "cycle: a -> b -> c -> a"},
		{[]Spec{func() Spec { s := spec("a", "1+0", "h"); s.DependsOn = []string{"nope"}; return s }()}, `"nope", which does not exist`},
		{[]Spec{func() Spec {
			s := spec("a", "2+0", "h", "i")
			s.Floating = []string{"10.1.1.5/24"}
			s.Network = "cluster"
			return s
		}()}, "exactly one per slot"},
		{[]Spec{func() Spec { s := spec("a", "1+0", "h"); s.Actions.Start = []string{"x", "{secret}"}; return s }()}, "unknown placeholder {secret}"},
		{[]Spec{func() Spec { s := spec("a", "1+0", "h"); s.Health = HealthCheck{Type: "tcp"}; return s }()}, "tcp check needs a target"},
	}
	for _, c := range cases {
		_, err := Check(c.specs, exists)
		if c.want == "" {
			if err != nil {
				t.Errorf("Check(%v) = %v; want ok", c.specs[0].Name, err)
			}
			continue
		}
		if !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%s %s) = %v; want invalid naming %q", c.specs[0].Name, c.specs[0].Model, err, c.want)
		}
	}
}

// world is a site for the planner: every host eligible and healthy.
func world(hosts ...string) map[string]HostView {
	out := map[string]HostView{}
	for _, h := range hosts {
		out[h] = HostView{Name: h, Eligible: true, Healthy: true}
	}
	return out
}

// settle reports every assigned member as running in its role.
func settle(a Placement) map[string]Observed {
	out := map[string]Observed{}
	for h, m := range a.Members {
		st := MemberStandby
		if m.Role == RoleActive {
			st = MemberActive
		}
		out[h] = Observed{Status: MemberStatus{State: st, Role: m.Role, Epoch: a.Epoch}, Current: true}
	}
	return out
}

func roles(a Placement) string {
	var b strings.Builder
	for _, h := range sortedKeys(a.Members) {
		m := a.Members[h]
		b.WriteString(h + "=" + string(m.Role)[:1] + " ")
	}
	return strings.TrimSpace(b.String())
}

func TestDecidePlacesAndFailsOver(t *testing.T) {
	s := spec("demo", "2+1", "w3", "w1", "w2", "w0")
	m, _ := ParseModel(s.Model)
	hosts := world("w0", "w1", "w2", "w3")
	hosts["w0"] = HostView{Name: "w0", Eligible: true} // degraded: placed last
	p := Decide(PlanInput{Spec: s, Model: m, Hosts: hosts})
	if got, want := roles(p.Next), "w1=a w2=a w3=s"; got != want || !p.Changed {
		t.Fatalf("first placement = %q (changed %v); want %q", got, p.Changed, want)
	}
	if p.Status != StatusFailed {
		t.Errorf("status before members report = %s; want failed", p.Status)
	}
	cur := p.Next
	cur.Epoch = 1
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: settle(cur)})
	if p.Changed || p.Status != StatusOK {
		t.Fatalf("settled group: changed %v status %s %s; want unchanged ok", p.Changed, p.Status, p.Reason)
	}
	// w1 silent, not confirmed: nothing moves.
	hosts["w1"] = HostView{Name: "w1", Silent: true}
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: settle(cur)})
	if p.Changed {
		t.Fatalf("a silent, unconfirmed host's member moved: %v", p.Decisions)
	}
	// Confirmed down: the standby takes its slot, w0 becomes the standby.
	hosts["w1"] = HostView{Name: "w1", Down: true, DownReason: "BMC reads off"}
	obs := settle(cur)
	delete(obs, "w1")
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: obs})
	if got, want := roles(p.Next), "w0=s w2=a w3=a"; got != want {
		t.Fatalf("after w1 down = %q; want %q (%v)", got, want, p.Decisions)
	}
	if p.Next.Members["w3"].Slot != cur.Members["w1"].Slot {
		t.Errorf("w3 took slot %d; want w1's %d", p.Next.Members["w3"].Slot, cur.Members["w1"].Slot)
	}
}

func TestDecideNeverTwoActives(t *testing.T) {
	s := spec("demo", "1+1", "a", "b")
	m, _ := ParseModel(s.Model)
	hosts := world("a", "b")
	cur := Placement{Epoch: 4, Members: map[string]Assigned{"a": {RoleActive, 0}, "b": {RoleStandby, -1}}}
	// a is locked: demoted first; b is not promoted while a still says active.
	hosts["a"] = HostView{Name: "a", Eligible: true, Leaving: true}
	p := Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: settle(cur)})
	if got := roles(p.Next); got != "a=s b=s" {
		t.Fatalf("lock of the active's host = %q; want a=s b=s (%v)", got, p.Decisions)
	}
	cur = p.Next
	cur.Epoch = 5
	obs := settle(Placement{Epoch: 4, Members: map[string]Assigned{"a": {RoleActive, 0}, "b": {RoleStandby, -1}}})
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: obs})
	if p.Next.Members["b"].Role == RoleActive {
		t.Fatal("promoted b while a still reports active")
	}
	obs["a"] = Observed{Status: MemberStatus{State: MemberStandby, Epoch: 5}, Current: true}
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: obs})
	if got := roles(p.Next); got != "b=a" {
		t.Fatalf("after a deactivated = %q; want b=a (%v)", got, p.Decisions)
	}
}

func TestDecideFailedActiveAndStorm(t *testing.T) {
	s := spec("demo", "1+1", "a", "b", "c")
	m, _ := ParseModel(s.Model)
	hosts := world("a", "b", "c")
	cur := Placement{Epoch: 2, Members: map[string]Assigned{"a": {RoleActive, 0}, "b": {RoleStandby, -1}}}
	obs := settle(cur)
	obs["a"] = Observed{Status: MemberStatus{State: MemberFailed, Reason: "health: connection refused"}, Current: true}
	p := Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: obs})
	if got := roles(p.Next); got != "a=s b=a" {
		t.Fatalf("failed active = %q; want a=s b=a (%v)", got, p.Decisions)
	}
	if p.Status != StatusFailed {
		t.Errorf("status = %s; want failed until b reports active", p.Status)
	}
	// The storm guard holds the promotion.
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: obs, HoldPromotions: true})
	if p.Next.Members["b"].Role == RoleActive {
		t.Fatalf("promotion not held: %v", p.Decisions)
	}
}

func TestDecideEveryAndDependency(t *testing.T) {
	s := spec("agentd", "N", "a", "b", "c")
	m, _ := ParseModel(s.Model)
	hosts := world("a", "b", "c")
	hosts["c"] = HostView{Name: "c"}
	p := Decide(PlanInput{Spec: s, Model: m, Hosts: hosts})
	if got := roles(p.Next); got != "a=a b=a" {
		t.Fatalf("N model = %q; want a=a b=a", got)
	}
	cur := p.Next
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: settle(cur)})
	if p.Status != StatusDegraded {
		t.Errorf("N model with one host out = %s; want degraded", p.Status)
	}
	p = Decide(PlanInput{Spec: s, Model: m, Hosts: hosts, Current: cur, Observed: settle(cur), DependencyDown: "db"})
	if got := roles(p.Next); got != "a=s b=s" || p.Status != StatusFailed {
		t.Fatalf("dependency down = %q %s; want a=s b=s failed", got, p.Status)
	}
}
