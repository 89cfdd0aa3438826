package central

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/internal/syncproto"
	"github.com/petrel-edge/petrel/inventory"
)

// fakeSite is a site's flavors in memory, with Nova's rules: unique names
// and IDs, delete by ID.
type fakeSite struct {
	userSite  // not used by these tests
	imageSite // nil: these tests sync flavors only
	mu        sync.Mutex
	flavors   map[string]compute.Flavor
	fail      error // every call fails with it (a cut link)
	creates   int
}

func (s *fakeSite) Flavors(context.Context) ([]compute.Flavor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []compute.Flavor
	for _, f := range s.flavors {
		f.Project = "" // a listing does not show it
		out = append(out, f)
	}
	return out, nil
}

func (s *fakeSite) CreateFlavor(_ context.Context, f compute.Flavor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for _, h := range s.flavors {
		if h.ID == f.ID || h.Name == f.Name {
			return fmt.Errorf("%w: %s", compute.ErrFlavorExists, f.Name)
		}
	}
	s.flavors[f.ID] = f
	s.creates++
	return nil
}

func (s *fakeSite) DeleteFlavor(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if _, ok := s.flavors[id]; !ok {
		return fmt.Errorf("%w: %s", compute.ErrFlavorNotFound, id)
	}
	delete(s.flavors, id)
	return nil
}

func (s *fakeSite) names() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, f := range s.flavors {
		out = append(out, f.Name)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

type fakeSites struct {
	mu     sync.Mutex
	sites  map[string]*fakeSite
	linked map[string]bool
}

func (f *fakeSites) site(name string) syncSite {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.linked[name] {
		return nil
	}
	return f.sites[name]
}

func (f *fakeSites) link(name string, up bool) {
	f.mu.Lock()
	f.linked[name] = up
	f.mu.Unlock()
}

type fakeAlarms struct {
	mu     sync.Mutex
	active map[string]bool
	raised int
}

func (a *fakeAlarms) Raise(_ context.Context, id, entity string, fields map[string]string) (faultmgr.Alarm, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if fields["subcloud"] == "" || fields["resource"] == "" {
		return faultmgr.Alarm{}, false, errors.New("fields missing")
	}
	changed := !a.active[id+"/"+entity]
	a.active[id+"/"+entity] = true
	a.raised++
	return faultmgr.Alarm{}, changed, nil
}

func (a *fakeAlarms) Clear(_ context.Context, id, entity string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := a.active[id+"/"+entity]
	delete(a.active, id+"/"+entity)
	return changed, nil
}

func (a *fakeAlarms) is(site string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active["280.002/subcloud="+site+".resource=flavors"]
}

// syncRig is an engine on a real store (SQLite or PostgreSQL) with fake
// sites and a fake clock, stepped by hand.
type syncRig struct {
	t      *testing.T
	ctx    context.Context
	db     *sqldb.DB
	store  *SyncStore
	reg    SubcloudStore
	sites  *fakeSites
	alarms *fakeAlarms
	now    time.Time
	e      *syncEngine
}

func newSyncRig(t *testing.T, db *sqldb.DB, names ...string) *syncRig {
	ctx := context.Background()
	store, err := OpenSyncStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := OpenSubcloudStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	r := &syncRig{t: t, ctx: ctx, db: db, store: store, reg: reg, now: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC),
		sites:  &fakeSites{sites: map[string]*fakeSite{}, linked: map[string]bool{}},
		alarms: &fakeAlarms{active: map[string]bool{}}}
	for _, n := range names {
		if err := reg.CreateSubcloud(ctx, Subcloud{Name: n, Shape: inventory.Simplex, Availability: Online, Management: Managed,
			DeployStatus: DeployComplete, Sync: map[string]SyncStatus{}, Status: StatusOK}); err != nil {
			t.Fatal(err)
		}
		r.sites.sites[n] = &fakeSite{flavors: map[string]compute.Flavor{}}
		r.sites.linked[n] = true
	}
	r.restart()
	return r
}

