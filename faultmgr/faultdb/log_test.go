package faultdb_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// TestConformanceLogOrder: concurrent writers of every kind get gap-free
// sequence numbers, After reads them back in order, and Watch wakes on
// commit.
func TestConformanceLogOrder(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		m, st := manager(t, db)
		last0, woke := st.Watch()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					if w%2 == 0 {
						m.Raise(ctx, "100.101", fmt.Sprintf("host=w%d-%d", w, i), map[string]string{"threshold": "90"})
					} else {
						id, _ := uuid.NewV7()
						st.AppendEvent(ctx, faultmgr.Event{UUID: id.String(), Type: faultmgr.EventAudit, User: "u", Timestamp: time.Now()})
					}
				}
			}()
		}
		wg.Wait()
		select {
		case <-woke:
		default:
			t.Error("Watch's channel not closed after commits")
		}
		last, _ := st.Watch()
		if last != last0+100 {
			t.Fatalf("last seq %d after 100 events from %d", last, last0)
		}
		var got []faultmgr.Record
		for after := last0; ; {
			recs, err := st.After(ctx, after, 33)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			got = append(got, recs...)
			after = recs[len(recs)-1].Seq
		}
		if len(got) != 100 {
			t.Fatalf("After read %d records; want 100", len(got))
		}
		for i, r := range got {
			if r.Seq != last0+uint64(i)+1 {
				t.Fatalf("record %d has seq %d; want %d (gap-free, ascending)", i, r.Seq, last0+uint64(i)+1)
			}
			if r.Event.Type == faultmgr.EventSet && r.AlarmUUID == "" {
				t.Errorf("set record %d carries no alarm UUID", r.Seq)
			}
		}
		// The epoch and the numbering survive reopening the store.
		st2, err := faultdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if st2.Epoch() != st.Epoch() || st.Epoch() == "" {
			t.Errorf("epoch %q after reopening; was %q", st2.Epoch(), st.Epoch())
		}
		if l2, _ := st2.Watch(); l2 != last {
			t.Errorf("reopened store's last seq %d; want %d", l2, last)
		}
	})
}

// TestConformanceApplySite: central applies a site's records exactly once
// and in order, keeps each site's alarms apart, and refuses another epoch.
func TestConformanceApplySite(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		site, _ := manager(t, open(t)) // a site ("site-sx"), its own store
		central, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		siteStore := site.Store().(*faultdb.Store)
		site.Raise(ctx, "200.001", "host=controller-0", nil)
		site.Raise(ctx, "100.101", "host=controller-0", map[string]string{"threshold": "90"})
		site.Clear(ctx, "200.001", "host=controller-0")
		recs, _ := siteStore.After(ctx, 0, 100)
		ops := faultmgr.SiteOps(site.Catalog(), recs)
		if err := central.ResetSite(ctx, "site-sx", siteStore.Epoch()); err != nil {
			t.Fatal(err)
		}
		// Applied twice (an ack lost): the second time changes nothing.
		for range 2 {
			n, err := central.ApplySite(ctx, "site-sx", siteStore.Epoch(), recs, ops)
			if err != nil || n != recs[len(recs)-1].Seq {
				t.Fatalf("ApplySite = %d, %v", n, err)
			}
		}
		// The same key at another site is another alarm.
		other := []faultmgr.Record{{Seq: 1, AlarmUUID: mustUUID(), Event: faultmgr.Event{UUID: mustUUID(), Type: faultmgr.EventSet,
			AlarmID: "100.101", EntityInstanceID: "host=controller-0", Severity: "major", ReasonText: "hot", Timestamp: time.Now()}}}
		if _, err := central.ApplySite(ctx, "site-b", "epoch-b", other, faultmgr.SiteOps(site.Catalog(), other)); !errors.Is(err, faultdb.ErrStaleBatch) {
			t.Errorf("a batch for a site without a cursor (deleted, never linked): %v", err)
		}
		central.ResetSite(ctx, "site-b", "epoch-b")
		if _, err := central.ApplySite(ctx, "site-b", "epoch-b", other, faultmgr.SiteOps(site.Catalog(), other)); err != nil {
			t.Fatal(err)
		}
		all, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100})
		if len(all) != 2 {
			t.Fatalf("central holds %d alarms; want 100.101 at site-sx and at site-b: %+v", len(all), all)
		}
		sx, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"site": "site-sx"}})
		if len(sx) != 1 || sx[0].AlarmID != "100.101" || sx[0].Site != "site-sx" || sx[0].AlarmType == "" {
			t.Errorf("site-sx alarms at central: %+v", sx)
		}
		evs, _, _ := central.Events(ctx, rest.ListOptions{Limit: 100})
		if len(evs) != len(recs)+1 {
			t.Errorf("central holds %d events; want %d (each exactly once)", len(evs), len(recs)+1)
		}
		if _, err := central.ApplySite(ctx, "site-sx", "another-epoch", recs, ops); !errors.Is(err, faultdb.ErrStaleBatch) {
			t.Errorf("a batch from another epoch: %v", err)
		}
		// A subcloud deleted and added again: its log is resent from the
		// start; events central still holds are skipped, alarms rebuilt.
		if err := central.DeleteSite(ctx, "site-sx"); err != nil {
			t.Fatal(err)
		}
		central.ResetSite(ctx, "site-sx", siteStore.Epoch())
		if n, err := central.ApplySite(ctx, "site-sx", siteStore.Epoch(), recs, ops); err != nil || n != recs[len(recs)-1].Seq {
			t.Fatalf("resent log after delete and re-add: %d, %v", n, err)
		}
		if sx, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"site": "site-sx"}}); len(sx) != 1 {
			t.Errorf("alarms rebuilt from the resent log: %+v", sx)
		}
		if evs, _, _ := central.Events(ctx, rest.ListOptions{Limit: 100}); len(evs) != len(recs)+1 {
			t.Errorf("central holds %d events after the resend; want %d (no duplicates)", len(evs), len(recs)+1)
		}
		// A site's log starting over drops what central held of it.
		if err := central.ResetSite(ctx, "site-sx", "another-epoch"); err != nil {
			t.Fatal(err)
		}
		if sx, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"site": "site-sx"}}); len(sx) != 0 {
			t.Errorf("after a reset central still holds %+v", sx)
		}
		if ep, seq, _ := central.SiteCursor(ctx, "site-sx"); ep != "another-epoch" || seq != 0 {
			t.Errorf("cursor after reset = %s/%d", ep, seq)
		}
	})
}

