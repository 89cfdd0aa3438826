package strategydb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategytest"
)

// BenchmarkExecutorPerHost measures the executor's own cost per host: a
// multi-server site of 2 controllers and 20 workers (serial) whose fake
// hosts lock, install and reboot at once, every step stored before and
// after in SQLite (WAL, synchronous=FULL). What is left is orchestration
// overhead: store writes, reads and the executor's bookkeeping.
func BenchmarkExecutorPerHost(b *testing.B) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	store, err := strategydb.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	const workers = 20
	var total time.Duration
	for b.Loop() {
		hosts := []strategy.HostStatus{{Name: "controller-0", Personality: inventory.Controller, Active: true},
			{Name: "controller-1", Personality: inventory.Controller}}
		for i := range workers {
			hosts = append(hosts, strategy.HostStatus{Name: fmt.Sprintf("worker-%d", i), Personality: inventory.Worker})
		}
		site := strategytest.NewSite(hosts, []string{"P"}, true)
		site.RebootPolls = 1
		ex := strategy.New(strategy.Config{Site: "b", Store: store, Target: site, Poll: time.Millisecond})
		if _, err := ex.Create(ctx, inventory.MultiServer, strategy.Options{}); err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); ex.Run(rctx) }()
		t0 := time.Now()
		if _, err := ex.Apply(ctx, strategy.Patch); err != nil {
			b.Fatal(err)
		}
		for {
			s, err := store.Strategy(ctx, strategy.Patch)
			if err != nil {
				b.Fatal(err)
			}
			if s.State == strategy.Applied {
				break
			}
			if s.State != strategy.Applying {
				b.Fatalf("strategy %s: %s", s.State, s.Reason)
			}
			time.Sleep(100 * time.Microsecond) // polling
		}
		total += time.Since(t0)
		cancel()
		<-done
		if err := ex.Delete(ctx, strategy.Patch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N)/float64(workers+2), "ms/host")
}
