package coord_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/pki"
)

// Test timings: etcd's fast ticks, so elections take tens of ms.
const (
	testTickMs     = 10
	testElectionMs = 100
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testCA is a throwaway CA in a temp dir issuing the test's certificates.
type testCA struct {
	ca  *pki.CA
	dir string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, dir: dir}
}

func (c *testCA) caFile() string { return filepath.Join(c.dir, pki.CACertFile) }

// peer issues a member certificate (server and client usage) for 127.0.0.1.
func (c *testCA) peer(t *testing.T, name string) coord.TLSFiles {
	t.Helper()
	is, err := c.ca.IssuePeer(name, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.write(t, name, is)
}

// client issues a client certificate.
func (c *testCA) client(t *testing.T, name string) coord.TLSFiles {
	t.Helper()
	is, err := c.ca.IssueClient(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.write(t, name, is)
}

func (c *testCA) write(t *testing.T, name string, is pki.Issued) coord.TLSFiles {
	t.Helper()
	cert, key := filepath.Join(c.dir, name+".crt"), filepath.Join(c.dir, name+".key")
	if err := is.Write(cert, key); err != nil {
		t.Fatal(err)
	}
	return coord.TLSFiles{CertFile: cert, KeyFile: key, CAFile: c.caFile()}
}

// freeAddr returns a 127.0.0.1 address nobody listened on a moment ago.
// Another process may take it before etcd does: callers retry on
// EADDRINUSE (addrInUse).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func addrInUse(err error) bool {
	// etcd does not always wrap the listener's error, so the message is
	// checked too.
	return errors.Is(err, syscall.EADDRINUSE) || (err != nil && strings.Contains(err.Error(), "address already in use"))
}

// memberConfigs returns the configs of an n-member cluster on fresh ports.
func memberConfigs(t *testing.T, ca *testCA, n int) []coord.MemberConfig {
	t.Helper()
	cluster := map[string]string{}
	cfgs := make([]coord.MemberConfig, n)
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i)
		cfgs[i] = coord.MemberConfig{
			Name:       name,
			DataDir:    filepath.Join(t.TempDir(), "etcd"),
			PeerAddr:   freeAddr(t),
			ClientAddr: freeAddr(t),
			TLS:        ca.peer(t, name),
			TickMs:     testTickMs,
			ElectionMs: testElectionMs,
			Logger:     testLogger(t),
		}
		cluster[name] = cfgs[i].PeerAddr
	}
	if n > 1 {
		for i := range cfgs {
			cfgs[i].InitialCluster = cluster
		}
	}
	return cfgs
}

// startCluster starts an n-member cluster (members concurrently), retrying
// on fresh ports when one was taken meanwhile, and closes it at cleanup.
func startCluster(t *testing.T, ca *testCA, n int) ([]*coord.Member, []coord.MemberConfig) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		cfgs := memberConfigs(t, ca, n)
		members := make([]*coord.Member, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range cfgs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				members[i], errs[i] = coord.StartMember(ctx, cfgs[i])
			})
		}
		wg.Wait()
		err := errors.Join(errs...)
		if err == nil {
			t.Cleanup(func() {
				for _, m := range members {
					m.Close()
				}
			})
			return members, cfgs
		}
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
		if !addrInUse(err) || attempt == 3 {
			t.Fatalf("start %d-member cluster: %v", n, err)
		}
		t.Logf("port taken, retrying: %v", err)
	}
}

func endpoints(members []*coord.Member) []string {
	eps := make([]string, 0, len(members))
	for _, m := range members {
		eps = append(eps, m.ClientURL())
	}
	return eps
}

func newClient(t *testing.T, eps []string, files coord.TLSFiles) *coord.Client {
	t.Helper()
	c, err := coord.NewClient(coord.ClientConfig{
		Endpoints:   eps,
		TLS:         files,
		DialTimeout: 2 * time.Second,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newLeadership(t *testing.T, c *coord.Client, prefix, name string) *coord.Leadership {
	t.Helper()
	l, err := coord.NewLeadership(coord.LeadershipConfig{
		Client:     c,
		Prefix:     prefix,
		Name:       name,
		SessionTTL: 2 * time.Second,
		RetryDelay: 50 * time.Millisecond,
		Logger:     testLogger(t).With("test", t.Name()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// within receives from ch or fails the test after d; it returns how long
// it waited.
func within[T any](t *testing.T, d time.Duration, what string, ch <-chan T) (T, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case v := <-ch:
		return v, time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
		panic("unreachable")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
