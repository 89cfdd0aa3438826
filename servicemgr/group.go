package servicemgr

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Model is a group's redundancy model: N+M (1+1 is N=1, M=1), or N (one
// active member on every eligible host, no standbys).
type Model struct {
	N, M  int
	Every bool // the N model
}

// ParseModel reads "1+1", "2+1", "N+M" with numbers, or "N".
func ParseModel(s string) (Model, error) {
	if s == "N" || s == "n" {
		return Model{Every: true}, nil
	}
	a, b, ok := strings.Cut(s, "+")
	if !ok {
		return Model{}, fmt.Errorf("model %q: want N+M (such as 1+1 or 2+1) or N", s)
	}
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || n < 1 || m < 0 || n > 64 || m > 64 {
		return Model{}, fmt.Errorf("model %q: want N+M with 1 ≤ N ≤ 64 and 0 ≤ M ≤ 64", s)
	}
	return Model{N: n, M: m}, nil
}

func (m Model) String() string {
	if m.Every {
		return "N"
	}
	return fmt.Sprintf("%d+%d", m.N, m.M)
}

// Spec is a service group as an operator declares it (API, CLI, or the
// site configuration's service_groups file).
type Spec struct {
	Name  string `json:"name"`
	Model string `json:"model"`
	// Hosts are the eligible hosts, by name.
	Hosts []string `json:"hosts"`
	// DependsOn names groups that must have an active member for this
	// group's members to be active.
	DependsOn []string    `json:"depends_on,omitempty"`
	Health    HealthCheck `json:"health"`
	Actions   Actions     `json:"actions"`
	// Floating are the group's floating addresses, one per active slot
	// (ADDR/PREFIX), taken on the hosts' interface named Network.
	Floating []string `json:"floating,omitempty"`
	Network  string   `json:"network,omitempty"`
}

var groupName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// placeholders are the only {names} actions and health checks may use.
var placeholders = []string{"{host}", "{group}", "{mgmt}", "{cluster}", "{state_dir}", "{floating}"}

var braced = regexp.MustCompile(`\{[^{}]*\}`)

// Validate checks a spec on its own (Check adds what needs the site: the
// hosts and the other groups) and fills defaults. Every problem is named.
func (s *Spec) Validate() (Model, error) {
	bad := func(format string, a ...any) (Model, error) {
		return Model{}, errs.Wrapf(errs.Invalid, "service group %q: "+format, append([]any{s.Name}, a...)...)
	}
	if !groupName.MatchString(s.Name) {
		return bad("name: want lower-case letters, digits and '-', starting with a letter, at most 63")
	}
	m, err := ParseModel(s.Model)
	if err != nil {
		return bad("%v", err)
	}
	s.Model = m.String()
	if len(s.Hosts) == 0 {
		return bad("hosts: name at least one eligible host")
	}
	seen := map[string]bool{}
	for _, h := range s.Hosts {
		if h == "" || seen[h] {
			return bad("hosts: %q is empty or listed twice", h)
		}
		seen[h] = true
	}
	if !m.Every && m.N+m.M > len(s.Hosts) {
		return bad("model %s needs %d hosts (at most one member per host) but %d are eligible", m, m.N+m.M, len(s.Hosts))
	}
	for _, d := range s.DependsOn {
		if d == s.Name {
			return bad("depends_on: a group cannot depend on itself")
		}
	}
	if len(s.Actions.Start) == 0 || s.Actions.Start[0] == "" {
		return bad("actions.start: the member's process is required")
	}
	for name, argv := range map[string][]string{"start": s.Actions.Start, "stop": s.Actions.Stop,
		"activate": s.Actions.Activate, "deactivate": s.Actions.Deactivate, "health.command": s.Health.Command} {
		if err := checkArgv(argv); err != nil {
			return bad("%s: %v", name, err)
		}
	}
	h := &s.Health
	switch h.Type {
	case "":
		h.Type = "process"
	case "process":
	case "tcp":
		if h.Target == "" {
			return bad("health: a tcp check needs a target host:port")
		}
	case "http":
		if !strings.HasPrefix(h.Target, "http://") && !strings.HasPrefix(h.Target, "https://") {
			return bad("health: an http check needs a target http:// or https:// URL")
		}
	case "command":
		if len(h.Command) == 0 {
			return bad("health: a command check needs a command")
		}
	default:
		return bad("health.type %q: want process, tcp, http or command", h.Type)
	}
	if err := checkArgv([]string{h.Target}); h.Target != "" && err != nil {
		return bad("health.target: %v", err)
	}
	if h.IntervalMS == 0 {
		h.IntervalMS = 500
	}
	if h.TimeoutMS == 0 {
		h.TimeoutMS = 1000
	}
	if h.Failures == 0 {
		h.Failures = 3
	}
	if h.IntervalMS < 50 || h.IntervalMS > 60_000 || h.TimeoutMS < 50 || h.TimeoutMS > 60_000 || h.Failures < 1 || h.Failures > 100 {
		return bad("health: interval_ms and timeout_ms in 50..60000, failures in 1..100")
	}
	if len(s.Floating) > 0 {
		if m.Every {
			return bad("floating: the N model has no slots to give addresses to")
		}
		if len(s.Floating) != m.N {
			return bad("floating: %d addresses for %d active slots: give exactly one per slot", len(s.Floating), m.N)
		}
		if s.Network != "mgmt" && s.Network != "cluster" {
			return bad("network %q: floating addresses go on mgmt or cluster", s.Network)
		}
		addrs := map[netip.Addr]bool{}
		for _, f := range s.Floating {
			p, err := netip.ParsePrefix(f)
			if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Addr().IsLoopback() || p.Addr().IsUnspecified() {
				return bad("floating %q: want an IPv4 ADDR/PREFIX such as 10.20.1.100/24", f)
			}
			if addrs[p.Addr()] {
				return bad("floating %q is listed twice", f)
			}
			addrs[p.Addr()] = true
		}
	} else if s.Network != "" {
		return bad("network: set only with floating addresses")
	}
	return m, nil
}

