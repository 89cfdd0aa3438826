// Package ledgertest is the conformance suite of servicemgr.Ledger: every
// implementation (etcd, SQL) runs Run against a fresh ledger and so keeps
// the same rules — epochs compare-and-bump, an active slot never changes
// hands while its holder keeps it, Release frees every slot of a host,
// and a deposed controller writes nothing.
package ledgertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/servicemgr"
)

// Harness is one ledger under test.
type Harness struct {
	Ledger servicemgr.Ledger
	// Depose ends the leadership the ledger writes under: every later
	// Commit must fail with coord.ErrNotLeader and change nothing.
	Depose func(t *testing.T)
}

// Run runs the suite; open returns a fresh, empty ledger for each subtest.
func Run(t *testing.T, open func(t *testing.T) Harness) {
	t.Run("EmptyGroup", func(t *testing.T) { emptyGroup(t, open(t)) })
	t.Run("CommitAndLoad", func(t *testing.T) { commitAndLoad(t, open(t)) })
	t.Run("StaleEpoch", func(t *testing.T) { staleEpoch(t, open(t)) })
	t.Run("HeldSlotRefused", func(t *testing.T) { heldSlot(t, open(t)) })
	t.Run("ReleaseThenFailover", func(t *testing.T) { releaseThenFailover(t, open(t)) })
	t.Run("ReleaseFreesEveryGroup", func(t *testing.T) { releaseEveryGroup(t, open(t)) })
	t.Run("MoveInOneCommit", func(t *testing.T) { moveInOneCommit(t, open(t)) })
	t.Run("RemovedMemberFreesSlot", func(t *testing.T) { removedMember(t, open(t)) })
	t.Run("Remove", func(t *testing.T) { remove(t, open(t)) })
	t.Run("ConcurrentCommits", func(t *testing.T) { concurrent(t, open(t)) })
	t.Run("DeposedWritesNothing", func(t *testing.T) { deposed(t, open(t)) })
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func active(slot int) servicemgr.Assigned {
	return servicemgr.Assigned{Role: servicemgr.RoleActive, Slot: slot}
}

var standby = servicemgr.Assigned{Role: servicemgr.RoleStandby, Slot: -1}

func place(members map[string]servicemgr.Assigned) servicemgr.Placement {
	return servicemgr.Placement{Members: members}
}

// commit commits next on prev and fails the test unless it lands at prev+1.
func commit(t *testing.T, l servicemgr.Ledger, group string, prev uint64, next servicemgr.Placement) {
	t.Helper()
	e, err := l.Commit(ctxFor(t), group, prev, next)
	if err != nil || e != prev+1 {
		t.Fatalf("Commit(%s, %d) = %d, %v; want epoch %d", group, prev, e, err, prev+1)
	}
}

// want fails the test unless group is recorded at epoch with members.
func want(t *testing.T, l servicemgr.Ledger, group string, epoch uint64, p servicemgr.Placement) {
	t.Helper()
	got, err := l.Load(ctxFor(t), group)
	if err != nil || got.Epoch != epoch || !got.Equal(p) {
		t.Fatalf("Load(%s) = %+v, %v; want epoch %d members %v", group, got, err, epoch, p.Members)
	}
}

func emptyGroup(t *testing.T, h Harness) {
	got, err := h.Ledger.Load(ctxFor(t), "none")
	if err != nil || got.Epoch != 0 || len(got.Members) != 0 || got.Members == nil {
		t.Fatalf("Load(none) = %+v, %v; want epoch 0 and an empty member map", got, err)
	}
}

func commitAndLoad(t *testing.T, h Harness) {
	p := place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby})
	commit(t, h.Ledger, "demo", 0, p)
	want(t, h.Ledger, "demo", 1, p)
	// The same members again: a commit still bumps the epoch.
	commit(t, h.Ledger, "demo", 1, p)
	want(t, h.Ledger, "demo", 2, p)
	// Groups are independent.
	q := place(map[string]servicemgr.Assigned{"w1": active(0)})
	commit(t, h.Ledger, "other", 0, q)
	want(t, h.Ledger, "other", 1, q)
	want(t, h.Ledger, "demo", 2, p)
}

