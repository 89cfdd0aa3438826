package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/ui"
)

// fleetOf is n sites, sorted by name, with statuses and the rest mixed.
func fleetOf(n int) []ui.SiteRow {
	statuses := []string{"ok", "degraded", "critical", "offline"}
	rows := make([]ui.SiteRow, n)
	for i := range rows {
		rows[i] = ui.SiteRow{Name: fmt.Sprintf("site-%05d", i), Status: statuses[i%4], Availability: "online",
			Management: "managed", Sync: "in-sync"}
		if i%4 == 3 {
			rows[i].Availability = "offline"
		}
		if i%10 == 0 {
			rows[i].Sync, rows[i].Management = "out-of-sync", "unmanaged"
		}
	}
	return rows
}

func TestParseFleetQuery(t *testing.T) {
	q, err := ui.ParseFleetQuery(url.Values{"q": {" Site-1 "}, "status": {"critical"}, "offset": {"200"}, "limit": {"50"}})
	if err != nil || q.Q != "Site-1" || q.Status != "critical" || q.Offset != 200 || q.Limit != 50 {
		t.Errorf("ParseFleetQuery = %+v, %v", q, err)
	}
	if q, err := ui.ParseFleetQuery(url.Values{}); err != nil || q.Limit != ui.DefaultFleetLimit {
		t.Errorf("empty query = %+v, %v", q, err)
	}
	for _, bad := range []url.Values{{"status": {"bad"}}, {"availability": {"maybe"}}, {"management": {"x"}}, {"sync": {"sideways"}},
		{"offset": {"-1"}}, {"offset": {"x"}}, {"limit": {"0"}}, {"limit": {"501"}}, {"q": {strings.Repeat("a", 254)}}} {
		if _, err := ui.ParseFleetQuery(bad); err == nil {
			t.Errorf("ParseFleetQuery(%v) = nil error", bad)
		} else {
			for k := range bad {
				if !strings.HasPrefix(err.Error(), k+":") {
					t.Errorf("ParseFleetQuery(%v) = %v; want the parameter named", bad, err)
				}
			}
		}
	}
}

func TestFilter(t *testing.T) {
	sites := fleetOf(10000)
	v := ui.Filter(sites, ui.FleetQuery{Limit: 100})
	if v.Total != 10000 || v.Matched != 10000 || len(v.Rows) != 100 || v.Rows[0].Name != "site-00000" || v.Prev != "" || v.Next != "?offset=100" {
		t.Errorf("first page: total %d matched %d rows %d prev %q next %q", v.Total, v.Matched, len(v.Rows), v.Prev, v.Next)
	}
	if v.Counts["ok"] != 2500 || v.Counts["critical"] != 2500 || v.Counts["offline"] != 2500 {
		t.Errorf("counts = %v", v.Counts)
	}
	v = ui.Filter(sites, ui.FleetQuery{Status: "critical", Sync: "out-of-sync", Limit: 100})
	for _, r := range v.Rows {
		if r.Status != "critical" || r.Sync != "out-of-sync" {
			t.Fatalf("critical+out-of-sync shows %+v", r)
		}
	}
	if v.Matched != 500 || v.Counts["critical"] != 2500 { // i%4==2 and i%10==0: i%20==10
		t.Errorf("critical+out-of-sync matched %d (want 500), counts %v", v.Matched, v.Counts)
	}
	v = ui.Filter(sites, ui.FleetQuery{Q: "SITE-0999", Limit: 5, Offset: 5})
	if v.Matched != 10 || len(v.Rows) != 5 || v.Rows[0].Name != "site-09995" || v.Prev != "?limit=5&q=SITE-0999" || v.Next != "" {
		t.Errorf("search page 2: matched %d rows %v prev %q next %q", v.Matched, v.Rows, v.Prev, v.Next)
	}
	if v := ui.Filter(sites, ui.FleetQuery{Q: "nothing", Limit: 100}); v.Matched != 0 || v.Rows == nil || len(v.Rows) != 0 {
		t.Errorf("no match: %+v", v)
	}
	if v := ui.Filter(sites, ui.FleetQuery{Limit: 100, Offset: 20000}); len(v.Rows) != 0 || v.Prev == "" {
		t.Errorf("past the end: %d rows, prev %q", len(v.Rows), v.Prev)
	}
}

// BenchmarkFilter10k is the server's share of a fleet-page search at
// 10,000 sites (docs/benchmarks.md).
func BenchmarkFilter10k(b *testing.B) {
	sites := fleetOf(10000)
	for b.Loop() {
		ui.Filter(sites, ui.FleetQuery{Q: "site-05", Status: "ok", Limit: 100})
	}
}

