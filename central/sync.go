package central

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// The sync engine keeps central's shared resources (the sync store's
// desired state) at every managed site (docs/central.md, "Shared
// resources"). It runs on central, and reaches each site through the
// site's own API over its dial-home link — gophercloud through the relay
// for what lives behind the site's OpenStack-compatible API — so a site
// applies a change exactly as if an administrator had made it there, with
// its validation, transactions and audit record.
//
// Per site and resource it keeps a cursor (acked): every record of that
// resource up to that version holds at the site. While a site is linked,
// a pass applies the records above its cursor in version order (deltas);
// on link-up, every AuditEvery, and after a failure, a pass lists what the
// site holds and repairs whatever differs from the desired state (the
// anti-entropy audit), which also covers changes made while central was
// down or restarted. Every apply is idempotent (create with the record's
// ID; an equal record already there is success), so a pass cut by a
// failover, a restart or a link loss is simply done again.

// syncer applies one resource's records at a site.
type syncer interface {
	resource() string
	// apply makes rec true at the site: creates or replaces its record,
	// or deletes it for a tombstone. Applying twice changes nothing. A
	// record the site cannot take (a local record holds its name) is an
	// errSyncConflict; one the site took but still works on (an image's
	// bytes in transfer) is errSyncPending, and the engine audits again
	// soon; other errors are transient.
	apply(ctx context.Context, s syncSite, rec SyncRecord) error
	// audit compares what the site holds with the desired records (every
	// live record and tombstone) and returns those to apply again.
	audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error)
}

// syncSites reaches the sites' APIs; nil when a site is not linked.
type syncSites interface {
	site(name string) syncSite
}

// syncAlarms raises and clears 280.002.
type syncAlarms interface {
	Raise(ctx context.Context, id, entity string, fields map[string]string) (faultmgr.Alarm, bool, error)
	Clear(ctx context.Context, id, entity string) (bool, error)
}

// errSyncConflict: the site holds a record of its own where a synced one
// must go (a same-named local flavor): not retried until the next audit.
var errSyncConflict = errs.New(errs.Conflict, "the site holds a local record of that name")

// errSyncPending: the site accepted the record and works on it (an image
// whose bytes are in transfer); the next audit looks again.
var errSyncPending = errs.New(errs.Unavailable, "the site is still applying the record")

// SyncConfig tunes the engine; zero fields take the defaults.
type SyncConfig struct {
	Grace       time.Duration // a linked site behind for longer is out-of-sync (10 s)
	AuditEvery  time.Duration // audit period per site (10 min)
	AlarmAfter  time.Duration // 280.002 after this long out-of-sync (30 s)
	ClearAfter  time.Duration // cleared after this long in-sync (10 s)
	MinAlarm    time.Duration // and never sooner than this after it was raised (60 s)
	Parallel    int           // sites worked at once (64)
	Tick        time.Duration // status sweep period (500 ms)
	RetryMax    time.Duration // longest backoff after a failed pass (30 s)
	BatchLimit  int           // records read per store query (500)
	Now         func() time.Time
	SiteRefresh time.Duration // how often the registry is re-read (10 s; at once after registryChanged)
	Recheck     time.Duration // audit period while records are pending (2 s)
	// Storm reports a reconnect storm (links waiting for admission):
	// audits, a list per resource from each site over its link, wait
	// until it has passed, so the admissions have the CPU; deltas go on.
	// Nil: never.
	Storm func() bool
}

