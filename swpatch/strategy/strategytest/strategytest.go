// Package strategytest has test doubles for package strategy: a fake
// site whose hosts lock, install, reboot and come back as a real site's
// do (one poll at a time), with fault knobs, and an in-memory Store.
package strategytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// Host is a fake host.
type Host struct {
	strategy.HostStatus
	staged    bool // installed, waiting for the reboot
	rebooting int  // polls left before it is back
}

// Site is a fake site. Its zero value is not usable: use NewSite.
type Site struct {
	mu      sync.Mutex
	hosts   map[string]*Host
	order   []string
	patches []string
	reboot  bool
	alarms  []strategy.Alarm

	// RebootPolls is how many Hosts calls a reboot lasts.
	RebootPolls int
	// NeverBack: hosts that do not come back from their reboot.
	NeverBack map[string]bool
	// FailInstall: hosts whose install fails.
	FailInstall map[string]bool
	// RefuseLock: how many more locks of a host are refused.
	RefuseLock map[string]int
	// OnSwact runs after a swact (the test's stand-in for the old
	// active's site controller stopping).
	OnSwact func()
	// OnCall runs before every mutating call with its name and host.
	OnCall func(call, host string)

	// What happened.
	Calls      []string
	Migrations []string // "server:from->to"
	MaxDown    int      // most hosts locked or not available at once
	Raised     map[string]int
	Cleared    map[string]int
	stopped    map[string]bool
}

// NewSite returns a site with the given hosts (all unlocked, enabled,
// available, not patch-current) and applied patches.
func NewSite(hosts []strategy.HostStatus, patches []string, reboot bool) *Site {
	s := &Site{hosts: map[string]*Host{}, patches: patches, reboot: reboot, RebootPolls: 3,
		NeverBack: map[string]bool{}, FailInstall: map[string]bool{}, RefuseLock: map[string]int{}, Raised: map[string]int{}, Cleared: map[string]int{},
		stopped: map[string]bool{}}
	for _, h := range hosts {
		if h.Administrative == "" {
			h.Administrative, h.Operational, h.Availability = inventory.Unlocked, inventory.Enabled, inventory.Available
		}
		if h.Running == nil {
			h.Running = slices.Clone(h.Servers)
		}
		s.hosts[h.Name] = &Host{HostStatus: h}
		s.order = append(s.order, h.Name)
	}
	return s
}

// SetAlarms replaces the site's active alarms.
func (s *Site) SetAlarms(as ...strategy.Alarm) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alarms = as
}

// Host returns a host's state.
func (s *Site) Host(name string) strategy.HostStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clone(s.hosts[name].HostStatus)
}

func clone(h strategy.HostStatus) strategy.HostStatus {
	h.Servers, h.Running = slices.Clone(h.Servers), slices.Clone(h.Running)
	return h
}

func (s *Site) call(name, host string) {
	s.Calls = append(s.Calls, name+" "+host)
	if s.OnCall != nil {
		s.OnCall(name, host)
	}
}

func (s *Site) down() {
	n := 0
	for _, h := range s.hosts {
		if h.Administrative == inventory.Locked || h.Availability != inventory.Available {
			n++
		}
	}
	s.MaxDown = max(s.MaxDown, n)
}

// Hosts advances reboots by one poll and lists the hosts.
func (s *Site) Hosts(ctx context.Context) ([]strategy.HostStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []strategy.HostStatus
	for _, n := range s.order {
		h := s.hosts[n]
		if h.rebooting > 0 && !s.NeverBack[n] {
			h.rebooting--
			if h.rebooting == 0 {
				h.Availability, h.Operational = inventory.Available, inventory.Enabled
				h.PatchCurrent, h.staged = true, false
			}
		}
		h.ReportedAt = time.Now()
		out = append(out, clone(h.HostStatus))
	}
	s.down()
	return out, nil
}

// Patches returns the applied patches if some host lacks them.
func (s *Site) Patches(ctx context.Context) ([]string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hosts {
		if !h.PatchCurrent {
			return slices.Clone(s.patches), s.reboot, nil
		}
	}
	return nil, false, nil
}

// SetPatches replaces the applied patches (a patch applied at the site).
func (s *Site) SetPatches(ids []string, reboot bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches, s.reboot = slices.Clone(ids), reboot
}

// Alarms lists the alarms set with SetAlarms.
func (s *Site) Alarms(ctx context.Context) ([]strategy.Alarm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.alarms), nil
}

// Lock locks a host, migrating its running servers to the first
// unlocked compute host.
func (s *Site) Lock(ctx context.Context, name string, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.call("lock", name)
	h := s.hosts[name]
	if h.Administrative == inventory.Locked {
		return nil
	}
	if s.RefuseLock[name] > 0 {
		s.RefuseLock[name]--
		return errors.New("no healthy standby yet")
	}
	if len(h.Running) > 0 && !force {
		var dest *Host
		for _, n := range s.order {
			o := s.hosts[n]
			if o != h && o.Administrative == inventory.Unlocked && o.Availability == inventory.Available &&
				(o.Personality == inventory.Worker || slices.Contains(o.Subfunctions, "worker")) {
				dest = o
				break
			}
		}
		if dest == nil {
			return fmt.Errorf("no host to migrate %v to", h.Running)
		}
		for _, id := range h.Running {
			s.Migrations = append(s.Migrations, fmt.Sprintf("%s:%s->%s", id, h.Name, dest.Name))
			dest.Running = append(dest.Running, id)
			dest.Servers = append(dest.Servers, id)
			h.Servers = slices.DeleteFunc(h.Servers, func(x string) bool { return x == id })
		}
		h.Running = nil
	}
	h.Administrative = inventory.Locked
	s.down()
	return nil
}

