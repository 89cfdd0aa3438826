package central_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// TestConformanceSyncStore runs on every engine sqldbtest covers (SQLite,
// and PostgreSQL 15 in CI's conformance stage).
func TestConformanceSyncStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		openStore := func(t *testing.T) (*central.SyncStore, *sqldb.DB) {
			db := open(t)
			st, err := central.OpenSyncStore(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			return st, db
		}
		t.Run("PutDeleteSince", func(t *testing.T) { testSyncPutDeleteSince(t, openStore) })
		t.Run("RacingWriters", func(t *testing.T) { testSyncRacingWriters(t, openStore) })
		t.Run("ReaderNeverMissesBelowHead", func(t *testing.T) { testSyncConcurrentReader(t, openStore) })
		t.Run("CompactionAndHorizon", func(t *testing.T) { testSyncCompaction(t, openStore) })
		t.Run("LineageStable", func(t *testing.T) { testSyncLineage(t, openStore) })
		t.Run("BadInputRefused", func(t *testing.T) { testSyncBadInput(t, openStore) })
		t.Run("ChangeHookInCallerTransaction", func(t *testing.T) { testSyncChangeHook(t, openStore) })
		t.Run("SiteStatus", func(t *testing.T) { testSyncSiteStatus(t, openStore) })
	})
}

type openSyncStore func(t *testing.T) (*central.SyncStore, *sqldb.DB)

func testSyncPutDeleteSince(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	if h, err := st.Head(ctx); err != nil || h != 0 {
		t.Fatalf("Head() of a new store = %d, %v; want 0", h, err)
	}
	put := func(res, key, doc string, want uint64) {
		t.Helper()
		if v, err := st.Put(ctx, res, key, []byte(doc)); err != nil || v != want {
			t.Fatalf("Put(%s, %s) = %d, %v; want %d", res, key, v, err, want)
		}
	}
	put(syncproto.Flavors, "f1", `{"vcpus": 1, "name": "small"}`, 1)
	put(syncproto.Images, "i1", `{"name":"cirros"}`, 2)
	put(syncproto.Flavors, "f2", `{"name":"big","vcpus":8}`, 3)
	put(syncproto.Flavors, "f1", `{"name":"small","vcpus":1}`, 1) // same canonical doc: nothing written
	put(syncproto.Flavors, "f1", `{"name":"small","vcpus":2}`, 4)
	if v, err := st.Delete(ctx, syncproto.Flavors, "f2"); err != nil || v != 5 {
		t.Fatalf("Delete(f2) = %d, %v; want 5", v, err)
	}
	if v, err := st.Delete(ctx, syncproto.Flavors, "f2"); err != nil || v != 5 {
		t.Fatalf("Delete(f2) again = %d, %v; want 5 (nothing written)", v, err)
	}
	if v, err := st.Delete(ctx, syncproto.Flavors, "never"); err != nil || v != 0 {
		t.Fatalf("Delete(never) = %d, %v; want 0 (nothing written)", v, err)
	}
	recs, head, err := st.Since(ctx, syncproto.Flavors, 0, 0)
	if err != nil || head != 5 || len(recs) != 2 {
		t.Fatalf("Since(flavors, 0) = %d records, head %d, %v; want 2, 5", len(recs), head, err)
	}
	f1, f2 := recs[0], recs[1]
	sum := sha256.Sum256([]byte(`{"name":"small","vcpus":2}`))
	if f1.Key != "f1" || f1.Version != 4 || f1.Deleted || string(f1.Doc) != `{"name":"small","vcpus":2}` ||
		f1.Content != hex.EncodeToString(sum[:]) || f1.UpdatedAt.IsZero() {
		t.Errorf("Since record 0 = %+v; want f1 at version 4, canonical doc and its hash", f1)
	}
	if f2.Key != "f2" || f2.Version != 5 || !f2.Deleted || f2.Doc != nil || f2.Content != "" {
		t.Errorf("Since record 1 = %+v; want f2's tombstone at version 5", f2)
	}
	if recs, head, err := st.Since(ctx, syncproto.Flavors, 4, 0); err != nil || head != 5 || len(recs) != 1 || recs[0].Key != "f2" {
		t.Errorf("Since(flavors, 4) = %+v, %d, %v; want f2's tombstone, head 5", recs, head, err)
	}
	if recs, head, err := st.Since(ctx, syncproto.Flavors, 5, 0); err != nil || head != 5 || len(recs) != 0 {
		t.Errorf("Since(flavors, 5) = %+v, %d, %v; want nothing, head 5", recs, head, err)
	}
	if recs, head, err := st.Since(ctx, syncproto.Flavors, math.MaxUint64, 0); err != nil || head != 5 || len(recs) != 0 {
		t.Errorf("Since(flavors, MaxUint64) = %+v, %d, %v; want nothing, head 5", recs, head, err)
	}
	if recs, head, err := st.Since(ctx, syncproto.Images, 0, 0); err != nil || head != 5 || len(recs) != 1 || recs[0].Version != 2 {
		t.Errorf("Since(images, 0) = %+v, %d, %v; want i1 at 2, head 5", recs, head, err)
	}
	// A deleted key comes back with a new version.
	put(syncproto.Flavors, "f2", `{"name":"big","vcpus":8}`, 6)
	if recs, _, err := st.Since(ctx, syncproto.Flavors, 5, 0); err != nil || len(recs) != 1 || recs[0].Deleted || recs[0].Version != 6 {
		t.Errorf("Since(flavors, 5) after re-put = %+v, %v; want live f2 at 6", recs, err)
	}
}

