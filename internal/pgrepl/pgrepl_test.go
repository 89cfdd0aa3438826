package pgrepl_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/petrel-edge/petrel/internal/pgrepl"
	"github.com/petrel-edge/petrel/internal/pki"
)

// These tests run real PostgreSQL 15 servers: each test its own pair, on
// 127.x.y.z addresses of its own with free ports, in a directory the
// postgres user can reach, every server stopped at cleanup.

func requirePostgres(t *testing.T) {
	t.Helper()
	missing := ""
	for _, p := range []string{"initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "pg_controldata", "postgres"} {
		if _, err := os.Stat(filepath.Join(pgrepl.DefaultBinDir, p)); err != nil {
			missing = p
		}
	}
	if missing == "" && os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			missing = "the postgres user"
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL 15 is required under CI: %s missing", missing)
	}
	t.Skipf("PostgreSQL 15 not installed (%s missing)", missing)
}

type testNode struct {
	*pgrepl.Node
	cfg  pgrepl.Config
	name string
	addr netip.Addr
	port int
}

func (n *testNode) peer() pgrepl.Peer {
	return pgrepl.Peer{Name: n.name, Host: n.addr.String(), Port: n.port}
}

type pair struct {
	a, b *testNode // controller-0, controller-1
	ca   *pki.CA
	base string
}

// newPair configures two nodes that may replicate from each other; nothing
// is started.
func newPair(t *testing.T) *pair {
	t.Helper()
	requirePostgres(t)
	base, err := os.MkdirTemp("", "pgrepl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("PGREPL_KEEP") != "" {
			t.Logf("keeping %s", base)
			return
		}
		os.RemoveAll(base)
	})
	if err := os.Chmod(base, 0o755); err != nil { // postgres must reach its directories
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(base, "ca"), "site CA")
	if err != nil {
		t.Fatal(err)
	}
	// Two addresses in a /24 of 127/8 no other test is likely to use.
	net24 := [4]byte{127, byte(1 + rand.IntN(254)), byte(rand.IntN(256)), 0}
	addrA, addrB := net24, net24
	addrA[3], addrB[3] = 10, 20
	a, b := netip.AddrFrom4(addrA), netip.AddrFrom4(addrB)
	p := &pair{ca: ca, base: base}
	p.a = newNode(t, p, "controller-0", a, "controller-1", b)
	p.b = newNode(t, p, "controller-1", b, "controller-0", a)
	return p
}

func newNode(t *testing.T, p *pair, name string, addr netip.Addr, peerName string, peerAddr netip.Addr) *testNode {
	t.Helper()
	dir := filepath.Join(p.base, name)
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	is, err := p.ca.IssuePeer(name, nil, []net.IP{addr.AsSlice()}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := is.Write(filepath.Join(tlsDir, "node.crt"), filepath.Join(tlsDir, "node.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tlsDir, "ca.crt"), p.ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := pgrepl.Config{
		DataDir:   filepath.Join(dir, "data"),
		SocketDir: filepath.Join(dir, "sock"),
		StateDir:  filepath.Join(dir, "state"),
		Listen:    []string{addr.String()},
		Port:      freePort(t, addr),
		Name:      name,
		Replication: pgrepl.ReplicationTLS{
			CAFile:   filepath.Join(tlsDir, "ca.crt"),
			CertFile: filepath.Join(tlsDir, "node.crt"),
			KeyFile:  filepath.Join(tlsDir, "node.key"),
		},
		// On loopback the kernel sends from 127.0.0.1 whatever 127.x address
		// is dialled (libpq cannot bind a source address), so the peer's
		// connections come from there; the security test binds its
		// sources explicitly.
		Peers:     []netip.Prefix{netip.PrefixFrom(peerAddr, 32), netip.MustParsePrefix("127.0.0.1/32")},
		PeerNames: []string{peerName},
		Logger:    slog.New(slog.NewTextHandler(tWriter{t, name}, nil)),
	}
	n := &testNode{cfg: cfg, name: name, addr: addr, port: cfg.Port}
	n.Node = open(t, cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Stop(ctx, pgrepl.StopImmediate); err != nil {
			t.Errorf("cleanup: stop %s: %v", name, err)
		}
	})
	return n
}

// open makes a Node over cfg, as a (restarted) controller process would.
func open(t *testing.T, cfg pgrepl.Config) *pgrepl.Node {
	t.Helper()
	n, err := pgrepl.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	pgrepl.NoSync(n)
	t.Cleanup(n.Close) // its background work ends with the test
	return n
}

func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tWriter sends the package's log to t.Log.
type tWriter struct {
	t    *testing.T
	name string
}

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimSpace(string(b)))
	return len(b), nil
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last error: %v)", what, d, lastErr)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, under the deadline above
	}
}