// restart builds a new engine on the same store (central restarted).
func (r *syncRig) restart() {
	r.e = newSyncEngine(SyncConfig{Now: func() time.Time { return r.now }}, r.store, r.reg, r.sites, r.alarms,
		[]syncer{flavorSyncer{}}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := r.e.load(r.ctx); err != nil {
		r.t.Fatal(err)
	}
}

// step is one round of Run: registry, heads, passes (synchronously), sweep.
func (r *syncRig) step() {
	r.t.Helper()
	if err := r.e.refreshSites(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	if err := r.e.refreshHeads(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	for _, s := range r.e.due(r.now) {
		r.e.pass(r.ctx, s)
	}
	r.e.sweep(r.ctx, r.now)
}

func (r *syncRig) advance(d time.Duration) {
	r.now = r.now.Add(d)
	r.step()
}

func (r *syncRig) putFlavor(name string, vcpus int) string {
	r.t.Helper()
	f := compute.Flavor{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", len(name)*1000+vcpus), Name: name, VCPUs: vcpus,
		RAMMiB: 128, DiskGiB: 1, Public: true, Project: "admin"}
	doc, _ := json.Marshal(f)
	if _, err := r.store.Put(r.ctx, syncproto.Flavors, f.ID, doc); err != nil {
		r.t.Fatal(err)
	}
	return f.ID
}

func (r *syncRig) status(site string) SyncStatus {
	return r.e.statuses(site)["flavors"]
}

// persisted is the status the registry record shows (`subcloud show`).
func (r *syncRig) persisted(site string) SyncStatus {
	sc, err := r.reg.Subcloud(r.ctx, site)
	if err != nil {
		r.t.Fatal(err)
	}
	return sc.Sync["flavors"]
}

func TestConformanceSyncEngine(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		t.Run("Converge", func(t *testing.T) { testSyncConverge(t, open(t)) })
		t.Run("OfflineSiteCatchesUp", func(t *testing.T) { testSyncOffline(t, open(t)) })
		t.Run("ConflictAndAudit", func(t *testing.T) { testSyncConflictAudit(t, open(t)) })
		t.Run("RestartResumes", func(t *testing.T) { testSyncRestart(t, open(t)) })
	})
}

// TestSyncAuditsShareTheDesiredSet: sites audited while a resource's
// head holds share one read of its desired set; a change reads it anew.
func TestSyncAuditsShareTheDesiredSet(t *testing.T) {
	r := newSyncRig(t, sqldbtest.Open(t, sqldb.SQLite), "site-a", "site-b", "site-c", "site-d")
	r.putFlavor("m1.small", 1)
	r.step()
	if n := r.e.desiredReads.Load(); n != 1 {
		t.Errorf("4 sites audited: %d reads of the desired set; want 1", n)
	}
	for _, s := range []string{"site-a", "site-b", "site-c", "site-d"} {
		r.e.linkUp(s) // audit again
	}
	r.advance(time.Second)
	if n := r.e.desiredReads.Load(); n != 1 {
		t.Errorf("4 sites audited again, nothing changed: %d reads in all; want 1", n)
	}
	r.putFlavor("m1.large", 4)
	for _, s := range []string{"site-a", "site-b"} {
		r.e.linkUp(s)
	}
	r.advance(time.Second)
	if n := r.e.desiredReads.Load(); n != 2 {
		t.Errorf("after a change, 2 sites audited: %d reads in all; want 2", n)
	}
	for _, s := range []string{"site-a", "site-b", "site-c", "site-d"} {
		if got := r.sites.sites[s].names(); got != "m1.large,m1.small" || r.status(s) != InSync {
			t.Errorf("%s holds %q, %s; want both flavors, in-sync", s, got, r.status(s))
		}
	}
}

func testSyncConverge(t *testing.T, db *sqldb.DB) {
	r := newSyncRig(t, db, "site-a", "site-b", "site-u")
	if _, err := r.reg.UpdateSubcloud(r.ctx, "site-u", func(sc *Subcloud) error { return sc.SetManagement(Unmanaged) }); err != nil {
		t.Fatal(err)
	}
	r.putFlavor("m1.small", 1)
	r.putFlavor("m1.large", 4)
	r.step()
	for _, s := range []string{"site-a", "site-b"} {
		if got := r.sites.sites[s].names(); got != "m1.large,m1.small" {
			t.Errorf("%s holds %q", s, got)
		}
		if r.status(s) != InSync || r.persisted(s) != InSync {
			t.Errorf("%s: %s (persisted %s); want in-sync", s, r.status(s), r.persisted(s))
		}
	}
	if got := r.sites.sites["site-u"].names(); got != "" || r.status("site-u") != SyncUnknown {
		t.Errorf("unmanaged site holds %q, status %s; want nothing, unknown", got, r.status("site-u"))
	}
	// A delete and a create reach both; a replayed pass changes nothing.
	del := r.putFlavor("m1.tiny", 1)
	r.advance(time.Second)
	if _, err := r.store.Delete(r.ctx, syncproto.Flavors, del); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Second)
	creates := r.sites.sites["site-a"].creates
	for _, res := range r.e.state["site-a"].res {
		res.acked = 0 // as if the acknowledgement was lost: everything again
	}
	r.advance(time.Second)
	if got := r.sites.sites["site-a"].names(); got != "m1.large,m1.small" {
		t.Errorf("after the replay site-a holds %q", got)
	}
	if r.sites.sites["site-a"].creates != creates {
		t.Errorf("the replay created %d flavors again", r.sites.sites["site-a"].creates-creates)
	}
	if r.status("site-a") != InSync {
		t.Errorf("site-a: %s", r.status("site-a"))
	}
	// Managed again: it gets everything.
	if _, err := r.reg.UpdateSubcloud(r.ctx, "site-u", func(sc *Subcloud) error { return sc.SetManagement(Managed) }); err != nil {
		t.Fatal(err)
	}
	r.advance(3 * time.Second)
	if got := r.sites.sites["site-u"].names(); got != "m1.large,m1.small" || r.status("site-u") != InSync {
		t.Errorf("managed site-u holds %q, %s", got, r.status("site-u"))
	}
}

