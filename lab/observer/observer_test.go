package observer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/demo"
)

// fakeSite is the round source of the unit tests: what each member
// answers and which addresses each namespace holds, changed by the test.
type fakeSite struct {
	mu      sync.Mutex
	answers map[string]Answer       // by host
	addrs   map[string][]netip.Addr // by namespace
	slow    map[string]bool         // hosts that answer only when their deadline passes
}

func newFakeSite() *fakeSite {
	return &fakeSite{answers: map[string]Answer{}, addrs: map[string][]netip.Addr{}, slow: map[string]bool{}}
}

func (f *fakeSite) fetch(ctx context.Context, t Target) Answer {
	f.mu.Lock()
	a, slow := f.answers[t.Host], f.slow[t.Host]
	f.mu.Unlock()
	if slow {
		<-ctx.Done()
		return Answer{Err: ctx.Err().Error()}
	}
	return a
}

func (f *fakeSite) listAddrs(_ context.Context, ns string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[ns]
	if !ok {
		return nil, errors.New("no such namespace")
	}
	return slices.Clone(a), nil
}

// role makes host answer as the demo service does for role (and epoch).
func (f *fakeSite) role(host string, role servicemgr.Role, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	status := http.StatusServiceUnavailable
	if role == servicemgr.RoleActive {
		status = http.StatusOK
	}
	f.answers[host] = Answer{Status: status, Role: role, Group: "g", Epoch: epoch}
}

// hold sets the addresses of host's namespace ("ns-"+host).
func (f *fakeSite) hold(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs["ns-"+host] = nil
	for _, a := range addrs {
		f.addrs["ns-"+host] = append(f.addrs["ns-"+host], netip.MustParseAddr(a))
	}
}

func (f *fakeSite) setSlow(host string, slow bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slow[host] = slow
}

const floating = "10.89.0.100"

// startFake runs an Observer of hosts a, b and c over a fakeSite (a
// active at epoch 1 holding the floating address, b and c standby) until
// the test ends. Call it inside a synctest bubble.
func startFake(t *testing.T, cfg Config) (*Observer, *fakeSite) {
	t.Helper()
	f := newFakeSite()
	for _, h := range []string{"a", "b", "c"} {
		cfg.Members = append(cfg.Members, Target{Host: h, Netns: "ns-" + h, URL: "http://10.89.0.1:8080/"})
		f.role(h, servicemgr.RoleStandby, 1)
		f.hold(h)
	}
	f.role("a", servicemgr.RoleActive, 1)
	f.hold("a", "10.89.0.10", floating)
	cfg.Floating = []string{floating}
	cfg.Fetch, cfg.ListAddrs = f.fetch, f.listAddrs
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
	})
	return o, f
}

func actives(hosts ...string) func(Snapshot) bool {
	return func(s Snapshot) bool {
		var got []string
		for _, a := range s.Actives {
			got = append(got, a.Host)
		}
		return slices.Equal(got, hosts)
	}
}

func holders(hosts ...string) func(Snapshot) bool {
	return func(s Snapshot) bool { return slices.Equal(s.Holders[floating], hosts) }
}

func both(p, q func(Snapshot) bool) func(Snapshot) bool {
	return func(s Snapshot) bool { return p(s) && q(s) }
}

func waitFor(t *testing.T, o *Observer, what string, pred func(Snapshot) bool) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // virtual time
	defer cancel()
	at, err := o.WaitFor(ctx, pred)
	if err != nil {
		t.Fatalf("WaitFor(%s) = %v; latest round: %s", what, err, o.Snapshot())
	}
	return at
}

// rounds waits until n more rounds have been recorded.
func rounds(t *testing.T, o *Observer, n uint64) {
	t.Helper()
	seq := o.Snapshot().Seq + n
	waitFor(t, o, "more rounds", func(s Snapshot) bool { return s.Seq >= seq })
}

func TestTooManyActivesIsAViolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{N: 1})
		waitFor(t, o, "a active", actives("a"))
		if v := o.Violations(); len(v) != 0 {
			t.Fatalf("Violations() with one active = %+v; want none", v)
		}

		f.role("b", servicemgr.RoleActive, 2)
		first := waitFor(t, o, "a and b active", actives("a", "b"))
		rounds(t, o, 3)
		f.role("a", servicemgr.RoleStandby, 2)
		over := waitFor(t, o, "b active", actives("b"))

		vs := o.Violations()
		if len(vs) != 1 {
			t.Fatalf("Violations() = %+v; want one", vs)
		}
		v := vs[0]
		if v.Kind != TooManyActives || !slices.Equal(v.Hosts, []string{"a", "b"}) ||
			v.Detail != "2 actives, at most 1 allowed: a@1 b@2" {
			t.Errorf("violation = %+v; want too-many-actives of a@1 b@2", v)
		}
		if !v.First.Equal(first) || !v.Last.Before(over) || v.Rounds < 4 {
			t.Errorf("violation First %v Last %v Rounds %d; want First %v, Last before %v, at least 4 rounds",
				v.First, v.Last, v.Rounds, first, over)
		}
		if want := v.First.Add(time.Duration(v.Rounds-1) * DefaultInterval); !v.Last.Equal(want) {
			t.Errorf("violation Last = %v; want %v (one round every %s)", v.Last, want, DefaultInterval)
		}

		// A new epoch of the same hosts is another violation.
		f.role("a", servicemgr.RoleActive, 3)
		waitFor(t, o, "a and b active", actives("a", "b"))
		f.role("b", servicemgr.RoleActive, 3)
		waitFor(t, o, "a@3 b@3", func(s Snapshot) bool { return len(s.Actives) == 2 && s.Actives[1].Epoch == 3 })
		if vs := o.Violations(); len(vs) != 3 || vs[2].Detail != "2 actives, at most 1 allowed: a@3 b@3" {
			t.Errorf("Violations() = %+v; want 3, the last of a@3 b@3", vs)
		}
	})
}

func TestNActivesAreAllowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{N: 2, Group: "g"})
		f.role("b", servicemgr.RoleActive, 1)
		waitFor(t, o, "a and b active", actives("a", "b"))
		// Neither a 200 of another group, nor a 200 without the active role,
		// nor a 503 that says active, is an active.
		f.mu.Lock()
		f.answers["c"] = Answer{Status: 200, Role: servicemgr.RoleActive, Group: "other", Epoch: 1}
		f.mu.Unlock()
		rounds(t, o, 2)
		for _, ans := range []Answer{
			{Status: 200, Role: servicemgr.RoleStandby, Group: "g"},
			{Status: 503, Role: servicemgr.RoleActive, Group: "g"},
		} {
			f.mu.Lock()
			f.answers["c"] = ans
			f.mu.Unlock()
			rounds(t, o, 2)
		}
		if s := o.Snapshot(); !actives("a", "b")(s) {
			t.Errorf("actives = %v; want a and b", s.Actives)
		}
		if v := o.Violations(); len(v) != 0 {
			t.Errorf("Violations() with N=2 and 2 actives = %+v; want none", v)
		}
	})
}

func TestSharedAddressIsAViolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{})
		waitFor(t, o, "a holds the address", holders("a"))
		f.hold("b", "10.89.0.11", floating)
		first := waitFor(t, o, "a and b hold it", holders("a", "b"))
		f.hold("a", "10.89.0.10")
		waitFor(t, o, "b holds it", holders("b"))
		f.hold("b", "10.89.0.11")
		waitFor(t, o, "nobody holds it", holders())

		vs := o.Violations()
		if len(vs) != 1 {
			t.Fatalf("Violations() = %+v; want one", vs)
		}
		if v := vs[0]; v.Kind != SharedAddress || v.Address != floating || !slices.Equal(v.Hosts, []string{"a", "b"}) ||
			!v.First.Equal(first) || v.Detail != floating+" held by a and b" {
			t.Errorf("violation = %+v; want shared-address %s by a and b from %v", v, floating, first)
		}
	})
}

func TestUnlistableNamespaceIsRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{})
		f.mu.Lock()
		delete(f.addrs, "ns-c")
		f.mu.Unlock()
		waitFor(t, o, "c's addresses unknown", func(s Snapshot) bool { return s.AddrErrors["c"] != "" })
		if s := o.Snapshot(); !slices.Equal(s.Holders[floating], []string{"a"}) {
			t.Errorf("holders = %v; want a", s.Holders)
		}
	})
}

func TestWaitFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{})
		// Before the first round, nothing is satisfied yet.
		first := waitFor(t, o, "any round", func(Snapshot) bool { return true })
		if s := o.Snapshot(); s.Seq != 1 || !s.At.Equal(first) {
			t.Errorf("first round = seq %d at %v; want seq 1 at %v", s.Seq, s.At, first)
		}
		rounds(t, o, 2)
		// The latest round satisfies at once: its own time.
		latest := o.Snapshot()
		if at := waitFor(t, o, "a active", actives("a")); !at.Equal(latest.At) {
			t.Errorf("WaitFor(satisfied now) = %v; want the latest round's %v", at, latest.At)
		}
		// Otherwise the first later round that does.
		time.AfterFunc(time.Second, func() { f.role("b", servicemgr.RoleActive, 2) })
		at := waitFor(t, o, "b active", func(s Snapshot) bool { return s.IsActive("b") })
		if want := latest.At.Add(time.Second); at.Before(want) || at.After(want.Add(DefaultInterval)) {
			t.Errorf("WaitFor(b active) = %v; want within one round after %v", at, want)
		}
		// A context that ends first.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := o.WaitFor(ctx, func(Snapshot) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitFor(never) = %v; want context.DeadlineExceeded", err)
		}
	})
}

func TestWaitForAfterStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeSite()
		f.role("a", servicemgr.RoleActive, 1)
		o, err := New(Config{Members: []Target{{Host: "a", Netns: "ns-a", URL: "http://10.89.0.10:80/"}},
			Fetch: f.fetch, ListAddrs: f.listAddrs, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		pending := make(chan error, 1)
		go func() {
			_, err := o.WaitFor(context.Background(), func(Snapshot) bool { return false })
			pending <- err
		}()
		synctest.Wait()
		cancel()
		<-done
		if err := <-pending; !errors.Is(err, ErrStopped) {
			t.Errorf("pending WaitFor after Run returned = %v; want ErrStopped", err)
		}
		if _, err := o.WaitFor(context.Background(), func(Snapshot) bool { return false }); !errors.Is(err, ErrStopped) {
			t.Errorf("WaitFor after Run returned = %v; want ErrStopped", err)
		}
		if err := o.Run(context.Background()); err == nil {
			t.Errorf("second Run() = nil; want an error")
		}
	})
}

// TestHistoryAndOutage: a fault takes the active away, b takes over; the
// history has one period per state, and Outage measures it.
func TestHistoryAndOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{})
		waitFor(t, o, "a active", actives("a"))
		rounds(t, o, 5)
		t0 := time.Now()
		f.setSlow("a", true) // a hangs: no answer within the timeout
		f.hold("a")
		lost := waitFor(t, o, "no active", actives())
		rounds(t, o, 5)
		f.role("b", servicemgr.RoleActive, 2)
		f.hold("b", floating)
		back := waitFor(t, o, "b active and holding", both(actives("b"), holders("b")))
		rounds(t, o, 2)

		h := o.History()
		var states []string
		for _, p := range h {
			states = append(states, p.String())
		}
		// The second state change (the address goes) may come in the same
		// round as the silence, or in the next: accept both.
		if len(h) < 3 || len(h) > 5 || !actives("a")(h[0].Snapshot) || !actives("b")(h[len(h)-1].Snapshot) {
			t.Fatalf("History() = %q; want a active, then none, then b", states)
		}
		if h[0].Rounds < 6 || !h[len(h)-1].Last.Equal(o.Snapshot().At) {
			t.Errorf("History() first period %d rounds, last ends %v; want at least 6 rounds, ending at the latest round %v",
				h[0].Rounds, h[len(h)-1].Last, o.Snapshot().At)
		}
		for _, p := range h {
			if p.Seq == 0 || p.Rounds < 1 || p.Last.Before(p.At) {
				t.Errorf("period %+v: want a seq, rounds and Last >= At", p)
			}
		}

		ok := func(s Snapshot) bool {
			return len(s.Actives) == 1 && slices.Equal(s.Holders[floating], []string{s.Actives[0].Host})
		}
		gotLost, gotBack, found := o.Outage(t0, ok)
		if !found || !gotLost.Equal(lost) && !gotLost.Before(lost) || !gotBack.Equal(back) {
			t.Errorf("Outage(t0) = %v, %v, %v; want lost by %v, back at %v", gotLost, gotBack, found, lost, back)
		}
		if gotLost.Before(t0) {
			t.Errorf("Outage(t0) lost = %v; want not before t0 %v", gotLost, t0)
		}
		if _, _, found := o.Outage(back, ok); found {
			t.Errorf("Outage(after recovery) found one; want none")
		}
	})
}

// TestRoundTiming: a round starts every Interval, and a member that does
// not answer costs its round the Timeout, not more.
func TestRoundTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, f := startFake(t, Config{Interval: 100 * time.Millisecond, Timeout: 250 * time.Millisecond})
		waitFor(t, o, "first round", func(Snapshot) bool { return true })
		start := o.Snapshot()
		time.Sleep(time.Second) // virtual
		synctest.Wait()
		if s := o.Snapshot(); s.Seq != start.Seq+10 || s.Took != 0 {
			t.Errorf("after 1 s: seq %d took %v; want %d rounds later, each taking no (virtual) time", s.Seq, s.Took, 10)
		}
		f.setSlow("c", true)
		s1 := o.Snapshot()
		s2 := waitFor(t, o, "c silent", func(s Snapshot) bool { return s.Members[2].Status == 0 })
		s := o.Snapshot()
		if s.Took != 250*time.Millisecond || s.Members[2].Err == "" || !s2.After(s1.At) {
			t.Errorf("round with a silent member took %v, c's answer %+v; want 250ms and an error", s.Took, s.Members[2])
		}
		rounds(t, o, 1)
		if next := o.Snapshot(); next.At.Sub(s.At) != 250*time.Millisecond {
			t.Errorf("the round after a 250ms round started %v later; want 250ms (at once)", next.At.Sub(s.At))
		}
	})
}

func TestCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var changes []string
		var violations []ViolationKind
		o, f := startFake(t, Config{
			OnChange: func(s Snapshot) {
				mu.Lock()
				defer mu.Unlock()
				changes = append(changes, s.String())
			},
			OnViolation: func(v Violation) {
				mu.Lock()
				defer mu.Unlock()
				violations = append(violations, v.Kind)
			},
		})
		rounds(t, o, 3)
		f.role("b", servicemgr.RoleActive, 2)
		waitFor(t, o, "a and b", actives("a", "b"))
		rounds(t, o, 3)
		mu.Lock()
		defer mu.Unlock()
		want := []string{
			"actives: a@1  " + floating + ": a",
			"actives: a@1 b@2  " + floating + ": a",
		}
		if !slices.Equal(changes, want) {
			t.Errorf("OnChange calls = %q; want %q", changes, want)
		}
		if !slices.Equal(violations, []ViolationKind{TooManyActives}) {
			t.Errorf("OnViolation calls = %v; want one too-many-actives", violations)
		}
	})
}

func TestNewChecksConfig(t *testing.T) {
	lg := slog.New(slog.DiscardHandler)
	ok := Target{Host: "a", Netns: "ns-a", URL: "http://10.89.0.10:8080/"}
	for name, cfg := range map[string]Config{
		"no logger":       {Members: []Target{ok}},
		"no members":      {Logger: lg},
		"negative N":      {Logger: lg, Members: []Target{ok}, N: -1},
		"no netns":        {Logger: lg, Members: []Target{{Host: "a", URL: ok.URL}}},
		"https":           {Logger: lg, Members: []Target{{Host: "a", Netns: "n", URL: "https://10.89.0.10:8080/"}}},
		"name, not IP":    {Logger: lg, Members: []Target{{Host: "a", Netns: "n", URL: "http://web:8080/"}}},
		"no port":         {Logger: lg, Members: []Target{{Host: "a", Netns: "n", URL: "http://10.89.0.10/"}}},
		"same host twice": {Logger: lg, Members: []Target{ok, ok}},
		"prefix":          {Logger: lg, Members: []Target{ok}, Floating: []string{"10.89.0.100/24"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%s) = nil error; want one", name)
		}
	}
}

func TestParseAddrs(t *testing.T) {
	// mgmt is down (a powered-off lab host): its address is held by no one.
	out := `[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}]},` +
		`{"ifindex":2,"ifname":"cluster","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"10.89.2.10","prefixlen":24},{"family":"inet","local":"10.89.2.100","prefixlen":24}]},` +
		`{"ifindex":3,"ifname":"mgmt","flags":["NO-CARRIER","BROADCAST","MULTICAST"],"addr_info":[{"family":"inet","local":"10.88.2.100","prefixlen":24}]}]`
	got, err := parseAddrs([]byte(out))
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("10.89.2.10"), netip.MustParseAddr("10.89.2.100")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseAddrs() = %v, %v; want %v", got, err, want)
	}
	if _, err := parseAddrs([]byte("Cannot open network namespace")); err == nil {
		t.Errorf("parseAddrs(not JSON) = nil error; want one")
	}
}

// TestFetchReadsTheDemoService: the real fetch against the demo service's
// handler, on loopback.
func TestFetchReadsTheDemoService(t *testing.T) {
	dir := t.TempDir()
	s, err := demo.New(demo.Config{StateDir: dir, Host: "h", Group: "g", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for _, tc := range []struct {
		file string
		want Answer
	}{
		{"", Answer{Status: 503, Role: demo.RoleUnknown, Group: "g"}},
		{`{"host":"h","group":"g","role":"standby","epoch":4}`, Answer{Status: 503, Role: servicemgr.RoleStandby, Group: "g", Epoch: 4}},
		{`{"host":"h","group":"g","role":"active","epoch":5}`, Answer{Status: 200, Role: servicemgr.RoleActive, Group: "g", Epoch: 5}},
	} {
		if tc.file != "" {
			os.WriteFile(filepath.Join(dir, demo.RoleFileName), []byte(tc.file), 0o644)
		}
		got := fetchWith(t.Context(), c, srv.URL+"/")
		got.Latency = 0
		if got != tc.want {
			t.Errorf("fetch with role.json %q = %+v; want %+v", tc.file, got, tc.want)
		}
	}
	srv.Close()
	if got := fetchWith(t.Context(), c, srv.URL+"/"); got.Status != 0 || got.Err == "" {
		t.Errorf("fetch of a closed server = %+v; want no status and an error", got)
	}
}