func staleEpoch(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	p := place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby})
	commit(t, h.Ledger, "demo", 0, p)
	for _, prev := range []uint64{0, 2, 7} {
		q := place(map[string]servicemgr.Assigned{"w0": standby, "w1": standby})
		if e, err := h.Ledger.Commit(ctx, "demo", prev, q); !errors.Is(err, servicemgr.ErrStale) {
			t.Errorf("Commit(demo, %d) at epoch 1 = %d, %v; want ErrStale", prev, e, err)
		}
	}
	want(t, h.Ledger, "demo", 1, p)
}

func heldSlot(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	p := place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby})
	commit(t, h.Ledger, "demo", 0, p)
	// Slot 0 to w1 while w0, still active in the group, holds it.
	steal := place(map[string]servicemgr.Assigned{"w0": active(1), "w1": active(0)})
	if _, err := h.Ledger.Commit(ctx, "demo", 1, steal); !errors.Is(err, servicemgr.ErrSlotHeld) {
		t.Errorf("Commit(slot 0 to w1 while w0 holds it) = %v; want ErrSlotHeld", err)
	}
	want(t, h.Ledger, "demo", 1, p)
	// Releasing another host frees nothing of w0's.
	if err := h.Ledger.Release(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Ledger.Commit(ctx, "demo", 1, steal); !errors.Is(err, servicemgr.ErrSlotHeld) {
		t.Errorf("Commit(steal) after releasing w1 = %v; want ErrSlotHeld", err)
	}
	// A host unknown to the ledger: nothing to release.
	if err := h.Ledger.Release(ctx, "never-seen"); err != nil {
		t.Errorf("Release(never-seen) = %v; want nil", err)
	}
}

func releaseThenFailover(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	p := place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby})
	commit(t, h.Ledger, "demo", 0, p)
	// w0 confirmed down: released, its slot is free at once.
	start := time.Now()
	if err := h.Ledger.Release(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	failover := place(map[string]servicemgr.Assigned{"w1": active(0)})
	commit(t, h.Ledger, "demo", 1, failover)
	t.Logf("release + commit of the promotion: %v", time.Since(start))
	want(t, h.Ledger, "demo", 2, failover)
	// w0 back later as a standby, then active again in another slot.
	back := place(map[string]servicemgr.Assigned{"w1": active(0), "w0": standby})
	commit(t, h.Ledger, "demo", 2, back)
	two := place(map[string]servicemgr.Assigned{"w1": active(0), "w0": active(1)})
	commit(t, h.Ledger, "demo", 3, two)
	// Releasing twice is harmless.
	if err := h.Ledger.Release(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	if err := h.Ledger.Release(ctx, "w0"); err != nil {
		t.Errorf("second Release(w0) = %v", err)
	}
}

func releaseEveryGroup(t *testing.T, h Harness) {
	groups := []string{"ga", "gb", "gc"}
	for _, g := range groups {
		commit(t, h.Ledger, g, 0, place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby}))
	}
	if err := h.Ledger.Release(ctxFor(t), "w0"); err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		commit(t, h.Ledger, g, 1, place(map[string]servicemgr.Assigned{"w1": active(0)}))
	}
}

func moveInOneCommit(t *testing.T, h Harness) {
	commit(t, h.Ledger, "demo", 0, place(map[string]servicemgr.Assigned{"w1": active(0), "w2": standby}))
	// Demotion of the holder and promotion into its slot together
	// (a graceful move).
	move := place(map[string]servicemgr.Assigned{"w1": standby, "w2": active(0)})
	commit(t, h.Ledger, "demo", 1, move)
	want(t, h.Ledger, "demo", 2, move)
	// And back: the slot moved with the commit, w2 holds it now.
	steal := place(map[string]servicemgr.Assigned{"w1": active(0), "w2": active(1)})
	if _, err := h.Ledger.Commit(ctxFor(t), "demo", 2, steal); !errors.Is(err, servicemgr.ErrSlotHeld) {
		t.Errorf("Commit(slot 0 back to w1 while w2 holds it) = %v; want ErrSlotHeld", err)
	}
	commit(t, h.Ledger, "demo", 2, place(map[string]servicemgr.Assigned{"w1": active(0), "w2": standby}))
}

