package faultdb_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func manager(t *testing.T, db *sqldb.DB) (*faultmgr.Manager, *faultdb.Store) {
	t.Helper()
	st, err := faultdb.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		t.Fatal(err)
	}
	m, err := faultmgr.NewManager(faultmgr.Config{Catalog: cat, Store: st, Site: "site-sx", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m, st
}

func TestConformanceAlarms(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		m, st := manager(t, open(t))
		a, changed, err := m.Raise(ctx, "200.001", "host=controller-0", nil)
		if err != nil || !changed || a.ReasonText != "controller-0 is administratively locked" || a.Severity != faultmgr.Warning || a.Site != "site-sx" {
			t.Fatalf("Raise = %+v, %v, %v", a, changed, err)
		}
		// Set is idempotent: the same raise changes nothing and logs nothing.
		if _, changed, _ := m.Raise(ctx, "200.001", "host=controller-0", nil); changed {
			t.Error("raising an active alarm again changed it")
		}
		// Unknown IDs and malformed entities are refused, nothing stored.
		if _, _, err := m.Raise(ctx, "999.999", "host=x", nil); !errors.Is(err, faultmgr.ErrUnknownAlarm) || !errors.Is(err, errs.Invalid) {
			t.Errorf("unknown alarm ID: %v", err)
		}
		if _, _, err := m.Raise(ctx, "200.001", "controller 0", nil); !errors.Is(err, errs.Invalid) {
			t.Errorf("malformed entity: %v", err)
		}
		m.Raise(ctx, "100.104", "host=worker-1.filesystem=/var", map[string]string{"threshold": "90"})
		m.Raise(ctx, "200.004", "host=worker-1", nil)
		sum, _ := st.Summary(ctx)
		if sum != (faultmgr.Summary{Critical: 1, Major: 1, Warning: 1}) {
			t.Errorf("Summary = %+v; want 1 critical, 1 major, 1 warning", sum)
		}
		list, _, _ := st.Alarms(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"entity_instance_id": "host=worker-1"}})
		if len(list) != 2 || list[0].AlarmID != "200.004" {
			t.Errorf("alarms of host=worker-1 (newest first) = %+v", list)
		}
		if list[1].ReasonText != "File system /var of worker-1 above 90% full" {
			t.Errorf("reason = %q", list[1].ReasonText)
		}
		mgmt, _, _ := st.Alarms(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"mgmt_affecting": "true"}})
		if len(mgmt) != 2 {
			t.Errorf("mgmt-affecting alarms = %d; want 2 (200.001 warning, 200.004 critical)", len(mgmt))
		}
		// Ack records who and when.
		acked, err := st.Ack(ctx, a.UUID, "olga", a.Timestamp)
		if err != nil || acked.AckedBy != "olga" || acked.AckedAt == nil {
			t.Errorf("Ack = %+v, %v", acked, err)
		}
		// Suppression is per alarm ID, and only for suppressible ones.
		if err := m.Suppress(ctx, "200.004", true, "olga"); !errors.Is(err, faultmgr.ErrNotSuppressible) || !errors.Is(err, errs.Conflict) {
			t.Errorf("suppress 200.004: %v; want not suppressible (conflict)", err)
		}
		if err := m.Suppress(ctx, "200.001", true, "olga"); err != nil {
			t.Fatal(err)
		}
		m.Suppress(ctx, "200.001", true, "olga") // twice: a no-op
		sum, _ = st.Summary(ctx)
		sup, _, _ := st.Alarms(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"suppressed": "true"}})
		if sum.Warning != 0 || len(sup) != 1 || !sup[0].Suppressed {
			t.Errorf("after suppressing 200.001: summary %+v, suppressed list %+v", sum, sup)
		}
		m.Suppress(ctx, "200.001", false, "olga")
		// Clear: once, then a no-op; clear by entity prefix.
		if cleared, err := m.Clear(ctx, "200.001", "host=controller-0"); !cleared || err != nil {
			t.Errorf("Clear = %v, %v", cleared, err)
		}
		if cleared, err := m.Clear(ctx, "200.001", "host=controller-0"); cleared || err != nil {
			t.Errorf("clearing an absent alarm = %v, %v; want a no-op", cleared, err)
		}
		m.Raise(ctx, "200.004", "host=worker-10", nil)
		if n, err := m.ClearEntity(ctx, "host=worker-1"); n != 2 || err != nil {
			t.Errorf("ClearEntity(host=worker-1) = %d, %v; want 2 (not host=worker-10)", n, err)
		}
		m.ClearEntity(ctx, "host=worker-10")
		// Every set and clear is an event, in order.
		evs, _, _ := st.Events(ctx, rest.ListOptions{Limit: 20, Filters: map[string]string{"since": a.Timestamp.Add(-1).Format("2006-01-02T15:04:05.999999999Z07:00")}})
		var kinds []string
		for i := len(evs) - 1; i >= 0; i-- {
			kinds = append(kinds, fmt.Sprintf("%s %s", evs[i].Type, evs[i].AlarmID))
		}
		want := "[set 200.001 set 100.104 set 200.004 clear 200.001 set 200.004 clear 100.104 clear 200.004 clear 200.004]"
		if got := fmt.Sprint(kinds); got != want && got != "[set 200.001 set 100.104 set 200.004 clear 200.001 set 200.004 clear 200.004 clear 100.104 clear 200.004]" {
			t.Errorf("events = %s; want %s", got, want)
		}
	})
}

