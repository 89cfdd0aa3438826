// Package fleettest has test doubles for package fleet: a fleet of
// in-process sites, each running the real site strategy executor
// (package strategy) over a fake site of hosts (strategytest), with the
// patch API a site serves and fault knobs (offline, refused upload).
package fleettest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategytest"
)

// Site is one fake site.
type Site struct {
	Name   string
	Shape  inventory.Shape
	Target *strategytest.Site     // its hosts
	Store  *strategytest.MemStore // its strategy store
	Exec   *strategy.Executor

	f       *Fleet
	mu      sync.Mutex
	offline bool
	patches map[string]swpatch.State
	running bool // its strategy applying (counted in Fleet.MaxRunning)

	// What happened.
	Uploads, Creates, Applies, Aborts, Removes int
	// RefuseUpload, when set, is the error every upload gets.
	RefuseUpload error
}

// Fleet is a set of fake sites; it implements fleet.Sites.
type Fleet struct {
	mu      sync.Mutex
	sites   map[string]*Site
	running int
	// MaxRunning is the most sites whose strategy applied at once.
	MaxRunning int
	// Reboot: the patches need a reboot.
	Reboot bool
	// Known are the patches central holds (SyncPatch of another fails).
	Known []string
}

// Hosts of a fake site of each shape.
func hostsOf(shape inventory.Shape) []strategy.HostStatus {
	switch shape {
	case inventory.Simplex:
		return []strategy.HostStatus{{Name: "controller-0", Personality: inventory.Controller, Subfunctions: []string{"worker"}, Active: true}}
	case inventory.Duplex:
		return []strategy.HostStatus{{Name: "controller-0", Personality: inventory.Controller, Subfunctions: []string{"worker"}, Active: true},
			{Name: "controller-1", Personality: inventory.Controller, Subfunctions: []string{"worker"}}}
	}
	return []strategy.HostStatus{{Name: "controller-0", Personality: inventory.Controller, Active: true},
		{Name: "controller-1", Personality: inventory.Controller}, {Name: "worker-0", Personality: inventory.Worker},
		{Name: "worker-1", Personality: inventory.Worker}}
}

// New returns a fleet of sites named by shape (name → shape), each
// with its site executor running until ctx ends.
func New(ctx context.Context, known []string, sites map[string]inventory.Shape) *Fleet {
	f := &Fleet{sites: map[string]*Site{}, Known: known, Reboot: true}
	for name, shape := range sites {
		s := &Site{Name: name, Shape: shape, Target: strategytest.NewSite(hostsOf(shape), nil, true),
			Store: strategytest.NewMemStore(), f: f, patches: map[string]swpatch.State{}}
		s.Target.RebootPolls = 2
		s.Exec = strategy.New(strategy.Config{Site: name, Store: s.Store, Target: s.Target, Poll: time.Millisecond,
			RetryEvery: time.Millisecond, Timeouts: strategy.Timeouts{Lock: 5 * time.Second, Install: 5 * time.Second,
				Unlock: 5 * time.Second, Stabilize: 5 * time.Second, Swact: 5 * time.Second, Settle: time.Millisecond}})
		go s.Exec.Run(ctx)
		f.sites[name] = s
	}
	return f
}

// Site returns a site.
func (f *Fleet) Site(name string) *Site { return f.sites[name] }

// SetOffline takes a site's link down or up.
func (s *Site) SetOffline(off bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offline = off
}

// PatchStates returns the site's patches and their states.
func (s *Site) PatchStates() map[string]swpatch.State {
	s.settle(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]swpatch.State{}
	for k, v := range s.patches {
		out[k] = v
	}
	return out
}

func (f *Fleet) site(name string) (*Site, error) {
	s := f.sites[name]
	if s == nil {
		return nil, fmt.Errorf("%w: no site %s", errs.NotFound, name)
	}
	s.mu.Lock()
	off := s.offline
	s.mu.Unlock()
	if off {
		return nil, fmt.Errorf("%w: site %s is not connected", errs.Unavailable, name)
	}
	return s, nil
}