func testSyncOffline(t *testing.T, db *sqldb.DB) {
	r := newSyncRig(t, db, "site-a", "site-b")
	r.putFlavor("m1.small", 1)
	r.step()
	r.sites.link("site-b", false)
	r.putFlavor("m1.large", 4)
	r.advance(time.Second)
	if r.status("site-a") != InSync || r.sites.sites["site-a"].names() != "m1.large,m1.small" {
		t.Fatalf("site-a: %s, %q", r.status("site-a"), r.sites.sites["site-a"].names())
	}
	if r.status("site-b") != OutOfSync || r.persisted("site-b") != OutOfSync {
		t.Fatalf("offline site-b: %s (persisted %s); want out-of-sync", r.status("site-b"), r.persisted("site-b"))
	}
	r.advance(29 * time.Second)
	if r.alarms.is("site-b") {
		t.Fatal("280.002 raised before 30 s out of sync")
	}
	r.advance(2 * time.Second)
	if !r.alarms.is("site-b") || r.alarms.is("site-a") {
		t.Fatalf("280.002: site-b %v, site-a %v; want only site-b", r.alarms.is("site-b"), r.alarms.is("site-a"))
	}
	// It returns: audited, caught up, in-sync; the alarm clears only
	// after 10 s in sync and 60 s after it was raised.
	r.sites.link("site-b", true)
	r.e.linkUp("site-b")
	r.advance(time.Second)
	if r.status("site-b") != InSync || r.sites.sites["site-b"].names() != "m1.large,m1.small" {
		t.Fatalf("returned site-b: %s, %q", r.status("site-b"), r.sites.sites["site-b"].names())
	}
	r.advance(15 * time.Second)
	if !r.alarms.is("site-b") {
		t.Fatal("280.002 cleared within 60 s of being raised")
	}
	for range 50 {
		r.advance(time.Second)
	}
	if r.alarms.is("site-b") {
		t.Fatal("280.002 not cleared")
	}
	// A linked site that cannot apply (every call fails) goes
	// out-of-sync after the grace, and backs off.
	r.sites.sites["site-a"].fail = errs.Wrapf(errs.Unavailable, "cut")
	r.putFlavor("m1.xl", 8)
	for range 12 {
		r.advance(time.Second)
	}
	if r.status("site-a") != OutOfSync {
		t.Fatalf("failing site-a: %s; want out-of-sync", r.status("site-a"))
	}
	r.sites.sites["site-a"].fail = nil
	for range 40 {
		r.advance(time.Second)
	}
	if r.status("site-a") != InSync || !strings.Contains(r.sites.sites["site-a"].names(), "m1.xl") {
		t.Fatalf("recovered site-a: %s, %q", r.status("site-a"), r.sites.sites["site-a"].names())
	}
}