func testSyncRacingWriters(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				res := syncproto.Flavors
				if i%2 == 1 {
					res = syncproto.Images
				}
				if _, err := st.Put(ctx, res, fmt.Sprintf("w%d-%d", w, i), []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Put: %v", err)
	}
	var all []central.SyncRecord
	for _, res := range []string{syncproto.Flavors, syncproto.Images} {
		recs, head, err := st.Since(ctx, res, 0, 0)
		if err != nil || head != writers*each {
			t.Fatalf("Since(%s, 0) head = %d, %v; want %d", res, head, err, writers*each)
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].Version <= recs[i-1].Version {
				t.Fatalf("Since(%s) out of order at %d: %d after %d", res, i, recs[i].Version, recs[i-1].Version)
			}
		}
		all = append(all, recs...)
	}
	seen := make(map[uint64]string, len(all))
	for _, r := range all {
		if k, dup := seen[r.Version]; dup {
			t.Fatalf("version %d given to both %s and %s", r.Version, k, r.Key)
		}
		seen[r.Version] = r.Key
	}
	for v := uint64(1); v <= writers*each; v++ {
		if _, ok := seen[v]; !ok {
			t.Errorf("version %d missing (a gap)", v)
		}
	}
	if len(seen) != writers*each {
		t.Errorf("got %d versions; want %d", len(seen), writers*each)
	}
	// Paging with a limit walks the same versions in order.
	var cursor uint64
	var paged int
	for {
		recs, _, err := st.Since(ctx, syncproto.Flavors, cursor, 37)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		paged += len(recs)
		cursor = recs[len(recs)-1].Version
	}
	if paged != writers*each/2 {
		t.Errorf("paged through %d flavor records; want %d", paged, writers*each/2)
	}
}

// testSyncConcurrentReader checks the promise senders rely on: a reader
// that gets head H has every version up to H, even while writers commit.
func testSyncConcurrentReader(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	const writers, each = 4, 50
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := st.Put(ctx, syncproto.Flavors, fmt.Sprintf("w%d-%d", w, i), []byte(`{"n":1}`)); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	var (
		cursor uint64
		reads  int
		got    = map[uint64]bool{}
	)
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true // one more read after the last commit
		default:
		}
		recs, head, err := st.Since(ctx, syncproto.Flavors, cursor, 16)
		if err != nil {
			t.Fatal(err)
		}
		reads++
		to := head
		if len(recs) == 16 {
			to = recs[len(recs)-1].Version
		}
		// Every key is written once, so each version in (cursor, to] is a record.
		for i, r := range recs {
			if want := cursor + 1 + uint64(i); r.Version != want {
				t.Fatalf("read %d from %d (head %d): record %d has version %d; want %d (a missed version)",
					reads, cursor, head, i, r.Version, want)
			}
			got[r.Version] = true
		}
		if uint64(len(recs)) != to-cursor {
			t.Fatalf("read %d from %d: %d records up to %d; want %d", reads, cursor, len(recs), to, to-cursor)
		}
		cursor = to
		if len(recs) == 16 {
			finished = false // more to read even if the writers are done
		}
	}
	if len(got) != writers*each || cursor != writers*each {
		t.Errorf("reader saw %d versions, cursor %d; want %d", len(got), cursor, writers*each)
	}
	t.Logf("%d reads while writing", reads)
}