// checkArgv allows only known placeholders and no NUL bytes.
func checkArgv(argv []string) error {
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("argument %q contains a NUL byte", a)
		}
		for _, p := range braced.FindAllString(a, -1) {
			if !slices.Contains(placeholders, p) {
				return fmt.Errorf("unknown placeholder %s (known: %s)", p, strings.Join(placeholders, " "))
			}
		}
	}
	return nil
}

// Check validates specs together with the site's hosts: every named host
// exists, every dependency exists and the dependencies have no cycle, and
// no two groups share a floating address. It returns each spec's model.
func Check(specs []Spec, hostExists func(name string) bool) (map[string]Model, error) {
	models := map[string]Model{}
	byName := map[string]*Spec{}
	floating := map[netip.Addr]string{}
	for i := range specs {
		s := &specs[i]
		m, err := s.Validate()
		if err != nil {
			return nil, err
		}
		if byName[s.Name] != nil {
			return nil, errs.Wrapf(errs.Invalid, "service group %q is declared twice", s.Name)
		}
		byName[s.Name], models[s.Name] = s, m
		for _, h := range s.Hosts {
			if !hostExists(h) {
				return nil, errs.Wrapf(errs.Invalid, "service group %q: host %q is not a host of this site", s.Name, h)
			}
		}
		for _, f := range s.Floating {
			a := netip.MustParsePrefix(f).Addr()
			if g, ok := floating[a]; ok {
				return nil, errs.Wrapf(errs.Invalid, "service group %q: floating address %s is already group %q's", s.Name, a, g)
			}
			floating[a] = s.Name
		}
	}
	for _, s := range specs {
		for _, d := range s.DependsOn {
			if byName[d] == nil {
				return nil, errs.Wrapf(errs.Invalid, "service group %q depends on %q, which does not exist", s.Name, d)
			}
		}
	}
	if cycle := findCycle(specs); cycle != nil {
		return nil, errs.Wrapf(errs.Invalid, "service groups depend on each other in a cycle: %s", strings.Join(cycle, " -> "))
	}
	return models, nil
}

// findCycle returns a dependency cycle (first group repeated at the end),
// or nil.
func findCycle(specs []Spec) []string {
	deps := map[string][]string{}
	names := []string{}
	for _, s := range specs {
		deps[s.Name] = s.DependsOn
		names = append(names, s.Name)
	}
	slices.Sort(names)
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range deps[n] {
			switch color[d] {
			case grey:
				i := slices.Index(stack, d)
				return append(slices.Clone(stack[i:]), d)
			case white:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, n := range names {
		if color[n] == white {
			if c := visit(n); c != nil {
				return c
			}
		}
	}
	return nil
}

// Status is a group's state.
type Status string

const (
	StatusOK       Status = "ok"       // N active, M standby
	StatusDegraded Status = "degraded" // N active, fewer than M standby (400.002)
	StatusFailed   Status = "failed"   // fewer than N active (400.001)
)

// State is what a member is, as the group resource shows it.
type State string

const (
	StateActive   State = "active"
	StateStandby  State = "standby"
	StateDisabled State = "disabled" // assigned, not running yet (starting, moving, its host down)
	StateFailed   State = "failed"
)

// Member is one member in the group resource.
type Member struct {
	Host   string `json:"host"`
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"`
	Epoch  uint64 `json:"epoch"`
	Slot   *int   `json:"slot,omitempty"` // an active's slot
}

// Group is the service group resource (brief §8).
type Group struct {
	Spec
	N         int       `json:"n"`
	M         int       `json:"m"`
	Status    Status    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Epoch     uint64    `json:"epoch"`
	Members   []Member  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}