// TestGroupCommit raises many alarms concurrently: each call returns after
// its commit, and every one is there.
func TestGroupCommit(t *testing.T) {
	m, st := manager(t, sqldbtest.Open(t, sqldb.SQLite))
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := m.Raise(ctx, "100.101", fmt.Sprintf("host=h%d", i), map[string]string{"threshold": "95"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if sum, _ := st.Summary(ctx); sum.Major != 500 {
		t.Errorf("after 500 concurrent raises: %d major alarms", sum.Major)
	}
	sets, _, _ := st.Events(ctx, rest.ListOptions{Limit: 1000, Filters: map[string]string{"type": "set"}})
	if len(sets) != 500 {
		t.Errorf("%d set events; want 500", len(sets))
	}
}

// TestConformanceBatchOrder applies dependent operations in one batch: the
// outcome must be as if they ran one by one.
func TestConformanceBatchOrder(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		st, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		mk := func(n int, id, ent string, sev faultmgr.Severity, reason string) faultmgr.Op {
			return faultmgr.Op{Kind: faultmgr.OpRaise, Alarm: faultmgr.Alarm{UUID: fmt.Sprintf("01900000-0000-7000-8000-%012d", n),
				AlarmID: id, EntityInstanceID: ent, Severity: sev, ReasonText: reason, MgmtAffecting: "none", DegradeAffecting: "none"}}
		}
		clr := func(id, ent string) faultmgr.Op {
			return faultmgr.Op{Kind: faultmgr.OpClear, Alarm: faultmgr.Alarm{AlarmID: id, EntityInstanceID: ent}}
		}
		ops := []faultmgr.Op{
			mk(1, "100.101", "host=a", faultmgr.Major, "r"),    // new
			mk(2, "100.101", "host=a", faultmgr.Major, "r"),    // same: no change
			mk(3, "100.101", "host=a", faultmgr.Critical, "r"), // severity change
			mk(4, "100.103", "host=b", faultmgr.Major, "r"),    // new ...
			clr("100.103", "host=b"),                           // ... cleared in the same batch
			clr("100.103", "host=b"),                           // absent: no-op
			mk(5, "100.104", "host=c.filesystem=/x", faultmgr.Major, "r"),
			{Kind: faultmgr.OpClearPrefix, Prefix: "host=c"}, // clears host=c.filesystem=/x, inserted above
			mk(6, "100.104", "host=d", faultmgr.Major, "r"),
		}
		res, err := st.ApplyAlarmOps(ctx, ops, "s", time.Now().UTC())
		if err != nil {
			t.Fatal(err)
		}
		changed := ""
		for _, r := range res {
			if r.Changed {
				changed += "1"
			} else {
				changed += "0"
			}
		}
		if changed != "101110111" {
			t.Errorf("changed flags = %s; want 101110111", changed)
		}
		if res[7].Cleared != 1 {
			t.Errorf("prefix clear cleared %d; want 1", res[7].Cleared)
		}
		all, _, _ := st.Alarms(ctx, rest.ListOptions{Limit: 10})
		got := ""
		for _, a := range all {
			got += fmt.Sprintf("%s@%s:%s ", a.AlarmID, a.EntityInstanceID, a.Severity)
		}
		if got != "100.104@host=d:major 100.101@host=a:critical " {
			t.Errorf("active after the batch = %q", got)
		}
		// set a, set a (severity), set b, clear b, set c, clear c, set d
		if evs, _, _ := st.Events(ctx, rest.ListOptions{Limit: 20}); len(evs) != 7 {
			t.Errorf("%d events; want 7", len(evs))
		}
	})
}