func testSyncConflictAudit(t *testing.T, db *sqldb.DB) {
	r := newSyncRig(t, db, "site-a")
	site := r.sites.sites["site-a"]
	local := compute.Flavor{ID: "11111111-0000-4000-8000-000000000000", Name: "m1.small", VCPUs: 2, RAMMiB: 64, DiskGiB: 1}
	own := compute.Flavor{ID: "22222222-0000-4000-8000-000000000000", Name: "site.own", VCPUs: 1, RAMMiB: 64, DiskGiB: 1}
	site.flavors[local.ID], site.flavors[own.ID] = local, own
	r.putFlavor("m1.small", 1)
	keep := r.putFlavor("m1.large", 4)
	r.step()
	if r.status("site-a") != OutOfSync {
		t.Fatalf("with a same-named local flavor: %s; want out-of-sync", r.status("site-a"))
	}
	if got := site.flavors[local.ID]; got != local {
		t.Fatalf("the local flavor was changed: %+v", got)
	}
	if reason := r.e.state["site-a"].res["flavors"].reason; !strings.Contains(reason, "m1.small") {
		t.Errorf("reason %q does not name the flavor", reason)
	}
	// The operator removes the local flavor; the retry audit repairs.
	delete(site.flavors, local.ID)
	r.advance(31 * time.Second)
	if r.status("site-a") != InSync || site.names() != "m1.large,m1.small,site.own" {
		t.Fatalf("after the local flavor went: %s, %q", r.status("site-a"), site.names())
	}
	// Drift: someone deletes a central flavor at the site and changes
	// another; the periodic audit repairs both and leaves local ones.
	delete(site.flavors, keep)
	for id, f := range site.flavors {
		if f.Name == "m1.small" {
			f.VCPUs = 9
			site.flavors[id] = f
		}
	}
	r.advance(time.Second)
	if site.names() != "m1.small,site.own" {
		t.Fatalf("drift repaired before the audit was due: %q", site.names())
	}
	r.advance(10 * time.Minute)
	if site.names() != "m1.large,m1.small,site.own" || r.status("site-a") != InSync {
		t.Fatalf("after the audit: %q, %s", site.names(), r.status("site-a"))
	}
	for _, f := range site.flavors {
		if f.Name == "m1.small" && f.VCPUs != 1 {
			t.Errorf("m1.small not repaired: %+v", f)
		}
	}
}

func testSyncRestart(t *testing.T, db *sqldb.DB) {
	r := newSyncRig(t, db, "site-a", "site-b")
	r.putFlavor("m1.small", 1)
	r.step()
	r.sites.link("site-b", false)
	r.putFlavor("m1.large", 4)
	r.advance(time.Second)
	r.advance(31 * time.Second)
	if !r.alarms.is("site-b") {
		t.Fatal("no 280.002 for the offline site")
	}
	// Central restarts: statuses, cursors and the alarm come back from
	// the store; site-b is still out of sync, site-a in sync.
	r.restart()
	r.now = r.now.Add(time.Second)
	r.e.sweep(r.ctx, r.now)
	if r.status("site-a") != InSync || r.status("site-b") != OutOfSync {
		t.Fatalf("after the restart: site-a %s, site-b %s", r.status("site-a"), r.status("site-b"))
	}
	creates := r.sites.sites["site-a"].creates
	r.sites.link("site-b", true)
	r.step()
	if r.status("site-b") != InSync || r.sites.sites["site-b"].names() != "m1.large,m1.small" {
		t.Fatalf("site-b after its return: %s, %q", r.status("site-b"), r.sites.sites["site-b"].names())
	}
	if r.sites.sites["site-a"].creates != creates {
		t.Errorf("the restart's audit created %d flavors again at site-a", r.sites.sites["site-a"].creates-creates)
	}
	for range 70 {
		r.advance(time.Second)
	}
	if r.alarms.is("site-b") {
		t.Fatal("280.002 raised before the restart never cleared")
	}
}