// fleetDash is central's dashboard over a real auth service with a clock
// the test moves, a fleet the test sets, and a fleet version.
type fleetDash struct {
	h       http.Handler
	now     atomic.Pointer[time.Time]
	sites   atomic.Pointer[[]ui.SiteRow]
	reads   atomic.Int64
	version atomic.Int64
	session string
}

func newFleetDash(t *testing.T) *fleetDash {
	t.Helper()
	ctx := context.Background()
	st, err := authdb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetDash{}
	now := time.Now()
	f.now.Store(&now)
	svc, err := auth.New(auth.Config{Store: st, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return *f.now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateUser(ctx, "op", auth.Operator, "password-of-op"); err != nil {
		t.Fatal(err)
	}
	if f.session, _, err = svc.Login(ctx, "op", "password-of-op"); err != nil {
		t.Fatal(err)
	}
	sites := fleetOf(1000)
	f.sites.Store(&sites)
	u, err := ui.New(ui.Config{Auth: svc, Logger: slog.New(slog.DiscardHandler),
		AlarmSummary: func(context.Context) (faultmgr.Summary, error) { return faultmgr.Summary{}, nil },
		Audit:        func(context.Context, string, string, string, string, string) {},
		Sites: func(context.Context) ([]ui.SiteRow, error) {
			f.reads.Add(1)
			return append([]ui.SiteRow(nil), *f.sites.Load()...), nil
		},
		Site:         func(context.Context, string) error { return nil },
		FleetVersion: func() string { return fmt.Sprintf("e-%d", f.version.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = u
	return f
}

func (f *fleetDash) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	d := &dash{h: f.h, sessions: map[auth.Role]string{auth.Operator: f.session}}
	return d.get(t, auth.Operator, path)
}

// The fleet page and /ui/fleet.json filter, search and page on the
// server; bad filters are refused with the parameter named.
func TestFleetPage(t *testing.T) {
	f := newFleetDash(t)
	resp, page := f.get(t, "/?status=critical&q=site-00")
	if resp.StatusCode != 200 || strings.Count(page, `<tr data-name=`) != 100 || !strings.Contains(page, "of 250 matching (1000 subclouds)") ||
		!strings.Contains(page, `<option selected>critical</option>`) || !strings.Contains(page, `name="q" value="site-00"`) {
		t.Errorf("filtered fleet page = %d, %d rows:\n%s", resp.StatusCode, strings.Count(page, `<tr data-name=`), page)
	}
	if !strings.Contains(page, `data-stream-from="e-0"`) {
		t.Error("the fleet page does not say which stream event it is current at")
	}
	resp, body := f.get(t, "/ui/fleet.json?status=offline&offset=200&limit=10")
	var v ui.FleetView
	if err := json.Unmarshal([]byte(body), &v); resp.StatusCode != 200 || err != nil {
		t.Fatalf("fleet.json = %d %v: %s", resp.StatusCode, err, body)
	}
	var raw struct {
		Rows []map[string]any `json:"rows"`
	}
	json.Unmarshal([]byte(body), &raw)
	if v.Matched != 250 || v.Offset != 200 || len(raw.Rows) != 10 || raw.Rows[0]["name"] != "site-00803" || raw.Rows[0]["status"] != "offline" ||
		v.Next != "?limit=10&offset=210&status=offline" {
		t.Errorf("fleet.json offline page = matched %d offset %d next %q first %v", v.Matched, v.Offset, v.Next, raw.Rows)
	}
	if resp, body := f.get(t, "/ui/fleet.json?status=purple"); resp.StatusCode != 400 || !strings.Contains(body, "status: must be one of") {
		t.Errorf("fleet.json?status=purple = %d %s", resp.StatusCode, body)
	}
	if resp, page := f.get(t, "/?limit=9999"); resp.StatusCode != 400 || !strings.Contains(page, "Bad filter: limit") {
		t.Errorf("/?limit=9999 = %d", resp.StatusCode)
	}
	// Without a session: 401 as JSON (the script then sends the browser to log in).
	d := &dash{h: f.h}
	if resp, body := d.get(t, "", "/ui/fleet.json"); resp.StatusCode != 401 || !strings.Contains(body, "unauthenticated") {
		t.Errorf("fleet.json without a session = %d %s", resp.StatusCode, body)
	}
}

// The fleet is read once per fleet version (and at most FleetCacheAge):
// searches of a quiet fleet cost no store read, and a change (a new
// version) shows on the next request.
func TestFleetReadOncePerVersion(t *testing.T) {
	f := newFleetDash(t)
	for _, p := range []string{"/", "/ui/fleet.json?q=1", "/ui/fleet.json?status=ok", "/ui/alarms"} {
		f.get(t, p)
	}
	if n := f.reads.Load(); n != 1 {
		t.Errorf("%d reads of the fleet for four pages at one version; want 1", n)
	}
	more := append(fleetOf(1000), ui.SiteRow{Name: "zz-new", Status: "offline"})
	f.sites.Store(&more)
	f.version.Add(1)
	_, body := f.get(t, "/ui/fleet.json?q=zz-new")
	if !strings.Contains(body, `"name":"zz-new"`) || f.reads.Load() != 2 {
		t.Errorf("after a new version: %d reads, %s", f.reads.Load(), body)
	}
}

// An expired session (the login's 12 h passed) is sent to the login page
// from every page, and fleet.json answers 401.
func TestExpiredSession(t *testing.T) {
	f := newFleetDash(t)
	if resp, _ := f.get(t, "/"); resp.StatusCode != 200 {
		t.Fatalf("fresh session: %d", resp.StatusCode)
	}
	later := f.now.Load().Add(auth.DefaultLoginTTL + time.Minute)
	f.now.Store(&later)
	for _, p := range []string{"/", "/ui/alarms", "/ui/events", "/ui/patching", "/ui/sites/site-00001"} {
		if resp, _ := f.get(t, p); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
			t.Errorf("GET %s with an expired session = %d %s; want 303 to /ui/login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := f.get(t, "/ui/fleet.json"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fleet.json with an expired session = %d; want 401", resp.StatusCode)
	}
}

// The site, events and patching pages: who gets which buttons, where the
// script calls the site's API, and their filters kept and escaped.
func TestSiteEventsPatchingPages(t *testing.T) {
	central, site := newDash(t, ""), newDash(t, "site-a")
	for _, tc := range []struct {
		d           *dash
		role        auth.Role
		act, strat  bool
		path, where string
	}{
		{central, auth.Reader, false, false, "/ui/sites/site-a", `data-api="/v1/subclouds/site-a/api"`},
		{central, auth.Operator, true, false, "/ui/sites/site-a", `data-api="/v1/subclouds/site-a/api"`},
		{site, auth.Admin, true, true, "/", `data-api=""`},
	} {
		_, page := tc.d.get(t, tc.role, tc.path)
		if got := strings.Contains(page, "<th>Actions</th>"); got != tc.act {
			t.Errorf("%s as %s: Actions = %v; want %v", tc.path, tc.role, got, tc.act)
		}
		if !strings.Contains(page, tc.where) {
			t.Errorf("%s: the script would not call %s", tc.path, tc.where)
		}
		for _, id := range []string{`id="hosts"`, `id="servers"`, `id="groups"`, `id="site-alarms"`} {
			if !strings.Contains(page, id) {
				t.Errorf("%s lacks %s", tc.path, id)
			}
		}
		_, page = tc.d.get(t, tc.role, "/ui/patching?site=site-a")
		if got := strings.Contains(page, `data-strategy="apply"`); got != tc.strat {
			t.Errorf("patching as %s: strategy buttons = %v; want %v", tc.role, got, tc.strat)
		}
	}
	// Central's patching page: the fleet strategy always, a site's on choice.
	_, page := central.get(t, auth.Admin, "/ui/patching")
	if !strings.Contains(page, `data-scope="fleet" data-api=""`) || strings.Contains(page, `data-scope="site"`) {
		t.Error("central's patching page without a site: want the fleet strategy only")
	}
	_, page = central.get(t, auth.Admin, "/ui/patching?site=site-b")
	if !strings.Contains(page, `data-scope="site" data-api="/v1/subclouds/site-b/api"`) || !strings.Contains(page, `<option selected>site-b</option>`) {
		t.Error("central's patching page for site-b: no site strategy through the relay")
	}
	if _, page = central.get(t, auth.Admin, "/ui/patching?site=%3Cb%3Enope"); !strings.Contains(page, "No subcloud &lt;b&gt;nope.") || strings.Contains(page, `data-scope="site"`) {
		t.Error("central's patching page for an unknown site: want an escaped error and no site strategy")
	}
	_, page = site.get(t, auth.Reader, `/ui/events?type=audit&user=%22%3E%3Cscript%3E`)
	if !strings.Contains(page, `<option selected>audit</option>`) || strings.Contains(page, `"><script>`) || !strings.Contains(page, `name="user" value="&#34;&gt;&lt;script&gt;"`) {
		t.Error("the events page does not keep its filters escaped")
	}
}
