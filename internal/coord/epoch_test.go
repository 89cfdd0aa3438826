package coord_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
)

// TestDeposedLeaderIsFenced: once a leader's election key is gone (here
// its lease is revoked, as when it expires), its guarded writes fail with
// ErrNotLeader, whatever their own compares say, and its Lost fires.
func TestDeposedLeaderIsFenced(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	ctx := ctxTimeout(t, 20*time.Second)
	obs := newClient(t, endpoints(members), ca.client(t, "observer"))
	ca1 := newClient(t, endpoints(members), ca.client(t, "a"))
	cb := newClient(t, endpoints(members), ca.client(t, "b"))
	a := newLeadership(t, ca1, prefix, "a")
	b := newLeadership(t, cb, prefix, "b")
	const epochKey, assignKey = "/petrel/s1/epoch/g1", "/petrel/s1/assign/g1"

	ga, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := ca1.Bump(ctx, ga, epochKey); err != nil || e != 1 {
		t.Fatalf("Bump = %d, %v; want 1", e, err)
	}
	if _, err := ca1.TxnIfLeader(ctx, ga, []clientv3.Cmp{coord.EpochIs(epochKey, 0)}, clientv3.OpPut(assignKey, "h1@0")); !errors.Is(err, coord.ErrConflict) {
		t.Fatalf("TxnIfLeader with a stale epoch: err = %v; want ErrConflict", err)
	}
	rev, err := ca1.TxnIfLeader(ctx, ga, []clientv3.Cmp{coord.EpochIs(epochKey, 1)}, clientv3.OpPut(assignKey, "h1@1"))
	if err != nil || rev == 0 {
		t.Fatalf("TxnIfLeader with the current epoch = %d, %v", rev, err)
	}
	if e, mod, err := obs.Epoch(ctx, epochKey); err != nil || e != 1 || mod == 0 {
		t.Fatalf("Epoch = %d@%d, %v; want 1", e, mod, err)
	}

	bWon := campaignAsync(ctx, b)
	waitFor(t, 5*time.Second, "b's candidate key", func() bool { return candidates(ctx, obs) == 2 })
	// Depose a: revoke the lease that keeps its election key.
	resp, err := obs.Etcd().Get(ctx, ga.Key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get(%s) = %v, %v", ga.Key, resp, err)
	}
	aLost := a.Lost()
	start := time.Now()
	if err := obs.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	r, _ := within(t, handOverBound, "b leads after a's lease is revoked", bWon)
	if r.err != nil {
		t.Fatal(r.err)
	}
	within(t, handOverBound, "a's Lost after its lease was revoked", aLost)
	t.Logf("deposed: a told %v after the revoke", time.Since(start))
	if a.IsLeader() {
		t.Fatal("a still IsLeader after its key went")
	}

	if _, err := ca1.Bump(ctx, ga, epochKey); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("deposed Bump: err = %v; want ErrNotLeader", err)
	}
	if _, err := ca1.TxnIfLeader(ctx, ga, []clientv3.Cmp{coord.EpochIs(epochKey, 1)}, clientv3.OpPut(assignKey, "stale")); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("deposed TxnIfLeader: err = %v; want ErrNotLeader", err)
	}
	if _, err := ca1.PutIfLeader(ctx, ga, clientv3.OpDelete(assignKey)); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("deposed PutIfLeader: err = %v; want ErrNotLeader", err)
	}
	lease, err := ca1.Grant(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca1.CreateWithLease(ctx, ga, "/petrel/s1/slot/x", "h1", lease); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("deposed CreateWithLease: err = %v; want ErrNotLeader", err)
	}
	if _, err := ca1.Bump(ctx, coord.Guard{}, epochKey); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("Bump with the zero Guard: err = %v; want ErrNotLeader", err)
	}
	if e, err := cb.Bump(ctx, r.g, epochKey); err != nil || e != 2 {
		t.Errorf("new leader's Bump = %d, %v; want 2", e, err)
	}
	got, err := obs.Etcd().Get(ctx, assignKey)
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "h1@1" {
		t.Errorf("%s = %v, %v; want h1@1 (the deposed leader wrote nothing)", assignKey, got.Kvs, err)
	}
}

// TestBumpConcurrent: concurrent Bumps by one leader each get a distinct
// value, each caller sees its values increase, and none is lost.
func TestBumpConcurrent(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	ctx := ctxTimeout(t, 20*time.Second)
	cli := newClient(t, endpoints(members), ca.client(t, "a"))
	g, err := newLeadership(t, cli, prefix, "a").Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const key, workers, each = "/petrel/s1/epoch/g1", 8, 20
	var (
		mu  sync.Mutex
		all []uint64
		wg  sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			var last uint64
			for range each {
				e, err := cli.Bump(ctx, g, key)
				if err != nil {
					t.Errorf("worker %d: Bump: %v", w, err)
					return
				}
				if e <= last {
					t.Errorf("worker %d: Bump = %d after %d; want increasing", w, e, last)
				}
				last = e
				mu.Lock()
				all = append(all, e)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(all)
	for i, e := range all {
		if e != uint64(i+1) {
			t.Fatalf("Bump values sorted = %v; want 1..%d", all, workers*each)
		}
	}
	if e, _, err := cli.Epoch(ctx, key); err != nil || e != workers*each {
		t.Fatalf("Epoch = %d, %v; want %d", e, err, workers*each)
	}

	if _, err := cli.Etcd().Put(ctx, "/petrel/s1/epoch/bad", "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.Epoch(ctx, "/petrel/s1/epoch/bad"); !errors.Is(err, coord.ErrBadEpoch) {
		t.Errorf("Epoch of a non-decimal: err = %v; want ErrBadEpoch", err)
	}
	if _, err := cli.Bump(ctx, g, "/petrel/s1/epoch/bad"); !errors.Is(err, coord.ErrBadEpoch) {
		t.Errorf("Bump of a non-decimal: err = %v; want ErrBadEpoch", err)
	}
}
