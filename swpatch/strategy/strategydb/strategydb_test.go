package strategydb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
)

// TestConformance runs on every engine the test run names (SQLite by
// default; PostgreSQL with PETREL_TEST_DB=sqlite,postgres).
func TestConformance(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := openDB(t)
		s, err := strategydb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CheckDurability(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Strategy(ctx, strategy.Patch); !errors.Is(err, strategy.ErrNotFound) || !errors.Is(err, errs.NotFound) {
			t.Fatalf("Strategy(none) = %v; want ErrNotFound", err)
		}
		plan, err := strategy.Plan(strategy.Snapshot{Shape: inventory.Simplex, Patches: []string{"P1"}, RebootRequired: true,
			Hosts: []strategy.Host{{Name: "controller-0", Personality: inventory.Controller, Administrative: inventory.Unlocked,
				Operational: inventory.Enabled, Availability: inventory.Available, Servers: []string{"vm-a"}}}},
			strategy.Options{InstanceAction: strategy.StopStart})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Create(ctx, plan)
		if err != nil {
			t.Fatal(err)
		}
		if got.Rev != 1 || got.CreatedAt.IsZero() || got.State != strategy.ReadyToApply {
			t.Fatalf("Create = rev %d at %v state %s", got.Rev, got.CreatedAt, got.State)
		}
		if _, err := s.Create(ctx, plan); !errors.Is(err, strategy.ErrExists) {
			t.Errorf("Create(second) = %v; want ErrExists", err)
		}
		now := time.Now()
		up, err := s.Update(ctx, strategy.Patch, func(st *strategy.Strategy) error {
			st.Locked = []string{"controller-0"}
			if err := st.To(strategy.Applying, now); err != nil {
				return err
			}
			return st.StepTo(0, 0, strategy.StepApplying, "", now)
		})
		if err != nil || up.Rev != 2 {
			t.Fatalf("Update = rev %d, %v", up.Rev, err)
		}
		again, _ := s.Strategy(ctx, strategy.Patch)
		if again.State != strategy.Applying || again.Stages[0].Steps[0].State != strategy.StepApplying ||
			again.Stages[0].State != strategy.StepApplying || len(again.Locked) != 1 || again.Options.InstanceAction != strategy.StopStart {
			t.Fatalf("after Update: %+v", again)
		}
		// A refused transition changes nothing.
		if _, err := s.Update(ctx, strategy.Patch, func(st *strategy.Strategy) error { return st.To(strategy.Building, now) }); !errors.Is(err, errs.InvalidTransition) {
			t.Errorf("Update(applying -> building) = %v", err)
		}
		if again, _ := s.Strategy(ctx, strategy.Patch); again.Rev != 2 {
			t.Errorf("rev after a refused update: %d", again.Rev)
		}
		// Concurrent updates: none lost.
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Update(ctx, strategy.Patch, func(st *strategy.Strategy) error {
					st.BaselineAlarms = append(st.BaselineAlarms, "x")
					return nil
				}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if again, _ := s.Strategy(ctx, strategy.Patch); len(again.BaselineAlarms) != 8 || again.Rev != 10 {
			t.Errorf("after 8 concurrent updates: %d alarms, rev %d; want 8, 10", len(again.BaselineAlarms), again.Rev)
		}
		veto := errors.New("veto")
		if err := s.Delete(ctx, strategy.Patch, func(strategy.Strategy) error { return veto }); !errors.Is(err, veto) {
			t.Errorf("Delete(vetoed) = %v", err)
		}
		if err := s.Delete(ctx, strategy.Patch, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, strategy.Patch, nil); !errors.Is(err, strategy.ErrNotFound) {
			t.Errorf("Delete(gone) = %v", err)
		}
	})
}