// Unlock unlocks a host; with software staged it reboots.
func (s *Site) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.call("unlock", name)
	h := s.hosts[name]
	if h.Administrative == inventory.Unlocked {
		return nil
	}
	h.Administrative = inventory.Unlocked
	if h.staged {
		h.Availability, h.Operational = inventory.Offline, inventory.Disabled
		h.rebooting = s.RebootPolls
	}
	s.down()
	return nil
}

// Swact moves activity to the other controller.
func (s *Site) Swact(ctx context.Context, name string) error {
	s.mu.Lock()
	s.call("swact", name)
	h := s.hosts[name]
	if !h.Active {
		s.mu.Unlock()
		return nil
	}
	for _, o := range s.hosts {
		if o != h && o.Personality == inventory.Controller {
			o.Active, h.Active = true, false
		}
	}
	hook := s.OnSwact
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

// Install installs the patches: staged for a reboot (the host must be
// locked), or in service.
func (s *Site) Install(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.call("install", name)
	h := s.hosts[name]
	if s.FailInstall[name] {
		h.InstallFailed = s.patches[len(s.patches)-1]
		return nil
	}
	if s.reboot {
		if h.Administrative != inventory.Locked {
			return errors.New("lock the host first")
		}
		h.staged, h.Installed = true, true
		return nil
	}
	h.Installed, h.PatchCurrent = true, true
	return nil
}

// StopServers stops servers.
func (s *Site) StopServers(ctx context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.call("stop", fmt.Sprint(ids))
	for _, h := range s.hosts {
		h.Running = slices.DeleteFunc(h.Running, func(x string) bool { return slices.Contains(ids, x) })
	}
	for _, id := range ids {
		s.stopped[id] = true
	}
	return nil
}

// StartServers starts servers where they are.
func (s *Site) StartServers(ctx context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.call("start", fmt.Sprint(ids))
	for _, h := range s.hosts {
		for _, id := range h.Servers {
			if slices.Contains(ids, id) && !slices.Contains(h.Running, id) {
				h.Running = append(h.Running, id)
			}
		}
	}
	for _, id := range ids {
		delete(s.stopped, id)
	}
	return nil
}

// Stopped lists the servers stopped and not started again.
func (s *Site) Stopped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id := range s.stopped {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Raise counts a raise.
func (s *Site) Raise(ctx context.Context, id, entity string, fields map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Raised[id]++
	return nil
}

// Clear counts a clear.
func (s *Site) Clear(ctx context.Context, id, entity string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Cleared[id]++
	return nil
}

// MemStore is an in-memory strategy.Store.
type MemStore struct {
	mu sync.Mutex
	m  map[strategy.Type]strategy.Strategy
	// Writes counts Create and Update calls that stored something.
	Writes int
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{m: map[strategy.Type]strategy.Strategy{}} }

func cloneStrategy(s strategy.Strategy) strategy.Strategy {
	s.Stages = slices.Clone(s.Stages)
	for i := range s.Stages {
		s.Stages[i].Steps = slices.Clone(s.Stages[i].Steps)
		for j := range s.Stages[i].Steps {
			st := &s.Stages[i].Steps[j]
			st.Hosts, st.Servers = slices.Clone(st.Hosts), slices.Clone(st.Servers)
		}
	}
	s.Locked, s.Patches, s.BaselineAlarms = slices.Clone(s.Locked), slices.Clone(s.Patches), slices.Clone(s.BaselineAlarms)
	return s
}

// Strategy returns the stored strategy of type t.
func (m *MemStore) Strategy(ctx context.Context, t strategy.Type) (strategy.Strategy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[t]
	if !ok {
		return s, strategy.ErrNotFound
	}
	return cloneStrategy(s), nil
}

// Create stores a new strategy.
func (m *MemStore) Create(ctx context.Context, s strategy.Strategy) (strategy.Strategy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[s.Type]; ok {
		return strategy.Strategy{}, strategy.ErrExists
	}
	s.Rev = 1
	m.m[s.Type] = cloneStrategy(s)
	m.Writes++
	return s, nil
}

// Update changes a strategy.
func (m *MemStore) Update(ctx context.Context, t strategy.Type, fn func(*strategy.Strategy) error) (strategy.Strategy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[t]
	if !ok {
		return s, strategy.ErrNotFound
	}
	s = cloneStrategy(s)
	if err := fn(&s); err != nil {
		return s, err
	}
	s.Rev++
	m.m[t] = cloneStrategy(s)
	m.Writes++
	return s, nil
}

// Delete drops a strategy.
func (m *MemStore) Delete(ctx context.Context, t strategy.Type, fn func(strategy.Strategy) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[t]
	if !ok {
		return strategy.ErrNotFound
	}
	if fn != nil {
		if err := fn(s); err != nil {
			return err
		}
	}
	delete(m.m, t)
	return nil
}
