// Package ackwriter writes to a site's API continuously and remembers
// every write the API acknowledged, so that a test can check, after
// swacts, failovers and faults, that no acknowledged write was lost
// (docs/ha.md: the fault matrix's second invariant).
//
// A write is a join token (POST /v1/join-tokens) whose description names
// the writer's run and the write's sequence number: cheap, durable in the
// site's database, and listed back by GET /v1/join-tokens. A write that
// failed or timed out is not acknowledged, whatever happened to it.
package ackwriter

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/client"
)

// Writer writes and remembers what was acknowledged.
type Writer struct {
	api      *client.Client
	run      string
	interval time.Duration

	mu      sync.Mutex
	seq     int
	acked   []string
	failed  int
	lastAck time.Time
	gaps    []gap // pauses: time between consecutive acknowledgements above interval*2
}

// gap is one outage: acknowledgements resumed at end after d.
type gap struct {
	end time.Time
	d   time.Duration
}

// New writes through api; run names this writer's writes (unique per
// test run).
func New(api *client.Client, run string, interval time.Duration) *Writer {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	return &Writer{api: api, run: run, interval: interval}
}

// Run writes one record every interval until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.writeOne(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Writer) writeOne(ctx context.Context) {
	w.mu.Lock()
	w.seq++
	desc := fmt.Sprintf("ackwriter %s #%d", w.run, w.seq)
	w.mu.Unlock()
	// A write to a controller that vanished waits on a dead connection:
	// give up after a second (not acknowledged) and try the next.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := w.api.Do(cctx, http.MethodPost, "/v1/join-tokens", nil, map[string]any{"description": desc, "ttl_s": 3600}, nil)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed++
		return
	}
	if !w.lastAck.IsZero() && now.Sub(w.lastAck) > 2*w.interval {
		w.gaps = append(w.gaps, gap{end: now, d: now.Sub(w.lastAck)})
	}
	w.lastAck = now
	w.acked = append(w.acked, desc)
}

// Stats reports the acknowledged and failed writes so far, and the
// outages seen (longest first).
func (w *Writer) Stats() (acked, failed int, gaps []time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.gaps {
		gaps = append(gaps, g.d)
	}
	slices.SortFunc(gaps, func(a, b time.Duration) int { return int(b - a) })
	return len(w.acked), w.failed, gaps
}

// MaxGapSince is the longest outage that ended after t (0: none).
func (w *Writer) MaxGapSince(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m time.Duration
	for _, g := range w.gaps {
		if g.end.After(t) {
			m = max(m, g.d)
		}
	}
	return m
}

// Check lists the site's join tokens and returns the acknowledged writes
// that are missing (none: nothing acknowledged was lost).
func (w *Writer) Check(ctx context.Context) ([]string, error) {
	have := map[string]bool{}
	page := ""
	for {
		var out struct {
			Items []struct {
				Description string `json:"description"`
			} `json:"items"`
			Next string `json:"next_page_token"`
		}
		q := url.Values{"limit": {"500"}}
		if page != "" {
			q.Set("page_token", page)
		}
		if err := w.api.Do(ctx, http.MethodGet, "/v1/join-tokens", q, nil, &out); err != nil {
			return nil, err
		}
		for _, it := range out.Items {
			have[it.Description] = true
		}
		if out.Next == "" {
			break
		}
		page = out.Next
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var missing []string
	for _, d := range w.acked {
		if !have[d] {
			missing = append(missing, d)
		}
	}
	return missing, nil
}
