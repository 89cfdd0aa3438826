package central

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// availabilityNext is the subcloud availability state machine.
var availabilityNext = map[Availability][]Availability{
	Online:  {Offline},
	Offline: {Online},
}

// CanTo reports whether availability may change to next.
func (a Availability) CanTo(next Availability) bool {
	return slices.Contains(availabilityNext[a], next)
}

// ErrInvalidTransition reports a subcloud state change the tables forbid.
var ErrInvalidTransition = errs.New(errs.InvalidTransition, "invalid subcloud state transition")

// Transition is a change of a subcloud's availability, with its reason.
type Transition struct {
	Site     string
	From, To Availability
	At       time.Time
	Reason   string
}

// Tracker decides subclouds' availability from the updates they send over
// their dial-home connections. A site goes offline only after Misses
// consecutive update intervals without any update — never on a single miss —
// and comes back online with its first update. Time is passed in, so the
// tracker is deterministic and tested without clocks.
type Tracker struct {
	interval time.Duration
	misses   int

	mu    sync.Mutex
	sites map[string]*tracked
}

type tracked struct {
	avail Availability
	last  time.Time // last update; zero if never seen
	grace time.Time // not declared offline before this (after a central restart)
}

// Tracker defaults: an update (summary delta or keepalive) every 5 s, and
// offline after 4 missed: silent for 4.5 intervals (22.5 s) after the last
// update, so declared 17.5-23.5 s after a site's last word (T3 asks p99 ≤
// 30 s). Three updates lost in a row leave a gap of 4 intervals (up to 21 s
// with the sites' ±5 % jitter): the half interval keeps that online, so at
// 1 % independent loss a false offline needs four losses in a row (1 in
// 10^8 updates: at 10,000 sites, one in about 14 hours). Three missed
// would be one in 10^6: several an hour at that scale.
const (
	DefaultUpdateInterval = 5 * time.Second
	DefaultMisses         = 4
)

// NewTracker returns a tracker; zero arguments take the defaults.
func NewTracker(interval time.Duration, misses int) *Tracker {
	if interval <= 0 {
		interval = DefaultUpdateInterval
	}
	if misses < 2 {
		misses = DefaultMisses // one miss must never suffice
	}
	return &Tracker{interval: interval, misses: misses, sites: map[string]*tracked{}}
}

// Add starts tracking a site as offline (not seen yet). Adding a tracked
// site changes nothing.
func (t *Tracker) Add(site string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.sites[site]; !ok {
		t.sites[site] = &tracked{avail: Offline}
	}
}

// Resume starts tracking a site that was online before central restarted:
// online, and not declared offline before grace has passed from now, so a
// site that reconnects within its reconnect backoff is never falsely
// offline, and one that does not goes offline when grace ends.
func (t *Tracker) Resume(site string, now time.Time, grace time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sites[site] = &tracked{avail: Online, last: now, grace: now.Add(grace)}
}

// Remove stops tracking a site.
func (t *Tracker) Remove(site string) {
	t.mu.Lock()
	delete(t.sites, site)
	t.mu.Unlock()
}

// Seen records an update from site at time at. It returns the transition
// to online if the update brought the site back, else nil. Updates from
// sites that are not tracked are an error (the caller rejects them).
func (t *Tracker) Seen(site string, at time.Time) (*Transition, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.sites[site]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrSubcloudNotFound, site)
	}
	if at.After(s.last) {
		s.last = at
	}
	if s.avail == Online {
		return nil, nil
	}
	if !s.avail.CanTo(Online) {
		return nil, fmt.Errorf("%w: %s -> %s", ErrInvalidTransition, s.avail, Online)
	}
	s.avail = Online
	return &Transition{Site: site, From: Offline, To: Online, At: at, Reason: "update received"}, nil
}

// silence is how long a site may go without an update and stay online:
// Misses missed updates are Misses+1 intervals between two that arrive;
// Misses intervals and a half leave Misses-1 losses in a row (and clock
// jitter) online and mark Misses offline.
func (t *Tracker) silence() time.Duration {
	return time.Duration(t.misses)*t.interval + t.interval/2
}

// Silence is how long a site may go without an update and stay online.
func (t *Tracker) Silence() time.Duration { return t.silence() }

// Sweep marks offline every online site silent for Misses intervals at now
// and returns those transitions, sorted by site. Call it about once per
// interval.
func (t *Tracker) Sweep(now time.Time) []Transition {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := t.silence()
	var out []Transition
	for name, s := range t.sites {
		if s.avail != Online || now.Sub(s.last) < limit || now.Before(s.grace) {
			continue
		}
		s.avail = Offline
		out = append(out, Transition{Site: name, From: Online, To: Offline, At: now,
			Reason: fmt.Sprintf("no update for %s (%d intervals of %s)", now.Sub(s.last).Round(time.Millisecond), t.misses, t.interval)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Site < out[j].Site })
	return out
}

// Availability returns a site's current availability and last update.
func (t *Tracker) Availability(site string) (Availability, time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.sites[site]
	if !ok {
		return "", time.Time{}, false
	}
	return s.avail, s.last, true
}
