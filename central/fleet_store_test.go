package central_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	swfleet "github.com/petrel-edge/petrel/swpatch/fleet"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
)

// TestConformanceFleetStrategyStore: central keeps its fleet strategy
// with strategydb: a fleet plan and each step's site progress round-trip,
// every change is a compare-and-swap (concurrent step updates all land),
// and the store survives a reopen (a restarted or new leading central).
func TestConformanceFleetStrategyStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		st, err := strategydb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CheckDurability(ctx); err != nil {
			t.Fatal(err)
		}
		plan, err := swfleet.Plan(swfleet.Snapshot{Sites: []swfleet.Site{{Name: "site-a", Managed: true}, {Name: "site-b", Managed: true},
			{Name: "site-c", Managed: true}}}, strategy.Options{Patches: []string{"P-1"}, MaxParallel: 2, StopOnFailure: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Create(ctx, plan); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := st.Update(ctx, strategy.Patch, func(s *strategy.Strategy) error { return s.To(strategy.Applying, now) }); err != nil {
			t.Fatal(err)
		}
		// The two steps of stage 1 update concurrently, as their goroutines do.
		var wg sync.WaitGroup
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 1; k <= 5; k++ {
					if _, err := st.Update(ctx, strategy.Patch, func(s *strategy.Strategy) error {
						if s.Stages[0].Steps[j].State == strategy.StepInitial {
							if err := s.StepTo(0, j, strategy.StepApplying, "", now); err != nil {
								return err
							}
						}
						s.Stages[0].Steps[j].Site = &strategy.SiteProgress{Phase: strategy.PhaseApply, State: strategy.Applying,
							StepsDone: k, StepsTotal: 5, Action: strategy.LockHosts, Hosts: []string{"controller-0"}, UpdatedAt: now,
							OfflineSince: &now, PatchesApplied: []string{"P-1"}}
						return nil
					}); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		again, err := strategydb.Open(ctx, db) // a new leader's
		if err != nil {
			t.Fatal(err)
		}
		got, err := again.Strategy(ctx, strategy.Patch)
		if err != nil {
			t.Fatal(err)
		}
		if got.Scope != strategy.ScopeFleet || !got.Options.StopOnFailure || got.Options.MaxParallel != 2 || len(got.Options.Patches) != 1 {
			t.Errorf("stored options = %+v scope %s", got.Options, got.Scope)
		}
		for j := range 2 {
			p := got.Stages[0].Steps[j].Site
			if got.Stages[0].Steps[j].State != strategy.StepApplying || p == nil || p.StepsDone != 5 || p.Action != strategy.LockHosts ||
				p.OfflineSince == nil || !p.OfflineSince.Equal(now) || len(p.Hosts) != 1 {
				t.Errorf("step %d = %s %+v; want applying with site progress 5/5", j, got.Stages[0].Steps[j].State, p)
			}
		}
		if got.Rev != 12 {
			t.Errorf("revision %d; want 12 (create, apply, 10 step updates)", got.Rev)
		}
		if w := got.Stages[1].Steps[0].Site; w == nil || w.Phase != strategy.PhaseWaiting {
			t.Errorf("stage 2's step progress = %+v; want waiting", w)
		}
		if err := again.Delete(ctx, strategy.Patch, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Strategy(ctx, strategy.Patch); !errors.Is(err, strategy.ErrNotFound) {
			t.Errorf("Strategy(deleted) = %v; want ErrNotFound", err)
		}
	})
}