func testSyncCompaction(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	for _, k := range []string{"a", "b", "c"} {
		if _, err := st.Put(ctx, syncproto.Flavors, k, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"a", "b"} { // tombstones at 4 and 5
		if _, err := st.Delete(ctx, syncproto.Flavors, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Delete(ctx, syncproto.Images, "x"); err != nil { // nothing: never put
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	compact := func(before uint64, olderThan time.Time, wantN int, wantH uint64) {
		t.Helper()
		n, h, err := st.Compact(ctx, syncproto.Flavors, before, olderThan)
		if err != nil || n != wantN || h != wantH {
			t.Fatalf("Compact(before %d) = %d, horizon %d, %v; want %d, %d", before, n, h, err, wantN, wantH)
		}
	}
	compact(4, later, 0, 0)                      // 4 not acknowledged by all
	compact(6, time.Now().Add(-time.Hour), 0, 0) // too young
	compact(5, later, 1, 4)                      // a's tombstone goes
	compact(6, later, 1, 5)                      // then b's
	compact(6, later, 0, 5)                      // nothing left; horizon stays
	if h, err := st.Horizon(ctx, syncproto.Flavors); err != nil || h != 5 {
		t.Errorf("Horizon(flavors) = %d, %v; want 5", h, err)
	}
	if h, err := st.Horizon(ctx, syncproto.Images); err != nil || h != 0 {
		t.Errorf("Horizon(images) = %d, %v; want 0", h, err)
	}
	if _, _, err := st.Since(ctx, syncproto.Flavors, 4, 0); !errors.Is(err, central.ErrBelowHorizon) {
		t.Errorf("Since(flavors, 4) err = %v; want ErrBelowHorizon", err)
	}
	if recs, head, err := st.Since(ctx, syncproto.Flavors, 5, 0); err != nil || len(recs) != 0 || head != 5 {
		t.Errorf("Since(flavors, 5) = %v, %d, %v; want nothing, head 5", recs, head, err)
	}
	if _, _, err := st.Since(ctx, syncproto.Images, 0, 0); err != nil {
		t.Errorf("Since(images, 0) = %v; another resource's horizon must not apply", err)
	}
	// Live records are never compacted; the version counter never goes back.
	if v, err := st.Put(ctx, syncproto.Flavors, "a", []byte(`{}`)); err != nil || v != 6 {
		t.Errorf("Put(a) after compaction = %d, %v; want 6", v, err)
	}
	compact(100, later, 0, 5)
	if recs, _, err := st.Since(ctx, syncproto.Flavors, 5, 0); err != nil || len(recs) != 1 || recs[0].Key != "a" {
		t.Errorf("Since(flavors, 5) = %v, %v; want a at 6", recs, err)
	}
}

func testSyncLineage(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, db := open(t)
	l := st.Lineage()
	if len(l) != 36 {
		t.Fatalf("Lineage() = %q; want a UUID", l)
	}
	if _, err := st.Put(ctx, syncproto.Users, "alice", []byte(`{"role":"admin"}`)); err != nil {
		t.Fatal(err)
	}
	again, err := central.OpenSyncStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if again.Lineage() != l {
		t.Errorf("Lineage() after reopen = %s; want %s", again.Lineage(), l)
	}
	if h, err := again.Head(ctx); err != nil || h != 1 {
		t.Errorf("Head() after reopen = %d, %v; want 1", h, err)
	}
	other, _ := open(t)
	if other.Lineage() == l {
		t.Errorf("a new store has the lineage %s of another", l)
	}
}

func testSyncBadInput(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	for _, tc := range []struct {
		res, key, doc string
	}{
		{"flavours", "k", `{}`},
		{"", "k", `{}`},
		{syncproto.Flavors, "", `{}`},
		{syncproto.Flavors, "bad\x00key", `{}`},
		{syncproto.Flavors, " k", `{}`},
		{syncproto.Flavors, string(make([]byte, 256)), `{}`},
		{syncproto.Flavors, "k", `[1]`},
		{syncproto.Flavors, "k", `{"a":1,"a":2}`},
		{syncproto.Flavors, "k", `{`},
		{syncproto.Flavors, "k", ``},
	} {
		if v, err := st.Put(ctx, tc.res, tc.key, []byte(tc.doc)); !errors.Is(err, errs.Invalid) {
			t.Errorf("Put(%q, %q, %q) = %d, %v; want an Invalid error", tc.res, tc.key, tc.doc, v, err)
		}
	}
	if _, err := st.Delete(ctx, "nope", "k"); !errors.Is(err, errs.Invalid) {
		t.Errorf("Delete(nope) = %v; want Invalid", err)
	}
	if _, _, err := st.Since(ctx, "nope", 0, 0); !errors.Is(err, errs.Invalid) {
		t.Errorf("Since(nope) = %v; want Invalid", err)
	}
	if _, _, err := st.Compact(ctx, "nope", 1, time.Now()); !errors.Is(err, errs.Invalid) {
		t.Errorf("Compact(nope) = %v; want Invalid", err)
	}
	if h, err := st.Head(ctx); err != nil || h != 0 {
		t.Errorf("Head() after refused writes = %d, %v; want 0", h, err)
	}
	for _, res := range syncproto.Resources {
		if recs, _, err := st.Since(ctx, res, 0, 0); err != nil || len(recs) != 0 {
			t.Errorf("Since(%s) after refused writes = %v, %v; want nothing", res, recs, err)
		}
	}
}

func testSyncChangeHook(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, db := open(t)
	if err := db.Exec("CREATE TABLE hook_probe (k VARCHAR(64) PRIMARY KEY)").Error; err != nil {
		t.Fatal(err)
	}
	errRollback := errors.New("rollback")
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("INSERT INTO hook_probe (k) VALUES ('gone')").Error; err != nil {
			return err
		}
		if err := st.ChangeHook(tx, syncproto.Flavors, "gone", []byte(`{"x":1}`), false); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Transaction = %v; want the rollback", err)
	}
	if h, _ := st.Head(ctx); h != 0 {
		t.Errorf("Head() after a rolled-back hook = %d; want 0", h)
	}
	// A refused change aborts the caller's transaction.
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("INSERT INTO hook_probe (k) VALUES ('refused')").Error; err != nil {
			return err
		}
		return st.ChangeHook(tx, syncproto.Flavors, "k", []byte(`not json`), false)
	})
	if !errors.Is(err, errs.Invalid) {
		t.Errorf("hook with a bad doc = %v; want Invalid", err)
	}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("INSERT INTO hook_probe (k) VALUES ('kept')").Error; err != nil {
			return err
		}
		if err := st.ChangeHook(tx, syncproto.Flavors, "kept", []byte(`{"x":1}`), false); err != nil {
			return err
		}
		return st.ChangeHook(tx, syncproto.Flavors, "kept", nil, true)
	})
	if err != nil {
		t.Fatal(err)
	}
	var probes []string
	if err := db.Raw("SELECT k FROM hook_probe ORDER BY k").Scan(&probes).Error; err != nil {
		t.Fatal(err)
	}
	recs, head, err := st.Since(ctx, syncproto.Flavors, 0, 0)
	if err != nil || head != 2 || len(recs) != 1 || recs[0].Key != "kept" || !recs[0].Deleted || len(probes) != 1 || probes[0] != "kept" {
		t.Errorf("after hooks: records %+v head %d err %v, caller rows %v; want kept's tombstone at 2 and [kept]", recs, head, err, probes)
	}
}

