package central

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/linkproto"
)

// batchStore is a SubcloudStore whose UpdateSubclouds records each call's
// names and, while gate is open, waits for it to close.
type batchStore struct {
	SubcloudStore
	gate    chan struct{}
	entered chan struct{}
	mu      sync.Mutex
	calls   [][]string
	rows    map[string]Subcloud
	fail    error
}

func (s *batchStore) UpdateSubclouds(ctx context.Context, names []string, fn func(*Subcloud) error) ([]Subcloud, error) {
	s.entered <- struct{}{}
	<-s.gate
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, slices.Sorted(slices.Values(names)))
	if s.fail != nil {
		return nil, s.fail
	}
	var out []Subcloud
	for _, n := range slices.Sorted(slices.Values(names)) {
		sc, ok := s.rows[n]
		if !ok {
			continue
		}
		if err := fn(&sc); err != nil {
			return nil, err
		}
		s.rows[n] = sc
		out = append(out, sc)
	}
	return out, nil
}

// TestLinkWriterMergesWhileWriting: the writes that arrive while one
// transaction is under way go in together in the next, one entry per site
// with its newest time and summary; every waiter gets its site as stored;
// a site not in the registry is reported so.
func TestLinkWriterMergesWhileWriting(t *testing.T) {
	st := &batchStore{gate: make(chan struct{}), entered: make(chan struct{}, 100), rows: map[string]Subcloud{}}
	for i := range 50 {
		st.rows[fmt.Sprintf("site-%02d", i)] = Subcloud{Name: fmt.Sprintf("site-%02d", i), Availability: Offline}
	}
	w := newLinkWriter(st, func(string) Availability { return Online })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	type result struct {
		site string
		sc   Subcloud
		ok   bool
		err  error
	}
	results := make(chan result, 200)
	send := func(site string, at time.Time, sum *linkproto.Summary) {
		go func() {
			sc, ok, err := w.write(ctx, site, at, sum)
			results <- result{site, sc, ok, err}
		}()
	}
	// The first write holds the store.
	send("site-00", t0, nil)
	<-st.entered
	// Meanwhile: every site twice (the second newer, with a summary), and
	// one that is not registered.
	for i := range 50 {
		site := fmt.Sprintf("site-%02d", i)
		send(site, t0.Add(time.Second), nil)
		send(site, t0.Add(2*time.Second), &linkproto.Summary{Hosts: i, Version: "v2", Alarms: map[string]int{"major": 1}})
	}
	send("nowhere", t0, nil)
	// Wait until all 101 are queued: pending holds 51 sites.
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		n := 0
		for _, p := range w.pending {
			n += len(p.after)
		}
		w.mu.Unlock()
		if n == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued; want 101", n)
		}
		time.Sleep(time.Millisecond) // polling the queue, under a deadline
	}
	close(st.gate)
	got := map[string][]result{}
	for range 102 {
		r := <-results
		got[r.site] = append(got[r.site], r)
	}
	st.mu.Lock()
	calls := st.calls
	st.mu.Unlock()
	if len(calls) != 2 || len(calls[0]) != 1 || len(calls[1]) != 51 {
		var sizes []int
		for _, c := range calls {
			sizes = append(sizes, len(c))
		}
		t.Fatalf("store calls of %v sites; want 1 then 51 (merged)", sizes)
	}
	for i := range 50 {
		site := fmt.Sprintf("site-%02d", i)
		for _, r := range got[site] {
			if r.err != nil || !r.ok || r.sc.Availability != Online {
				t.Errorf("%s: %+v", site, r)
			}
		}
		sc := st.rows[site]
		if sc.LastSeen == nil || !sc.LastSeen.Equal(t0.Add(2*time.Second)) || sc.Hosts.Total != i || sc.SoftwareVersion != "v2" || sc.Status != StatusOf(Online, AlarmSummary{Major: 1}) {
			t.Errorf("%s stored as %+v; want the newest time and summary", site, sc)
		}
	}
	if r := got["nowhere"]; len(r) != 1 || r[0].ok || r[0].err != nil {
		t.Errorf("an unregistered site's write: %+v; want not ok, no error", r)
	}
}

// TestLinkWriterReportsFailure: a failed transaction reaches every
// waiter of the batch, and the next write goes through.
func TestLinkWriterReportsFailure(t *testing.T) {
	st := &batchStore{gate: make(chan struct{}), entered: make(chan struct{}, 10), rows: map[string]Subcloud{"a": {Name: "a"}},
		fail: errors.New("database gone")}
	close(st.gate)
	w := newLinkWriter(st, func(string) Availability { return Online })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, _, err := w.write(ctx, "a", time.Now(), nil); err == nil || err.Error() != "database gone" {
		t.Fatalf("write = %v; want the store's error", err)
	}
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	if sc, ok, err := w.write(ctx, "a", time.Now(), nil); err != nil || !ok || sc.Availability != Online {
		t.Fatalf("write after recovery = %+v %v %v", sc, ok, err)
	}
}