func (c *SyncConfig) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.Grace, 10*time.Second)
	set(&c.AuditEvery, 10*time.Minute)
	set(&c.AlarmAfter, 30*time.Second)
	set(&c.ClearAfter, 10*time.Second)
	set(&c.MinAlarm, 60*time.Second)
	set(&c.Tick, 500*time.Millisecond)
	set(&c.RetryMax, 30*time.Second)
	set(&c.SiteRefresh, 10*time.Second)
	set(&c.Recheck, 2*time.Second)
	if c.Storm == nil {
		c.Storm = func() bool { return false }
	}
	if c.Parallel <= 0 {
		c.Parallel = 64
	}
	if c.BatchLimit <= 0 {
		c.BatchLimit = 500
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// resSync is the engine's state of one resource at one site.
type resSync struct {
	acked       uint64
	audited     bool                 // an audit completed in this run
	auditAt     time.Time            // the last completed audit
	behindSince time.Time            // when a linked site first fell behind; zero when caught up
	failed      map[string]string    // key -> why the site refused it
	pending     map[string]time.Time // key -> since when the site works on it
	lastErr     string
	// the persisted view
	status  SyncStatus
	since   time.Time
	reason  string
	alarmed bool
	raised  time.Time
	dirty   bool // acked or audit time changed since it was persisted
}

// siteSync is the engine's state of one site.
type siteSync struct {
	name     string
	managed  bool
	linked   bool
	busy     bool
	auditNow bool      // audit at the next pass (link-up, failure)
	retryAt  time.Time // no pass before (backoff)
	backoff  time.Duration
	res      map[string]*resSync
}

// syncEngine is the sync engine; see the comment at the top of this file.
type syncEngine struct {
	cfg     SyncConfig
	store   *SyncStore
	reg     SubcloudStore
	sites   syncSites
	alarms  syncAlarms
	syncers []syncer
	log     *slog.Logger
	publish func(typ string, v any)

	wake   chan struct{}
	reread atomic.Bool // the registry changed: read it at the next round

	mu    sync.Mutex
	state map[string]*siteSync
	heads map[string]uint64 // per resource: the newest version
	// desired is, per resource, the whole desired set as last read, which
	// audits share while the resource's head has not moved (thousands of
	// sites audit after a restart: one read, not one per site).
	desired      map[string]desiredSet
	desiredReads atomic.Int64 // reads of a whole desired set (tests)
}

// desiredSet is a resource's desired records: read when the resource's
// own head was key, up to the store's head.
type desiredSet struct {
	key, head uint64
	recs      []SyncRecord
}

func newSyncEngine(cfg SyncConfig, store *SyncStore, reg SubcloudStore, sites syncSites, alarms syncAlarms,
	syncers []syncer, log *slog.Logger, publish func(string, any)) *syncEngine {
	cfg.defaults()
	if publish == nil {
		publish = func(string, any) {}
	}
	return &syncEngine{cfg: cfg, store: store, reg: reg, sites: sites, alarms: alarms, syncers: syncers, log: log,
		publish: publish, wake: make(chan struct{}, 1), state: map[string]*siteSync{}, heads: map[string]uint64{},
		desired: map[string]desiredSet{}}
}

// changed wakes the engine: the desired state moved.
func (e *syncEngine) changed() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// registryChanged makes the next round read the registry (a subcloud was
// added, managed, unmanaged or deleted) and wakes the engine.
func (e *syncEngine) registryChanged() {
	e.reread.Store(true)
	e.changed()
}

// linkUp schedules an audit of site: its link (re)connected, and what
// happened while it was away is unknown.
func (e *syncEngine) linkUp(site string) {
	e.mu.Lock()
	if s := e.state[site]; s != nil {
		s.auditNow, s.retryAt, s.backoff = true, time.Time{}, 0
	}
	e.mu.Unlock()
	e.changed()
}

// forget drops a deleted subcloud's state.
func (e *syncEngine) forget(ctx context.Context, site string) {
	e.mu.Lock()
	delete(e.state, site)
	e.mu.Unlock()
	e.registryChanged()
	if err := e.store.DeleteSiteSyncStates(ctx, site); err != nil {
		e.log.Error("dropping a deleted subcloud's sync state failed", "site", site, "err", err)
	}
}

// Run works until ctx ends.
func (e *syncEngine) Run(ctx context.Context) error {
	if err := e.load(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(e.cfg.Tick)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, e.cfg.Parallel)
	var lastRefresh, lastSweep, lastRound time.Time
	for {
		now := e.cfg.Now()
		lastRound = now
		if now.Sub(lastRefresh) >= e.cfg.SiteRefresh || e.reread.Swap(false) {
			if err := e.refreshSites(ctx); err != nil {
				e.log.Warn("sync: reading the registry failed", "err", err)
			} else {
				lastRefresh = now
			}
		}
		if err := e.refreshHeads(ctx); err != nil {
			e.log.Warn("sync: reading the store's heads failed", "err", err)
		}
		for _, s := range e.due(now) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				e.pass(ctx, s)
				e.changed() // the next round dispatches more work
			}()
		}
		// The sweep looks at every site: once per tick, not per pass
		// (thousands of passes end per second in a reconnect storm).
		if now.Sub(lastSweep) >= e.cfg.Tick {
			e.sweep(ctx, now)
			lastSweep = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-e.wake:
			// Rounds triggered by wakes are coalesced: at most one
			// every roundGap.
			if d := roundGap - e.cfg.Now().Sub(lastRound); d > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(d):
				}
			}
		}
	}
}