func dial(t *testing.T, ctx context.Context, n *testNode, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, n.DSN(db))
	if err != nil {
		t.Fatalf("connect to %s: %v", n.name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, ctx context.Context, n *testNode, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, n.DSN("petrel"))
	if err != nil {
		t.Fatalf("connect to %s: %v", n.name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %s: %v", n.name, sql, err)
	}
}

// rows returns the ids in table t of n's petrel database.
func rows(ctx context.Context, n *testNode) ([]int, error) {
	conn, err := pgx.Connect(ctx, n.DSN("petrel"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	r, err := conn.Query(ctx, "SELECT id FROM t ORDER BY id")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(r, pgx.RowTo[int])
}

func waitRows(t *testing.T, ctx context.Context, n *testNode, want []int) {
	t.Helper()
	var got []int
	waitFor(t, 10*time.Second, fmt.Sprintf("%s holds rows %v", n.name, want), func() (bool, error) {
		var err error
		got, err = rows(ctx, n)
		return slices.Equal(got, want), err
	})
}

// waitSync waits until primary reports standby as its synchronous standby.
func waitSync(t *testing.T, ctx context.Context, primary *testNode, standby string) pgrepl.Status {
	t.Helper()
	var st pgrepl.Status
	waitFor(t, 10*time.Second, fmt.Sprintf("%s synchronous on %s", standby, primary.name), func() (bool, error) {
		var err error
		st, err = primary.Status(ctx)
		for _, r := range st.Replicas {
			if r.Name == standby && r.SyncState == "sync" && r.State == "streaming" {
				return true, nil
			}
		}
		return false, err
	})
	return st
}

// startSyncPair makes a the primary (database petrel, table t) and b its
// synchronous standby.
func startSyncPair(t *testing.T, ctx context.Context, p *pair) {
	t.Helper()
	a, b := p.a, p.b
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if err := a.StartPrimary(ctx); err != nil {
		t.Fatalf("StartPrimary: %v", err)
	}
	if err := a.EnsureDatabase(ctx, "petrel"); err != nil {
		t.Fatalf("EnsureDatabase: %v", err)
	}
	mustExec(t, ctx, a, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
	if err := b.CloneFrom(ctx, a.peer()); err != nil {
		t.Fatalf("CloneFrom: %v", err)
	}
	if err := b.StartStandby(ctx, a.peer()); err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	if err := a.SetSynchronous(ctx, []string{b.name}); err != nil {
		t.Fatalf("SetSynchronous: %v", err)
	}
	waitSync(t, ctx, a, b.name)
}

func TestSynchronousStandby(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	startSyncPair(t, ctx, p)

	mustExec(t, ctx, a, "INSERT INTO t VALUES (1, 'one')")
	waitRows(t, ctx, b, []int{1})

	sa, err := a.Status(ctx)
	if err != nil {
		t.Fatalf("primary Status: %v", err)
	}
	t.Logf("primary: %+v", sa)
	if !sa.Running || sa.InRecovery || sa.Timeline != 1 || sa.WriteLSN == 0 || sa.FlushLSN == 0 ||
		sa.SyncNames != `FIRST 1 ("controller-1")` {
		t.Errorf("primary Status = %+v; want running, not in recovery, timeline 1, LSNs, FIRST 1 (\"controller-1\")", sa)
	}
	if len(sa.Replicas) != 1 || sa.Replicas[0].Name != b.name || sa.Replicas[0].SyncState != "sync" ||
		sa.Replicas[0].State != "streaming" || sa.Replicas[0].FlushLSN == 0 {
		t.Errorf("primary Replicas = %+v; want controller-1 streaming, sync", sa.Replicas)
	}
	sb, err := b.Status(ctx)
	if err != nil {
		t.Fatalf("standby Status: %v", err)
	}
	t.Logf("standby: %+v", sb)
	if !sb.Running || !sb.InRecovery || sb.Timeline != 1 || sb.ReceiveLSN == 0 || sb.ReplayLSN == 0 ||
		!strings.HasPrefix(sb.Upstream, "streaming "+a.addr.String()) {
		t.Errorf("standby Status = %+v; want running, in recovery, timeline 1, LSNs, streaming from %s", sb, a.addr)
	}
	// Synchronous: the commit returned after the standby flushed it.
	if sb.ReceiveLSN < sa.Replicas[0].FlushLSN {
		t.Errorf("standby received %s < what the primary saw flushed %s", pgrepl.FormatLSN(sb.ReceiveLSN), pgrepl.FormatLSN(sa.Replicas[0].FlushLSN))
	}
	if _, err := dial(t, ctx, b, "petrel").Exec(ctx, "INSERT INTO t VALUES (9, 'x')"); err == nil {
		t.Error("the standby accepted a write")
	}
	if err := b.EnsureDatabase(ctx, "other"); !errors.Is(err, pgrepl.ErrIsStandby) {
		t.Errorf("EnsureDatabase on the standby = %v; want ErrIsStandby", err)
	}
	if err := b.SetSynchronous(ctx, nil); !errors.Is(err, pgrepl.ErrIsStandby) {
		t.Errorf("SetSynchronous on the standby = %v; want ErrIsStandby", err)
	}
}

func TestCommitWaitsForSynchronousStandby(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	startSyncPair(t, ctx, p)

	if err := b.Stop(ctx, pgrepl.StopImmediate); err != nil {
		t.Fatalf("Stop standby: %v", err)
	}
	conn := dial(t, ctx, a, "petrel")
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO t VALUES (2, 'waits for the standby')")
		done <- err
	}()
	// The commit waits for the synchronous standby ...
	watch := dial(t, ctx, a, "postgres")
	waitFor(t, 10*time.Second, "a commit waiting for synchronous replication", func() (bool, error) {
		var waiting int
		err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO t VALUES (2,%'").Scan(&waiting)
		return waiting == 1, err
	})
	// ... and does not return within a second.
	held, cancel := context.WithTimeout(ctx, time.Second)
	select {
	case err := <-done:
		cancel()
		t.Fatalf("commit returned (%v) with the synchronous standby down", err)
	case <-held.Done():
		cancel()
	}
	// Asynchronous now: the waiting commit returns.
	start := time.Now()
	if err := a.SetSynchronous(ctx, nil); err != nil {
		t.Fatalf("SetSynchronous(nil): %v", err)
	}
	released, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("released commit: %v", err)
		}
		t.Logf("commit released %v after SetSynchronous(nil) began", time.Since(start).Round(time.Millisecond))
	case <-released.Done():
		t.Fatal("commit still waiting 10 s after SetSynchronous(nil)")
	}
	st, err := a.Status(ctx)
	if err != nil || st.SyncNames != "" {
		t.Errorf("Status = %+v, %v; want synchronous_standby_names empty", st, err)
	}
	mustExec(t, ctx, a, "INSERT INTO t VALUES (3, 'async')")

	// The standby comes back, catches up, and is synchronous again.
	if err := b.StartStandby(ctx, a.peer()); err != nil {
		t.Fatalf("StartStandby again: %v", err)
	}
	if err := a.SetSynchronous(ctx, []string{b.name}); err != nil {
		t.Fatalf("SetSynchronous: %v", err)
	}
	waitSync(t, ctx, a, b.name)
	mustExec(t, ctx, a, "INSERT INTO t VALUES (4, 'sync again')")
	waitRows(t, ctx, b, []int{2, 3, 4})
}

func TestFailoverRejoinRewinds(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	startSyncPair(t, ctx, p)
	mustExec(t, ctx, a, "INSERT INTO t VALUES (1, 'before')")
	waitRows(t, ctx, b, []int{1})

	// The standby goes down; the primary, asynchronous now, takes a write
	// that only it has, then crashes.
	if err := b.Stop(ctx, pgrepl.StopFast); err != nil {
		t.Fatal(err)
	}
	if err := a.SetSynchronous(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, a, "INSERT INTO t VALUES (2, 'divergent')")
	if err := a.Stop(ctx, pgrepl.StopImmediate); err != nil {
		t.Fatal(err)
	}

	// Failover: the standby starts (its primary is gone) and is promoted.
	start := time.Now()
	if err := b.StartStandby(ctx, a.peer()); err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	if err := b.Promote(ctx); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t.Logf("standby started and promoted in %v", time.Since(start).Round(time.Millisecond))
	mustExec(t, ctx, b, "INSERT INTO t VALUES (3, 'after failover')")
	if err := b.Promote(ctx); err != nil {
		t.Errorf("Promote on a primary = %v; want nil (no-op)", err)
	}

	// The old primary's history forked: it rejoins through pg_rewind.
	start = time.Now()
	path, err := a.Rejoin(ctx, b.peer())
	if err != nil {
		t.Fatalf("Rejoin: %v", err)
	}
	t.Logf("Rejoin took %v, path %v", time.Since(start).Round(time.Millisecond), path)
	if path != pgrepl.RejoinRewound {
		t.Errorf("Rejoin path = %v; want %v", path, pgrepl.RejoinRewound)
	}
	if err := b.SetSynchronous(ctx, []string{a.name}); err != nil {
		t.Fatal(err)
	}
	waitSync(t, ctx, b, a.name)
	mustExec(t, ctx, b, "INSERT INTO t VALUES (4, 'replicated to the rejoined node')")
	waitRows(t, ctx, a, []int{1, 3, 4}) // and not 2
	sa, err := a.Status(ctx)
	if err != nil || !sa.InRecovery || sa.Timeline != 2 {
		t.Errorf("rejoined node Status = %+v, %v; want a standby on timeline 2", sa, err)
	}
	sb, err := b.Status(ctx)
	if err != nil || sb.InRecovery || sb.Timeline != 2 {
		t.Errorf("new primary Status = %+v, %v; want a primary on timeline 2", sb, err)
	}
	// Rejoin again: nothing to do.
	if path, err := a.Rejoin(ctx, b.peer()); err != nil || path != pgrepl.RejoinResumed {
		t.Errorf("second Rejoin = %v, %v; want %v", path, err, pgrepl.RejoinResumed)
	}
}

func TestSwitchoverRejoinsWithoutRewind(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	startSyncPair(t, ctx, p)
	mustExec(t, ctx, a, "INSERT INTO t VALUES (1, 'before')")

	t0 := time.Now()
	if err := a.Stop(ctx, pgrepl.StopFast); err != nil {
		t.Fatalf("Stop(Fast): %v", err)
	}
	t1 := time.Now()
	if err := b.Promote(ctx); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t2 := time.Now()
	path, err := a.Rejoin(ctx, b.peer())
	if err != nil {
		t.Fatalf("Rejoin: %v", err)
	}
	t3 := time.Now()
	if err := b.SetSynchronous(ctx, []string{a.name}); err != nil {
		t.Fatalf("SetSynchronous: %v", err)
	}
	waitSync(t, ctx, b, a.name)
	t4 := time.Now()
	t.Logf("switchover: stop %v, promote %v (writable after %v), rejoin %v, synchronous again %v; total %v",
		t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), t2.Sub(t0).Round(time.Millisecond),
		t3.Sub(t2).Round(time.Millisecond), t4.Sub(t3).Round(time.Millisecond), t4.Sub(t0).Round(time.Millisecond))
	if path != pgrepl.RejoinResumed {
		t.Errorf("Rejoin path = %v; want %v (a clean switchover needs neither rewind nor clone)", path, pgrepl.RejoinResumed)
	}
	mustExec(t, ctx, b, "INSERT INTO t VALUES (2, 'after switchover')")
	waitRows(t, ctx, a, []int{1, 2})
}

func pidOf(t *testing.T, n *testNode) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestRestartedProcessFindsRunningServer(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.StartPrimary(ctx); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, a)

	// Our process "crashed": a new Node over the same directories.
	again := open(t, a.cfg)
	st, err := again.Status(ctx)
	if err != nil || !st.Running || st.InRecovery || st.Timeline != 1 {
		t.Fatalf("Status from a new Node = %+v, %v; want a running primary on timeline 1", st, err)
	}
	if err := again.StartPrimary(ctx); err != nil {
		t.Fatalf("StartPrimary on a running primary = %v; want nil", err)
	}
	if got := pidOf(t, a); got != pid {
		t.Errorf("postmaster PID %d after StartPrimary; want %d (untouched)", got, pid)
	}
	if err := again.Bootstrap(ctx); err != nil {
		t.Errorf("Bootstrap on a running primary = %v; want nil", err)
	}
	if err := again.Promote(ctx); err != nil {
		t.Errorf("Promote on a running primary = %v; want nil", err)
	}
	if err := again.StartStandby(ctx, b.peer()); !errors.Is(err, pgrepl.ErrIsPrimary) {
		t.Errorf("StartStandby on a running primary = %v; want ErrIsPrimary", err)
	}
	if _, err := again.Rejoin(ctx, b.peer()); !errors.Is(err, pgrepl.ErrIsPrimary) {
		t.Errorf("Rejoin on a running primary = %v; want ErrIsPrimary", err)
	}
	if err := again.CloneFrom(ctx, b.peer()); !errors.Is(err, pgrepl.ErrRunning) {
		t.Errorf("CloneFrom on a running server = %v; want ErrRunning", err)
	}
	if got := pidOf(t, a); got != pid {
		t.Errorf("postmaster PID %d after the refused calls; want %d", got, pid)
	}

	// A clone that was never started is a standby's data: it is not
	// started as a primary, and reports itself so while stopped.
	if err := b.CloneFrom(ctx, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := b.StartPrimary(ctx); !errors.Is(err, pgrepl.ErrStandbyData) {
		t.Errorf("StartPrimary on a fresh clone = %v; want ErrStandbyData", err)
	}
	if st, err := b.Status(ctx); err != nil || st.Running || !st.InRecovery {
		t.Errorf("Status of a stopped clone = %+v, %v; want stopped, in recovery", st, err)
	}
	// A clone cut short (the marker a killed CloneFrom leaves) is unusable.
	marker := filepath.Join(b.cfg.StateDir, "clone.incomplete")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if b.Initialized() {
		t.Error("Initialized() = true after an interrupted clone")
	}
	if err := b.StartStandby(ctx, a.peer()); !errors.Is(err, pgrepl.ErrIncomplete) {
		t.Errorf("StartStandby after an interrupted clone = %v; want ErrIncomplete", err)
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}

	// Stop is idempotent, and a stopped node reports from pg_control.
	for i := range 2 {
		if err := again.Stop(ctx, pgrepl.StopFast); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	st, err = again.Status(ctx)
	if err != nil || st.Running || st.InRecovery || st.ClusterState != "shut down" || st.Timeline != 1 || st.CheckpointLSN == 0 {
		t.Errorf("Status when stopped = %+v, %v; want stopped primary, shut down, timeline 1, checkpoint", st, err)
	}
	if err := again.Promote(ctx); !errors.Is(err, pgrepl.ErrNotRunning) {
		t.Errorf("Promote when stopped = %v; want ErrNotRunning", err)
	}
	if err := again.StartPrimary(ctx); err != nil {
		t.Fatalf("StartPrimary after Stop: %v", err)
	}

	// A Bootstrap cut short after initdb leaves no replication role; the
	// next StartPrimary creates it.
	if _, err := dial(t, ctx, a, "postgres").Exec(ctx, "DROP OWNED BY replicator; DROP ROLE replicator"); err != nil {
		t.Fatal(err)
	}
	if err := again.Stop(ctx, pgrepl.StopFast); err != nil {
		t.Fatal(err)
	}
	if err := again.StartPrimary(ctx); err != nil {
		t.Fatalf("StartPrimary: %v", err)
	}
	var ok bool
	if err := dial(t, ctx, a, "postgres").QueryRow(ctx,
		"SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator' AND rolreplication AND rolcanlogin)").Scan(&ok); err != nil || !ok {
		t.Errorf("replication role after StartPrimary: exists %v, %v", ok, err)
	}
}

func TestReplicationNeedsPeerCertificate(t *testing.T) {
	p := newPair(t)
	ctx := testCtx(t, 60*time.Second)
	a, b := p.a, p.b
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.StartPrimary(ctx); err != nil {
		t.Fatal(err)
	}

	tlsDir := filepath.Join(p.base, "client")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, cn string) (string, string) {
		is, err := ca.IssuePeer(cn, nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(tlsDir, cn+"-"+ca.Cert.Subject.CommonName+".crt"), filepath.Join(tlsDir, cn+"-"+ca.Cert.Subject.CommonName+".key")
		if err := is.Write(c, k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	other, err := pki.LoadOrCreateCA(filepath.Join(p.base, "other-ca"), "other CA")
	if err != nil {
		t.Fatal(err)
	}
	peerCert, peerKey := b.cfg.Replication.CertFile, b.cfg.Replication.KeyFile
	foreignCert, foreignKey := issue(other, "controller-1")
	strangerCert, strangerKey := issue(p.ca, "compute-7")
	ca := a.cfg.Replication.CAFile
	stranger := a.addr.Prev() // in the same /24, not a peer

	type attempt struct {
		name       string
		from       netip.Addr
		kv         []string
		refusedBy  string // "hba" (SQLSTATE 28000) or "tls"
		mustRefuse bool
	}
	base := func(extra ...string) []string {
		return append([]string{"host", a.addr.String(), "port", strconv.Itoa(a.port), "connect_timeout", "5"}, extra...)
	}
	replication := []string{"user", "replicator", "replication", "true", "sslmode", "verify-full", "sslrootcert", ca}
	attempts := []attempt{
		{"peer certificate from the peer address", b.addr, base(append(replication, "sslcert", peerCert, "sslkey", peerKey)...), "", false},
		{"no client certificate", b.addr, base(replication...), "hba", true},
		// PostgreSQL completes the handshake and refuses at authentication.
		{"certificate from another CA", b.addr, base(append(replication, "sslcert", foreignCert, "sslkey", foreignKey)...), "hba", true},
		{"site certificate of a non-peer", b.addr, base(append(replication, "sslcert", strangerCert, "sslkey", strangerKey)...), "hba", true},
		{"peer certificate from another address", stranger, base(append(replication, "sslcert", peerCert, "sslkey", peerKey)...), "hba", true},
		{"without TLS", b.addr, base("user", "replicator", "replication", "true", "sslmode", "disable"), "hba", true},
		{"superuser over TCP with the peer certificate", b.addr,
			base("user", "postgres", "dbname", "postgres", "sslmode", "verify-full", "sslrootcert", ca, "sslcert", peerCert, "sslkey", peerKey), "hba", true},
		{"replication role to another database", b.addr,
			base("user", "replicator", "dbname", "template1", "sslmode", "verify-full", "sslrootcert", ca, "sslcert", peerCert, "sslkey", peerKey), "hba", true},
	}
	for _, at := range attempts {
		t.Run(strings.ReplaceAll(at.name, " ", "_"), func(t *testing.T) {
			var parts []string
			for i := 0; i < len(at.kv); i += 2 {
				parts = append(parts, at.kv[i]+"='"+at.kv[i+1]+"'")
			}
			cc, err := pgconn.ParseConfig(strings.Join(parts, " "))
			if err != nil {
				t.Fatal(err)
			}
			cc.DialFunc = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: at.from.AsSlice()}}).DialContext
			conn, err := pgconn.ConnectConfig(ctx, cc)
			if !at.mustRefuse {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer conn.Close(ctx)
				if _, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll(); err != nil {
					t.Fatalf("IDENTIFY_SYSTEM: %v", err)
				}
				return
			}
			if err == nil {
				conn.Close(ctx)
				t.Fatal("connection accepted; want refused")
			}
			var pe *pgconn.PgError
			switch {
			case at.refusedBy == "hba" && !(errors.As(err, &pe) && pe.Code == "28000"):
				t.Errorf("refused with %v; want SQLSTATE 28000 (pg_hba/authentication)", err)
			case at.refusedBy == "tls" && !strings.Contains(err.Error(), "tls"):
				t.Errorf("refused with %v; want a TLS handshake failure", err)
			}
			t.Logf("refused: %v", err)
		})
	}

	// Key material: 0600, owned by the server's user; directories 0700.
	uid := os.Geteuid()
	if uid == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	check := func(path string, perm os.FileMode) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return
		}
		if fi.Mode().Perm() != perm || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
			t.Errorf("%s: mode %v owner %d; want %v owned by %d", path, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, perm, uid)
		}
	}
	check(filepath.Join(a.cfg.StateDir, "server.key"), 0o600)
	for _, d := range []string{a.cfg.DataDir, a.cfg.SocketDir, a.cfg.StateDir} {
		check(d, 0o700)
	}
	// The private key is not in PGDATA (pg_basebackup would copy it to the peer).
	if err := filepath.WalkDir(a.cfg.DataDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".key") {
			t.Errorf("key file %s inside PGDATA", path)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