// TestConformanceApplySitesReset: a reset in a combined transaction starts
// its site's log over (alarms dropped, cursor at the new epoch), applies the
// records that follow it, and leaves the other sites' batches alone.
func TestConformanceApplySitesReset(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		site, _ := manager(t, open(t))
		central, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		// One raise in a site's log (alarm and event UUIDs are global).
		raise := func() ([]faultmgr.Record, []faultmgr.Op) {
			recs := []faultmgr.Record{{Seq: 1, AlarmUUID: mustUUID(), Event: faultmgr.Event{UUID: mustUUID(), Type: faultmgr.EventSet,
				AlarmID: "100.101", EntityInstanceID: "host=controller-0", Severity: "major", ReasonText: "hot", Timestamp: time.Now()}}}
			return recs, faultmgr.SiteOps(site.Catalog(), recs)
		}
		var b []faultmgr.Record
		var bops []faultmgr.Op
		for _, s := range []string{"site-a", "site-b"} {
			recs, ops := raise()
			if err := central.ResetSite(ctx, s, "old"); err != nil {
				t.Fatal(err)
			}
			if _, err := central.ApplySite(ctx, s, "old", recs, ops); err != nil {
				t.Fatal(err)
			}
			b, bops = recs, ops
		}
		c, cops := raise()
		res, err := central.ApplySites(ctx, []faultdb.SiteBatch{
			{Site: "site-a", Epoch: "new", Reset: true},
			{Site: "site-b", Epoch: "old", Records: b, Ops: bops}, // a resend: skipped
			{Site: "site-c", Epoch: "first", Reset: true, Records: c, Ops: cops},
		})
		if err != nil {
			t.Fatal(err)
		}
		last := uint64(1)
		if res[0].Err != nil || res[0].Applied != 0 || res[1].Err != nil || res[1].Applied != last || res[2].Err != nil || res[2].Applied != last {
			t.Fatalf("ApplySites = %+v; want a reset at 0, b and c at %d", res, last)
		}
		for s, want := range map[string]struct {
			epoch  string
			seq    uint64
			alarms int
		}{"site-a": {"new", 0, 0}, "site-b": {"old", last, 1}, "site-c": {"first", last, 1}} {
			ep, seq, _ := central.SiteCursor(ctx, s)
			held, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"site": s}})
			if ep != want.epoch || seq != want.seq || len(held) != want.alarms {
				t.Errorf("%s: cursor %s/%d, %d alarms; want %s/%d, %d", s, ep, seq, len(held), want.epoch, want.seq, want.alarms)
			}
		}
	})
}

