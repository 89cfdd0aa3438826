package server

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/faultmgr/faultdb"
)

// HistoryConfig bounds the event history (file keys under history:).
type HistoryConfig struct {
	MaxEvents int    `json:"max_events"` // keep at most this many; default 200,000 at a site, 5,000,000 at central
	MaxAge    string `json:"max_age"`    // Go duration; default 2160h (90 days)
	// HardMax is the bound even for events not yet shipped to central or
	// delivered to webhooks; default 5 × max_events.
	HardMax int `json:"hard_max"`
	// Interval is how often the history is trimmed; default 1m.
	Interval string `json:"interval"`
}

// history is the resolved policy.
type history struct {
	maxEvents, hardMax int
	maxAge, interval   time.Duration
}

func (h HistoryConfig) resolve(daemon string) (history, error) {
	r := history{maxEvents: h.MaxEvents, hardMax: h.HardMax, maxAge: 90 * 24 * time.Hour, interval: time.Minute}
	if r.maxEvents == 0 {
		r.maxEvents = 200_000
		if daemon == "central" {
			r.maxEvents = 5_000_000
		}
	}
	if r.hardMax == 0 {
		r.hardMax = 5 * r.maxEvents
	}
	for _, f := range []struct {
		name string
		v    string
		d    *time.Duration
		min  time.Duration
	}{{"history.max_age", h.MaxAge, &r.maxAge, time.Hour}, {"history.interval", h.Interval, &r.interval, time.Second}} {
		if f.v == "" {
			continue
		}
		d, err := time.ParseDuration(f.v)
		if err != nil || d < f.min {
			return r, fmt.Errorf("config: %s %q: want a duration of at least %s", f.name, f.v, f.min)
		}
		*f.d = d
	}
	if r.maxEvents < 1000 || r.hardMax < r.maxEvents {
		return r, fmt.Errorf("config: history: max_events must be at least 1000 and hard_max at least max_events")
	}
	return r, nil
}

// logFloors are the readers of the event log that have not caught up:
// trimming keeps what they still need (up to the hard bound).
type logFloors struct {
	mu     sync.Mutex
	floors []func(context.Context) (uint64, error)
}

// AddLogFloor registers a reader of the event log (shipping to central,
// webhook delivery): history above the sequence number it returns is kept
// unless the hard bound is reached.
func (s *Server) AddLogFloor(f func(context.Context) (uint64, error)) {
	s.floors.mu.Lock()
	defer s.floors.mu.Unlock()
	s.floors.floors = append(s.floors.floors, f)
}

func (s *Server) floor(ctx context.Context) (uint64, error) {
	s.floors.mu.Lock()
	fs := append([]func(context.Context) (uint64, error){}, s.floors.floors...)
	s.floors.mu.Unlock()
	low := uint64(math.MaxUint64)
	for _, f := range fs {
		n, err := f(ctx)
		if err != nil {
			return 0, err
		}
		low = min(low, n)
	}
	return low, nil
}

// retain trims the history every interval until ctx ends.
func (s *Server) retain(ctx context.Context) {
	tick := time.NewTicker(s.hist.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fl, err := s.floor(ctx)
		if err != nil {
			s.cfg.Logger.Warn("history not trimmed: a reader's position is unknown", "err", err)
			continue
		}
		n, err := s.FaultLog.Trim(ctx, faultdb.TrimPolicy{MaxEvents: s.hist.maxEvents, MaxAge: s.hist.maxAge,
			HardMax: s.hist.hardMax, Floor: fl, Now: time.Now().UTC()})
		if err != nil {
			s.cfg.Logger.Error("trimming the history failed", "err", err)
		} else if n > 0 {
			s.cfg.Logger.Info("history trimmed", "events", n)
		}
	}
}
