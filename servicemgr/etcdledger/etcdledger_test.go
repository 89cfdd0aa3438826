package etcdledger_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/coord/coordtest"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/etcdledger"
)

func TestLedgerOnEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := coordtest.Start(t)
	lead, err := coord.NewLeadership(coord.LeadershipConfig{Client: c, Prefix: "/petrel/t/leader/", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lead.Close() })
	if _, err := lead.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := etcdledger.New(etcdledger.Config{Client: c, Guard: lead.Guard, Prefix: "/petrel/t/services/",
		LeaseTTL: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	p := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
		"w0": {Role: servicemgr.RoleActive, Slot: 0}, "w1": {Role: servicemgr.RoleStandby, Slot: -1}}}
	e, err := l.Commit(ctx, "demo", 0, p)
	if err != nil || e != 1 {
		t.Fatalf("first commit = %d, %v; want epoch 1", e, err)
	}
	got, err := l.Load(ctx, "demo")
	if err != nil || got.Epoch != 1 || !got.Equal(p) {
		t.Fatalf("Load = %+v, %v; want epoch 1 and the placement", got, err)
	}
	if _, err := l.Commit(ctx, "demo", 0, p); !errors.Is(err, servicemgr.ErrStale) {
		t.Errorf("commit on an old epoch = %v; want ErrStale", err)
	}
	// Slot 0 to w1 while w0 (not removed, lease alive) holds it: refused.
	steal := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
		"w0": {Role: servicemgr.RoleActive, Slot: 1}, "w1": {Role: servicemgr.RoleActive, Slot: 0}}}
	if _, err := l.Commit(ctx, "demo", 1, steal); !errors.Is(err, servicemgr.ErrSlotHeld) {
		t.Errorf("taking a held slot = %v; want ErrSlotHeld", err)
	}
	// w0 confirmed down: its lease is revoked, the slot is free at once.
	start := time.Now()
	if err := l.Release(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	failover := servicemgr.Placement{Members: map[string]servicemgr.Assigned{"w1": {Role: servicemgr.RoleActive, Slot: 0}}}
	if e, err = l.Commit(ctx, "demo", 1, failover); err != nil || e != 2 {
		t.Fatalf("commit after release = %d, %v; want epoch 2", e, err)
	}
	t.Logf("release + commit of the promotion: %v", time.Since(start))
	// Demotion and promotion of a slot in one commit (graceful move).
	move := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
		"w1": {Role: servicemgr.RoleStandby, Slot: -1}, "w2": {Role: servicemgr.RoleActive, Slot: 0}}}
	if e, err = l.Commit(ctx, "demo", 2, move); err != nil || e != 3 {
		t.Fatalf("move = %d, %v; want epoch 3", e, err)
	}
	// A deposed leader writes nothing.
	if err := lead.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(ctx, "demo", 3, p); !errors.Is(err, coord.ErrNotLeader) {
		t.Errorf("commit after resigning = %v; want ErrNotLeader", err)
	}
	if got, _ := l.Load(ctx, "demo"); got.Epoch != 3 || !got.Equal(move) {
		t.Errorf("after the refused commit: %+v; want epoch 3 unchanged", got)
	}
}