// TestConformanceTrim: history is bounded by count and age, but events a
// reader still needs stay until the hard bound.
func TestConformanceTrim(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		st, err := faultdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now().UTC().Add(-time.Hour)
		for i := range 100 {
			st.AppendEvent(ctx, faultmgr.Event{UUID: mustUUID(), Type: faultmgr.EventLog, Timestamp: t0.Add(time.Duration(i) * time.Second)})
		}
		count := func() int {
			recs, _ := st.After(ctx, 0, 1000)
			return len(recs)
		}
		// A reader at 30 holds back the count bound of 50.
		if n, err := st.Trim(ctx, faultdb.TrimPolicy{MaxEvents: 50, Floor: 30, Now: time.Now()}); err != nil || n != 30 || count() != 70 {
			t.Errorf("trim with floor 30: deleted %d (%v), %d left; want 30, 70", n, err, count())
		}
		if n, _ := st.Trim(ctx, faultdb.TrimPolicy{MaxEvents: 50, Floor: 100, Now: time.Now()}); n != 20 || count() != 50 {
			t.Errorf("trim to 50: deleted %d, %d left", n, count())
		}
		// Age: events older than 70 s before the last are gone.
		if n, _ := st.Trim(ctx, faultdb.TrimPolicy{MaxAge: time.Hour - 90*time.Second, Floor: 100, Now: time.Now()}); count() > 11 || n < 39 {
			t.Errorf("trim by age: deleted %d, %d left", n, count())
		}
		// The hard bound wins over the floor.
		if _, err := st.Trim(ctx, faultdb.TrimPolicy{MaxEvents: 1, Floor: 0, HardMax: 5, Now: time.Now()}); err != nil || count() != 5 {
			t.Errorf("hard bound: %d left (%v); want 5", count(), err)
		}
		// Everything aged out: the newest stays, so numbering never
		// restarts under the same epoch (a reader would skip new events).
		st.Trim(ctx, faultdb.TrimPolicy{MaxAge: time.Hour, Floor: 1000, Now: time.Now().Add(48 * time.Hour)})
		if count() != 1 {
			t.Errorf("%d events left after all aged out; want the newest", count())
		}
		st2, err := faultdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		st2.AppendEvent(ctx, faultmgr.Event{UUID: mustUUID(), Type: faultmgr.EventLog, Timestamp: time.Now()})
		if last, _ := st2.Watch(); last != 101 {
			t.Errorf("after a restart the next event is %d; want 101", last)
		}
	})
}

func mustUUID() string {
	id, _ := uuid.NewV7()
	return id.String()
}

// TestConformanceApplySites: batches of several sites commit together; a
// batch in a stale epoch fails alone; two batches of one site apply in
// order within one transaction.
func TestConformanceApplySites(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		central, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		cat, _ := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
		recs := func(from, to int, entity string) []faultmgr.Record {
			var out []faultmgr.Record
			for i := from; i <= to; i++ {
				out = append(out, faultmgr.Record{Seq: uint64(i), AlarmUUID: mustUUID(), Event: faultmgr.Event{UUID: mustUUID(),
					Type: faultmgr.EventSet, AlarmID: "100.101", EntityInstanceID: fmt.Sprintf("%s%d", entity, i), Severity: "major",
					ReasonText: "hot", Timestamp: time.Now()}})
			}
			return out
		}
		for _, s := range []string{"a", "b", "c"} {
			central.ResetSite(ctx, s, "e-"+s)
		}
		b := func(site, epoch string, r []faultmgr.Record) faultdb.SiteBatch {
			return faultdb.SiteBatch{Site: site, Epoch: epoch, Records: r, Ops: faultmgr.SiteOps(cat, r)}
		}
		res, err := central.ApplySites(ctx, []faultdb.SiteBatch{
			b("a", "e-a", recs(1, 3, "host=a")), b("b", "stale", recs(1, 2, "host=b")),
			b("a", "e-a", recs(2, 5, "host=a")), b("c", "e-c", recs(1, 1, "host=c")),
		})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Applied != 3 || res[2].Applied != 5 || res[3].Applied != 1 || !errors.Is(res[1].Err, faultdb.ErrStaleBatch) {
			t.Errorf("results %+v", res)
		}
		// A gap (the site trimmed records before shipping them) is applied
		// and reported.
		gap, _ := central.ApplySites(ctx, []faultdb.SiteBatch{b("c", "e-c", recs(5, 6, "host=c"))})
		if gap[0].Err != nil || gap[0].Missing != 3 || gap[0].GapFrom != 2 || gap[0].Applied != 6 {
			t.Errorf("a batch after a gap: %+v; want 3 missing from 2, applied to 6", gap[0])
		}
		for site, want := range map[string][2]int{"a": {5, 5}, "b": {0, 0}, "c": {3, 6}} {
			as, _, _ := central.Alarms(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"site": site}})
			if len(as) != want[0] {
				t.Errorf("site %s: %d alarms at central; want %d", site, len(as), want[0])
			}
			if _, seq, _ := central.SiteCursor(ctx, site); seq != uint64(want[1]) {
				t.Errorf("site %s cursor %d; want %d", site, seq, want[1])
			}
		}
	})
}
