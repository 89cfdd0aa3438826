package central_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/coord/coordtest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// pairMember is one central of a pair, run in this process.
type pairMember struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	active *central.Central
}

func (m *pairMember) current() *central.Central {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

func startPairMember(t *testing.T, cli *coord.Client, cfg central.Config, name string) *pairMember {
	t.Helper()
	lead, err := coord.NewLeadership(coord.LeadershipConfig{Client: cli, Prefix: central.ElectionPrefix, Name: name,
		SessionTTL: time.Second, RetryDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &pairMember{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() {
		m.done <- central.RunPair(ctx, cfg, name, lead, func(c *central.Central) {
			m.mu.Lock()
			m.active = c
			m.mu.Unlock()
		})
		lead.Close()
	}()
	t.Cleanup(func() { m.stop() })
	return m
}

func (m *pairMember) stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		m.cancel = nil
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestConformanceCentralPair: two centrals on one database and one etcd;
// the leader serves, the other waits; when the leader stops, the other
// takes over on the same addresses with nothing lost: every acknowledged
// write is there, the site reconnects by itself, and sync carries on.
func TestConformanceCentralPair(t *testing.T) {
	sqldbtest.EachDSN(t, func(t *testing.T, dsn string) {
		cli := coordtest.Start(t)
		shell := servertest.Shell(t)
		shell.Listen, shell.Database = freeLoopback(t), dsn
		cfg := central.Config{Shell: shell, SiteListen: freeLoopback(t), UpdateInterval: interval, RestartGrace: 10 * time.Second}
		a := startPairMember(t, cli, cfg, "central-0")
		waitFor(t, "central-0 active", func() (bool, string) { return a.current() != nil, "" })
		b := startPairMember(t, cli, cfg, "central-1")
		f := fleet{c: a.current(), admin: plainClient(t, a.current(), servertest.AdminToken(t, a.current())), dir: shell.DataDir}
		cert, key := f.siteFiles(t, "site-a")
		f.startSiteServer(t, servertest.Shell(t), "site-a", cert, key)
		f.waitAvailability(t, "site-a", central.Online)
		ctx := context.Background()
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/action", nil, central.SubcloudActionRequest{Action: "manage"}, nil); err != nil {
			t.Fatal(err)
		}
		if b.current() != nil {
			t.Fatal("both centrals active")
		}

		// A writer creates flavors through the pair's one address and
		// remembers every acknowledged one.
		var (
			wmu   sync.Mutex
			acked []string
		)
		wctx, wstop := context.WithCancel(ctx)
		wdone := make(chan struct{})
		go func() {
			defer close(wdone)
			for i := 0; wctx.Err() == nil; i++ {
				var fl compute.Flavor
				cctx, cancel := context.WithTimeout(wctx, 2*time.Second)
				err := f.admin.Do(cctx, http.MethodPost, "/v1/flavors", nil,
					central.FlavorRequest{Name: fmt.Sprintf("w%04d", i), VCPUs: 1, RAMMiB: 64, DiskGiB: 1, Public: true}, &fl)
				cancel()
				if err == nil {
					wmu.Lock()
					acked = append(acked, fl.ID)
					wmu.Unlock()
				}
				time.Sleep(20 * time.Millisecond) // the writer's pace
			}
		}()
		waitFor(t, "some writes", func() (bool, string) { wmu.Lock(); defer wmu.Unlock(); return len(acked) >= 5, "" })
		a.stop() // central-0 stops; central-1 takes over
		waitFor(t, "central-1 active", func() (bool, string) { return b.current() != nil, "" })
		f.c = b.current()
		before := func() int { wmu.Lock(); defer wmu.Unlock(); return len(acked) }()
		waitFor(t, "writes after the takeover", func() (bool, string) { wmu.Lock(); defer wmu.Unlock(); return len(acked) >= before+5, "" })
		wstop()
		<-wdone
		var list struct{ Items []compute.Flavor }
		admin := plainClient(t, b.current(), servertest.AdminToken(t, b.current()))
		if err := admin.Do(ctx, http.MethodGet, "/v1/flavors", url.Values{"limit": {"1000"}}, nil, &list); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, fl := range list.Items {
			have[fl.ID] = true
		}
		wmu.Lock()
		for _, id := range acked {
			if !have[id] {
				t.Errorf("acknowledged flavor %s lost in the failover", id)
			}
		}
		n := len(acked)
		wmu.Unlock()
		// The site reconnects to the new leader; the flavors reach it.
		nova := relayNova(t, fleet{c: b.current(), admin: admin, dir: shell.DataDir}, "site-a")
		waitFor(t, "site-a has every flavor through the new leader", func() (bool, string) {
			got, err := siteFlavors(t, nova)
			c := 0
			for range splitNonEmpty(got) {
				c++
			}
			return err == nil && c >= n, fmt.Sprintf("%d of %d, %v", c, n, err)
		})
		t.Logf("%d writes acknowledged across the failover, none lost", n)
	})
}

func splitNonEmpty(s string) map[string]bool {
	out := map[string]bool{}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out[s[start:i]] = true
			}
			start = i + 1
		}
	}
	return out
}

// TestConformanceCentralEpochFences: a central whose term is over cannot
// write once a newer term took the database, and cannot take it back.
func TestConformanceCentralEpochFences(t *testing.T) {
	sqldbtest.EachDSN(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		newCentral := func(epoch uint64) (*central.Central, error) {
			shell := servertest.Shell(t)
			shell.Database = dsn
			return central.New(ctx, central.Config{Shell: shell,
				HA: &central.HAConfig{Name: fmt.Sprintf("c%d", epoch), Epoch: epoch, Authority: func() error { return nil }}})
		}
		old, err := newCentral(5)
		if err != nil {
			t.Fatal(err)
		}
		servertest.Start(t, old)
		oldAPI := plainClient(t, old, servertest.AdminToken(t, old))
		if err := oldAPI.Do(ctx, http.MethodPost, "/v1/subcloud-groups", nil, map[string]string{"name": "before"}, nil); err != nil {
			t.Fatalf("a write in the term: %v", err)
		}
		next, err := newCentral(7)
		if err != nil {
			t.Fatal(err)
		}
		servertest.Start(t, next)
		err = oldAPI.Do(ctx, http.MethodPost, "/v1/subcloud-groups", nil, map[string]string{"name": "after"}, nil)
		var ae *client.Error
		if err == nil || !errors.As(err, &ae) {
			t.Fatalf("the deposed central wrote: %v", err)
		}
		if _, err := newCentral(6); !errors.Is(err, central.ErrDeposed) {
			t.Fatalf("an older term took the database: %v; want ErrDeposed", err)
		}
	})
}