// settle moves deploying patches to deployed once the site's strategy
// installing them is applied (a site settles them against its hosts),
// and counts running strategies.
func (s *Site) settle(ctx context.Context) {
	st, err := s.Store.Strategy(ctx, strategy.Patch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && st.State == strategy.Applied {
		for _, id := range st.Patches {
			if s.patches[id] == swpatch.Deploying {
				s.patches[id] = swpatch.Deployed
			}
		}
	}
	if s.running && (err != nil || st.State != strategy.Applying && st.State != strategy.Aborting) {
		s.running = false
		s.f.mu.Lock()
		s.f.running--
		s.f.mu.Unlock()
	}
}

// Reachable implements fleet.Sites.
func (f *Fleet) Reachable(name string) bool {
	_, err := f.site(name)
	return err == nil
}

// SyncPatch implements fleet.Sites.
func (f *Fleet) SyncPatch(ctx context.Context, name, id string) error {
	s, err := f.site(name)
	if err != nil {
		return err
	}
	if !slices.Contains(f.Known, id) {
		return fmt.Errorf("%w: central holds no patch %s", swpatch.ErrPatchNotFound, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Uploads++
	if s.RefuseUpload != nil {
		return s.RefuseUpload
	}
	if _, ok := s.patches[id]; !ok {
		s.patches[id] = swpatch.Available
	}
	return nil
}

// Patch implements fleet.Sites.
func (f *Fleet) Patch(ctx context.Context, name, id string) (swpatch.Record, error) {
	s, err := f.site(name)
	if err != nil {
		return swpatch.Record{}, err
	}
	s.settle(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.patches[id]
	if !ok {
		return swpatch.Record{}, fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
	}
	hosts := map[string]swpatch.HostState{}
	for _, h := range hostsOf(s.Shape) {
		hosts[h.Name] = swpatch.HostPending
		if st == swpatch.Deployed || s.Target.Host(h.Name).PatchCurrent {
			hosts[h.Name] = swpatch.HostCurrent
		}
	}
	return swpatch.Record{ID: id, State: st, Hosts: hosts}, nil
}

func (s *Site) applied() []string {
	var ids []string
	for id, st := range s.patches {
		if st == swpatch.Deploying {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// ApplyPatch implements fleet.Sites.
func (f *Fleet) ApplyPatch(ctx context.Context, name, id string) error {
	s, err := f.site(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.patches[id]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", swpatch.ErrPatchNotFound, id)
	case st != swpatch.Available && st != swpatch.Removing:
		return fmt.Errorf("%w: patch %s is %s", errs.InvalidTransition, id, st)
	}
	s.patches[id] = swpatch.Deploying
	s.Target.SetPatches(s.applied(), f.Reboot)
	return nil
}

// RemovePatch implements fleet.Sites: no host installed it in these
// tests' aborts, so it is available again at once.
func (f *Fleet) RemovePatch(ctx context.Context, name, id string) error {
	s, err := f.site(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.patches[id] != swpatch.Deploying {
		return fmt.Errorf("%w: patch %s is %s", errs.InvalidTransition, id, s.patches[id])
	}
	s.Removes++
	s.patches[id] = swpatch.Available
	s.Target.SetPatches(s.applied(), f.Reboot)
	return nil
}

// Strategy implements fleet.Sites.
func (f *Fleet) Strategy(ctx context.Context, name string) (strategy.Strategy, error) {
	s, err := f.site(name)
	if err != nil {
		return strategy.Strategy{}, err
	}
	s.settle(ctx)
	return s.Store.Strategy(ctx, strategy.Patch)
}

// CreateStrategy implements fleet.Sites.
func (f *Fleet) CreateStrategy(ctx context.Context, name string, opts strategy.Options) (strategy.Strategy, error) {
	s, err := f.site(name)
	if err != nil {
		return strategy.Strategy{}, err
	}
	s.mu.Lock()
	s.Creates++
	s.mu.Unlock()
	return s.Exec.Create(ctx, s.Shape, opts)
}

// DeleteStrategy implements fleet.Sites.
func (f *Fleet) DeleteStrategy(ctx context.Context, name string) error {
	s, err := f.site(name)
	if err != nil {
		return err
	}
	return s.Exec.Delete(ctx, strategy.Patch)
}

// StrategyAction implements fleet.Sites.
func (f *Fleet) StrategyAction(ctx context.Context, name, action string) (strategy.Strategy, error) {
	s, err := f.site(name)
	if err != nil {
		return strategy.Strategy{}, err
	}
	switch action {
	case "apply":
		st, err := s.Exec.Apply(ctx, strategy.Patch)
		if err == nil {
			s.mu.Lock()
			s.Applies++
			if !s.running {
				s.running = true
				f.mu.Lock()
				f.running++
				f.MaxRunning = max(f.MaxRunning, f.running)
				f.mu.Unlock()
			}
			s.mu.Unlock()
		}
		return st, err
	case "abort":
		s.mu.Lock()
		s.Aborts++
		s.mu.Unlock()
		return s.Exec.Abort(ctx, strategy.Patch)
	}
	return strategy.Strategy{}, errs.Field("action", "must be apply or abort")
}

// Running is the number of sites whose strategy is applying now.
func (f *Fleet) Running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// Alarms records central's alarms; it implements fleet.Alarms.
type Alarms struct {
	mu     sync.Mutex
	Active map[string]map[string]string // id/entity -> fields
}

// Raise implements fleet.Alarms.
func (a *Alarms) Raise(ctx context.Context, id, entity string, fields map[string]string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Active == nil {
		a.Active = map[string]map[string]string{}
	}
	a.Active[id+"/"+entity] = fields
	return nil
}

// Clear implements fleet.Alarms.
func (a *Alarms) Clear(ctx context.Context, id, entity string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.Active, id+"/"+entity)
	return nil
}

// Has reports whether alarm id is active.
func (a *Alarms) Has(id, entity string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.Active[id+"/"+entity]
	return ok
}