func TestSyncStatusMachine(t *testing.T) {
	all := []SyncStatus{InSync, OutOfSync, SyncUnknown}
	for _, from := range all {
		for _, to := range all {
			ok := slices.Contains(syncStatusNext[from], to)
			if want := from != to; ok != want {
				t.Errorf("%s -> %s allowed %v; want %v", from, to, ok, want)
			}
		}
	}
	cases := []struct {
		name string
		v    syncView
		want SyncStatus
	}{
		{"unmanaged", syncView{managed: false, linked: true, audited: true, prev: InSync}, SyncUnknown},
		{"never audited", syncView{managed: true, linked: true, prev: SyncUnknown}, SyncUnknown},
		{"audited, current", syncView{managed: true, linked: true, audited: true, acked: 5, head: 5, prev: SyncUnknown}, InSync},
		{"offline, current, was in sync", syncView{managed: true, acked: 5, head: 5, prev: InSync}, InSync},
		{"offline, behind", syncView{managed: true, acked: 4, head: 5, prev: InSync}, OutOfSync},
		{"linked, behind within grace", syncView{managed: true, linked: true, audited: true, acked: 4, head: 5, behind: time.Second, grace: 10 * time.Second, prev: InSync}, InSync},
		{"linked, behind past grace", syncView{managed: true, linked: true, audited: true, acked: 4, head: 5, behind: 11 * time.Second, grace: 10 * time.Second, prev: InSync}, OutOfSync},
		{"failed record", syncView{managed: true, linked: true, audited: true, acked: 5, head: 5, failed: map[string]string{"k": "conflict"}, prev: InSync}, OutOfSync},
	}
	for _, c := range cases {
		if got, _ := syncStatusOf(c.v); got != c.want {
			t.Errorf("%s: %s; want %s", c.name, got, c.want)
		}
	}
}

// slowSyncer takes records like a site fetching an image's bytes: pending
// until done is set.
type slowSyncer struct {
	mu   sync.Mutex
	done bool
}

func (*slowSyncer) resource() string { return "images" }

func (s *slowSyncer) apply(context.Context, syncSite, SyncRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		return errSyncPending
	}
	return nil
}

func (s *slowSyncer) audit(_ context.Context, _ syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, nil
	}
	return desired, nil
}

func TestSyncPendingRecords(t *testing.T) {
	r := newSyncRig(t, sqldbtest.Open(t, sqldb.SQLite), "site-a")
	slow := &slowSyncer{}
	r.e = newSyncEngine(SyncConfig{Now: func() time.Time { return r.now }}, r.store, r.reg, r.sites, r.alarms,
		[]syncer{slow}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := r.e.load(r.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.Put(r.ctx, syncproto.Images, "img-1", []byte(`{"id":"img-1"}`)); err != nil {
		t.Fatal(err)
	}
	images := func() SyncStatus { return r.e.statuses("site-a")["images"] }
	r.step()
	if images() != SyncUnknown {
		t.Fatalf("pending within the grace: %s; want unknown (as before)", images())
	}
	for range 12 {
		r.advance(time.Second)
	}
	if images() != OutOfSync {
		t.Fatalf("pending past the grace: %s; want out-of-sync", images())
	}
	if reason := r.e.state["site-a"].res["images"].reason; !strings.Contains(reason, "img-1") {
		t.Errorf("reason %q does not name the record", reason)
	}
	slow.mu.Lock()
	slow.done = true
	slow.mu.Unlock()
	r.advance(3 * time.Second)
	if images() != InSync {
		t.Fatalf("after the transfer: %s; want in-sync", images())
	}
}