func removedMember(t *testing.T, h Harness) {
	commit(t, h.Ledger, "demo", 0, place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby}))
	// w0 leaves the group in the same commit that gives its slot away.
	next := place(map[string]servicemgr.Assigned{"w1": active(0)})
	commit(t, h.Ledger, "demo", 1, next)
	want(t, h.Ledger, "demo", 2, next)
}

func remove(t *testing.T, h Harness) {
	ctx := ctxFor(t)
	commit(t, h.Ledger, "demo", 0, place(map[string]servicemgr.Assigned{"w0": active(0)}))
	keep := place(map[string]servicemgr.Assigned{"w5": active(0)})
	commit(t, h.Ledger, "kept", 0, keep)
	if err := h.Ledger.Remove(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	want(t, h.Ledger, "demo", 0, place(nil))
	want(t, h.Ledger, "kept", 1, keep)
	// A group of the same name starts over, its slots free.
	commit(t, h.Ledger, "demo", 0, place(map[string]servicemgr.Assigned{"w9": active(0)}))
	if err := h.Ledger.Remove(ctx, "never-created"); err != nil {
		t.Errorf("Remove(never-created) = %v; want nil", err)
	}
}

func concurrent(t *testing.T, h Harness) {
	hosts := []string{"c0", "c1", "c2", "c3"}
	members := map[string]servicemgr.Assigned{}
	for _, n := range hosts {
		members[n] = standby
	}
	commit(t, h.Ledger, "demo", 0, place(members))
	// Each writer promotes another host into slot 0, all from epoch 1:
	// exactly one lands.
	race(t, h, "demo", 1, len(hosts), func(i int) servicemgr.Placement {
		next := map[string]servicemgr.Assigned{}
		for _, m := range hosts {
			next[m] = standby
		}
		next[hosts[i]] = active(0)
		return place(next)
	})
	// The same on a group nobody has created, each writer filling two
	// slots in another order.
	race(t, h, "fresh", 0, len(hosts), func(i int) servicemgr.Placement {
		return place(map[string]servicemgr.Assigned{hosts[i]: active(i % 2), hosts[(i+1)%len(hosts)]: active(1 - i%2)})
	})
}

// race commits n placements to group from prev at once: exactly one must
// land, the others fail with ErrStale, and one placement is recorded.
func race(t *testing.T, h Harness, group string, prev uint64, n int, next func(i int) servicemgr.Placement) {
	t.Helper()
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		p := next(i)
		wg.Go(func() {
			_, err := h.Ledger.Commit(ctx, group, prev, p)
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	landed := 0
	for err := range errc {
		switch {
		case err == nil:
			landed++
		case !errors.Is(err, servicemgr.ErrStale):
			t.Errorf("a losing concurrent Commit(%s) = %v; want ErrStale", group, err)
		}
	}
	if landed != 1 {
		t.Fatalf("%d of %d concurrent commits of %s from epoch %d landed; want 1", landed, n, group, prev)
	}
	got, err := h.Ledger.Load(ctx, group)
	if err != nil || got.Epoch != prev+1 {
		t.Fatalf("Load(%s) after the race = %+v, %v; want epoch %d", group, got, err, prev+1)
	}
	for i := range n {
		if got.Equal(next(i)) {
			return
		}
	}
	t.Errorf("Load(%s) after the race = %v; want one of the racing placements", group, got.Members)
}

func deposed(t *testing.T, h Harness) {
	if h.Depose == nil {
		t.Skip("the harness cannot depose its ledger's controller")
	}
	p := place(map[string]servicemgr.Assigned{"w0": active(0), "w1": standby})
	commit(t, h.Ledger, "demo", 0, p)
	h.Depose(t)
	next := place(map[string]servicemgr.Assigned{"w0": standby, "w1": standby})
	if _, err := h.Ledger.Commit(ctxFor(t), "demo", 1, next); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("Commit after deposition = %v; want coord.ErrNotLeader", err)
	}
	want(t, h.Ledger, "demo", 1, p)
}