func testSyncSiteStatus(t *testing.T, open openSyncStore) {
	ctx := context.Background()
	st, _ := open(t)
	now := time.Now().UTC().Truncate(time.Second)
	a := central.SiteSyncState{Site: "site-1", Resource: syncproto.Flavors, Acked: 7, Status: central.OutOfSync,
		Since: now, Reason: "cursor below head", Pending: 0}
	b := central.SiteSyncState{Site: "site-1", Resource: syncproto.Images, Acked: 9, Status: central.InSync,
		Since: now, Pending: 2, AuditAt: now.Add(time.Minute), Alarmed: true}
	for _, s := range []central.SiteSyncState{b, a, {Site: "site-2", Resource: syncproto.Flavors, Status: central.SyncUnknown, Since: now}} {
		if err := st.SetSiteSyncState(ctx, s); err != nil {
			t.Fatalf("SetSiteSyncState(%+v) = %v", s, err)
		}
	}
	eq := func(x, y central.SiteSyncState) bool {
		return x.Site == y.Site && x.Resource == y.Resource && x.Acked == y.Acked && x.Status == y.Status &&
			x.Since.Equal(y.Since) && x.Reason == y.Reason && x.Pending == y.Pending && x.AuditAt.Equal(y.AuditAt) && x.Alarmed == y.Alarmed
	}
	got, err := st.SiteSyncStates(ctx, "site-1")
	if err != nil || len(got) != 2 || !eq(got[0], a) || !eq(got[1], b) {
		t.Fatalf("SiteSyncStates(site-1) = %+v, %v; want [%+v %+v]", got, err, a, b)
	}
	a.Status, a.Reason, a.Acked, a.Since = central.InSync, "", 12, now.Add(time.Second)
	if err := st.SetSiteSyncState(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, err := st.SiteSyncStates(ctx, "site-1"); err != nil || len(got) != 2 || !eq(got[0], a) {
		t.Errorf("SiteSyncStates(site-1) after update = %+v, %v; want %+v first", got, err, a)
	}
	for _, bad := range []central.SiteSyncState{
		{Site: "site-1", Resource: syncproto.Flavors, Status: "synced"},
		{Site: "site-1", Resource: syncproto.Flavors},
		{Site: "", Resource: syncproto.Flavors, Status: central.InSync},
		{Site: "site-1", Resource: "nope", Status: central.InSync},
		{Site: "site-1", Resource: syncproto.Flavors, Status: central.InSync, Pending: -1},
	} {
		if err := st.SetSiteSyncState(ctx, bad); !errors.Is(err, errs.Invalid) {
			t.Errorf("SetSiteSyncState(%+v) = %v; want Invalid", bad, err)
		}
	}
	if got, _ := st.SiteSyncStates(ctx, "site-1"); len(got) != 2 || got[0].Status != central.InSync {
		t.Errorf("a refused status changed the stored one: %+v", got)
	}
	// A batch: many sites in one transaction (more than one statement's
	// rows), a site named twice keeps the last; one invalid state and
	// nothing is written.
	var many []central.SiteSyncState
	for i := range 1203 {
		many = append(many, central.SiteSyncState{Site: fmt.Sprintf("batch-%04d", i), Resource: syncproto.Flavors, Acked: uint64(i),
			Status: central.OutOfSync, Since: now, Reason: "behind"})
	}
	many = append(many, central.SiteSyncState{Site: "batch-0007", Resource: syncproto.Flavors, Acked: 77, Status: central.InSync, Since: now})
	if err := st.SetSiteSyncStates(ctx, many); err != nil {
		t.Fatalf("SetSiteSyncStates(1204) = %v", err)
	}
	for site, want := range map[string]uint64{"batch-0000": 0, "batch-0007": 77, "batch-1202": 1202} {
		if got, err := st.SiteSyncStates(ctx, site); err != nil || len(got) != 1 || got[0].Acked != want {
			t.Errorf("SiteSyncStates(%s) after the batch = %+v, %v; want acked %d", site, got, err, want)
		}
	}
	bad := append(slices.Clone(many[:3]), central.SiteSyncState{Site: "batch-0001", Resource: syncproto.Flavors, Status: "synced"})
	bad[0].Acked = 999
	if err := st.SetSiteSyncStates(ctx, bad); !errors.Is(err, errs.Invalid) {
		t.Errorf("SetSiteSyncStates(with an invalid state) = %v; want Invalid", err)
	}
	if got, _ := st.SiteSyncStates(ctx, "batch-0000"); len(got) != 1 || got[0].Acked != 0 {
		t.Errorf("a refused batch changed a stored state: %+v", got)
	}
	if err := st.DeleteSiteSyncStates(ctx, "site-1"); err != nil {
		t.Fatal(err)
	}
	if got, err := st.SiteSyncStates(ctx, "site-1"); err != nil || len(got) != 0 {
		t.Errorf("SiteSyncStates(site-1) after delete = %+v, %v; want none", got, err)
	}
	if got, err := st.SiteSyncStates(ctx, "site-2"); err != nil || len(got) != 1 {
		t.Errorf("SiteSyncStates(site-2) = %+v, %v; want its one row kept", got, err)
	}
}

// TestSyncStoreLineageSurvivesReopen closes and reopens a SQLite file: the
// lineage and head are the database's, not the process's.
func TestSyncStoreLineageSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "central.db")
	db, err := sqldb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := central.OpenSyncStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, syncproto.Projects, "p1", []byte(`{"name":"p1"}`)); err != nil {
		t.Fatal(err)
	}
	l := st.Lineage()
	db.Close()
	db, err = sqldb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err = central.OpenSyncStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := st.Head(ctx); st.Lineage() != l || err != nil || h != 1 {
		t.Errorf("after reopen: lineage %s head %d %v; want %s, 1", st.Lineage(), h, err, l)
	}
}