// roundGap is the least time between two rounds of the engine's loop
// started by wakes (a change at central, a pass that ended).
const roundGap = 50 * time.Millisecond

// load reads the persisted state: cursors, statuses, alarms. Links may
// come up meanwhile (linkUp): the state is built aside and installed
// under e.mu.
func (e *syncEngine) load(ctx context.Context) error {
	managed := map[string]bool{}
	opts := rest.ListOptions{Limit: rest.MaxLimit}
	for {
		scs, next, err := e.reg.Subclouds(ctx, opts)
		if err != nil {
			return err
		}
		for _, sc := range scs {
			managed[sc.Name] = sc.Management == Managed
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	sts, err := e.store.AllSiteSyncStates(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, m := range managed {
		s := e.siteLocked(name)
		s.managed = m
	}
	for _, st := range sts {
		if _, ok := managed[st.Site]; !ok {
			continue // its subcloud is gone
		}
		r := e.siteLocked(st.Site).resource(st.Resource)
		if r == nil {
			continue
		}
		r.acked, r.status, r.since, r.reason, r.alarmed = st.Acked, st.Status, st.Since, st.Reason, st.Alarmed
		r.auditAt = st.AuditAt
		if r.alarmed {
			r.raised = st.Since
		}
	}
	return nil
}

// siteLocked returns site's state, creating it (e.mu held).
func (e *syncEngine) siteLocked(name string) *siteSync {
	s := e.state[name]
	if s == nil {
		s = &siteSync{name: name, res: map[string]*resSync{}}
		for _, sy := range e.syncers {
			s.res[sy.resource()] = &resSync{status: SyncUnknown}
		}
		e.state[name] = s
	}
	return s
}

func (s *siteSync) resource(name string) *resSync { return s.res[name] }

// refreshSites reads the registry: which sites exist and are managed.
func (e *syncEngine) refreshSites(ctx context.Context) error {
	seen := map[string]bool{}
	opts := rest.ListOptions{Limit: rest.MaxLimit}
	for {
		scs, next, err := e.reg.Subclouds(ctx, opts)
		if err != nil {
			return err
		}
		e.mu.Lock()
		for _, sc := range scs {
			seen[sc.Name] = true
			s := e.siteLocked(sc.Name)
			managed := sc.Management == Managed
			if managed && !s.managed {
				s.auditNow = true // managed again: what it holds is unknown
			}
			s.managed = managed
		}
		e.mu.Unlock()
		if next == "" {
			break
		}
		opts.After = next
	}
	e.mu.Lock()
	for name := range e.state {
		if !seen[name] {
			delete(e.state, name)
		}
	}
	e.mu.Unlock()
	return nil
}

func (e *syncEngine) refreshHeads(ctx context.Context) error {
	heads, err := e.store.Heads(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.heads = heads
	e.mu.Unlock()
	return nil
}

// due marks and returns the sites a pass should run for now: managed,
// linked, idle, past their backoff, and behind or due an audit.
func (e *syncEngine) due(now time.Time) []*siteSync {
	storm := e.cfg.Storm()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*siteSync
	for _, s := range e.state {
		s.linked = e.sites.site(s.name) != nil
		if !s.managed || !s.linked || s.busy || now.Before(s.retryAt) {
			continue
		}
		work, audit := s.auditNow, s.auditNow
		for name, r := range s.res {
			if !r.audited || now.Sub(r.auditAt) >= e.cfg.AuditEvery {
				work, audit = true, true
			}
			if r.acked < e.heads[name] {
				work = true
			}
		}
		if audit && storm {
			continue // after the storm
		}
		if work {
			s.busy = true
			out = append(out, s)
		}
	}
	return out
}

// pass brings one site up to date: an audit when due, else the deltas.
func (e *syncEngine) pass(ctx context.Context, s *siteSync) {
	site := e.sites.site(s.name)
	e.mu.Lock()
	audit := s.auditNow
	s.auditNow = false
	e.mu.Unlock()
	err := func() error {
		if site == nil {
			return errs.Wrapf(errs.Unavailable, "site %s is not linked", s.name)
		}
		for _, sy := range e.syncers {
			if err := e.passResource(ctx, s, site, sy, audit); err != nil {
				return fmt.Errorf("%s: %w", sy.resource(), err)
			}
		}
		return nil
	}()
	now := e.cfg.Now()
	e.mu.Lock()
	s.busy = false
	if err != nil {
		if s.backoff == 0 {
			s.backoff = time.Second
		} else {
			s.backoff = min(2*s.backoff, e.cfg.RetryMax)
		}
		s.retryAt, s.auditNow = now.Add(s.backoff), true
	} else {
		s.backoff, s.retryAt = 0, time.Time{}
		for _, r := range s.res {
			if len(r.failed) > 0 {
				// A record the site refused: look again soon (the
				// operator may have removed the local record).
				s.retryAt, s.auditNow = now.Add(e.cfg.RetryMax), true
			}
		}
		for _, r := range s.res {
			if len(r.pending) > 0 {
				s.retryAt, s.auditNow = now.Add(e.cfg.Recheck), true
			}
		}
	}
	e.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		e.log.Warn("sync pass failed", "site", s.name, "err", err)
	}
}

// passResource applies one resource at one site.
func (e *syncEngine) passResource(ctx context.Context, s *siteSync, site syncSite, sy syncer, forceAudit bool) error {
	name := sy.resource()
	e.mu.Lock()
	r := s.res[name]
	acked, audited, auditAt := r.acked, r.audited, r.auditAt
	e.mu.Unlock()
	now := e.cfg.Now()
	setErr := func(err error) error {
		e.mu.Lock()
		r.lastErr = err.Error()
		e.mu.Unlock()
		return err
	}
	audit := forceAudit || !audited || now.Sub(auditAt) >= e.cfg.AuditEvery
	e.mu.Lock()
	current := acked >= e.heads[name]
	e.mu.Unlock()
	if !audit && current {
		return nil // nothing newer: no query
	}
	if audit {
		desired, head, err := e.desiredOf(ctx, name)
		if err != nil {
			return setErr(err)
		}
		repairs, err := sy.audit(ctx, site, desired)
		if err != nil {
			return setErr(err)
		}
		failed, pending := map[string]string{}, map[string]time.Time{}
		e.mu.Lock()
		was := r.pending
		e.mu.Unlock()
		for _, rec := range repairs {
			switch err := sy.apply(ctx, site, rec); {
			case err == nil:
			case errors.Is(err, errSyncPending):
				pending[rec.Key] = now
				if t, ok := was[rec.Key]; ok {
					pending[rec.Key] = t
				}
			case errors.Is(err, errSyncConflict):
				failed[rec.Key] = err.Error()
			default:
				return setErr(err)
			}
		}
		if n := len(repairs) - len(pending); n > 0 {
			e.log.Info("sync audit repaired a site", "site", s.name, "resource", name, "repaired", n-len(failed),
				"failed", len(failed), "pending", len(pending))
		}
		e.mu.Lock()
		r.acked, r.audited, r.auditAt, r.failed, r.pending, r.lastErr, r.dirty = max(r.acked, head), true, now, failed, pending, "", true
		e.mu.Unlock()
		return nil
	}
	for {
		recs, head, err := e.store.Since(ctx, name, acked, e.cfg.BatchLimit)
		if errors.Is(err, ErrBelowHorizon) {
			e.mu.Lock()
			s.auditNow = true
			e.mu.Unlock()
			return nil
		}
		if err != nil {
			return setErr(err)
		}
		for _, rec := range recs {
			err := sy.apply(ctx, site, rec)
			e.mu.Lock()
			settled := true
			switch {
			case err == nil:
				delete(r.failed, rec.Key)
				delete(r.pending, rec.Key)
			case errors.Is(err, errSyncConflict):
				if r.failed == nil {
					r.failed = map[string]string{}
				}
				r.failed[rec.Key] = err.Error()
			case errors.Is(err, errSyncPending):
				if r.pending == nil {
					r.pending = map[string]time.Time{}
				}
				if _, ok := r.pending[rec.Key]; !ok {
					r.pending[rec.Key] = now
				}
			default:
				settled = false
			}
			if settled {
				r.acked, r.dirty = rec.Version, true
			}
			e.mu.Unlock()
			if !settled {
				return setErr(err)
			}
		}
		if len(recs) < e.cfg.BatchLimit {
			e.mu.Lock()
			if head > r.acked {
				r.acked, r.dirty = head, true
			}
			r.lastErr = ""
			e.mu.Unlock()
			return nil
		}
		acked = recs[len(recs)-1].Version
	}
}

// desiredOf is resource's whole desired set and the store's head as of
// reading it: the shared copy while the resource's own head (the newest
// version of its records, as the engine last read the heads) has not
// moved, else read anew. The records are shared: read-only.
func (e *syncEngine) desiredOf(ctx context.Context, resource string) ([]SyncRecord, uint64, error) {
	e.mu.Lock()
	d, ok := e.desired[resource]
	key := e.heads[resource]
	e.mu.Unlock()
	if ok && d.key == key {
		return d.recs, d.head, nil
	}
	e.desiredReads.Add(1)
	recs, head, err := e.store.Since(ctx, resource, 0, 0)
	if err != nil {
		return nil, 0, err
	}
	e.mu.Lock()
	if cur, ok := e.desired[resource]; !ok || head >= cur.head {
		e.desired[resource] = desiredSet{key: key, head: head, recs: recs}
	}
	e.mu.Unlock()
	return recs, head, nil
}

// syncStatusNext is the status machine: the transitions a resource's
// sync status may take (anything else is a bug).
var syncStatusNext = map[SyncStatus][]SyncStatus{
	SyncUnknown: {InSync, OutOfSync},
	InSync:      {OutOfSync, SyncUnknown},
	OutOfSync:   {InSync, SyncUnknown},
}

// syncView is what decides a resource's sync status at one site.
type syncView struct {
	managed, linked, audited bool
	acked, head              uint64
	behind                   time.Duration // how long a linked site has been behind
	grace                    time.Duration
	failed                   map[string]string
	pending                  map[string]time.Time
	now                      time.Time
	lastErr                  string
	prev                     SyncStatus
}

// syncStatusOf decides a resource's sync status and why.
func syncStatusOf(v syncView) (SyncStatus, string) {
	switch {
	case !v.managed:
		return SyncUnknown, "unmanaged: not synced"
	case len(v.failed) > 0:
		keys := slices.Sorted(maps.Keys(v.failed))
		return OutOfSync, fmt.Sprintf("%d record(s) not applied: %s: %s", len(keys), keys[0], v.failed[keys[0]])
	case len(v.pending) > 0:
		keys := slices.Sorted(maps.Keys(v.pending))
		oldest := v.pending[keys[0]]
		for _, k := range keys {
			if v.pending[k].Before(oldest) {
				oldest = v.pending[k]
			}
		}
		if v.now.Sub(oldest) > v.grace || !v.linked {
			return OutOfSync, fmt.Sprintf("%d record(s) still being applied at the site (%s, for %s)", len(keys), keys[0],
				v.now.Sub(oldest).Round(time.Second))
		}
		return v.prev, ""
	case v.acked >= v.head && (v.audited || !v.linked && v.prev == InSync):
		return InSync, ""
	case v.acked < v.head && !v.linked:
		return OutOfSync, fmt.Sprintf("offline: changes up to version %d wait for it (it holds %d)", v.head, v.acked)
	case v.acked < v.head && v.behind > v.grace:
		why := fmt.Sprintf("behind for %s: holds version %d of %d", v.behind.Round(time.Second), v.acked, v.head)
		if v.lastErr != "" {
			why += ": " + v.lastErr
		}
		return OutOfSync, why
	}
	return v.prev, ""
}

// sweep recomputes every status, persists transitions and acknowledged
// cursors, and raises or clears 280.002.
func (e *syncEngine) sweep(ctx context.Context, now time.Time) {
	type write struct {
		st       SiteSyncState
		changed  bool // the status changed
		raise    bool
		clear    bool
		resource string
	}
	var writes []write
	e.mu.Lock()
	for _, s := range e.state {
		for name, r := range s.res {
			head := e.heads[name]
			if s.linked && s.managed && r.acked < head {
				if r.behindSince.IsZero() {
					r.behindSince = now
				}
			} else {
				r.behindSince = time.Time{}
			}
			var behind time.Duration
			if !r.behindSince.IsZero() {
				behind = now.Sub(r.behindSince)
			}
			st, why := syncStatusOf(syncView{managed: s.managed, linked: s.linked, audited: r.audited, acked: r.acked,
				head: head, behind: behind, grace: e.cfg.Grace, failed: r.failed, pending: r.pending, now: now, lastErr: r.lastErr,
				prev: r.status})
			w := write{resource: name}
			if st != r.status {
				if !slices.Contains(syncStatusNext[r.status], st) {
					e.log.Error("sync: impossible status transition", "site", s.name, "resource", name, "from", r.status, "to", st)
				}
				r.status, r.since, w.changed = st, now, true
			}
			if st != InSync || w.changed {
				r.reason = why
			}
			switch {
			case !r.alarmed && st == OutOfSync && now.Sub(r.since) >= e.cfg.AlarmAfter:
				w.raise = true
			case r.alarmed && st == SyncUnknown:
				w.clear = true
			case r.alarmed && st == InSync && now.Sub(r.since) >= e.cfg.ClearAfter && now.Sub(r.raised) >= e.cfg.MinAlarm:
				w.clear = true
			}
			if w.changed || w.raise || w.clear || r.dirty {
				r.dirty = false
				w.st = SiteSyncState{Site: s.name, Resource: name, Acked: r.acked, Status: r.status, Since: r.since,
					Reason: truncate(r.reason, maxText), AuditAt: r.auditAt, Alarmed: r.alarmed, Pending: len(r.pending)}
				writes = append(writes, w)
			}
		}
	}
	e.mu.Unlock()
	sort.Slice(writes, func(i, j int) bool { return writes[i].st.Site < writes[j].st.Site })
	// Alarms first (each its own record), then every state in one
	// transaction: after a reconnect storm thousands change in one sweep.
	var sts []SiteSyncState
	var changed []write
	for _, w := range writes {
		entity := "subcloud=" + w.st.Site + ".resource=" + w.resource
		switch {
		case w.raise:
			if _, _, err := e.alarms.Raise(ctx, "280.002", entity, map[string]string{"subcloud": w.st.Site, "resource": w.resource}); err != nil {
				e.log.Error("raising 280.002 failed", "site", w.st.Site, "resource", w.resource, "err", err)
				continue
			}
			w.st.Alarmed = true
			e.setAlarmed(w.st.Site, w.resource, true, now)
		case w.clear:
			if _, err := e.alarms.Clear(ctx, "280.002", entity); err != nil {
				e.log.Error("clearing 280.002 failed", "site", w.st.Site, "resource", w.resource, "err", err)
				continue
			}
			w.st.Alarmed = false
			e.setAlarmed(w.st.Site, w.resource, false, now)
		}
		sts = append(sts, w.st)
		if w.changed {
			changed = append(changed, w)
		}
	}
	if err := e.store.SetSiteSyncStates(ctx, sts); err != nil {
		e.log.Warn("recording sync states failed", "states", len(sts), "err", err)
		for _, st := range sts {
			e.markDirty(st.Site, st.Resource)
		}
		return
	}
	var sites []string
	for _, w := range changed {
		if len(sites) == 0 || sites[len(sites)-1] != w.st.Site {
			sites = append(sites, w.st.Site)
		}
		if len(changed) <= 100 {
			e.log.Info("sync status", "site", w.st.Site, "resource", w.resource, "status", w.st.Status, "reason", w.st.Reason)
		}
	}
	if len(changed) > 100 {
		n := map[SyncStatus]int{}
		for _, w := range changed {
			n[w.st.Status]++
		}
		e.log.Info("sync statuses changed", "sites", len(sites), "resources", len(changed), "in_sync", n[InSync], "out_of_sync", n[OutOfSync], "unknown", n[SyncUnknown])
	}
	e.recordSubclouds(ctx, sites)
}

func (e *syncEngine) setAlarmed(site, resource string, on bool, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.state[site]; s != nil {
		if r := s.res[resource]; r != nil {
			r.alarmed = on
			if on {
				r.raised = now
			}
		}
	}
}

func (e *syncEngine) markDirty(site, resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.state[site]; s != nil {
		if r := s.res[resource]; r != nil {
			r.dirty = true
		}
	}
}

// statuses is site's sync status per resource, as the engine holds it.
func (e *syncEngine) statuses(site string) map[string]SyncStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]SyncStatus{}
	if s := e.state[site]; s != nil {
		for name, r := range s.res {
			out[name] = r.status
		}
	}
	return out
}

// recordSubclouds writes sites' statuses into their registry records
// (one transaction), which `subcloud show` reads, and tells the stream.
func (e *syncEngine) recordSubclouds(ctx context.Context, sites []string) {
	if len(sites) == 0 {
		return
	}
	scs, err := e.reg.UpdateSubclouds(ctx, sites, func(sc *Subcloud) error {
		sc.Sync = e.statuses(sc.Name)
		return nil
	})
	if err != nil {
		e.log.Warn("recording subclouds' sync status failed", "sites", len(sites), "err", err)
		return
	}
	for _, sc := range scs {
		e.publish("subcloud", sc)
	}
}

// truncate cuts s to at most n bytes, dropping a rune it would split.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
